"""Rotatable bonds of a molecule, rigid rotations about them, and the torques that drive them.

A torsion-space move turns one side of a bond rigidly about the bond axis: bond lengths and
angles are kept exactly and only the dihedral across that bond changes, by exactly the
rotation angle. The derivative of any function of the positions with respect to that angle is
the torque of its gradient about the axis::

    dF/dtheta = sum_(i moving) grad_i F . (a x (x_i - p))

with ``a`` the unit bond axis and ``p`` a point on it, so a force computed by OpenMM on every
atom gives the gradient in torsion space with one cross product per atom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Rotor", "find_rotors", "rotors_for_dihedrals", "rotate", "torques", "dihedral_gradient"]


@dataclass(frozen=True)
class Rotor:
    """A rotation about the bond ``axis = (j, k)`` that moves the atoms ``moving`` rigidly.

    ``dihedral`` (i, j, k, l) is the dihedral the rotation changes; turning the moving atoms by
    ``sign * theta`` about the axis j -> k changes it by ``theta`` (:func:`rotate` does that).
    """

    axis: tuple[int, int]
    moving: np.ndarray
    dihedral: tuple[int, int, int, int]
    sign: float = 1.0

    @property
    def name(self) -> str:
        return "-".join(str(a) for a in self.dihedral)


def _neighbours(bonds, n_atoms: int) -> list[set[int]]:
    graph: list[set[int]] = [set() for _ in range(n_atoms)]
    for a, b in np.asarray(bonds, dtype=np.int64).reshape(-1, 2):
        graph[int(a)].add(int(b))
        graph[int(b)].add(int(a))
    return graph


def _side(graph: list[set[int]], start: int, blocked: int) -> set[int]:
    """Atoms reachable from ``start`` without crossing the bond to ``blocked``."""
    seen, stack = {start}, [start]
    while stack:
        atom = stack.pop()
        for other in graph[atom]:
            if other not in seen and not (atom == start and other == blocked):
                seen.add(other)
                stack.append(other)
    return seen


def _rotor(graph, atomic_numbers, j: int, k: int, i: int | None = None, l: int | None = None) -> Rotor | None:
    """The rotor about bond j-k (None if the bond is in a ring); the smaller side moves."""
    side_k = _side(graph, k, j)
    if j in side_k:
        return None
    side_j = set(range(len(graph))) - side_k
    i = i if i is not None else min(a for a in graph[j] if a != k) if len(graph[j]) > 1 else None
    l = l if l is not None else min(a for a in graph[k] if a != j) if len(graph[k]) > 1 else None
    if i is None or l is None:
        return None
    # Moving the k side by +theta about j -> k turns the dihedral i-j-k-l by +theta; moving the
    # j side by +theta about the same axis turns it by -theta.
    if len(side_k) <= len(side_j):
        moving, sign = side_k - {k}, 1.0
    else:
        moving, sign = side_j - {j}, -1.0
    return Rotor((j, k), np.array(sorted(moving), dtype=np.int64), (int(i), j, k, int(l)), sign)


def _is_amide(graph, atomic_numbers, j: int, k: int) -> bool:
    """A C(=O)-N bond: partial double bond, its trans/cis barrier is not a conformational move."""
    for c, n in ((j, k), (k, j)):
        if atomic_numbers[c] == 6 and atomic_numbers[n] == 7:
            if any(atomic_numbers[o] in (8, 16) and len(graph[o]) == 1 for o in graph[c]):
                return True
    return False


def find_rotors(bonds, atomic_numbers, include_terminal: bool = False, include_amides: bool = False) -> list[Rotor]:
    """The rotatable bonds of a molecule, from its bond graph.

    A bond is rotatable when it is not in a ring and both of its atoms have other neighbours.
    By default terminal groups whose far side carries only hydrogens (methyl, hydroxyl, amine
    rotors) and amide C(=O)-N bonds are left out: turning a methyl group teaches little, and a
    peptide bond flip is a cis/trans isomerisation, not a conformational change. For alanine
    dipeptide this leaves exactly the backbone phi and psi bonds.

    Parameters
    ----------
    bonds : sequence of (int, int)
        Covalent bonds (``MolecularSystem.bonds``, from the topology).
    atomic_numbers : sequence of int
    include_terminal, include_amides : bool
        Keep those rotors too.
    """
    z = np.asarray(atomic_numbers, dtype=np.int64)
    graph = _neighbours(bonds, len(z))
    rotors = []
    for j, k in sorted({tuple(sorted((int(a), int(b)))) for a, b in np.asarray(bonds).reshape(-1, 2)}):
        if len(graph[j]) < 2 or len(graph[k]) < 2:
            continue
        if not include_amides and _is_amide(graph, z, j, k):
            continue
        if not include_terminal:
            heavy_beyond_j = [a for a in graph[j] if a != k and z[a] > 1]
            heavy_beyond_k = [a for a in graph[k] if a != j and z[a] > 1]
            if not heavy_beyond_j or not heavy_beyond_k:
                continue
        # Dihedral atoms: prefer heavy neighbours, so the dihedral is the chemist's one.
        i = min((a for a in graph[j] if a != k), key=lambda a: (z[a] == 1, a))
        l = min((a for a in graph[k] if a != j), key=lambda a: (z[a] == 1, a))
        rotor = _rotor(graph, z, j, k, i, l)
        if rotor is not None:
            rotors.append(rotor)
    return rotors


def rotors_for_dihedrals(dihedrals: Sequence[Sequence[int]], bonds, n_atoms: int) -> list[Rotor]:
    """One rotor per given dihedral (i, j, k, l): a rotation about its central bond j-k.

    Raises
    ------
    ValueError
        A dihedral whose central atoms are not bonded, or whose central bond is in a ring.
    """
    graph = _neighbours(bonds, n_atoms)
    rotors = []
    for dihedral in dihedrals:
        i, j, k, l = (int(a) for a in dihedral)
        if k not in graph[j]:
            raise ValueError(f"dihedral {dihedral}: atoms {j} and {k} are not bonded, so there is no bond to turn")
        rotor = _rotor(graph, None, j, k, i, l)
        if rotor is None:
            raise ValueError(f"dihedral {dihedral}: bond {j}-{k} is in a ring and cannot be turned rigidly")
        rotors.append(rotor)
    return rotors


def _axes(positions: np.ndarray, rotor: Rotor) -> tuple[np.ndarray, np.ndarray]:
    """Unit axes ``[B, 3]`` (j -> k) and pivots ``[B, 3]`` (atom k) of one rotor."""
    j, k = rotor.axis
    axis = positions[:, k] - positions[:, j]
    return axis / np.linalg.norm(axis, axis=-1, keepdims=True), positions[:, k]


def rotate(positions: np.ndarray, rotors: Sequence[Rotor], angles: np.ndarray) -> np.ndarray:
    """Turn each rotor's dihedral by ``angles [B, T]`` (radians), rotor after rotor.

    The moving atoms turn rigidly about the bond; the rotor's dihedral (and any dihedral about
    the same bond) changes by exactly the angle. Positions ``[B, N, 3]``; returns a new array. Each rotation uses the bond axis as it is after
    the rotations before it, so the result is exact for any angles (the rotations of different
    bonds do not commute, but each one is rigid).
    """
    x = np.array(positions, dtype=np.float64, copy=True)
    angles = np.asarray(angles, dtype=np.float64).reshape(len(x), len(rotors))
    for t, rotor in enumerate(rotors):
        axis, pivot = _axes(x, rotor)
        r = x[:, rotor.moving] - pivot[:, None]
        turn = rotor.sign * angles[:, t]
        cos, sin = np.cos(turn)[:, None, None], np.sin(turn)[:, None, None]
        a = axis[:, None, :]
        # Rodrigues: r cos + (a x r) sin + a (a . r)(1 - cos)
        x[:, rotor.moving] = (pivot[:, None] + r * cos + np.cross(a, r) * sin
                              + a * np.sum(a * r, axis=-1, keepdims=True) * (1.0 - cos))
    return x


def torques(positions: np.ndarray, gradient: np.ndarray, rotors: Sequence[Rotor]) -> np.ndarray:
    """Derivatives ``[B, T]`` of a function with gradient ``[B, N, 3]`` with respect to each
    rotor's dihedral (the torque about the bond axis), the angles of :func:`rotate`."""
    x = np.asarray(positions, dtype=np.float64)
    g = np.asarray(gradient, dtype=np.float64)
    out = np.empty((len(x), len(rotors)))
    for t, rotor in enumerate(rotors):
        axis, pivot = _axes(x, rotor)
        r = x[:, rotor.moving] - pivot[:, None]
        out[:, t] = rotor.sign * np.sum(g[:, rotor.moving] * np.cross(axis[:, None, :], r), axis=(1, 2))
    return out


