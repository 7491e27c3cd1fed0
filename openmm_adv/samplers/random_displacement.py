"""Random displacement of dataset geometries: the simplest baseline."""

from __future__ import annotations

import time

import numpy as np

from ..models.committee import Committee
from ..models.uncertainty import check_metric
from ..units import to_nm
from .candidates import Candidates
from ._replicas import as_geometry_check, check_frames, check_seeds, score_frames

__all__ = ["RandomDisplacementSampler"]


class RandomDisplacementSampler:
    """Seeds plus an isotropic Gaussian displacement of every atom, scored by the committee.

    Parameters
    ----------
    sigma : float or openmm.unit.Quantity
        Standard deviation of each Cartesian displacement, nm (default 0.01 nm = 0.1 A).
    n_per_seed : int
        Samples drawn per seed.
    metric : str
        The uncertainty the candidates carry.
    geometry_check : GeometryCheck or MolecularSystem, optional
        Unphysical samples are dropped before scoring (``info["n_unphysical"]``).
    platform : str, optional
        Accepted for the common sampler interface; unused (scoring calls the committee directly).
    batch_size : int
        Geometries per committee call.
    progress : bool
        Accepted for the common interface (scoring is one quick pass).

    Notes
    -----
    Cost: one committee evaluation per scored (physical) sample; no MD. ``info``:
    ``displacement_rms`` (nm) per candidate, ``n_unphysical``.
    """

    name = "random_displacement"

    def __init__(
        self,
        sigma=0.01,
        n_per_seed: int = 10,
        metric: str = "force_variance",
        geometry_check=None,
        platform=None,
        batch_size: int = 256,
        progress: bool = True,
    ):
        self.sigma = float(to_nm(sigma))
        if not self.sigma > 0:
            raise ValueError(f"sigma must be a positive length, got {self.sigma} nm")
        if n_per_seed < 1:
            raise ValueError("n_per_seed must be >= 1")
        self.n_per_seed = int(n_per_seed)
        self.metric = check_metric(metric)
        self.geometry_check = as_geometry_check(geometry_check)
        self.platform = platform
        self.batch_size = int(batch_size)
        self.progress = progress
        self.options = dict(sigma=self.sigma, n_per_seed=self.n_per_seed, metric=self.metric)

    def sample(self, committee: Committee, seeds, rng: np.random.Generator | None = None) -> Candidates:
        """``n_per_seed`` displaced copies of every seed ``[S, N, 3]`` (nm), scored."""
        start = time.perf_counter()
        rng = np.random.default_rng() if rng is None else rng
        seeds = check_seeds(seeds, committee.n_atoms)
        seed_index = np.repeat(np.arange(len(seeds)), self.n_per_seed)
        displacement = rng.normal(scale=self.sigma, size=(len(seed_index),) + seeds.shape[1:])
        positions = seeds[seed_index] + displacement
        ok, _ = check_frames(self.geometry_check, positions)
        positions, seed_index, displacement = positions[ok], seed_index[ok], displacement[ok]
        energies, u, _ = score_frames(committee, positions, self.metric, self.batch_size)
        return Candidates(
            positions=positions,
            energies=energies,
            uncertainty=u,
            metric=self.metric,
            sampler=self.name,
            seed_index=seed_index,
            n_force_evaluations=int(len(positions)),
            oracle_calls=0,
            wall_seconds=time.perf_counter() - start,
            info={
                "displacement_rms": np.sqrt((displacement**2).mean(axis=(1, 2))),
                "n_unphysical": int((~ok).sum()),
            },
        )
