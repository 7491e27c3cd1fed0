"""Thermal velocities beside the uncertainty force: OpenMM's setVelocitiesToTemperature heats the
system through its half-step shift; openmm_adv.forces.set_velocities_to_temperature does not."""

import numpy as np
import openmm
import pytest
from openmm import unit

from openmm_adv.forces import UncertaintyForceWarning, set_velocities_to_temperature, uncertainty_force
from openmm_adv.models import Committee
from openmm_adv.reference_data import assign_basin, load_test_set
from openmm_adv.resources import default_committee_path
from openmm_adv.velocities import velocity_time_offset

T = 300.0
KT = (unit.MOLAR_GAS_CONSTANT_R * T * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
DT = 0.002


@pytest.fixture(scope="module")
def committee():
    return Committee.load(default_committee_path())


@pytest.fixture(scope="module")
def c7ax_minimum(ala2):
    """An Amber minimum in C7ax, a basin the shipped committee never saw: the Amber forces
    vanish there, so any heating comes from the uncertainty force alone."""
    test = load_test_set()
    cvs = ala2.compute_cvs(test.positions)
    k = np.flatnonzero(assign_basin(np.degrees(cvs["phi"]), np.degrees(cvs["psi"])) == "C7ax")[0]
    context = openmm.Context(ala2.create_reference_system(), openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(test.positions[k])
    openmm.LocalEnergyMinimizer.minimize(context, 0.1, 5000)
    return context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def monitored_context(ala2, committee, positions, with_uncertainty=True):
    """Amber in group 0 (integrated), the uncertainty force in group 1 (left out): the
    README-style monitoring set-up."""
    system = ala2.create_reference_system()
    if with_uncertainty:
        with pytest.warns(UncertaintyForceWarning):
            system.addForce(uncertainty_force(committee, force_group=1))
    integrator = openmm.LangevinMiddleIntegrator(T, 1.0, DT)
    integrator.setIntegrationForceGroups({0})
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context


def kinetic_energy(context):
    return context.getState(getEnergy=True).getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_uncertainty_force_warns_and_names_the_fix(committee):
    with pytest.warns(UncertaintyForceWarning, match="set_velocities_to_temperature"):
        uncertainty_force(committee)


def test_openmm_heats_and_the_helper_does_not(ala2, committee, c7ax_minimum):
    context = monitored_context(ala2, committee, c7ax_minimum)
    assert np.abs(context.getState(getForces=True, groups={0}).getForces(asNumpy=True)._value).max() < 5.0
    n_dof = 3 * ala2.n_atoms  # no constraints, no centre-of-mass removal
    expected = 0.5 * n_dof * KT
    seeds = range(1, 21)
    naive, safe = [], []
    for seed in seeds:
        context.setVelocitiesToTemperature(T, seed)
        naive.append(kinetic_energy(context))
        set_velocities_to_temperature(context, T, seed=seed)
        safe.append(kinetic_energy(context))
    # KE = kT/2 chi^2(n_dof): the mean of 20 draws has a standard deviation of kT sqrt(n_dof/2/20).
    sigma = KT * np.sqrt(n_dof / 2 / len(seeds))
    assert abs(np.mean(safe) - expected) < 4 * sigma, (np.mean(safe), expected)
    assert np.mean(naive) > 2 * expected, (np.mean(naive), expected)


def test_helper_shifts_by_half_a_step_with_the_integrated_forces_exactly(ala2, committee, perturbed):
    x = perturbed(1, scale=0.01, seed=3)[0]  # strained: Amber and uncertainty forces both large
    full = monitored_context(ala2, committee, x)
    amber_only = monitored_context(ala2, committee, x, with_uncertainty=False)
    assert velocity_time_offset(full.getIntegrator()) == pytest.approx(DT / 2)
    # At 0 K the draw vanishes and only OpenMM's shift -(dt/2) F/m is left.
    amber_only.setVelocitiesToTemperature(0.0, 1)
    expected = amber_only.getState(getVelocities=True).getVelocities(asNumpy=True)._value
    np.testing.assert_allclose(set_velocities_to_temperature(full, 0.0), expected, rtol=1e-12, atol=1e-12)
    # With every group, the helper is OpenMM's setVelocitiesToTemperature. (Not to the last bit:
    # the float32 committee's double backward gives forces that differ by ~1e-3 relative from
    # one evaluation to the next, as TorchScript re-optimises its graph after the first runs.)
    full.setVelocitiesToTemperature(0.0, 1)
    every_group = full.getState(getVelocities=True).getVelocities(asNumpy=True)._value
    share = np.abs(every_group - expected).max()
    assert share > 1.0  # nm/ps: what the uncertainty force adds
    helper = set_velocities_to_temperature(full, 0.0, groups=set(range(32)))
    assert np.abs(helper - every_group).max() < 1e-2 * share


def test_helper_units_seed_and_centre_of_mass(ala2, committee):
    context = monitored_context(ala2, committee, ala2.positions, with_uncertainty=False)
    a = set_velocities_to_temperature(context, T * unit.kelvin, seed=7, remove_com_motion=True)
    b = set_velocities_to_temperature(context, T, seed=7, remove_com_motion=True)
    np.testing.assert_array_equal(a, b)
    momentum = (ala2.masses[:, None] * a).sum(axis=0)
    assert np.abs(momentum).max() < 1e-10
    with pytest.raises(ValueError, match="kelvin"):
        set_velocities_to_temperature(context, 2.5 * unit.kilojoule_per_mole)