def dihedral_gradient(positions: np.ndarray, atoms: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Dihedral angles ``[B]`` (radians, IUPAC sign, as mdtraj) and their gradients ``[B, 4, 3]``
    with respect to the four atoms (Blondel & Karplus, J. Comput. Chem. 17, 1132, 1996)."""
    x = np.asarray(positions, dtype=np.float64)
    p0, p1, p2, p3 = (x[:, a] for a in atoms)
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    b2n = np.linalg.norm(b2, axis=-1)
    angle = np.arctan2(b2n * np.sum(b1 * n2, -1), np.sum(n1 * n2, -1))
    f, g, h = p0 - p1, p1 - p2, p3 - p2
    a, b = np.cross(f, g), np.cross(h, g)
    a2, b2sq = np.sum(a * a, -1)[:, None], np.sum(b * b, -1)[:, None]
    gn = b2n[:, None]
    fg, hg = np.sum(f * g, -1)[:, None], np.sum(h * g, -1)[:, None]
    d0 = -gn / a2 * a
    d3 = gn / b2sq * b
    d1 = -d0 + fg / (a2 * gn) * a - hg / (b2sq * gn) * b
    d2 = -d3 - fg / (a2 * gn) * a + hg / (b2sq * gn) * b
    return angle, np.stack([d0, d1, d2, d3], axis=1)
