"""Build an oracle from a kind name and options, as a YAML config gives them."""

from __future__ import annotations

from .analytic import AnalyticOracle
from .ase_oracle import ASEOracle
from .base import Oracle
from .openmm_oracle import OpenMMOracle
from .xtb import XTBOracle

__all__ = ["make_oracle"]

_OPTIONS = {
    "openmm": ("platform", "platform_properties", "name"),
    "xtb": ("charge", "multiplicity", "method", "accuracy", "max_iterations", "electronic_temperature",
            "threads", "name"),
    "ase": ("calculator", "calculator_options", "force_consistent", "name"),
    "analytic": ("name",),
}


def make_oracle(kind: str, system=None, **options) -> Oracle:
    """An oracle of ``kind`` for ``system``.

    Parameters
    ----------
    kind : {"openmm", "xtb", "ase", "analytic"}
        ``openmm``: the system's own force field (:class:`OpenMMOracle`); ``xtb``: GFN-xTB
        via tblite (:class:`XTBOracle`); ``ase``: an ASE calculator (:class:`ASEOracle`);
        ``analytic``: the exact potential of a 2D toy (:meth:`AnalyticOracle.for_toy`).
    system : MolecularSystem or str
        The system (or its name for :func:`openmm_adv.systems.get_system`).
    **options
        Keyword arguments of that oracle: ``openmm``: platform, platform_properties, name;
        ``xtb``: charge, multiplicity, method, accuracy, max_iterations,
        electronic_temperature, threads, name; ``ase``: calculator (required; a factory or
        ``"module:callable"`` such as ``"ase.calculators.emt:EMT"``), calculator_options,
        force_consistent, name; ``analytic``: name.

    Raises
    ------
    ValueError
        For an unknown kind or option, or a missing system or calculator.
    """
    if kind not in _OPTIONS:
        raise ValueError(f"unknown oracle kind {kind!r}; choose one of {sorted(_OPTIONS)}")
    unknown = sorted(set(options) - set(_OPTIONS[kind]))
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r} for oracle kind {kind!r}; allowed options: {list(_OPTIONS[kind])}"
        )
    if system is None:
        raise ValueError(f"oracle kind {kind!r} needs a system (a MolecularSystem or a system name)")
    if isinstance(system, str):
        from ..systems import get_system

        system = get_system(system)
    if kind == "openmm":
        return OpenMMOracle.from_molecular_system(system, **options)
    if kind == "xtb":
        # the system's own charge and multiplicity (an extxyz header, the system section) unless overridden
        defaults = {"charge": getattr(system, "charge", 0), "multiplicity": getattr(system, "multiplicity", 1)}
        return XTBOracle(system.atomic_numbers, **{**defaults, **options})
    if kind == "ase":
        if "calculator" not in options:
            raise ValueError(
                "oracle kind 'ase' needs the option 'calculator': a callable returning an ASE "
                "calculator or its 'module:callable' name, e.g. 'ase.calculators.emt:EMT'"
            )
        return ASEOracle(atomic_numbers=system.atomic_numbers, **options)
    return AnalyticOracle.for_toy(system, **options)
