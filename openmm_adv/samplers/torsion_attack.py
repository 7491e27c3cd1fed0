"""Adversarial attacks in torsion space: rigid rotations about rotatable bonds.

A Cartesian attack weighted by a Boltzmann factor climbs the uncertainty inside its seed's
basin: every atom moves, and leaving the basin means crossing a barrier that the Boltzmann
factor forbids coordinate by coordinate. Turning whole groups about rotatable bonds keeps bond
lengths and angles exactly and moves along the directions that separate conformations, which
is how the attack paper attacked alanine dipeptide in (phi, psi).

B replicas of the molecule live in one OpenMM ``Context`` with the adversarial ``TorchForce``
(one batched committee call per step, as for the Cartesian attack). OpenMM's force on each atom
is ``kT grad log L``; its torque about each rotatable bond is the derivative of ``log L`` with
respect to that bond's angle (:mod:`openmm_adv.torsions`). Adam runs on the angles; the
rotation itself cannot be an OpenMM integrator step (a per-DOF expression cannot read other
atoms' positions), so each step sets the new positions into the Context: its cost is measured
and reported (``info["host_seconds_per_step"]``).

Optional extras: a CV-novelty term (``novelty_weight`` times ``-log`` of the kernel density of
the labelled data's CV values, :mod:`openmm_adv.novelty`) added to the objective, and a short
Cartesian refinement at low kT of each result (:class:`~openmm_adv.samplers.attack.Attack`).
"""

from __future__ import annotations

import time

import numpy as np
import openmm
import torch
from tqdm.auto import tqdm

from .._errors import first_line
from ..forces import adversarial_force
from ..geometry import GeometryCheck
from ..models.committee import Committee
from ..novelty import CVDensity, frontier_indices
from ..torsions import Rotor, find_rotors, rotate, rotors_for_dihedrals, torques
from ..units import thermal_energy
from .attack import Attack
from .candidates import Candidates

__all__ = ["TorsionAttack", "TorsionAttackSampler", "rotors_for"]


def rotors_for(system, torsions="rotatable") -> list[Rotor]:
    """The rotors of ``system`` for a ``torsions`` choice.

    ``"rotatable"``: every rotatable bond of the topology (:func:`openmm_adv.torsions.find_rotors`);
    ``"cvs"``: the system's dihedral CVs; or a list of dihedrals (four atom indices each).
    """
    if isinstance(torsions, str):
        if torsions == "rotatable":
            rotors = find_rotors(system.bonds, system.atomic_numbers)
        elif torsions == "cvs":
            dihedrals = [cv.atoms for cv in system.collective_variables.values() if cv.kind == "dihedral"]
            rotors = rotors_for_dihedrals(dihedrals, system.bonds, system.n_atoms)
        else:
            raise ValueError(f"torsions must be 'rotatable', 'cvs' or a list of dihedrals, got {torsions!r}")
    else:
        rotors = rotors_for_dihedrals(torsions, system.bonds, system.n_atoms)
    if not rotors:
        raise ValueError(f"{system.name} has no rotatable bond to attack in torsion space; "
                         "give torsions explicitly or use the Cartesian attack")
    return rotors


