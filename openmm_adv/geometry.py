"""Physical plausibility checks for sampled geometries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GeometryCheck"]

# Bondi (J. Phys. Chem. 68, 441, 1964), nm; hydrogen 0.12.
_VDW_RADIUS_NM = {1: 0.120, 6: 0.170, 7: 0.155, 8: 0.152, 9: 0.147, 15: 0.180, 16: 0.180, 17: 0.175, 35: 0.185,
                  53: 0.198}


@dataclass
class GeometryCheck:
    """Flags geometries with broken or crushed bonds, clashing atoms, or non-finite coordinates.

    Parameters
    ----------
    bonds : list of (int, int)
        Covalent bonds (0-based).
    reference_positions : numpy.ndarray
        ``[N, 3]`` nm; bond lengths here are the reference for the bond-ratio test.
    max_bond_ratio, min_bond_ratio : float
        A bond longer than ``max_bond_ratio`` or shorter than ``min_bond_ratio`` times its
        reference length counts as broken.
    min_distance : float
        Non-bonded atoms closer than this (nm) clash.
    atomic_numbers : sequence of int, optional
        Needed for ``vdw_clash_factor``.
    vdw_clash_factor : float, optional
        Also flag atoms three or more bonds apart that are closer than this times the sum of
        their van der Waals radii (Bondi). Moves that turn whole groups (torsion attacks) can
        push groups into each other while every bond stays intact; ``min_distance`` alone
        would only catch atoms on top of each other.
    """

    bonds: list
    reference_positions: np.ndarray
    max_bond_ratio: float = 1.5
    min_bond_ratio: float = 0.7
    min_distance: float = 0.07
    atomic_numbers: object = None
    vdw_clash_factor: float | None = None

    def __post_init__(self):
        ref = np.asarray(self.reference_positions, dtype=np.float64)
        n = ref.shape[0]
        self._bonds = np.asarray(self.bonds, dtype=np.int64).reshape(-1, 2)
        self._ref_lengths = np.linalg.norm(ref[self._bonds[:, 0]] - ref[self._bonds[:, 1]], axis=-1)
        nonbonded = np.triu(np.ones((n, n), dtype=bool), k=1)
        nonbonded[self._bonds[:, 0], self._bonds[:, 1]] = False
        nonbonded[self._bonds[:, 1], self._bonds[:, 0]] = False
        self._pairs = np.argwhere(nonbonded)
        self._vdw_pairs, self._vdw_limit = np.zeros((0, 2), np.int64), np.zeros(0)
        if self.vdw_clash_factor is not None:
            if self.atomic_numbers is None:
                raise ValueError("vdw_clash_factor needs the atomic numbers")
            radius = np.array([_VDW_RADIUS_NM.get(int(z), 0.2) for z in self.atomic_numbers])
            adjacency = np.zeros((n, n), dtype=bool)
            adjacency[self._bonds[:, 0], self._bonds[:, 1]] = adjacency[self._bonds[:, 1], self._bonds[:, 0]] = True
            within_two = adjacency | ((adjacency.astype(int) @ adjacency.astype(int)) > 0) | np.eye(n, dtype=bool)
            far = np.triu(~within_two, k=1)
            self._vdw_pairs = np.argwhere(far)
            self._vdw_limit = self.vdw_clash_factor * (radius[self._vdw_pairs[:, 0]] + radius[self._vdw_pairs[:, 1]])

    @classmethod
    def for_system(cls, system, **kwargs) -> "GeometryCheck":
        return cls(system.bonds, system.positions, **kwargs)

    def __call__(self, positions: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Validity ``[B]`` and a reason per geometry (``""`` when valid) for ``[B, N, 3]`` nm."""
        xyz = np.asarray(positions, dtype=np.float64)
        if xyz.ndim == 2:
            xyz = xyz[None]
        valid = np.ones(len(xyz), dtype=bool)
        reasons = [""] * len(xyz)
        finite = np.isfinite(xyz).all(axis=(1, 2))
        for b in np.flatnonzero(~finite):
            valid[b] = False
            reasons[b] = "non-finite coordinates"
        safe = np.where(finite[:, None, None], xyz, 0.0)
        if len(self._bonds):
            lengths = np.linalg.norm(safe[:, self._bonds[:, 0]] - safe[:, self._bonds[:, 1]], axis=-1)
            ratio = lengths / self._ref_lengths
            broken = (ratio > self.max_bond_ratio) | (ratio < self.min_bond_ratio)
            for b in np.flatnonzero(broken.any(axis=1) & valid):
                k = int(np.argmax(np.abs(np.log(ratio[b]))))
                i, j = self._bonds[k]
                valid[b] = False
                reasons[b] = f"bond {i}-{j} at {ratio[b, k]:.2f}x its reference length"
        if len(self._pairs):
            d = np.linalg.norm(safe[:, self._pairs[:, 0]] - safe[:, self._pairs[:, 1]], axis=-1)
            clash = d < self.min_distance
            for b in np.flatnonzero(clash.any(axis=1) & valid):
                k = int(np.argmin(d[b]))
                i, j = self._pairs[k]
                valid[b] = False
                reasons[b] = f"atoms {i} and {j} clash at {d[b, k]:.3f} nm"
        if len(self._vdw_pairs):
            d = np.linalg.norm(safe[:, self._vdw_pairs[:, 0]] - safe[:, self._vdw_pairs[:, 1]], axis=-1)
            overlap = d / self._vdw_limit
            for b in np.flatnonzero((overlap < 1.0).any(axis=1) & valid):
                k = int(np.argmin(overlap[b]))
                i, j = self._vdw_pairs[k]
                valid[b] = False
                reasons[b] = (f"atoms {i} and {j} overlap at {d[b, k]:.3f} nm "
                              f"(< {self.vdw_clash_factor} x their van der Waals radii)")
        return valid, reasons
