"""Ammonia with a model force field that has the umbrella-inversion double well."""

from __future__ import annotations

from .base import MolecularSystem

__all__ = ["ammonia"]


def ammonia() -> MolecularSystem:
    """NH3 with harmonic N-H bonds and a quartic double well in the pyramid height.

    The shipped definition ``data/ammonia.yaml`` (made by ``scripts/make_builtin_systems.py``):
    ``k_b/2 (r - r0)^2`` for each N-H, ``k_hh/2 (d_HH - d0)^2`` for each H-H pair, and
    ``V (h^2/h0^2 - 1)^2`` in the height h of N above the plane of the three H, so the planar
    transition state lies ``V = 24.3 kJ/mol`` above the pyramids (the measured barrier), all
    fitted to the shipped geometry so that it is the minimum. An analytic stand-in for the DFT
    surface of the papers; GFN2-xTB labels come through the ``xtb`` oracle.
    """
    from .files import get_system

    return get_system("ammonia")
