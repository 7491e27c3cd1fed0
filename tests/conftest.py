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
    committee = Committee.painn(atomic_numbers, n_members=3, n_features=8, n_rbf=8, n_interactions=2,
                                dtype=torch.float64, seed=3, **options)
    if architecture == "painn_prior":
        committee.potential.prior.set_terms(example_prior_terms(atomic_numbers))
    return committee


def example_prior_terms(atomic_numbers):
    """Bonded-prior terms for alanine dipeptide with stiffnesses like Amber's (not fitted);
    equilibrium values are the reference geometry's, averaged over each chemical type so the
    prior keeps the molecule's symmetry as a fitted one does."""
    from openmm_adv.models.prior import BondedTerms, _term_groups, angles_from_bonds, atom_types, find_bonds

    geometry = alanine_dipeptide().positions
    bonds = find_bonds(atomic_numbers, geometry)
    angles = angles_from_bonds(bonds, len(atomic_numbers))
    types = atom_types(atomic_numbers, bonds)

    def type_mean(values, terms):
        group, n = _term_groups(types, terms)
        return (np.bincount(group, weights=values, minlength=n) / np.bincount(group, minlength=n))[group]

    r = np.linalg.norm(geometry[bonds[:, 0]] - geometry[bonds[:, 1]], axis=1)
    a, c = geometry[angles[:, 0]] - geometry[angles[:, 1]], geometry[angles[:, 2]] - geometry[angles[:, 1]]
    theta = np.arccos(np.sum(a * c, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(c, axis=1))
    return BondedTerms(bonds, np.full(len(bonds), 3e5), type_mean(r, bonds) + 0.002, angles,
                       np.full(len(angles), 400.0), type_mean(theta, angles) - 0.05)


@pytest.fixture(scope="session")
def small_committee(ala2):
    """A small untrained float64 committee of the default (equivariant) architecture."""
    return make_small_committee(ala2.atomic_numbers)


@pytest.fixture(scope="session", params=["painn", "painn_cutoff", "painn_prior", "schnet"])
def any_committee(request, ala2):
    """The small committee of every architecture (and neighbour-list path, and with a bonded
    prior)."""
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


def assert_force_is_minus_gradient(context, x, coordinates, h=1e-5, rel=1e-5, abs_tol=1e-5):
    """The OpenMM force on each ``(atom, axis)`` equals minus the central finite difference of
    the context's energy (one replica of positions ``x [N, 3]``)."""
    _, forces = energy_forces(context, x)
    for atom, axis in coordinates:
        plus, minus = x.copy(), x.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        grad = (energy_forces(context, plus)[0] - energy_forces(context, minus)[0]) / (2 * h)
        assert forces[atom, axis] == pytest.approx(-grad, rel=rel, abs=abs_tol * max(1.0, abs(grad))), (atom, axis)
