"""Build a capped poly-alanine, Ace-(Ala)n-NMe, as a PDB: ``examples/peptide_amber/ace_ala3_nme.pdb`` by default.

The backbone is placed from standard peptide internal coordinates (trans peptide bonds, every
residue at the given phi/psi), hydrogens are added by OpenMM's Modeller with Amber14, and the
structure is minimised with Amber ff14SB in vacuum. A molecule larger than alanine dipeptide
for the end-to-end tests of a user's own PDB.

Run: ``python scripts/build_capped_peptide_pdb.py [--alanines 3] [--phi -70] [--psi 140] [--output PATH]``
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_ala2_pdb import place  # noqa: E402  (natural extension reference frame)


def heavy_atoms(n_ala: int, phi: float, psi: float):
    """Residues as (name, [(atom, element, xyz Angstrom)]) in chain order."""
    ch3 = np.zeros(3)
    c_prev = np.array([1.52, 0.0, 0.0])
    n = c_prev + 1.33 * np.array([-np.cos(np.radians(116)), np.sin(np.radians(116)), 0.0])
    residues = [["ACE", [("CH3", "C", ch3), ("C", "C", c_prev)]]]
    ca_prev = ch3
    for k in range(n_ala):
        ca = place(ca_prev, c_prev, n, 1.46, 122, 180)       # omega
        c = place(c_prev, n, ca, 1.52, 111, phi)
        n_next = place(n, ca, c, 1.33, 116, psi)
        residues[-1][1].append(("O", "O", place(ca, n, c_prev, 1.23, 123, 0)))
        cb = place(n, c, ca, 1.53, 110.5, 122.7)             # L-alanine
        residues.append(["ALA", [("N", "N", n), ("CA", "C", ca), ("C", "C", c), ("CB", "C", cb)]])
        ca_prev, c_prev, n = ca, c, n_next
    ch3n = place(ca_prev, c_prev, n, 1.46, 122, 180)
    residues[-1][1].append(("O", "O", place(ch3n, n, c_prev, 1.23, 123, 0)))
    residues.append(["NME", [("N", "N", n), ("C", "C", ch3n)]])
    return residues


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alanines", type=int, default=3)
    parser.add_argument("--phi", type=float, default=-70.0)
    parser.add_argument("--psi", type=float, default=140.0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    out = Path(args.output or ROOT / "examples" / "peptide_amber" / f"ace_ala{args.alanines}_nme.pdb")
    top = app.Topology()
    chain = top.addChain()
    positions = []
    for name, atoms in heavy_atoms(args.alanines, args.phi, args.psi):
        residue = top.addResidue(name, chain)
        for atom, element, xyz in atoms:
            top.addAtom(atom, app.Element.getBySymbol(element), residue)
            positions.append(openmm.Vec3(*(xyz * 0.1)))
    top.createStandardBonds()
    forcefield = app.ForceField("amber14-all.xml")
    modeller = app.Modeller(top, positions * unit.nanometer)
    modeller.addHydrogens(forcefield)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1e-3, 0)
    state = context.getState(getPositions=True, getEnergy=True)
    with open(out, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, state.getPositions(), handle)
    print(f"wrote {out}: {modeller.topology.getNumAtoms()} atoms, Amber energy "
          f"{state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole):.1f} kJ/mol")


if __name__ == "__main__":
    main()
