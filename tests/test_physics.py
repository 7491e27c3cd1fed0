"""Physics of the committee: gradients, invariances, uncertainty properties."""

import numpy as np
import pytest
import torch

from openmm_adv.forces import uncertainty_force

from conftest import assert_force_is_minus_gradient, make_small_committee, replica_context


def random_rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_forces_are_minus_finite_difference_gradient(any_committee, perturbed):
    x = perturbed(1)[0]
    e, f = any_committee.energies_and_forces(x)
    h = 1e-5
    rng = np.random.default_rng(0)
    def energy(atom, axis, step):
        moved = x.copy()
        moved[atom, axis] += step
        return any_committee.energies(moved)[0]

    for atom, axis in zip(rng.integers(0, 22, 6), rng.integers(0, 3, 6)):
        # Fourth-order central differences: a stiff bonded prior (k ~ 3e5 kJ/mol/nm^2) has
        # third derivatives large enough to show in the second-order stencil's h^2 error.
        grad = (8 * (energy(atom, axis, h) - energy(atom, axis, -h))
                - (energy(atom, axis, 2 * h) - energy(atom, axis, -2 * h))) / (12 * h)
        np.testing.assert_allclose(f[0, :, atom, axis], -grad, rtol=1e-6, atol=1e-6)


def test_uncertainty_force_is_minus_gradient_of_uncertainty(any_committee, perturbed):
    """The double-backward force (what attacks climb) against finite differences, through OpenMM."""
    x = perturbed(1)[0]
    ctx = replica_context(uncertainty_force(any_committee, "force_variance"), 22)
    assert_force_is_minus_gradient(ctx, x, ((0, 0), (8, 1), (15, 2), (21, 0)))


def test_rotation_translation_invariance(any_committee, perturbed):
    x = perturbed(1)[0]
    rot = random_rotation(1)
    moved = x @ rot.T + np.array([0.7, -1.3, 2.1])
    e0, f0 = any_committee.energies_and_forces(x)
    e1, f1 = any_committee.energies_and_forces(moved)
    np.testing.assert_allclose(e1, e0, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(f1, f0 @ rot.T, rtol=1e-8, atol=1e-8)  # forces rotate with the molecule
    for metric in ("force_variance", "max_force_deviation", "energy_std"):
        np.testing.assert_allclose(any_committee.uncertainty(moved, metric), any_committee.uncertainty(x, metric), rtol=1e-8)


def test_permutation_of_equivalent_atoms(any_committee, perturbed):
    x = perturbed(1)[0]
    swapped = x.copy()
    swapped[[11, 12]] = x[[12, 11]]  # two hydrogens of the alanine methyl
    e0, f0 = any_committee.energies_and_forces(x)
    e1, f1 = any_committee.energies_and_forces(swapped)
    np.testing.assert_allclose(e1, e0, rtol=1e-10)
    np.testing.assert_allclose(f1[:, :, [12, 11]], f0[:, :, [11, 12]], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("architecture", ["painn", "schnet"])
def test_identical_members_have_zero_uncertainty(ala2, perturbed, architecture):
    c = make_small_committee(ala2.atomic_numbers, architecture)
    with torch.no_grad():
        for p in c.potential.members.parameters():
            if p.dim() >= 1 and p.shape[0] == 3:
                p[1:] = p[0]
    x = perturbed(2)
    assert np.all(c.uncertainty(x, "force_variance") < 1e-20)
    assert np.all(c.uncertainty(x, "energy_std") < 1e-5)
    assert np.all(c.uncertainty(x, "max_force_deviation") < 1e-5)
    assert np.all(c.uncertainty(x, "force_variance") >= 0)


def test_different_members_disagree(any_committee, perturbed):
    assert np.all(any_committee.uncertainty(perturbed(2), "force_variance") > 1e-3)


@pytest.mark.parametrize("architecture", ["painn", "painn_cutoff", "schnet"])
def test_energy_is_smooth_across_the_cutoff(architecture):
    """Two atoms pulled through the cutoff: energy and force continuous (polynomial envelope)."""
    c = make_small_committee([6, 6], architecture, cutoff=0.5)
    r = np.linspace(0.49, 0.51, 201)
    x = np.zeros((len(r), 2, 3))
    x[:, 1, 0] = r
    e, f = c.energies_and_forces(x)
    assert np.max(np.abs(np.diff(e[:, 0]))) < 1e-6
    assert np.max(np.abs(np.diff(f[:, 0, 1, 0]))) < 1e-3
    assert np.allclose(e[r > 0.5], e[-1])
