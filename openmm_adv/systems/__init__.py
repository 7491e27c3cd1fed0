"""Molecular and toy systems with their ground-truth OpenMM potentials."""

from .alanine import BASINS_DEG, PHI_ATOMS, PSI_ATOMS, alanine_dipeptide
from .ammonia import ammonia
from .base import CollectiveVariable, MolecularSystem
from .toy import double_well, mueller_brown, toy_energy

__all__ = [
    "BASINS_DEG",
    "PHI_ATOMS",
    "PSI_ATOMS",
    "CollectiveVariable",
    "MolecularSystem",
    "alanine_dipeptide",
    "ammonia",
    "double_well",
    "get_system",
    "mueller_brown",
    "toy_energy",
]

_REGISTRY = {
    "alanine_dipeptide": alanine_dipeptide,
    "ammonia": ammonia,
    "double_well": double_well,
    "mueller_brown": mueller_brown,
}


def get_system(name: str, **kwargs) -> MolecularSystem:
    """Build a system by name (``alanine_dipeptide``, ``ammonia``, ``double_well``, ``mueller_brown``)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown system {name!r}; choose one of {sorted(_REGISTRY)}") from None
    return factory(**kwargs)
