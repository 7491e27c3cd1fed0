"""Analytic two-dimensional potentials as one-particle OpenMM systems.

The particle moves in x-y; a stiff harmonic term keeps z at 0. Coordinates are in nm and
energies in kJ/mol, so the toys run through exactly the same code paths as molecules.
"""

from __future__ import annotations

import numpy as np
import openmm
from openmm import app

from .base import CollectiveVariable, MolecularSystem

__all__ = ["double_well", "mueller_brown", "toy_energy"]

_Z_RESTRAINT = 1000.0  # kJ/mol/nm^2


def _one_particle_system(name: str, expression: str, start, mass: float = 12.0) -> MolecularSystem:
    topology = app.Topology()
    residue = topology.addResidue("TOY", topology.addChain())
    topology.addAtom("P", app.element.carbon, residue)

    def factory() -> openmm.System:
        system = openmm.System()
        system.addParticle(mass)
        force = openmm.CustomExternalForce(f"{expression} + {0.5 * _Z_RESTRAINT}*z^2")
        force.addParticle(0, [])
        system.addForce(force)
        return system

    return MolecularSystem(
        name=name,
        topology=topology,
        positions=np.array([[start[0], start[1], 0.0]]),
        atomic_numbers=np.array([6]),
        masses=np.array([mass]),
        collective_variables={
            "x": CollectiveVariable("x", "coordinate", (0,), 0),
            "y": CollectiveVariable("y", "coordinate", (0,), 1),
        },
        _reference_factory=factory,
    )


def double_well(barrier: float = 10.0, asymmetry: float = 1.0, k_y: float = 20.0) -> MolecularSystem:
    """2D double well ``barrier*(x^2-1)^2 + asymmetry*x + k_y/2*y^2`` (x, y in nm, kJ/mol).

    Minima near x = -1 and x = +1; with ``asymmetry > 0`` the left well is the deeper one,
    as in the tutorial where the training data sit in the left basin.
    """
    expr = f"{barrier}*(x^2-1)^2 + {asymmetry}*x + {0.5 * k_y}*y^2"
    system = _one_particle_system("double_well", expr, (-1.0, 0.0))
    system.expression = expr
    return system


# Mueller & Brown, Theor. Chim. Acta 53, 75 (1979).
_MB = dict(
    A=(-200.0, -100.0, -170.0, 15.0),
    a=(-1.0, -1.0, -6.5, 0.7),
    b=(0.0, 0.0, 11.0, 0.6),
    c=(-10.0, -10.0, -6.5, 0.7),
    x0=(1.0, 0.0, -0.5, -1.0),
    y0=(0.0, 0.5, 1.5, 1.0),
)


def mueller_brown(scale: float = 0.1) -> MolecularSystem:
    """Mueller-Brown potential times ``scale`` (kJ/mol; x, y in nm), started in its deepest minimum."""
    terms = []
    for A, a, b, c, x0, y0 in zip(*_MB.values()):
        terms.append(
            f"({A})*exp(({a})*(x-({x0}))^2 + ({b})*(x-({x0}))*(y-({y0})) + ({c})*(y-({y0}))^2)"
        )
    expr = f"{scale}*(" + " + ".join(terms) + ")"
    system = _one_particle_system("mueller_brown", expr, (-0.558, 1.442))
    system.expression = expr
    return system


def toy_energy(system: MolecularSystem, xy: np.ndarray) -> np.ndarray:
    """Evaluate a toy's analytic energy on points ``[..., 2]`` (vectorised, numpy)."""
    env = {"x": xy[..., 0], "y": xy[..., 1], "z": np.zeros_like(xy[..., 0]), "exp": np.exp}
    return eval(system.expression.replace("^", "**"), {"__builtins__": {}}, env)
