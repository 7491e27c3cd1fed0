"""Regenerate the shipped definitions of ammonia and the two 2D toys in
``openmm_adv/systems/data``: a structure (PDB), a serialized OpenMM System (the reference
potential) and a YAML entry, read by :func:`openmm_adv.systems.load_system` like a user's files.

Ammonia's potential is parametrised from the geometry as written to the PDB (0.001 Angstrom
precision), so that the shipped geometry is exactly its minimum: harmonic N-H bonds and H-H
distances at their PDB lengths and a quartic double well in the height of N over the H plane
whose planar transition state lies 24.3 kJ/mol up (the measured inversion barrier, about
2030 cm^-1). The toys come from :func:`openmm_adv.systems.double_well` and
:func:`openmm_adv.systems.mueller_brown` at their default parameters.

Run: ``python scripts/make_builtin_systems.py``
"""

from pathlib import Path

import numpy as np
import openmm
import yaml
from openmm import app, unit

from openmm_adv.systems.toy import double_well, mueller_brown

DATA = Path(__file__).resolve().parents[1] / "openmm_adv" / "systems" / "data"
NH, HNH, BARRIER = 0.1012, np.radians(106.7), 24.3  # nm, rad, kJ/mol


def _write(name: str, topology: app.Topology, positions_nm, system: openmm.System, definition: dict) -> None:
    with open(DATA / f"{name}.pdb", "w") as handle:
        app.PDBFile.writeFile(topology, np.asarray(positions_nm) * unit.nanometer, handle)
    (DATA / f"{name}_system.xml").write_text(openmm.XmlSerializer.serialize(system))
    entry = {"structure": f"{name}.pdb", "system_xml": f"{name}_system.xml", **definition}
    (DATA / f"{name}.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))


def ammonia() -> None:
    r_plane = NH * np.sin(HNH / 2) / np.sin(np.radians(60))
    h = np.sqrt(NH**2 - r_plane**2)
    xyz = np.array([[0.0, 0.0, h]] + [[r_plane * np.cos(t), r_plane * np.sin(t), 0.0]
                                      for t in np.radians([90, 210, 330])])
    topology = app.Topology()
    residue = topology.addResidue("NH3", topology.addChain())
    n = topology.addAtom("N", app.element.nitrogen, residue)
    for i in range(3):
        topology.addBond(n, topology.addAtom(f"H{i + 1}", app.element.hydrogen, residue))
    with open(DATA / "ammonia.pdb", "w") as handle:  # write first: the potential is fitted to what is read back
        app.PDBFile.writeFile(topology, xyz * unit.nanometer, handle)
    pdb = app.PDBFile(str(DATA / "ammonia.pdb"))
    xyz = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)

    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    bonds = openmm.HarmonicBondForce()
    for i, j, k in [(0, 1, 3.6e5), (0, 2, 3.6e5), (0, 3, 3.6e5), (1, 2, 5.0e4), (1, 3, 5.0e4), (2, 3, 5.0e4)]:
        bonds.addBond(i, j, float(np.linalg.norm(xyz[i] - xyz[j])), k)
    system.addForce(bonds)
    normal = np.cross(xyz[2] - xyz[1], xyz[3] - xyz[1])
    h0 = float(np.dot(xyz[0] - xyz[1], normal) / np.linalg.norm(normal))
    umbrella = openmm.CustomCompoundBondForce(
        4,
        f"{BARRIER}*((height/{h0!r})^2-1)^2;"
        "height=((x1-x2)*nx+(y1-y2)*ny+(z1-z2)*nz)/nn;"
        "nn=sqrt(nx^2+ny^2+nz^2);"
        "nx=uy*vz-uz*vy; ny=uz*vx-ux*vz; nz=ux*vy-uy*vx;"
        "ux=x3-x2; uy=y3-y2; uz=z3-z2; vx=x4-x2; vy=y4-y2; vz=z4-z2",
    )
    umbrella.addBond([0, 1, 2, 3], [])
    system.addForce(umbrella)
    _write("ammonia", pdb.topology, xyz, system, {"cvs": {}})


def toys() -> None:
    for factory in (double_well, mueller_brown):
        toy = factory()
        _write(toy.name, toy.topology, toy.positions, toy.create_reference_system(),
               {"cvs": {"x": {"coordinate": 0, "axis": "x"}, "y": {"coordinate": 0, "axis": "y"}}})


def alanine_dipeptide() -> None:
    entry = {"structure": "alanine_dipeptide.pdb", "forcefield": ["amber14-all.xml"],
             "cvs": {"phi": {"dihedral": [4, 6, 8, 14]}, "psi": {"dihedral": [6, 8, 14, 16]}}}
    (DATA / "alanine_dipeptide.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))


if __name__ == "__main__":
    ammonia()
    toys()
    alanine_dipeptide()
    print("wrote", sorted(p.name for p in DATA.iterdir()))
