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


def make_small_committee(atomic_numbers, architecture="painn", **options):
    """A small untrained float64 committee of the given architecture (precise enough for finite
    differences); ``painn_cutoff`` is the equivariant model on its explicit neighbour-list path."""
    if architecture == "schnet":
        return Committee.schnet(atomic_numbers, n_members=3, n_features=8, n_rbf=8, n_interactions=2,
                                dtype=torch.float64, seed=3, **options)
    if architecture == "painn_cutoff":
        options["neighbor_list"] = "cutoff"
    return Committee.painn(atomic_numbers, n_members=3, n_features=8, n_rbf=8, n_interactions=2,
                           dtype=torch.float64, seed=3, **options)


@pytest.fixture(scope="session")
def small_committee(ala2):
    """A small untrained float64 committee of the default (equivariant) architecture."""
    return make_small_committee(ala2.atomic_numbers)


@pytest.fixture(scope="session", params=["painn", "painn_cutoff", "schnet"])
def any_committee(request, ala2):
    """The small committee of every architecture (and neighbour-list path)."""
    return make_small_committee(ala2.atomic_numbers, request.param)


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