class TorsionAttack:
    """Batched adversarial attacks on the angles of rotatable bonds, in one OpenMM Context.

    Parameters
    ----------
    committee : Committee
    system : MolecularSystem
        Gives the bonds (rotors, clash check) and the CVs (novelty).
    kT : float or openmm.unit.Quantity
        Temperature of the Boltzmann factor (kJ/mol, or a temperature).
    n_steps : int
    step_size : float
        Adam learning rate in radians.
    max_step : float
        Largest change of one angle in one step (radians).
    max_turn : float, optional
        Largest total change of one angle from its seed (radians; ``None``: unbounded). A
        trust region: the committee's energy, which the Boltzmann factor reads, is only
        trustworthy near its data, so each generation explores one shell beyond what is
        labelled and the next one starts from there.
    torsions : "rotatable", "cvs" or list of 4-tuples
        What turns (see :func:`rotors_for`).
    metric : str
    batch_size : int
        Replicas per Context.
    report_interval : int
        Check geometry and keep the best valid iterate every this many steps.
    novelty_weight : float
        Weight of the CV-novelty term (0: off); needs ``labelled`` positions.
    labelled : array ``[n, N, 3]``, optional
        Geometries already labelled (their CVs define the novelty density).
    novelty_bandwidth : float
        Kernel width in radians.
    novelty_cap : float
        Largest novelty (``inf``: unbounded); see :mod:`openmm_adv.novelty`.
    spread : bool
        With novelty on, replicas attacked together count each other as labelled, so that
        a batch spreads over new regions instead of converging on one.
    refine_steps : int
        Cartesian attack steps after the torsion attack (0: none), at ``refine_kT`` with
        ``refine_step_size`` nm.
    clash_factor : float
        Atoms three or more bonds apart closer than this times the sum of their van der Waals
        radii clash (flagged, never kept).
    platform, platform_properties, backend, use_cuda_graphs, progress
        As for :class:`~openmm_adv.samplers.attack.Attack`.
    """

    def __init__(self, committee: Committee, system, kT=20.9, n_steps: int = 150, step_size: float = 0.05,
                 max_step: float = 0.3, max_turn: float | None = None, torsions="rotatable",
                 metric: str = "force_variance", batch_size: int = 16,
                 report_interval: int = 5, novelty_weight: float = 0.0, labelled=None,
                 novelty_bandwidth: float = 0.35, novelty_cap: float = float("inf"), spread: bool = False,
                 refine_steps: int = 0, refine_kT=2.5,
                 refine_step_size: float = 0.001, clash_factor: float = 0.6, training_energies=None,
                 platform="CPU", platform_properties: dict | None = None, backend: str = "torch",
                 use_cuda_graphs: bool = False, progress: bool = True):
        if n_steps < 1 or batch_size < 1 or report_interval < 1 or refine_steps < 0:
            raise ValueError("n_steps, batch_size and report_interval must be >= 1 and refine_steps >= 0")
        if novelty_weight < 0:
            raise ValueError(f"novelty_weight must be >= 0, got {novelty_weight}")
        committee.check_compatible(system)
        self.committee, self.system = committee, system
        self.kT = thermal_energy(kT)
        self.n_steps, self.step_size, self.max_step = int(n_steps), float(step_size), float(max_step)
        if max_turn is not None and not max_turn > 0:
            raise ValueError(f"max_turn must be a positive angle in radians or None, got {max_turn}")
        self.max_turn = None if max_turn is None else float(max_turn)
        self.rotors = rotors_for(system, torsions)
        self.metric, self.batch_size, self.report_interval = metric, int(batch_size), int(report_interval)
        self.novelty_weight = float(novelty_weight)
        self.density = None
        if self.novelty_weight > 0:
            if labelled is None or len(labelled) == 0:
                raise ValueError("novelty_weight > 0 needs the labelled geometries (labelled=...)")
            self.density = CVDensity.from_positions(system, labelled, bandwidth=novelty_bandwidth, cap=novelty_cap)
        self.spread = bool(spread)
        self.refine_steps, self.refine_kT, self.refine_step_size = int(refine_steps), refine_kT, refine_step_size
        self.geometry_check = GeometryCheck.for_system(system, atomic_numbers=system.atomic_numbers,
                                                       vdw_clash_factor=clash_factor)
        self.training_energies = training_energies
        self.platform, self.platform_properties = platform, dict(platform_properties or {})
        self.backend, self.use_cuda_graphs, self.progress = backend, use_cuda_graphs, progress
        self._context = None

    def _build_context(self, n_replicas: int) -> None:
        force, module = adversarial_force(self.committee, self.kT, objective="log", metric=self.metric,
                                          training_energies=self.training_energies, n_replicas=n_replicas,
                                          backend=self.backend, use_cuda_graphs=self.use_cuda_graphs)
        system = openmm.System()
        for _ in range(n_replicas * self.committee.n_atoms):
            system.addParticle(1.0)  # masses never matter: nothing is integrated
        system.addForce(force)
        platform = self.platform
        if isinstance(platform, str):
            platform = openmm.Platform.getPlatformByName(platform)
        self._context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, self.platform_properties)
        self._module, self._replicas = module, n_replicas

    def _objective_gradient(self, x: np.ndarray, counted=None) -> np.ndarray:
        """Cartesian gradient ``[B, N, 3]`` of the objective (log L + novelty) from OpenMM."""
        self._context.setPositions(x.reshape(-1, 3))
        state = self._context.getState(getForces=True)
        forces = state.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer)
        gradient = np.asarray(forces).reshape(x.shape) / self.kT  # OpenMM energy is -kT log L
        if self.density is not None:
            novelty_gradient = self.density.novelty_and_gradient(x, self._spread_mask(counted))[1]
            gradient = gradient + self.novelty_weight * novelty_gradient
        return gradient

    def _spread_mask(self, counted):
        """What ``spread`` counts: nothing, every replica, or the real (not padding) ones."""
        if not self.spread:
            return False
        return True if counted is None else counted

    def _values(self, x: np.ndarray, counted=None):
        with torch.enable_grad():
            log_l, u, e = self._module.replica_values(torch.from_numpy(x), False)
        log_l = log_l.detach().double().numpy()
        novelty = np.zeros(len(x))
        if self.density is not None:
            novelty = self.density.novelty_and_gradient(x, self._spread_mask(counted))[0]
        return log_l + self.novelty_weight * novelty, u.detach().double().numpy(), e.detach().double().numpy(), novelty

    def run(self, seeds) -> Candidates:
        """Attack every seed ``[S, N, 3]`` (nm); the best valid iterate per seed as candidates."""
        seeds = self.system.check_positions(seeds, "seeds")
        if seeds.ndim == 2:
            seeds = seeds[None]
        n_seeds, n_atoms, n_rot = len(seeds), self.committee.n_atoms, len(self.rotors)
        b = min(self.batch_size, n_seeds)
        if self._context is None or self._replicas != b:
            self._build_context(b)
        best_x, best_obj = seeds.copy(), np.full(n_seeds, -np.inf)
        best_u, best_e = np.full(n_seeds, np.nan), np.full(n_seeds, np.nan)
        best_step, flags = np.full(n_seeds, -1), [""] * n_seeds
        obj0 = np.empty(n_seeds)
        start, host_seconds, n_monitor = time.perf_counter(), 0.0, 0
        bar = tqdm(total=((n_seeds + b - 1) // b) * self.n_steps, desc="torsion attack", unit="step",
                   disable=not self.progress, leave=False)
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for first in range(0, n_seeds, b):
            index = np.arange(first, min(first + b, n_seeds))
            chunk = seeds[np.concatenate([index, np.full(b - len(index), index[-1])])]
            counted = np.arange(b) < len(index)  # padding replicas repeat a real one
            x = chunk.copy()
            m, v, turned = np.zeros((b, n_rot)), np.zeros((b, n_rot)), np.zeros((b, n_rot))
            obj, _, _, _ = self._values(x, counted)
            obj0[index] = obj[: len(index)]
            n_monitor += b
            for step in range(1, self.n_steps + 1):
                try:
                    gradient = self._objective_gradient(x, counted)
                except openmm.OpenMMException as exc:
                    for s in index:
                        flags[s] = flags[s] or f"torsion attack stopped at step {step}: {first_line(exc)}"
                    break
                tick = time.perf_counter()
                g = torques(x, gradient, self.rotors)
                m = beta1 * m + (1 - beta1) * g
                v = beta2 * v + (1 - beta2) * g * g
                update = self.step_size * (m / (1 - beta1**step)) / (np.sqrt(v / (1 - beta2**step)) + eps)
                update = np.clip(update, -self.max_step, self.max_step)
                if self.max_turn is not None:
                    update = np.clip(turned + update, -self.max_turn, self.max_turn) - turned
                turned += update
                x = rotate(x, self.rotors, update)
                host_seconds += time.perf_counter() - tick
                bar.update(1)
                if step % self.report_interval and step != self.n_steps:
                    continue
                ok, reasons = self.geometry_check(x)
                obj, u, e, _ = self._values(x, counted)
                n_monitor += b
                for j, s in enumerate(index):
                    if not ok[j]:
                        flags[s] = reasons[j] if best_step[s] < 0 else flags[s]
                    elif np.isfinite(obj[j]) and obj[j] > best_obj[s]:
                        best_obj[s], best_u[s], best_e[s], best_x[s], best_step[s] = obj[j], u[j], e[j], x[j], step
                        flags[s] = ""
        bar.close()
        valid = best_step >= 0
        for s in np.flatnonzero(~valid):
            flags[s] = flags[s] or "no valid iterate"
        n_force = ((n_seeds + b - 1) // b) * b * self.n_steps
        info = {"objective_initial": obj0, "objective_best": best_obj, "best_step": best_step, "flags": flags,
                "rotors": [r.name for r in self.rotors], "host_seconds_per_step": host_seconds / max(1, n_force // b)}
        if self.refine_steps and valid.any():
            refined = Attack(self.committee, kT=self.refine_kT, n_steps=self.refine_steps,
                             step_size=self.refine_step_size, metric=self.metric, batch_size=self.batch_size,
                             report_interval=max(1, min(self.report_interval, self.refine_steps)),
                             training_energies=self.training_energies, geometry_check=self.geometry_check,
                             platform=self.platform, platform_properties=self.platform_properties,
                             backend=self.backend, progress=False).run(best_x[valid])
            keep = np.flatnonzero(valid)[refined.valid]
            best_x[keep] = refined.positions[refined.valid]
            best_u[keep], best_e[keep] = refined.uncertainty_best[refined.valid], refined.energy_best[refined.valid]
            n_force += refined.n_force_evaluations
            n_monitor += refined.n_monitor_evaluations
        keep = np.flatnonzero(valid)
        info = {k: (np.asarray(val)[keep] if k in ("objective_initial", "objective_best", "best_step") else val)
                for k, val in info.items()}
        info["n_flagged"] = int((~valid).sum())
        return Candidates(positions=best_x[keep], energies=best_e[keep], uncertainty=best_u[keep],
                          metric=self.metric, sampler="torsion_attack", seed_index=keep,
                          n_force_evaluations=n_force + n_monitor, wall_seconds=time.perf_counter() - start, info=info)


class TorsionAttackSampler:
    """The torsion attack as a loop sampler (a new :class:`TorsionAttack` per committee).

    With ``novelty_weight > 0`` the objective rewards distance in CV space from the labelled
    data, and with ``seeds="frontier"`` the attack starts from the labelled frames at the edge
    of that data instead of the loop's uniform draw; both read the labelled geometries the loop
    passes to :meth:`observe_dataset`.
    """

    name = "torsion_attack"

    def __init__(self, system, seeds: str = "uniform", frontier_bandwidth: float | None = None, jitter: float = 0.0,
                 **options):
        if seeds not in ("uniform", "frontier"):
            raise ValueError(f"seeds must be 'uniform' or 'frontier', got {seeds!r}")
        if frontier_bandwidth is not None and not frontier_bandwidth > 0:
            raise ValueError(f"frontier_bandwidth must be > 0 radians, got {frontier_bandwidth!r}")
        if not jitter >= 0:
            raise ValueError(f"jitter must be a displacement >= 0 nm, got {jitter!r}")
        self.system, self.seeds, self.options = system, seeds, dict(options)
        # The attack ends relaxed (Boltzmann weight, low-kT refinement), with small forces; a
        # thermal test set is dominated by bond and angle vibrations. A Gaussian jitter per
        # coordinate puts those around each new conformation, as the random-displacement
        # baseline puts them around the data.
        self.jitter = float(jitter)
        # The frontier is a property of the labelled distribution's shape, which can be coarser
        # than the bin-scale kernel the novelty term needs.
        self.frontier_bandwidth = frontier_bandwidth or self.options.get("novelty_bandwidth", 0.35)
        self._labelled = None
        if self.options.get("novelty_weight", 0.0) > 0:
            self.name = "torsion_attack_novelty"

    def observe_dataset(self, positions: np.ndarray) -> None:
        """The geometries labelled so far (the loop calls this before :meth:`sample`)."""
        self._labelled = np.asarray(positions)

    def sample(self, committee: Committee, seeds: np.ndarray, rng: np.random.Generator | None = None) -> Candidates:
        seed_positions, seed_index = np.asarray(seeds), np.arange(len(seeds))
        if self.seeds == "frontier":
            if self._labelled is None:
                raise ValueError("frontier seeds need the labelled data: call observe_dataset(positions) first")
            density = CVDensity.from_positions(self.system, self._labelled, bandwidth=self.frontier_bandwidth,
                                               cap=self.options.get("novelty_cap", float("inf")))
            values = density.values_of(self._labelled)
            pick = frontier_indices(density, values, len(seeds), rng)
            seed_positions, seed_index = self._labelled[pick], np.full(len(pick), -1)
        attack = TorsionAttack(committee, self.system, labelled=self._labelled, **self.options)
        found = attack.run(seed_positions)
        found.seed_index = seed_index[found.seed_index] if self.seeds == "uniform" else np.full(len(found), -1)
        found.sampler = self.name
        if self.jitter > 0 and len(found):
            found = self._jittered(committee, found, rng)
        return found

    def _jittered(self, committee: Committee, found: Candidates, rng) -> Candidates:
        """One copy of every found geometry displaced by ``jitter`` nm per coordinate, re-scored."""
        from .random_displacement import RandomDisplacementSampler

        shaken = RandomDisplacementSampler(sigma=self.jitter, n_per_seed=1, metric=found.metric,
                                           geometry_check=self.system, progress=False).sample(
            committee, found.positions, np.random.default_rng() if rng is None else rng)
        origin = shaken.seed_index
        info = {k: (np.asarray(v)[origin] if isinstance(v, np.ndarray) and len(v) == len(found) else v)
                for k, v in found.info.items()}
        info.update(jitter_nm=self.jitter, n_jitter_unphysical=int(len(found) - len(shaken)))
        return Candidates(positions=shaken.positions, energies=shaken.energies, uncertainty=shaken.uncertainty,
                          metric=found.metric, sampler=self.name, seed_index=found.seed_index[origin],
                          n_force_evaluations=found.n_force_evaluations + shaken.n_force_evaluations,
                          wall_seconds=found.wall_seconds + shaken.wall_seconds, info=info)
