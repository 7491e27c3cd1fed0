"""Conversion factors between the units external codes use and openmm-adv's (nm, kJ/mol).

Derived from :mod:`openmm.unit` so that every part of the project agrees on one set of
constants (CODATA 2018). Oracles convert at their boundary with these and nowhere else.
"""

from __future__ import annotations

from openmm import unit

__all__ = [
    "ANGSTROM_TO_NM",
    "BOHR_TO_NM",
    "BOLTZMANN_HARTREE_PER_KELVIN",
    "EV_TO_KJ_PER_MOL",
    "HARTREE_TO_KJ_PER_MOL",
]

_KJ_PER_MOL = unit.kilojoule_per_mole

HARTREE_TO_KJ_PER_MOL = (1.0 * unit.hartree * unit.AVOGADRO_CONSTANT_NA).value_in_unit(_KJ_PER_MOL)
EV_TO_KJ_PER_MOL = (
    1.0 * unit.elementary_charge * unit.volt * unit.AVOGADRO_CONSTANT_NA
).value_in_unit(_KJ_PER_MOL)
BOHR_TO_NM = unit.bohr.conversion_factor_to(unit.nanometer)
ANGSTROM_TO_NM = unit.angstrom.conversion_factor_to(unit.nanometer)
BOLTZMANN_HARTREE_PER_KELVIN = (
    unit.MOLAR_GAS_CONSTANT_R * unit.kelvin
).value_in_unit(_KJ_PER_MOL) / HARTREE_TO_KJ_PER_MOL
