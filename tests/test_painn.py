"""The equivariant default member architecture: its two pair paths, TorchScript, large molecules."""

import numpy as np
import pytest
import torch

from openmm_adv.models import Committee, StackedPaiNN

from conftest import make_small_committee


def test_all_pairs_and_cutoff_paths_agree(ala2, perturbed):
    """The dense pair tensor and the explicit neighbour list are one function (same weights)."""
    dense = make_small_committee(ala2.atomic_numbers, "painn", neighbor_list="all_pairs", cutoff=0.35)
    sparse = make_small_committee(ala2.atomic_numbers, "painn_cutoff", cutoff=0.35)
    assert dense.potential.members.use_all_pairs and not sparse.potential.members.use_all_pairs
    x = perturbed(3, scale=0.02)
    e0, f0 = dense.energies_and_forces(x)
    e1, f1 = sparse.energies_and_forces(x)
    np.testing.assert_allclose(e1, e0, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(f1, f0, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(sparse.uncertainty(x), dense.uncertainty(x), rtol=1e-10)


@pytest.mark.parametrize("neighbor_list", ["all_pairs", "cutoff"])
def test_scripted_equals_eager_with_double_backward(ala2, perturbed, neighbor_list):
    c = make_small_committee(ala2.atomic_numbers, "painn", neighbor_list=neighbor_list)
    scripted = c.scripted()
    x = torch.tensor(perturbed(2, scale=0.01), requires_grad=True)
    grads = []
    for module in (c.potential, scripted):
        e, f = module.energies_and_forces(x, True)
        u = f.var(1).mean((1, 2)).sum()
        grads.append(torch.autograd.grad(u, x)[0])
        assert torch.isfinite(grads[-1]).all()
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-10)


def test_auto_neighbor_list_switches_on_size():
    assert StackedPaiNN([6] * 20, n_members=2, n_features=4).use_all_pairs
    assert not StackedPaiNN([6] * 100, n_members=2, n_features=4).use_all_pairs
    with pytest.raises(ValueError, match="neighbor_list"):
        StackedPaiNN([6, 6], neighbor_list="verlet")
    with pytest.raises(ValueError, match="cutoff"):
        StackedPaiNN([6, 6], cutoff=0.0)


def test_large_molecule_fits_with_a_neighbour_list():
    """600 atoms (a small protein in vacuum): the cutoff path keeps only close pairs.

    A dense all-pairs tensor of this size would hold M * N^2 * K = 5 * 360,000 * 16 floats per
    layer input (and several times that for the backward passes); the neighbour list keeps
    about 30 neighbours per atom.
    """
    rng = np.random.default_rng(0)
    n = 600
    # Atoms on a jittered cubic lattice of 0.15 nm spacing: a dense, protein-like packing.
    side = int(np.ceil(n ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
    x = 0.15 * grid + 0.01 * rng.normal(size=(n, 3))
    z = rng.choice([1, 6, 7, 8], size=n)
    c = Committee.painn(z, n_members=5, n_features=16, n_rbf=8, n_interactions=2, cutoff=0.5)
    members = c.potential.members
    assert not members.use_all_pairs
    dst, src = members._cutoff_pairs(torch.tensor(x, dtype=torch.float32).unsqueeze(0).expand(5, -1, -1), 1)
    assert len(dst) < 0.2 * n * n  # far fewer than all pairs
    e, f = c.energies_and_forces(x)
    assert e.shape == (1, 5) and f.shape == (1, 5, n, 3)
    assert np.isfinite(e).all() and np.isfinite(f).all()
    # Net force vanishes (translation invariance) for every member.
    np.testing.assert_allclose(f.sum(2), 0.0, atol=1e-2 * np.abs(f).max())
