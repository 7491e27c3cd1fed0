"""Langevin MD with the reference potential: the classic data collection, as a sampler."""

from __future__ import annotations

import time

import numpy as np
import openmm
from openmm import unit
from tqdm.auto import tqdm

from ..models.committee import Committee
from ..models.uncertainty import check_metric
from .candidates import Candidates
from ._replicas import (
    as_geometry_check,
    as_platform,
    check_frames,
    check_seeds,
    draw_seed,
    is_nan_error,
    platform_properties_for,
    report_steps,
    score_frames,
    to_kelvin,
    to_per_ps,
    to_ps,
)

__all__ = ["ReferenceMDSampler"]


class ReferenceMDSampler:
    """Unconstrained Langevin MD on ``system.create_reference_system()`` from every seed.

    Every kept frame comes with its reference energy and forces, taken from the MD itself: the
    frames are oracle calls already made, so ``oracle_calls`` = number of candidates and
    ``info["reference_energies"]`` ``[K]`` (kJ/mol) / ``info["reference_forces"]``
    ``[K, N, 3]`` (kJ/mol/nm) hold the labels (the loop need not label them again).

    Parameters
    ----------
    system : MolecularSystem
    temperature : float or Quantity
        K.
    timestep : float or Quantity
        ps (0.5 fs by default: no constraints).
    n_steps : int
        MD steps per seed (after ``equilibration``).
    report_interval : int
        Steps between frames.
    friction : float or Quantity
        1/ps.
    equilibration : int
        Steps run from each seed before the first frame counts.
    metric : str
        The committee uncertainty the candidates carry (for the selector).
    geometry_check : GeometryCheck or MolecularSystem, optional
    platform : str or openmm.Platform
        Platform of the reference MD.
    platform_properties : dict, optional
        Context properties; on CPU ``Threads`` defaults to ``"1"`` and ``DeterministicForces`` to
        ``"true"`` (bit-reproducible runs).
    scoring_batch_size : int
    progress : bool

    Notes
    -----
    The seeds run one after another in ONE Context (the reference System holds one molecule).
    Cost: ``oracle_calls`` = ``info["reference_force_evaluations"]`` = every MD step run, since
    each is a reference-potential evaluation (cheap for a force field, the real cost with an ab
    initio oracle); labelling the kept frames afterwards is counted by the loop on top, as for
    every sampler. ``n_force_evaluations`` = committee scoring of the frames.
    """

    name = "reference_md"

    def __init__(
        self,
        system,
        temperature=300.0,
        timestep=0.0005,
        n_steps: int = 2000,
        report_interval: int = 100,
        friction=1.0,
        equilibration: int = 0,
        metric: str = "force_variance",
        geometry_check=None,
        platform="CPU",
        platform_properties: dict | None = None,
        scoring_batch_size: int = 256,
        progress: bool = True,
    ):
        if n_steps < 1 or report_interval < 1 or equilibration < 0:
            raise ValueError("n_steps and report_interval must be >= 1 and equilibration >= 0")
        self.system = system
        self.temperature = to_kelvin(temperature)
        self.timestep = to_ps(timestep)
        self.n_steps = int(n_steps)
        self.report_interval = int(report_interval)
        self.friction = to_per_ps(friction)
        self.equilibration = int(equilibration)
        self.metric = check_metric(metric)
        self.geometry_check = as_geometry_check(geometry_check)
        self.platform = platform
        self.platform_properties = dict(platform_properties or {})
        self.scoring_batch_size = int(scoring_batch_size)
        self.progress = progress
        self.options = dict(
            temperature=self.temperature, timestep=self.timestep, n_steps=self.n_steps,
            report_interval=self.report_interval, friction=self.friction, equilibration=self.equilibration,
            metric=self.metric, platform=str(platform),
        )

    def sample(self, committee: Committee, seeds, rng: np.random.Generator | None = None) -> Candidates:
        """Reference MD from every seed ``[S, N, 3]`` (nm); the frames with their labels."""
        start = time.perf_counter()
        rng = np.random.default_rng() if rng is None else rng
        n_atoms = self.system.n_atoms
        if committee.n_atoms != n_atoms:
            raise ValueError(f"the committee has {committee.n_atoms} atoms but {self.system.name} has {n_atoms}")
        seeds = check_seeds(seeds, n_atoms)
        integrator = openmm.LangevinMiddleIntegrator(self.temperature, self.friction, self.timestep)
        integrator.setRandomNumberSeed(draw_seed(rng))
        context = openmm.Context(self.system.create_reference_system(), integrator, as_platform(self.platform),
                                 platform_properties_for(self.platform, self.platform_properties))
        kj, kj_nm = unit.kilojoule_per_mole, unit.kilojoule_per_mole / unit.nanometer
        frames, seed_index, steps, ref_e, ref_f, reasons = [], [], [], [], [], []
        n_unphysical = n_exploded = md_steps = 0
        schedule = report_steps(self.n_steps, self.report_interval)
        bar = tqdm(total=len(seeds) * (self.n_steps + self.equilibration), desc=self.name, unit="step",
                   disable=not self.progress, leave=False)
        for s, seed in enumerate(seeds):
            context.setPositions(seed)
            context.setVelocitiesToTemperature(self.temperature, draw_seed(rng))
            done = 0
            try:
                if self.equilibration:
                    integrator.step(self.equilibration)
                    md_steps += self.equilibration
                    bar.update(self.equilibration)
                for step in schedule:
                    integrator.step(int(step - done))
                    md_steps += int(step - done)
                    bar.update(int(step - done))
                    done = int(step)
                    state = context.getState(getPositions=True, getEnergy=True, getForces=True)
                    x = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
                    ok, why = check_frames(self.geometry_check, x[None])
                    if not ok[0]:
                        n_unphysical += 1
                        n_exploded += 1
                        reasons.append(f"seed {s} at step {done}: {why[0]}")
                        break
                    frames.append(x)
                    seed_index.append(s)
                    steps.append(done)
                    ref_e.append(state.getPotentialEnergy().value_in_unit(kj))
                    ref_f.append(np.asarray(state.getForces(asNumpy=True).value_in_unit(kj_nm)))
            except openmm.OpenMMException as exc:
                if not is_nan_error(exc):
                    raise
                n_exploded += 1
                reasons.append(f"seed {s} at step {done}: {str(exc).splitlines()[0]}")
            if done < self.n_steps:
                bar.update(self.n_steps - done)
        bar.close()
        del context, integrator
        frames = np.asarray(frames, dtype=np.float64).reshape(-1, n_atoms, 3)
        energies, u, _ = score_frames(committee, frames, self.metric, self.scoring_batch_size)
        return Candidates(
            positions=frames,
            energies=energies,
            uncertainty=u,
            metric=self.metric,
            sampler=self.name,
            seed_index=np.asarray(seed_index, dtype=np.int64),
            n_force_evaluations=int(len(frames)),
            oracle_calls=int(md_steps),
            wall_seconds=time.perf_counter() - start,
            info={
                "reference_energies": np.asarray(ref_e, dtype=np.float64),
                "reference_forces": np.asarray(ref_f, dtype=np.float64).reshape(-1, n_atoms, 3),
                "step": np.asarray(steps, dtype=np.int64),
                "reference_force_evaluations": int(md_steps),
                "n_unphysical": int(n_unphysical),
                "n_exploded": int(n_exploded),
                "explosions": reasons,
            },
        )
