"""MD on the committee mean with DP-GEN-style trust-window selection.

Every seed becomes one of S non-interacting replicas of the molecule in ONE OpenMM ``Context``
(:func:`~openmm_adv.forces.mean_energy_force` with ``n_replicas=S``), so the committee
evaluates all replicas in one batched call per step. Frames are taken every
``report_interval`` steps; those whose model deviation (DP-GEN: the max over atoms of the
members' force deviation) lies in the trust window ``[lower, upper)`` become candidates
(Zhang et al., Phys. Rev. Mater. 3, 023804, 2019).
"""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from ..forces import mean_energy_force
from ..models.committee import Committee
from ..models.uncertainty import check_metric
from .candidates import Candidates
from ._replicas import (
    as_geometry_check,
    check_seeds,
    draw_seed,
    masses_for,
    run_langevin_replicas,
    score_frames,
    to_kelvin,
    to_per_ps,
    to_ps,
)

__all__ = ["CommitteeMDSampler"]


def _chunks(n: int, batch_size: int | None):
    b = n if batch_size is None else max(1, min(int(batch_size), n))
    return [np.arange(first, min(first + b, n)) for first in range(0, n, b)]


class CommitteeMDSampler:
    """Langevin MD on the committee-mean energy; keeps frames inside a trust window.

    Parameters
    ----------
    temperature : float or openmm.unit.Quantity
        K.
    timestep : float or Quantity
        ps; 0.5 fs by default (no constraints: hydrogens move).
    n_steps : int
        MD steps per replica.
    report_interval : int
        Steps between frames (the start geometry itself is never a frame).
    friction : float or Quantity
        Langevin friction, 1/ps.
    lower, upper : float, optional
        Trust window ``[lower, upper)`` on ``metric``; ``None`` leaves that side open.
        DP-GEN's metric is ``max_force_deviation`` (kJ/mol/nm here).
    metric : str
        The uncertainty the window applies to and the candidates carry.
    system : MolecularSystem, optional
        Gives the masses (default: element masses from the committee's atomic numbers).
    batch_size : int, optional
        Replicas per Context; default all seeds in one Context.
    geometry_check : GeometryCheck or MolecularSystem, optional
        A replica whose frame fails it (or is non-finite) has exploded: it is frozen and adds no
        frames from then on (``info["n_exploded"]``).
    platform : str or openmm.Platform
        ``"Reference"``, ``"CPU"`` or ``"CUDA"``.
    platform_properties : dict, optional
        Context properties; on CPU ``Threads`` defaults to ``"1"`` and ``DeterministicForces`` to
        ``"true"`` (bit-reproducible runs).
    backend : {"torch", "python"}
    use_cuda_graphs : bool
    scoring_batch_size : int
        Frames per committee call when scoring frames.
    progress : bool

    Notes
    -----
    Cost: ``n_force_evaluations`` = replicas x steps run (an exploded replica is still
    evaluated: it sits frozen in the batch) + one evaluation per scored frame.
    ``info``: ``step`` and ``replica`` per candidate, ``n_frames`` (physical frames before the
    window), ``n_below``/``n_above`` (frames outside the window), ``n_exploded``,
    ``n_unphysical``, ``explosions`` (reasons).
    """

    name = "committee_md"

    def __init__(
        self,
        temperature=300.0,
        timestep=0.0005,
        n_steps: int = 2000,
        report_interval: int = 50,
        friction=1.0,
        lower: float | None = None,
        upper: float | None = None,
        metric: str = "max_force_deviation",
        system=None,
        batch_size: int | None = None,
        geometry_check=None,
        platform="CPU",
        platform_properties: dict | None = None,
        backend: str = "torch",
        use_cuda_graphs: bool = False,
        scoring_batch_size: int = 256,
        progress: bool = True,
    ):
        if n_steps < 1 or report_interval < 1:
            raise ValueError("n_steps and report_interval must be >= 1")
        if lower is not None and upper is not None and not lower < upper:
            raise ValueError(f"the trust window needs lower < upper, got [{lower}, {upper})")
        self.temperature = to_kelvin(temperature)
        self.timestep = to_ps(timestep)
        self.n_steps = int(n_steps)
        self.report_interval = int(report_interval)
        self.friction = to_per_ps(friction)
        self.lower = None if lower is None else float(lower)
        self.upper = None if upper is None else float(upper)
        self.metric = check_metric(metric)
        self.system = system
        self.batch_size = batch_size
        self.geometry_check = as_geometry_check(geometry_check)
        self.platform = platform
        self.platform_properties = dict(platform_properties or {})
        self.backend = backend
        self.use_cuda_graphs = use_cuda_graphs
        self.scoring_batch_size = int(scoring_batch_size)
        self.progress = progress
        self.options = dict(
            temperature=self.temperature, timestep=self.timestep, n_steps=self.n_steps,
            report_interval=self.report_interval, friction=self.friction, lower=self.lower, upper=self.upper,
            metric=self.metric, batch_size=batch_size, platform=str(platform), backend=backend,
        )

    def in_window(self, u: np.ndarray) -> np.ndarray:
        """Which values lie in ``[lower, upper)``."""
        u = np.asarray(u, dtype=np.float64)
        keep = np.isfinite(u)
        if self.lower is not None:
            keep &= u >= self.lower
        if self.upper is not None:
            keep &= u < self.upper
        return keep

    def _run_md(self, committee: Committee, seeds: np.ndarray, rng: np.random.Generator, make_force) -> dict:
        """MD of all seeds in chunks of ``batch_size`` replicas; ``make_force(n_replicas)``."""
        masses = masses_for(committee, self.system)
        frames, replica, steps, explosions = [], [], [], []
        n_exploded = n_unphysical = n_evals = 0
        chunks = _chunks(len(seeds), self.batch_size)
        bar = tqdm(total=len(chunks) * self.n_steps, desc=self.name, unit="step", disable=not self.progress, leave=False)
        for index in chunks:
            run = run_langevin_replicas(
                make_force(len(index)), masses, seeds[index], temperature=self.temperature, friction=self.friction,
                timestep=self.timestep, n_steps=self.n_steps, report_interval=self.report_interval,
                seed=draw_seed(rng), check=self.geometry_check, platform=self.platform,
                platform_properties=self.platform_properties, bar=bar,
            )
            frames.append(run.frames)
            replica.append(index[run.replica])
            steps.append(run.step)
            explosions += run.reasons
            n_exploded += run.n_exploded
            n_unphysical += run.n_unphysical
            n_evals += run.n_force_evaluations
        bar.close()
        return dict(
            frames=np.concatenate(frames), replica=np.concatenate(replica), step=np.concatenate(steps),
            explosions=explosions, n_exploded=int(n_exploded), n_unphysical=int(n_unphysical), n_evals=int(n_evals),
        )

    def sample(self, committee: Committee, seeds, rng: np.random.Generator | None = None) -> Candidates:
        """Run MD from every seed ``[S, N, 3]`` (nm); return the frames inside the trust window."""
        start = time.perf_counter()
        rng = np.random.default_rng() if rng is None else rng
        seeds = check_seeds(seeds, committee.n_atoms)
        run = self._run_md(committee, seeds, rng, lambda n: mean_energy_force(
            committee, n_replicas=n, backend=self.backend, use_cuda_graphs=self.use_cuda_graphs))
        frames = run["frames"]
        energies, u, _ = score_frames(committee, frames, self.metric, self.scoring_batch_size)
        n_evals = run["n_evals"] + len(frames)
        return self._window_candidates(run, energies, u, n_evals, start, {})

    def _window_candidates(self, run: dict, energies, u, n_evals: int, start: float, extra: dict) -> Candidates:
        """The frames of an MD run inside the trust window, with costs; ``extra`` maps names to
        per-frame arrays (filtered like the frames) or scalars added to ``info``."""
        frames, replica, steps = run["frames"], run["replica"], run["step"]
        u = np.asarray(u, dtype=np.float64)
        keep = self.in_window(u)
        info = {
            "step": steps[keep], "replica": replica[keep], "n_frames": int(len(frames)),
            "n_below": int((u < self.lower).sum()) if self.lower is not None else 0,
            "n_above": int((u >= self.upper).sum()) if self.upper is not None else 0,
            "n_exploded": run["n_exploded"], "n_unphysical": run["n_unphysical"], "explosions": run["explosions"],
            "window": (self.lower, self.upper),
        }
        for key, value in extra.items():
            info[key] = value[keep] if isinstance(value, np.ndarray) and len(value) == len(frames) else value
        return Candidates(
            positions=frames[keep],
            energies=np.asarray(energies, dtype=np.float64)[keep],
            uncertainty=u[keep],
            metric=self.metric,
            sampler=self.name,
            seed_index=replica[keep],
            n_force_evaluations=int(n_evals),
            oracle_calls=0,
            wall_seconds=time.perf_counter() - start,
            info=info,
        )
