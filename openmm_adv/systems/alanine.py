"""Alanine dipeptide (ACE-ALA-NME) in vacuum with Amber ff14SB, the project's benchmark."""

from __future__ import annotations

from .base import MolecularSystem

__all__ = ["alanine_dipeptide", "PHI_ATOMS", "PSI_ATOMS", "BASINS_DEG"]

PHI_ATOMS = (4, 6, 8, 14)
PSI_ATOMS = (6, 8, 14, 16)

#: Approximate vacuum basin centres (phi, psi) in degrees; the reference free-energy surface
#: decides the exact ones.
BASINS_DEG = {
    "C7eq": (-80.0, 75.0),
    "C5": (-150.0, 160.0),
    "alpha_R": (-70.0, -40.0),
    "C7ax": (70.0, -70.0),
    "alpha_L": (60.0, 45.0),
}


def alanine_dipeptide() -> MolecularSystem:
    """Alanine dipeptide in vacuum, Amber ff14SB (``amber14-all.xml``), no constraints.

    The shipped definition ``data/alanine_dipeptide.yaml``: the 22-atom structure (an
    Amber-minimised C7eq geometry, ``scripts/build_ala2_pdb.py``), the force field, and the
    collective variables ``phi`` (atoms 4-6-8-14) and ``psi`` (6-8-14-16), in radians.
    """
    from .files import get_system

    return get_system("alanine_dipeptide")
