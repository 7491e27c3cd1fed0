"""Python functions as the ground truth, and exact labels for the 2D toy potentials."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import openmm

from .base import Oracle

if TYPE_CHECKING:
    from ..systems.base import MolecularSystem

__all__ = ["AnalyticOracle", "ExpressionPotential"]


class AnalyticOracle(Oracle):
    """A Python function as the ground truth.

    Parameters
    ----------
    energy_forces_fn : callable
        Maps positions ``[N, 3]`` (nm) to ``(energy in kJ/mol, forces [N, 3] in kJ/mol/nm)``.
        It must be picklable (a module-level function or a picklable callable object, not a
        lambda or closure) for process pools.
    n_atoms : int
    name : str
        Provenance name of the labels.
    """

    def __init__(self, energy_forces_fn: Callable[[np.ndarray], tuple[float, np.ndarray]], n_atoms: int,
                 name: str = "analytic"):
        if not callable(energy_forces_fn):
            raise TypeError(f"energy_forces_fn must be callable, got {type(energy_forces_fn).__name__}")
        super().__init__(name, n_atoms)
        self.energy_forces_fn = energy_forces_fn

    @classmethod
    def for_toy(cls, system: "MolecularSystem", name: str = "analytic") -> "AnalyticOracle":
        """Exact labels for a one-particle toy (:func:`~openmm_adv.systems.double_well`,
        :func:`~openmm_adv.systems.mueller_brown`).

        The energy is the expression of the toy's reference ``CustomExternalForce`` (the 2D
        potential plus its z restraint); the forces are its symbolic gradient (sympy), so both
        agree with OpenMM to rounding without going through OpenMM.
        """
        reference = system.create_reference_system()
        forces = [reference.getForce(i) for i in range(reference.getNumForces())]
        if (
            reference.getNumParticles() != 1
            or len(forces) != 1
            or not isinstance(forces[0], openmm.CustomExternalForce)
            or forces[0].getNumParticles() != 1
            or forces[0].getNumGlobalParameters() != 0
            or forces[0].getNumPerParticleParameters() != 0
        ):
            raise ValueError(
                f"for_toy needs a one-particle system whose potential is a single parameter-free "
                f"CustomExternalForce; {system.name!r} is not one: use OpenMMOracle.from_molecular_system"
            )
        return cls(ExpressionPotential(forces[0].getEnergyFunction()), 1, name)

    def _energy_forces(self, positions_nm: np.ndarray) -> tuple[float, np.ndarray]:
        return self.energy_forces_fn(positions_nm)

    def descriptor(self) -> dict:
        """The potential: an :class:`ExpressionPotential`'s expression, else the function's
        ``module:qualname``."""
        fn = self.energy_forces_fn
        if isinstance(fn, ExpressionPotential):
            return {"kind": "analytic", "expression": fn.expression}
        target = fn if hasattr(fn, "__qualname__") else type(fn)
        return {"kind": "analytic", "function": f"{target.__module__}:{target.__qualname__}"}


class ExpressionPotential:
    """Energy and exact forces of one particle from an OpenMM-style expression in x, y, z.

    Parameters
    ----------
    expression : str
        Lepton syntax as in ``CustomExternalForce`` (``^`` for powers; exp, sin, sqrt, ...),
        x, y, z in nm, energy in kJ/mol.

    Notes
    -----
    Picklable: only the expression travels; sympy compiles it on first call in each process.
    """

    def __init__(self, expression: str):
        self.expression = str(expression)
        self._compiled = None

    def _compile(self):
        import sympy
        from sympy.parsing.sympy_parser import convert_xor, parse_expr, standard_transformations

        x, y, z = sympy.symbols("x y z", real=True)
        energy = parse_expr(self.expression, local_dict={"x": x, "y": y, "z": z},
                            transformations=standard_transformations + (convert_xor,))
        unknown = energy.free_symbols - {x, y, z}
        if unknown:
            raise ValueError(f"expression {self.expression!r} has symbols other than x, y, z: {sorted(map(str, unknown))}")
        gradient = [sympy.diff(energy, v) for v in (x, y, z)]
        # "math" evaluates scalars in plain double precision without numpy overhead.
        self._compiled = (sympy.lambdify((x, y, z), energy, "math"), sympy.lambdify((x, y, z), gradient, "math"))
        return self._compiled

    def __call__(self, positions_nm: np.ndarray) -> tuple[float, np.ndarray]:
        energy_fn, gradient_fn = self._compiled or self._compile()
        x, y, z = (float(c) for c in np.asarray(positions_nm, dtype=np.float64).reshape(3))
        return float(energy_fn(x, y, z)), -np.asarray(gradient_fn(x, y, z), dtype=np.float64).reshape(1, 3)

    def __getstate__(self):
        return {"expression": self.expression, "_compiled": None}

    def __repr__(self) -> str:
        return f"ExpressionPotential({self.expression!r})"
