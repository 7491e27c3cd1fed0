"""What every sampler returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Candidates"]


@dataclass
class Candidates:
    """Geometries proposed for labelling, with what they cost to find.

    Attributes
    ----------
    positions : numpy.ndarray
        ``[K, N, 3]`` in nm.
    energies : numpy.ndarray
        Committee-mean energy ``[K]`` in kJ/mol.
    uncertainty : numpy.ndarray
        ``[K]``, in the units of ``metric``.
    metric : str
        The uncertainty metric.
    sampler : str
        Name of the sampler that produced them.
    seed_index : numpy.ndarray
        ``[K]``: which input seed each candidate came from (-1 where that has no meaning).
    n_force_evaluations : int
        Committee evaluations of one geometry spent to find them (a B-replica step counts B).
    oracle_calls : int
        Ground-truth evaluations spent (0 for samplers that only use the committee).
    wall_seconds : float
    info : dict
        Sampler-specific arrays (objective trajectories, flags...).
    """

    positions: np.ndarray
    energies: np.ndarray
    uncertainty: np.ndarray
    metric: str
    sampler: str
    seed_index: np.ndarray
    n_force_evaluations: int = 0
    oracle_calls: int = 0
    wall_seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.positions))
