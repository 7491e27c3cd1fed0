"""Novelty in collective-variable space: how far a geometry is from the data already labelled.

The labelled data's CV values make a kernel sum with a periodic (von Mises) kernel per
dihedral CV and a Gaussian per Cartesian one, each kernel 1 at its centre::

    S(s) = sum_d prod_c k_c(s - s_d),     novelty(s) = -log(S(s) + exp(-cap))

``novelty`` is dimensionless: about 0 on a labelled point, ``cap`` far from every one. Added to
the adversarial log-objective with weight ``w`` it is a bias of ``-w kT log(S + exp(-cap))`` in
energy units that pushes away from labelled CV regions as a metadynamics bias pushes away from
visited ones, and like a metadynamics bias it is bounded: beyond a few bandwidths from the data
it is flat, so where the attack goes from there is decided by the uncertainty and the Boltzmann
factor, not by ever more distance (an unbounded ``-log S`` grows as the squared distance and
drives every replica to the CV point farthest from the data, whatever its energy).
Frontier seeds are the labelled frames where ``S`` is lowest: the edge of what is known, from
where new regions are nearest. Replicas attacked together can count each other as labelled
(``spread``), so that a batch does not converge on one new region.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


__all__ = ["CVDensity", "frontier_indices"]


class CVDensity:
    """Kernel density of labelled CV values, its log and gradient.

    Parameters
    ----------
    cvs : sequence of CollectiveVariable
        The CVs (``kind`` dihedral or coordinate; see :class:`openmm_adv.systems.CollectiveVariable`).
    values : array ``[n, C]``
        CV values of the labelled data (radians / nm).
    bandwidth : float or sequence of float
        Kernel width per CV: radians for dihedrals (default 0.35, 20 degrees: about one
        10-degree bin either side), nm for distances and coordinates.
    cap : float
        Largest novelty, reached about ``sqrt(2 cap)`` bandwidths from the nearest labelled
        point (``inf``: unbounded).
    """

    def __init__(self, cvs: Sequence, values, bandwidth=0.35, cap: float = float("inf")):
        self.cvs = list(cvs)
        self.values = np.asarray(values, dtype=np.float64).reshape(-1, len(self.cvs))
        if len(self.values) == 0:
            raise ValueError("a CV density needs at least one labelled point")
        width = np.broadcast_to(np.asarray(bandwidth, dtype=np.float64), (len(self.cvs),))
        if not (width > 0).all():
            raise ValueError(f"bandwidths must be positive, got {width}")
        self.bandwidth = width
        if not cap > 0:
            raise ValueError(f"the novelty cap must be positive, got {cap}")
        self.cap = float(cap)
        self.periodic = np.array([cv.periodic for cv in self.cvs])

    @classmethod
    def from_positions(cls, system, positions, cv_names=None, bandwidth=0.35, cap: float = float("inf")) -> "CVDensity":
        """The density of ``positions [n, N, 3]`` in the system's CVs (all, or ``cv_names``)."""
        names = list(cv_names or system.collective_variables)
        values = system.compute_cvs(np.asarray(positions))
        return cls([system.collective_variables[n] for n in names], np.stack([values[n] for n in names], axis=1),
                   bandwidth, cap)

    def _log_kernels(self, s: np.ndarray, centres: np.ndarray | None = None):
        """Per query and centre, the log kernel ``[B, n]`` and its derivative ``[B, n, C]``."""
        diff = s[:, None, :] - (self.values if centres is None else centres)[None]
        w2 = self.bandwidth**2
        # von Mises exp((cos d - 1)/w^2) ~ exp(-d^2 / 2 w^2) near d = 0, periodic.
        log_k = np.where(self.periodic, (np.cos(diff) - 1.0) / w2, -0.5 * diff**2 / w2)
        dlog_k = np.where(self.periodic, -np.sin(diff) / w2, -diff / w2)
        return log_k.sum(-1), dlog_k

    def values_of(self, positions: np.ndarray) -> np.ndarray:
        """CV values ``[B, C]`` of geometries ``[B, N, 3]``."""
        return self._values_and_gradients(np.asarray(positions, dtype=np.float64))[0]

    def _values_and_gradients(self, x: np.ndarray):
        """CV values ``[B, C]`` and per CV the gradient ``[B, n_atoms_of_cv, 3]`` (one evaluation each)."""
        pairs = [cv.value_and_gradient(x) for cv in self.cvs]
        return np.stack([value for value, _ in pairs], axis=1), [gradient for _, gradient in pairs]

    def log_density(self, s: np.ndarray) -> np.ndarray:
        """``log(S + exp(-cap))`` at CV values ``[B, C]``: minus the novelty."""
        log_k, _ = self._log_kernels(np.asarray(s, dtype=np.float64).reshape(-1, len(self.cvs)))
        return self._log_sum(log_k)

    def _log_sum(self, log_k: np.ndarray) -> np.ndarray:
        total = np.logaddexp.reduce(log_k, axis=1)
        return np.logaddexp(total, -self.cap) if np.isfinite(self.cap) else total

    def novelty_and_gradient(self, positions: np.ndarray, spread=False) -> tuple[np.ndarray, np.ndarray]:
        """Novelty ``[B]`` of geometries ``[B, N, 3]`` and its Cartesian gradient ``[B, N, 3]``.

        With ``spread`` every geometry also counts the others of the batch as labelled (each
        held fixed for the others' gradients), which keeps replicas attacked together apart;
        a boolean mask ``[B]`` instead of ``True`` counts only the marked ones (padding
        replicas that repeat a real one must not push it away).
        """
        x = np.asarray(positions, dtype=np.float64)
        s, ds_dx = self._values_and_gradients(x)
        log_k, dlog_k = self._log_kernels(s)
        others = np.broadcast_to(np.asarray(spread, dtype=bool), (len(s),))
        if others.any() and len(s) > 1:
            log_kr, dlog_kr = self._log_kernels(s, s)
            np.fill_diagonal(log_kr, -np.inf)
            log_kr[:, ~others] = -np.inf
            log_k, dlog_k = np.concatenate([log_k, log_kr], 1), np.concatenate([dlog_k, dlog_kr], 1)
        log_p = self._log_sum(log_k)
        weights = np.exp(log_k - log_p[:, None])  # k_d / (S + exp(-cap))
        d_log_p = np.einsum("bn,bnc->bc", weights, dlog_k)  # d log(S + exp(-cap)) / d s
        gradient = np.zeros_like(x)
        for c, cv in enumerate(self.cvs):
            gradient[:, list(cv.atoms)] -= d_log_p[:, c, None, None] * ds_dx[c]
        return -log_p, gradient


def frontier_indices(density: CVDensity, values, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """``n`` distinct indices of the points ``values [m, C]`` at the frontier of ``density``.

    Points are drawn without replacement with probability proportional to ``1 / p``, so the
    sparsest labelled regions are favoured but a single outlier is not drawn every time
    (``rng=None``: the ``n`` lowest-density points, deterministic).
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1, len(density.cvs))
    n = min(int(n), len(values))
    log_p = density.log_density(values)
    if rng is None:
        return np.sort(np.argsort(log_p)[:n])
    weights = np.maximum(np.exp(-(log_p - log_p.min())), 1e-300)
    return np.sort(rng.choice(len(values), size=n, replace=False, p=weights / weights.sum()))
