"""Regenerate ``openmm_adv/systems/data/alanine_dipeptide.pdb``.

Heavy atoms are placed from standard peptide internal coordinates at the C7eq dihedrals
(phi, psi) = (-80, 75) degrees, hydrogens are added by OpenMM's Modeller with Amber14, the
structure is minimised with Amber ff14SB in vacuum, and the atoms are written in the
canonical ACE-ALA-NME order (phi = 4-6-8-14, psi = 6-8-14-16).

Run: ``python scripts/build_ala2_pdb.py``
"""

from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

OUT = Path(__file__).resolve().parents[1] / "openmm_adv" / "systems" / "data" / "alanine_dipeptide.pdb"
CANONICAL_ORDER = {
    "ACE": ["H1", "CH3", "H2", "H3", "C", "O"],
    "ALA": ["N", "H", "CA", "HA", "CB", "HB1", "HB2", "HB3", "C", "O"],
    "NME": ["N", "H", "C", "H1", "H2", "H3"],
}


def place(a, b, c, bond, angle_deg, torsion_deg):
    """Atom d bonded to c with angle b-c-d and dihedral a-b-c-d (natural extension reference frame)."""
    angle, torsion = np.radians(angle_deg), np.radians(torsion_deg)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    local = np.array([-bond * np.cos(angle), bond * np.sin(angle) * np.cos(torsion), bond * np.sin(angle) * np.sin(torsion)])
    return c + local[0] * bc + local[1] * m + local[2] * n


def heavy_atoms(phi=-80.0, psi=75.0):
    ch3a = np.zeros(3)
    ca_ = np.array([1.52, 0.0, 0.0])
    n_ala = ca_ + 1.33 * np.array([-np.cos(np.radians(116)), np.sin(np.radians(116)), 0.0])
    ca = place(ch3a, ca_, n_ala, 1.46, 122, 180)
    c = place(ca_, n_ala, ca, 1.52, 111, phi)
    n_nme = place(n_ala, ca, c, 1.33, 116, psi)
    ch3n = place(ca, c, n_nme, 1.46, 122, 180)
    o_ace = place(ca, n_ala, ca_, 1.23, 123, 0)
    o_ala = place(ch3n, n_nme, c, 1.23, 123, 0)
    cb = place(n_ala, c, ca, 1.53, 110.5, 122.7)
    return [
        ("ACE", [("CH3", "C", ch3a), ("C", "C", ca_), ("O", "O", o_ace)]),
        ("ALA", [("N", "N", n_ala), ("CA", "C", ca), ("C", "C", c), ("O", "O", o_ala), ("CB", "C", cb)]),
        ("NME", [("N", "N", n_nme), ("C", "C", ch3n)]),
    ]


def main():
    top = app.Topology()
    chain = top.addChain()
    positions = []
    for resname, atoms in heavy_atoms():
        res = top.addResidue(resname, chain)
        for name, element, xyz in atoms:
            top.addAtom(name, app.Element.getBySymbol(element), res)
            positions.append(openmm.Vec3(*xyz) * 0.1)
    top.createStandardBonds()
    ff = app.ForceField("amber14-all.xml")
    modeller = app.Modeller(top, positions * unit.nanometer)
    modeller.addHydrogens(ff)

    system = ff.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1e-3, 0)
    xyz = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)

    # Rewrite in canonical order.
    out_top = app.Topology()
    out_chain = out_top.addChain()
    out_xyz = []
    for residue in modeller.topology.residues():
        by_name = {a.name: a for a in residue.atoms()}
        missing = set(CANONICAL_ORDER[residue.name]) ^ set(by_name)
        if missing:
            raise RuntimeError(f"unexpected atom names in {residue.name}: {missing}")
        new_res = out_top.addResidue(residue.name, out_chain)
        for name in CANONICAL_ORDER[residue.name]:
            out_top.addAtom(name, by_name[name].element, new_res)
            out_xyz.append(xyz[by_name[name].index])
    out_top.createStandardBonds()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w") as handle:
        app.PDBFile.writeFile(out_top, np.array(out_xyz) * 10 * unit.angstrom, handle)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
