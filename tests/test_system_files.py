"""Systems from a user's files: structures, reference potentials, bonds and CVs."""

from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import app

from openmm_adv.config import ConfigError, SystemConfig, parse_section
from openmm_adv.builders import build_oracle, build_system
from openmm_adv.config import OracleConfig
from openmm_adv.novelty import CVDensity
from openmm_adv.systems import CollectiveVariable, double_well, get_system, load_system, mueller_brown
from openmm_adv.systems.covalent import bonds_from_distances

DATA = Path(__file__).parents[1] / "examples" / "ethanol_xtb"
ETHANOL_BONDS = {(0, 1), (1, 2), (2, 3), (1, 4), (1, 5), (0, 6), (0, 7), (0, 8)}
PHI_SELECTIONS = ["resid 0 and name C", "resid 1 and name N", "resid 1 and name CA", "resid 1 and name C"]


def _energies(system, positions):
    return system.reference_energies_forces(positions, platform="Reference")


def test_shipped_alanine_dipeptide_is_amber_on_its_pdb(ala2, perturbed):
    """The shipped entry is a structure plus force field like any user's; check against Amber directly."""
    pdb = app.PDBFile(ala2.source["structure"])
    direct = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                           constraints=None, rigidWater=False)
    context = openmm.Context(direct, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    x = perturbed(3)
    energies, forces = _energies(ala2, x)
    for k in range(3):
        context.setPositions(x[k])
        state = context.getState(getEnergy=True, getForces=True)
        assert energies[k] == pytest.approx(state.getPotentialEnergy()._value, abs=1e-6)
        np.testing.assert_allclose(forces[k], state.getForces(asNumpy=True)._value, atol=1e-6)
    assert ala2.source["forcefield"] == ["amber14-all.xml"] and len(ala2.bonds) == 21


@pytest.mark.parametrize("name, factory", [("double_well", double_well), ("mueller_brown", mueller_brown)])
def test_shipped_toys_equal_their_generators(name, factory):
    shipped, made = get_system(name), factory()
    xy = np.random.default_rng(1).uniform(-1.0, 1.0, size=(4, 1, 3))
    np.testing.assert_allclose(_energies(shipped, xy)[0], _energies(made, xy)[0], rtol=1e-12)
    np.testing.assert_allclose(shipped.masses, made.masses)
    assert list(shipped.collective_variables) == ["x", "y"]
    assert shipped.collective_variables["y"].compute(xy).tolist() == xy[:, 0, 1].tolist()


def test_pdb_with_forcefield_and_selection_cvs(ala2, tmp_path, perturbed):
    pdb = tmp_path / "my_peptide.pdb"
    pdb.write_text(Path(ala2.source["structure"]).read_text())
    mine = load_system(pdb, forcefield=["amber14-all.xml"],
                       cvs={"phi": {"dihedral": PHI_SELECTIONS}, "end_to_end": {"distance": [1, 18]}})
    assert mine.name == "my_peptide" and mine.collective_variables["phi"].atoms == (4, 6, 8, 14)
    x = perturbed(2)
    np.testing.assert_allclose(_energies(mine, x)[0], _energies(ala2, x)[0], atol=1e-6)
    np.testing.assert_allclose(mine.masses, ala2.masses)
    np.testing.assert_allclose(mine.compute_cvs(x)["end_to_end"], np.linalg.norm(x[:, 1] - x[:, 18], axis=-1))


def test_serialized_system_with_its_pdb(ala2, tmp_path, perturbed):
    xml = tmp_path / "system.xml"
    xml.write_text(openmm.XmlSerializer.serialize(ala2.create_reference_system()))
    mine = load_system(ala2.source["structure"], system_xml=xml, name="ala2_xml")
    x = perturbed(2)
    for a, b in zip(_energies(mine, x), _energies(ala2, x)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    wrong = tmp_path / "ammonia.xml"
    wrong.write_text(openmm.XmlSerializer.serialize(get_system("ammonia").create_reference_system()))
    with pytest.raises(ValueError, match="4 particles but .* has 22 atoms"):
        load_system(ala2.source["structure"], system_xml=wrong)


def test_xyz_without_a_force_field_for_xtb():
    ethanol = load_system(DATA / "ethanol.xyz")
    assert ethanol.name == "ethanol" and ethanol.n_atoms == 9
    assert ethanol.atomic_numbers.tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1]
    assert set(ethanol.bonds) == ETHANOL_BONDS
    np.testing.assert_allclose(ethanol.positions[1, 1], 0.05526)  # Angstrom in the file, nm inside
    assert ethanol.masses.sum() == pytest.approx(46.07, abs=0.01)
    assert (ethanol.charge, ethanol.multiplicity) == (0, 1) and not ethanol.has_reference_potential
    with pytest.raises(ValueError, match="no OpenMM reference potential.*xtb"):
        ethanol.create_reference_system()
    cation = load_system(DATA / "ethanol.xyz", charge=1, multiplicity=2)
    oracle = build_oracle(OracleConfig(kind="xtb"), cation)
    assert (oracle.charge, oracle.multiplicity) == (1, 2)


def test_bonds_from_covalent_radii_complete_a_pdb_without_conect(tmp_path):
    """A ligand written without CONECT records gets its bonds from distances, and only those."""
    ethanol = load_system(DATA / "ethanol.xyz")
    pdb = tmp_path / "ethanol.pdb"
    with open(pdb, "w") as handle:
        app.PDBFile.writeFile(ethanol.topology, ethanol.positions * 10 * openmm.unit.angstrom, handle)
    text = "".join(line + "\n" for line in pdb.read_text().splitlines() if not line.startswith("CONECT"))
    pdb.write_text(text)
    assert set(load_system(pdb).bonds) == ETHANOL_BONDS
    # a stretched C-H (1.3x) is still a bond; an H 1-3 neighbour is not
    x = ethanol.positions.copy()
    x[6] = x[0] + 1.2 * (x[6] - x[0])
    assert set(bonds_from_distances(ethanol.atomic_numbers, x)) == ETHANOL_BONDS
    with pytest.raises(ValueError, match="no covalent radius.*\\[92\\]"):
        bonds_from_distances([92, 1], np.zeros((2, 3)))


def test_a_force_field_that_cannot_parametrise_says_what_to_do():
    with pytest.raises(ValueError, match="cannot parametrise.*system_xml.*xtb"):
        load_system(DATA / "ethanol.xyz", forcefield=["amber14-all.xml"])


@pytest.mark.parametrize("cvs, message", [
    ({"phi": {"dihedral": [0, 1, 2]}}, "needs 4 atoms"),
    ({"phi": {"dihedral": [0, 1, 2, 99]}}, "index 99 is out of range"),
    ({"phi": {"dihedral": ["name CA", 1, 2, 3]}}, "matches 0 atoms"),
    ({"d": {"distance": ["element H", 0]}}, "matches 6 atoms"),
    ({"d": {"distance": [0, 1], "dihedral": [0, 1, 2, 3]}}, "exactly one of"),
    ({"d": {"angle": [0, 1, 2]}}, "exactly one of"),
    ({"x": {"coordinate": 0, "axis": "w"}}, "axis must be x, y or z"),
    ({"d": {"distance": [0, 0]}}, "repeats an atom"),
])
def test_cv_errors_name_the_cv(cvs, message):
    with pytest.raises(ValueError, match=message):
        load_system(DATA / "ethanol.xyz", cvs=cvs)


def test_cv_gradients_match_finite_differences_for_every_kind():
    ethanol = load_system(DATA / "ethanol.xyz", cvs={
        "torsion": {"dihedral": [3, 2, 1, 0]}, "d_co": {"distance": [0, 2]}, "z_o": {"coordinate": 2, "axis": "z"}})
    x = ethanol.positions[None] + 0.01 * np.random.default_rng(3).normal(size=(2, 9, 3))
    h = 1e-6
    for cv in ethanol.collective_variables.values():
        value, gradient = cv.value_and_gradient(x)
        np.testing.assert_allclose(value, cv.compute(x), atol=1e-5)  # mdtraj computes in float32
        for slot, atom in enumerate(cv.atoms):
            for axis in range(3):
                up, down = x.copy(), x.copy()
                up[:, atom, axis] += h
                down[:, atom, axis] -= h
                fd = (cv.value_and_gradient(up)[0] - cv.value_and_gradient(down)[0]) / (2 * h)
                np.testing.assert_allclose(gradient[:, slot, axis], fd, rtol=1e-4, atol=1e-5)
    # the novelty term works on any CV kind
    density = CVDensity.from_positions(ethanol, x[:1], bandwidth=[0.1, 0.01, 0.01], cap=4.0)
    novelty, grad = density.novelty_and_gradient(x[1:])
    up, down = x[1:].copy(), x[1:].copy()
    up[0, 0, 0] += h
    down[0, 0, 0] -= h
    fd = (density.novelty_and_gradient(up)[0] - density.novelty_and_gradient(down)[0]) / (2 * h)
    assert grad[0, 0, 0] == pytest.approx(fd[0], rel=1e-4, abs=1e-6)


def test_distance_cv_as_an_openmm_force():
    cv = CollectiveVariable("d", "distance", (0, 2))
    ethanol = load_system(DATA / "ethanol.xyz")
    system = openmm.System()
    for mass in ethanol.masses:
        system.addParticle(mass)
    system.addForce(cv.openmm_force())
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(ethanol.positions)
    assert context.getState(getEnergy=True).getPotentialEnergy()._value == pytest.approx(cv.compute(ethanol.positions)[0])


def test_system_config_section(tmp_path, monkeypatch):
    monkeypatch.chdir(DATA)
    system = build_system(parse_section(SystemConfig, {"structure": "ethanol.xyz", "cvs": {"d": {"distance": [0, 2]}}},
                                        "system"))
    assert system.name == "ethanol" and list(system.collective_variables) == ["d"]
    assert build_system(parse_section(SystemConfig, {}, "system")).name == "alanine_dipeptide"
    for bad, message in (({"name": "ethanol"}, "not a shipped system.*system.structure"),
                         ({"forcefield": ["amber14-all.xml"]}, "give system.structure"),
                         ({"structure": "ethanol.xyz", "forcefield": ["a.xml"], "system_xml": "b.xml"}, "not both"),
                         ({"structure": "missing.pdb"}, "missing.pdb does not exist")):
        with pytest.raises(ConfigError, match=message):
            build_system(parse_section(SystemConfig, bad, "system"))
