"""Covalent bonds of a molecule from its geometry, for structures that carry no bond list."""

from __future__ import annotations

import numpy as np

__all__ = ["COVALENT_RADIUS_NM", "bonds_from_distances"]

#: Single-bond covalent radii (nm), Cordero et al., Dalton Trans. 2832 (2008); sp3 carbon.
COVALENT_RADIUS_NM = {
    1: 0.031, 2: 0.028, 3: 0.128, 4: 0.096, 5: 0.084, 6: 0.076, 7: 0.071, 8: 0.066, 9: 0.057, 10: 0.058,
    11: 0.166, 12: 0.141, 13: 0.121, 14: 0.111, 15: 0.107, 16: 0.105, 17: 0.102, 18: 0.106, 19: 0.203,
    20: 0.176, 26: 0.132, 29: 0.132, 30: 0.122, 33: 0.119, 34: 0.120, 35: 0.120, 53: 0.139,
}

#: Two atoms are bonded when closer than this times the sum of their covalent radii: wide enough
#: for stretched bonds in thermal geometries, narrow enough to miss 1-3 neighbours (a C-H bond
#: of 0.109 nm is 1.02 times its radius sum, the H...H of a methyl group 1.5 times).
BOND_TOLERANCE = 1.25


def bonds_from_distances(atomic_numbers, positions, tolerance: float = BOND_TOLERANCE,
                         only_atoms=None) -> list[tuple[int, int]]:
    """Covalent bonds ``(i, j)``, ``i < j``, of a geometry by its interatomic distances.

    Parameters
    ----------
    atomic_numbers : sequence of int
        ``[N]`` elements.
    positions : array_like
        ``[N, 3]`` in nm (a minimum or a thermal geometry: bonds are read from it), or frames
        ``[F, N, 3]``, whose median distances are used (up to 20 frames, evenly spaced).
    tolerance : float
        Bonded when ``d < tolerance * (r_i + r_j)``.
    only_atoms : sequence of int, optional
        Only bonds with at least one atom in this set (to complete a topology whose other
        atoms already have their bonds).

    Raises
    ------
    ValueError
        For an element without a tabulated radius (the element is named).
    """
    numbers = np.asarray(atomic_numbers, dtype=np.int64)
    xyz = np.asarray(positions, dtype=np.float64).reshape(-1, len(numbers), 3)
    missing = sorted({int(z) for z in numbers if int(z) not in COVALENT_RADIUS_NM})
    if missing:
        raise ValueError(f"no covalent radius for atomic number(s) {missing}: pass the bonds explicitly (PDB "
                         f"CONECT records, a mol2 or PDBx file, the OpenMM topology)")
    radii = np.array([COVALENT_RADIUS_NM[int(z)] for z in numbers])
    frames = xyz[np.linspace(0, len(xyz) - 1, min(len(xyz), 20)).astype(int)]
    distance = np.median(np.linalg.norm(frames[:, :, None] - frames[:, None], axis=-1), axis=0)
    bonded = distance < tolerance * (radii[:, None] + radii[None])
    bonded &= np.triu(np.ones_like(bonded), k=1)
    if only_atoms is not None:
        mask = np.zeros(len(numbers), dtype=bool)
        mask[np.asarray(list(only_atoms), dtype=np.int64)] = True
        bonded &= mask[:, None] | mask[None]
    return [(int(i), int(j)) for i, j in np.argwhere(bonded)]
