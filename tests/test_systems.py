"""Systems, their reference potentials and collective variables."""

import numpy as np
import pytest
from openmm import unit

from openmm_adv.geometry import GeometryCheck
from openmm_adv.systems import (
    BASINS_DEG, PHI_ATOMS, PSI_ATOMS, alanine_dipeptide, ammonia, double_well, get_system, mueller_brown, toy_energy,
)
from openmm_adv.units import thermal_energy, to_nm


def test_alanine_dipeptide_topology_and_cvs(ala2):
    assert ala2.n_atoms == 22
    assert [r.name for r in ala2.topology.residues()] == ["ACE", "ALA", "NME"]
    names = [a.name for a in ala2.topology.atoms()]
    assert [names[i] for i in PHI_ATOMS] == ["C", "N", "CA", "C"]
    assert [names[i] for i in PSI_ATOMS] == ["N", "CA", "C", "N"]
    phi, psi = (np.degrees(v[0]) for v in ala2.compute_cvs(ala2.positions).values())
    assert abs(phi - BASINS_DEG["C7eq"][0]) < 20 and abs(psi - BASINS_DEG["C7eq"][1]) < 30
    assert ala2.masses.sum() == pytest.approx(144.17, abs=0.05)


def test_alanine_reference_is_unconstrained_amber_and_minimised(ala2):
    system = ala2.create_reference_system()
    assert system.getNumConstraints() == 0
    names = {f.__class__.__name__ for f in system.getForces()}
    assert {"HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce", "NonbondedForce"} <= names
    energy, forces = ala2.reference_energies_forces(ala2.positions)
    assert np.abs(forces).max() < 50.0  # the shipped structure is a minimum (within tolerance)


def test_dihedral_matches_numpy_definition(ala2, perturbed):
    x = perturbed(3, scale=0.02)
    b0, b1, b2 = (x[:, PHI_ATOMS[i + 1]] - x[:, PHI_ATOMS[i]] for i in range(3))
    # IUPAC sign convention (C7eq has phi < 0)
    y = np.linalg.norm(b1, axis=1) * (b0 * np.cross(b1, b2)).sum(1)
    expected = np.arctan2(y, (np.cross(b0, b1) * np.cross(b1, b2)).sum(1))
    np.testing.assert_allclose(ala2.collective_variables["phi"].compute(x), expected, atol=1e-5)


def test_cv_forces_for_bias_variables(ala2):
    import openmm

    force = ala2.collective_variables["phi"].openmm_force()
    system = openmm.System()
    for _ in range(22):
        system.addParticle(12.0)
    system.addForce(force)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(ala2.positions)
    value = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert value == pytest.approx(ala2.compute_cvs(ala2.positions)["phi"][0], abs=1e-5)


@pytest.mark.parametrize("factory", [double_well, mueller_brown])
def test_toy_reference_equals_analytic_expression(factory):
    toy = factory()
    rng = np.random.default_rng(0)
    xy = rng.uniform([-1.5, -0.5], [1.0, 2.0], size=(5, 2))
    x = np.concatenate([xy, np.zeros((5, 1))], axis=1)[:, None, :]
    energies, forces = toy.reference_energies_forces(x)
    np.testing.assert_allclose(energies, toy_energy(toy, xy), rtol=1e-10)
    h = 1e-6
    fd = (toy_energy(toy, xy + [h, 0]) - toy_energy(toy, xy - [h, 0])) / (2 * h)
    np.testing.assert_allclose(forces[:, 0, 0], -fd, rtol=1e-5, atol=1e-5)


def test_toy_minima():
    dw = double_well()
    e, f = dw.reference_energies_forces(np.array([[[-1.0, 0.0, 0.0]], [[1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]]))
    assert e[0] < e[1] < e[2]  # the left well is the deeper one, the barrier in between
    mb = mueller_brown()
    _, f = mb.reference_energies_forces(mb.positions)
    assert np.abs(f).max() < 0.1


def test_ammonia_inversion_barrier():
    nh3 = ammonia()
    e_pyramid, f = nh3.reference_energies_forces(nh3.positions)
    assert e_pyramid == pytest.approx(0.0, abs=1e-8) and np.abs(f).max() < 1e-6
    flat = nh3.positions.copy()
    flat[0, 2] = 0.0
    flat[1:, 2] = 0.0
    # planarising at fixed H-H distances stretches the N-H bonds: compare the umbrella term alone
    inverted = nh3.positions.copy()
    inverted[:, 2] *= -1
    e_inverted, _ = nh3.reference_energies_forces(inverted)
    assert e_inverted == pytest.approx(0.0, abs=1e-8)
    e_flat, _ = nh3.reference_energies_forces(flat)
    assert e_flat > 24.3


def test_get_system_by_name():
    assert get_system("double_well").name == "double_well"
    with pytest.raises(ValueError, match="unknown system"):
        get_system("water")


def test_check_positions_errors(ala2):
    with pytest.raises(ValueError, match="21 atoms but system 'alanine_dipeptide' has 22"):
        ala2.check_positions(np.zeros((21, 3)))
    bad = ala2.positions.copy()
    bad[5, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        ala2.check_positions(bad)
    angstrom = ala2.check_positions(ala2.positions * 10 * unit.angstrom)
    np.testing.assert_allclose(angstrom[0], ala2.positions)


def test_geometry_check(ala2):
    check = GeometryCheck.for_system(ala2)
    stretched = ala2.positions.copy()
    stretched[0] = stretched[1] + 2.0 * (stretched[0] - stretched[1])
    nan = ala2.positions.copy()
    nan[2, 2] = np.nan
    ok, reasons = check(np.stack([ala2.positions, stretched, nan]))
    assert ok.tolist() == [True, False, False]
    assert "bond 1-0" in reasons[1] or "bond 0-1" in reasons[1]
    assert "non-finite" in reasons[2]
    # geminal hydrogens sit ~0.18 nm apart: a 0.2 nm threshold must call them a clash
    strict = GeometryCheck.for_system(ala2, min_distance=0.2)
    ok, reasons = strict(ala2.positions)
    assert not ok[0] and "clash" in reasons[0]


def test_units():
    assert thermal_energy(300 * unit.kelvin) == pytest.approx(2.4943, rel=1e-4)
    assert thermal_energy(1 * unit.kilocalorie_per_mole) == pytest.approx(4.184)
    assert thermal_energy(2.0) == 2.0
    with pytest.raises(ValueError, match="positive"):
        thermal_energy(-1.0)
    assert to_nm(3 * unit.angstrom) == pytest.approx(0.3)
