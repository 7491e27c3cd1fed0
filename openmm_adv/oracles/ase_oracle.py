"""Any ASE calculator as the ground truth (optional: ``pip install 'openmm-adv[ase]'``)."""

from __future__ import annotations

import importlib
from typing import Any, Callable

import numpy as np

from .._errors import first_line
from ._units import ANGSTROM_TO_NM, EV_TO_KJ_PER_MOL
from .base import Oracle

__all__ = ["ASEOracle", "resolve_callable"]


def _import_ase():
    try:
        import ase
    except ImportError as exc:
        raise ImportError("ASE is not installed: pip install 'openmm-adv[ase]'") from exc
    return ase


def resolve_callable(path: str) -> Callable:
    """The object named by ``"package.module:attribute"`` (e.g. ``"ase.calculators.emt:EMT"``)."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected 'package.module:callable' (e.g. 'ase.calculators.emt:EMT'), got {path!r}")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} named in {path!r}: {exc}") from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r} (from {path!r})") from None
    if not callable(obj):
        raise ValueError(f"{path!r} is not callable")
    return obj


def _qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _is_calculator_instance(obj: Any) -> bool:
    # A calculator class (EMT) is a factory; an instance is recognised by ASE's interface.
    return not isinstance(obj, type) and hasattr(obj, "get_potential_energy") and hasattr(obj, "get_forces")


class ASEOracle(Oracle):
    """Energies and forces from an ASE calculator.

    Parameters
    ----------
    calculator : ase Calculator, callable or str
        A calculator instance; or a zero-argument callable returning one (a class such as
        ``EMT`` works); or ``"package.module:callable"`` naming such a callable. A factory or
        a name is built on first use in each process; prefer one for process pools, because
        many calculator instances (those holding files, sockets or compiled models) cannot be
        pickled to a worker.
    atomic_numbers : array_like of int
        ``[N]``.
    name : str
        Provenance name of the labels.
    calculator_options : dict, optional
        Keyword arguments for the factory (e.g. ``{"sigma": 3.4}`` for LennardJones), so a
        YAML config can give them next to a calculator name.
    force_consistent : bool
        Label with the energy the forces are the gradient of (``free_energy`` for a smeared
        DFT calculation) instead of ASE's default extrapolated energy; the calculator must
        provide it.

    Notes
    -----
    Structures are non-periodic ``ase.Atoms`` (positions converted nm -> Angstrom); energies
    (eV) and forces (eV/Angstrom) are converted to kJ/mol and kJ/mol/nm.
    """

    _transient = ("_calculator",)

    def __init__(self, calculator, atomic_numbers, name: str = "ase", calculator_options: dict | None = None,
                 force_consistent: bool = False):
        _import_ase()
        numbers = np.asarray(atomic_numbers)
        if numbers.ndim != 1 or numbers.size == 0 or not np.issubdtype(numbers.dtype, np.integer):
            raise ValueError(f"atomic_numbers must be a non-empty 1D integer array, got {numbers!r}")
        if isinstance(calculator, str):
            resolve_callable(calculator)  # fail now, not once per structure in the workers
        elif not (_is_calculator_instance(calculator) or callable(calculator)):
            raise TypeError(
                f"calculator must be an ASE calculator, a callable returning one, or a "
                f"'module:callable' string, got {type(calculator).__name__}"
            )
        if calculator_options and _is_calculator_instance(calculator):
            raise ValueError("calculator_options apply to a calculator factory, not to a calculator instance")
        super().__init__(name, numbers.size)
        self.atomic_numbers = numbers.astype(np.int64)
        self.calculator_options = dict(calculator_options or {})
        self.force_consistent = bool(force_consistent)
        if _is_calculator_instance(calculator):
            self._factory = None
            self._instance = calculator
        else:
            self._factory = calculator
            self._instance = None

    def _get_calculator(self):
        if self._instance is not None:
            return self._instance
        if self._calculator is None:
            factory = resolve_callable(self._factory) if isinstance(self._factory, str) else self._factory
            calc = factory(**self.calculator_options)
            if not _is_calculator_instance(calc):
                raise TypeError(f"the calculator factory returned {type(calc).__name__}, not an ASE calculator")
            self._calculator = calc
        return self._calculator

    def __getstate__(self):
        if self._instance is not None:
            import pickle

            try:
                pickle.dumps(self._instance)
            except Exception as exc:
                # The bare pickling error names an ASE internal (often a lambda); say what to do.
                raise TypeError(
                    f"this ASEOracle holds a {type(self._instance).__name__} instance that cannot be "
                    f"pickled ({first_line(exc)}); to label in worker processes pass a factory "
                    f"instead, e.g. ASEOracle(EMT, ...) or ASEOracle('ase.calculators.emt:EMT', ...)"
                ) from exc
        return super().__getstate__()

    def descriptor(self) -> dict:
        """The calculator (its ``module:callable`` name, or an instance's class and
        ``parameters``), its options, and which energy is taken."""
        if self._instance is not None:
            calculator = _qualified_name(type(self._instance))
            parameters = dict(getattr(self._instance, "parameters", {}) or {})
        else:
            calculator = self._factory if isinstance(self._factory, str) else _qualified_name(self._factory)
            parameters = {}
        out = {"kind": "ase", "calculator": calculator, "calculator_options": self.calculator_options,
               "force_consistent": self.force_consistent}
        if parameters:
            out["parameters"] = parameters
        return out

    def _energy_forces(self, positions_nm: np.ndarray) -> tuple[float, np.ndarray]:
        from ase import Atoms

        atoms = Atoms(numbers=self.atomic_numbers, positions=positions_nm / ANGSTROM_TO_NM)
        atoms.calc = self._get_calculator()
        energy_ev = atoms.get_potential_energy(force_consistent=self.force_consistent)
        forces_ev_per_a = atoms.get_forces()
        return energy_ev * EV_TO_KJ_PER_MOL, np.asarray(forces_ev_per_a) * (EV_TO_KJ_PER_MOL / ANGSTROM_TO_NM)
