import numpy as np
import pytest
import torch

from openmm_adv._torch import configure_threads
from openmm_adv.models import Committee
from openmm_adv.systems import alanine_dipeptide

configure_threads(1)


@pytest.fixture(scope="session")
def ala2():
    return alanine_dipeptide()


@pytest.fixture(scope="session")
def small_committee(ala2):
    """A small untrained float64 committee: precise enough for finite differences."""
    return Committee.schnet(ala2.atomic_numbers, n_members=3, n_features=8, n_rbf=8, n_interactions=2, dtype=torch.float64, seed=3)


@pytest.fixture
def perturbed(ala2):
    def make(b, scale=0.005, seed=0):
        rng = np.random.default_rng(seed)
        return ala2.positions[None] + scale * rng.normal(size=(b, ala2.n_atoms, 3))

    return make


def replica_system(force, n_particles):
    import openmm

    system = openmm.System()
    for _ in range(n_particles):
        system.addParticle(12.0)
    system.addForce(force)
    return system


def replica_context(force, n_particles, platform="Reference", integrator=None):
    import openmm

    system = replica_system(force, n_particles)
    context = openmm.Context(system, integrator or openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.system = system  # keep the System alive as long as the Context
    return context


def energy_forces(context, positions):
    from openmm import unit

    context.setPositions(np.asarray(positions).reshape(-1, 3))
    state = context.getState(getEnergy=True, getForces=True)
    return (
        state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
        state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer),
    )
