"""Ammonia with a model force field that has the umbrella-inversion double well."""

from __future__ import annotations

import numpy as np
import openmm
from openmm import app

from .base import MolecularSystem, elements_to_numbers

__all__ = ["ammonia"]

_NH = 0.1012  # nm
_HNH = np.radians(106.7)
_BARRIER = 24.3  # kJ/mol, the experimental inversion barrier (about 2030 cm^-1)


def _geometry() -> np.ndarray:
    # Pyramid with the N on the z axis above the H plane.
    r_plane = _NH * np.sin(_HNH / 2) / np.sin(np.radians(60))
    h = np.sqrt(_NH**2 - r_plane**2)
    hs = [[r_plane * np.cos(t), r_plane * np.sin(t), 0.0] for t in np.radians([90, 210, 330])]
    return np.array([[0.0, 0.0, h]] + hs)


def ammonia() -> MolecularSystem:
    """NH3 with harmonic N-H bonds and a quartic double well in the pyramid height.

    The model reference: ``k_b/2 (r - r0)^2`` for each N-H, ``k_hh/2 (d_HH - d0)^2`` for each
    H-H pair, and ``V (h^2/h0^2 - 1)^2`` in the height h of N above the plane of the three H,
    so the planar transition state lies ``V = 24.3 kJ/mol`` above the pyramids (the measured
    barrier). This is an analytic stand-in for the DFT surface of the papers; GFN2-xTB labels
    come through the ``xtb`` oracle.
    """
    xyz = _geometry()
    h0 = float(xyz[0, 2])
    d_hh = float(np.linalg.norm(xyz[1] - xyz[2]))
    topology = app.Topology()
    residue = topology.addResidue("NH3", topology.addChain())
    n = topology.addAtom("N", app.element.nitrogen, residue)
    hs = [topology.addAtom(f"H{i + 1}", app.element.hydrogen, residue) for i in range(3)]
    for h in hs:
        topology.addBond(n, h)

    def factory() -> openmm.System:
        system = openmm.System()
        for atom in topology.atoms():
            system.addParticle(atom.element.mass)
        bonds = openmm.HarmonicBondForce()
        for i in (1, 2, 3):
            bonds.addBond(0, i, _NH, 3.6e5)
        for i, j in ((1, 2), (1, 3), (2, 3)):
            bonds.addBond(i, j, d_hh, 5.0e4)
        system.addForce(bonds)
        # Height of N over the H plane: the projection of N-H1 onto the plane normal.
        umbrella = openmm.CustomCompoundBondForce(
            4,
            f"{_BARRIER}*((height/{h0})^2-1)^2;"
            "height=((x1-x2)*nx+(y1-y2)*ny+(z1-z2)*nz)/nn;"
            "nn=sqrt(nx^2+ny^2+nz^2);"
            "nx=uy*vz-uz*vy; ny=uz*vx-ux*vz; nz=ux*vy-uy*vx;"
            "ux=x3-x2; uy=y3-y2; uz=z3-z2; vx=x4-x2; vy=y4-y2; vz=z4-z2",
        )
        umbrella.addBond([0, 1, 2, 3], [])
        system.addForce(umbrella)
        return system

    return MolecularSystem(
        name="ammonia",
        topology=topology,
        positions=xyz,
        atomic_numbers=elements_to_numbers([a.element for a in topology.atoms()]),
        masses=np.array([a.element.mass._value for a in topology.atoms()]),
        collective_variables={},
        _reference_factory=factory,
    )
