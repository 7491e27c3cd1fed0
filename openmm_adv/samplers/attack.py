"""Adversarial attacks on a committee's uncertainty, run inside one OpenMM Context.

B seeds become B non-interacting replicas of the molecule in one ``System``; the committee
evaluates all of them in one batched call per step, and an optimiser integrator
(:func:`~openmm_adv.samplers.integrators.attack_integrator`) climbs the objective
(Schwalbe-Koda, Tan & Gomez-Bombarelli, Nat. Commun. 12, 5104, 2021)::

    L(x) = U(x) exp(-(E(x) - E_ref)/kT) / Z

with U the committee uncertainty, E the committee-mean energy and Z the Boltzmann average over
the training energies. Every ``report_interval`` steps the per-replica objective is evaluated
and the best *physically valid* iterate of each replica is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import openmm
from openmm import app
import torch
from tqdm.auto import tqdm

from .._errors import first_line
from ..forces import adversarial_force
from ..geometry import GeometryCheck
from ..models.committee import Committee
from ..units import thermal_energy, to_nm
from .candidates import Candidates
from .integrators import attack_integrator, reset_attack_integrator

__all__ = ["Attack", "AttackResult", "AttackSampler"]


@dataclass
class AttackResult:
    """Per-seed outcome of an attack (arrays are indexed by seed).

    ``positions`` is the best valid iterate (the seed itself where no valid iterate was found,
    with ``valid`` False and the reason in ``flags``). Log-objectives are ``log L``.
    """

    seeds: np.ndarray
    positions: np.ndarray
    valid: np.ndarray
    flags: list
    best_step: np.ndarray
    log_objective_initial: np.ndarray
    log_objective_best: np.ndarray
    uncertainty_initial: np.ndarray
    uncertainty_best: np.ndarray
    energy_initial: np.ndarray
    energy_best: np.ndarray
    report_steps: np.ndarray
    log_objective_trajectory: np.ndarray
    metric: str
    n_force_evaluations: int
    n_monitor_evaluations: int
    wall_seconds: float
    settings: dict = field(default_factory=dict)

    def candidates(self) -> Candidates:
        """The valid best iterates as :class:`Candidates`."""
        keep = np.flatnonzero(self.valid)
        return Candidates(
            positions=self.positions[keep],
            energies=self.energy_best[keep],
            uncertainty=self.uncertainty_best[keep],
            metric=self.metric,
            sampler="attack",
            seed_index=keep,
            n_force_evaluations=self.n_force_evaluations + self.n_monitor_evaluations,
            wall_seconds=self.wall_seconds,
            info={"log_objective": self.log_objective_best[keep], "best_step": self.best_step[keep]},
        )


class Attack:
    """Batched adversarial attacks with a committee, inside OpenMM.

    Parameters
    ----------
    committee : Committee
    kT : float or openmm.unit.Quantity
        Sampling temperature of the Boltzmann factor, as an energy (kJ/mol) or a temperature.
    n_steps : int
        Optimiser steps per seed.
    step_size : float
        Adam learning rate in nm (``optimizer="adam"``) or the gradient-ascent factor.
    optimizer : {"adam", "gradient"}
    objective : {"log", "linear"}
        Which form of the objective the optimiser climbs; both rank iterates identically.
    metric : str
        Uncertainty metric (``force_variance``, ``max_force_deviation``, ``energy_std``).
    batch_size : int
        Replicas per Context (B). Seeds are processed in chunks of B.
    max_step, max_displacement : float
        Per-step and total per-coordinate displacement limits in nm.
    report_interval : int
        Evaluate the objective and geometry every this many steps.
    training_energies : array_like, optional
        Energies defining ``E_ref`` and ``Z`` (default: the committee's metadata).
    geometry_check : GeometryCheck or MolecularSystem, optional
        Physical filter for iterates; a system gives its bonds and reference geometry.
    platform : str or openmm.Platform
        ``"Reference"``, ``"CPU"`` or ``"CUDA"``.
    platform_properties : dict, optional
    backend : {"torch", "python"}
    use_cuda_graphs : bool
    progress : bool
        Show a progress bar.
    """

    def __init__(
        self,
        committee: Committee,
        kT=5.0,
        n_steps: int = 200,
        step_size: float = 0.002,
        optimizer: str = "adam",
        objective: str = "log",
        metric: str = "force_variance",
        batch_size: int = 32,
        max_step: float = 0.02,
        max_displacement: float = 0.3,
        report_interval: int = 5,
        training_energies=None,
        geometry_check=None,
        platform="CPU",
        platform_properties: dict | None = None,
        backend: str = "torch",
        use_cuda_graphs: bool = False,
        progress: bool = True,
    ):
        if n_steps < 1 or batch_size < 1 or report_interval < 1:
            raise ValueError("n_steps, batch_size and report_interval must be >= 1")
        self.committee = committee
        self.kT = thermal_energy(kT)
        self.n_steps = int(n_steps)
        self.step_size = float(to_nm(step_size)) if optimizer == "adam" else float(step_size)
        self.optimizer = optimizer
        self.objective = objective
        self.metric = metric
        self.batch_size = int(batch_size)
        self.max_step = float(to_nm(max_step))
        self.max_displacement = float(to_nm(max_displacement))
        self.report_interval = int(report_interval)
        self.training_energies = training_energies
        if geometry_check is not None and not isinstance(geometry_check, GeometryCheck):
            geometry_check = GeometryCheck.for_system(geometry_check)
        self.geometry_check = geometry_check
        self.platform = platform
        self.platform_properties = dict(platform_properties or {})
        self.backend = backend
        self.use_cuda_graphs = use_cuda_graphs
        self.progress = progress
        self._context = None
        self._context_replicas = 0

    # ------------------------------------------------------------------ context
    def _build_context(self, n_replicas: int):
        force, module = adversarial_force(
            self.committee, self.kT, objective=self.objective, metric=self.metric,
            training_energies=self.training_energies, n_replicas=n_replicas, force_group=0,
            backend=self.backend, use_cuda_graphs=self.use_cuda_graphs,
        )
        system = openmm.System()
        masses = [app.Element.getByAtomicNumber(int(z)).mass if z > 0 else 1.0 for z in self.committee.atomic_numbers]
        for _ in range(n_replicas):
            for mass in masses:
                system.addParticle(mass)
        system.addForce(force)
        integrator = attack_integrator(
            self.step_size, self.optimizer, force_group=0, max_step=self.max_step,
            max_displacement=self.max_displacement,
        )
        platform = self.platform
        if isinstance(platform, str):
            platform = openmm.Platform.getPlatformByName(platform)
        context = openmm.Context(system, integrator, platform, self.platform_properties)
        self._context, self._integrator, self._module = context, integrator, module
        self._context_replicas = n_replicas

    def _evaluate(self, replicas: np.ndarray):
        with torch.enable_grad():
            log_l, u, e = self._module.replica_values(torch.from_numpy(replicas), False)
        return log_l.detach().double().numpy(), u.detach().double().numpy(), e.detach().double().numpy()

    def _check(self, replicas: np.ndarray):
        if self.geometry_check is None:
            finite = np.isfinite(replicas).all(axis=(1, 2))
            return finite, ["" if ok else "non-finite coordinates" for ok in finite]
        return self.geometry_check(replicas)

    # ------------------------------------------------------------------ run
    def run(self, seeds) -> AttackResult:
        """Attack every seed geometry ``[S, N, 3]`` (nm) and return an :class:`AttackResult`."""
        seeds = np.asarray(to_nm(seeds), dtype=np.float64)
        if seeds.ndim == 2:
            seeds = seeds[None]
        n = self.committee.n_atoms
        if seeds.ndim != 3 or seeds.shape[1:] != (n, 3):
            raise ValueError(f"seeds must have shape [S, {n}, 3] for this committee, got {seeds.shape}")
        if not np.isfinite(seeds).all():
            bad = np.flatnonzero(~np.isfinite(seeds).all(axis=(1, 2)))
            raise ValueError(f"seed geometries {bad[:10].tolist()} contain NaN or infinite coordinates")
        n_seeds = len(seeds)
        b = min(self.batch_size, n_seeds)
        if self._context is None or self._context_replicas != b:
            self._build_context(b)

        report_steps = np.arange(self.report_interval, self.n_steps + 1, self.report_interval)
        if report_steps.size == 0 or report_steps[-1] != self.n_steps:
            report_steps = np.append(report_steps, self.n_steps)
        out = dict(
            positions=seeds.copy(), valid=np.zeros(n_seeds, bool), flags=[""] * n_seeds,
            best_step=np.full(n_seeds, -1), log_best=np.full(n_seeds, -np.inf),
            u_best=np.full(n_seeds, np.nan), e_best=np.full(n_seeds, np.nan),
            traj=np.full((n_seeds, len(report_steps)), np.nan),
        )
        log0, u0, e0 = np.empty(n_seeds), np.empty(n_seeds), np.empty(n_seeds)
        start = time.perf_counter()
        n_monitor = 0
        n_batches = (n_seeds + b - 1) // b
        bar = tqdm(total=n_batches * self.n_steps, desc="attack", unit="step", disable=not self.progress, leave=False)
        for first in range(0, n_seeds, b):
            index = np.arange(first, min(first + b, n_seeds))
            # Pad the last chunk with copies of its last seed so the Context is reused.
            chunk = seeds[np.concatenate([index, np.full(b - len(index), index[-1])])]
            self._context.setPositions(chunk.reshape(-1, 3))
            reset_attack_integrator(self._integrator, b * n)
            log_l, u, e = self._evaluate(chunk)
            n_monitor += b
            log0[index], u0[index], e0[index] = log_l[: len(index)], u[: len(index)], e[: len(index)]
            last_reason = [""] * len(index)
            done = 0
            for k, step in enumerate(report_steps):
                try:
                    self._integrator.step(int(step - done))
                except openmm.OpenMMException as exc:
                    for j, s in enumerate(index):
                        if not out["valid"][s]:
                            out["flags"][s] = f"attack stopped at step {done}: {first_line(exc)}"
                    break
                bar.update(int(step - done))
                done = int(step)
                current = self._context.getState(getPositions=True).getPositions(asNumpy=True)
                current = np.asarray(current.value_in_unit(openmm.unit.nanometer)).reshape(b, n, 3)
                ok, reasons = self._check(current)
                log_l = np.full(b, np.nan)
                if np.isfinite(current).all():
                    log_l, u, e = self._evaluate(current)
                    n_monitor += b
                for j, s in enumerate(index):
                    out["traj"][s, k] = log_l[j]
                    if not ok[j]:
                        last_reason[j] = reasons[j]
                        continue
                    if np.isfinite(log_l[j]) and log_l[j] > out["log_best"][s]:
                        out["log_best"][s], out["u_best"][s], out["e_best"][s] = log_l[j], u[j], e[j]
                        out["positions"][s] = current[j]
                        out["best_step"][s] = step
                        out["valid"][s] = True
            for j, s in enumerate(index):
                if not out["valid"][s] and not out["flags"][s]:
                    out["flags"][s] = last_reason[j] or "no valid iterate"
        bar.close()
        return AttackResult(
            seeds=seeds,
            positions=out["positions"],
            valid=out["valid"],
            flags=out["flags"],
            best_step=out["best_step"],
            log_objective_initial=log0,
            log_objective_best=out["log_best"],
            uncertainty_initial=u0,
            uncertainty_best=out["u_best"],
            energy_initial=e0,
            energy_best=out["e_best"],
            report_steps=report_steps,
            log_objective_trajectory=out["traj"],
            metric=self.metric,
            n_force_evaluations=n_batches * b * self.n_steps,
            n_monitor_evaluations=n_monitor,
            wall_seconds=time.perf_counter() - start,
            settings=dict(
                kT=self.kT, n_steps=self.n_steps, step_size=self.step_size, optimizer=self.optimizer,
                objective=self.objective, batch_size=b, report_interval=self.report_interval,
                max_step=self.max_step, max_displacement=self.max_displacement,
            ),
        )


class AttackSampler:
    """The attack as a loop sampler: a new :class:`Attack` per committee, same settings.

    Parameters
    ----------
    **attack_options
        Keyword arguments of :class:`Attack` except the committee.
    """

    name = "attack"

    def __init__(self, **attack_options):
        self.attack_options = dict(attack_options)

    def sample(self, committee: Committee, seeds: np.ndarray, rng: np.random.Generator | None = None) -> Candidates:
        """Attack every seed with ``committee``; returns the valid best iterates.

        ``rng`` is accepted for the common sampler interface; the attack is deterministic.
        """
        result = Attack(committee, **self.attack_options).run(seeds)
        candidates = result.candidates()
        candidates.info["n_flagged"] = int((~result.valid).sum())
        return candidates
