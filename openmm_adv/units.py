"""Conversions at the API boundary.

Everything inside openmm-adv is in OpenMM's units: nm, kJ/mol, ps. Public functions accept
either plain numbers (taken to be in those units) or ``openmm.unit`` quantities, which are
converted here and nowhere else.
"""

from __future__ import annotations

import numpy as np
from openmm import unit

__all__ = ["to_nm", "to_kj_per_mol", "thermal_energy"]


def _strip(value, target, what: str):
    if unit.is_quantity(value):
        if not value.unit.is_compatible(target):
            raise ValueError(
                f"{what} has units of {value.unit}, which cannot be converted to {target}; "
                f"pass a plain number in {target} or a compatible openmm.unit quantity"
            )
        return value.value_in_unit(target)
    return value


def to_nm(value) -> np.ndarray | float:
    """Return ``value`` in nanometres (plain numbers and arrays are assumed to be in nm)."""
    stripped = _strip(value, unit.nanometer, "a length")
    if isinstance(stripped, (list, tuple)) and stripped and hasattr(stripped[0], "__len__"):
        # openmm's list-of-Vec3 positions
        return np.asarray([[float(c) for c in v] for v in stripped], dtype=np.float64)
    if isinstance(stripped, (int, float)):
        return float(stripped)
    return np.asarray(stripped, dtype=np.float64)


def to_kj_per_mol(value) -> float:
    """Return an energy in kJ/mol (plain numbers are assumed to be kJ/mol)."""
    stripped = _strip(value, unit.kilojoule_per_mole, "an energy")
    return float(stripped)


def thermal_energy(value) -> float:
    """Return kT in kJ/mol from an energy or from a temperature.

    Parameters
    ----------
    value : float or openmm.unit.Quantity
        An energy (plain numbers are kJ/mol; ``5*unit.kilocalorie_per_mole`` works) or a
        temperature (``300*unit.kelvin``), converted with the molar gas constant.
    """
    if unit.is_quantity(value) and value.unit.is_compatible(unit.kelvin):
        kT = unit.MOLAR_GAS_CONSTANT_R * value
        return float(kT.value_in_unit(unit.kilojoule_per_mole))
    kT = to_kj_per_mol(value)
    if not np.isfinite(kT) or kT <= 0:
        raise ValueError(f"kT must be a positive energy, got {kT} kJ/mol")
    return kT
