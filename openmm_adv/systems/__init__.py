"""Molecular and toy systems with their ground-truth OpenMM potentials.

Every system, the shipped ones included, is a structure with an optional reference potential
and collective variables (:func:`load_system`); the shipped definitions live in ``data/``.
"""

from .alanine import BASINS_DEG, PHI_ATOMS, PSI_ATOMS, alanine_dipeptide
from .ammonia import ammonia
from .base import CollectiveVariable, MolecularSystem
from .files import builtin_systems, get_system, load_system, parse_cvs
from .toy import double_well, mueller_brown, toy_energy

__all__ = [
    "BASINS_DEG",
    "PHI_ATOMS",
    "PSI_ATOMS",
    "CollectiveVariable",
    "MolecularSystem",
    "alanine_dipeptide",
    "ammonia",
    "builtin_systems",
    "double_well",
    "get_system",
    "load_system",
    "mueller_brown",
    "parse_cvs",
    "toy_energy",
]
