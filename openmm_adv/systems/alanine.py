"""Alanine dipeptide (ACE-ALA-NME) in vacuum with Amber ff14SB, the project's benchmark."""

from __future__ import annotations

from importlib import resources

import numpy as np
import openmm
from openmm import app, unit

from .base import CollectiveVariable, MolecularSystem, elements_to_numbers, particle_masses

__all__ = ["alanine_dipeptide", "PHI_ATOMS", "PSI_ATOMS", "BASINS_DEG"]

PHI_ATOMS = (4, 6, 8, 14)
PSI_ATOMS = (6, 8, 14, 16)

#: Approximate vacuum basin centres (phi, psi) in degrees; the reference free-energy surface
#: decides the exact ones.
BASINS_DEG = {
    "C7eq": (-80.0, 75.0),
    "C5": (-150.0, 160.0),
    "alpha_R": (-70.0, -40.0),
    "C7ax": (70.0, -70.0),
    "alpha_L": (60.0, 45.0),
}


def _load_pdb() -> app.PDBFile:
    path = resources.files("openmm_adv.systems") / "data" / "alanine_dipeptide.pdb"
    with resources.as_file(path) as p:
        return app.PDBFile(str(p))


def alanine_dipeptide() -> MolecularSystem:
    """Alanine dipeptide in vacuum, Amber ff14SB (``amber14-all.xml``), no constraints.

    The 22-atom structure shipped with the package is an Amber-minimised C7eq geometry.
    Collective variables ``phi`` (atoms 4-6-8-14) and ``psi`` (6-8-14-16), in radians.
    """
    pdb = _load_pdb()
    topology = pdb.topology
    forcefield = app.ForceField("amber14-all.xml")

    def factory() -> openmm.System:
        # No constraints: ML labels need the full, unconstrained potential.
        return forcefield.createSystem(
            topology,
            nonbondedMethod=app.NoCutoff,
            constraints=None,
            rigidWater=False,
            removeCMMotion=False,
        )

    positions = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return MolecularSystem(
        name="alanine_dipeptide",
        topology=topology,
        positions=np.asarray(positions, dtype=np.float64),
        atomic_numbers=elements_to_numbers([a.element for a in topology.atoms()]),
        masses=particle_masses(factory()),
        collective_variables={
            "phi": CollectiveVariable("phi", "dihedral", PHI_ATOMS),
            "psi": CollectiveVariable("psi", "dihedral", PSI_ATOMS),
        },
        _reference_factory=factory,
    )
