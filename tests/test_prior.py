"""The bonded prior: bonds from geometry, a least-squares fit that recovers known terms and
Amber's stiffness, symmetry, bounded energies, and its place in training and saved committees."""

import numpy as np
import pytest
import torch

from conftest import example_prior_terms, make_small_committee
from openmm_adv.data import Dataset
from openmm_adv.models import Committee
from openmm_adv.models.prior import BondedPrior, atom_types, find_bonds, fit_bonded_prior
from openmm_adv.resources import default_dataset_path
from openmm_adv.train import CommitteeTrainer, TrainingConfig


def _prior_forces(prior: BondedPrior, xyz: np.ndarray) -> np.ndarray:
    x = torch.tensor(xyz, dtype=torch.float64, requires_grad=True)
    return -torch.autograd.grad(prior(x).sum(), x)[0].numpy()


@pytest.fixture(scope="module")
def shipped():
    return Dataset.load(default_dataset_path())


def test_bonds_found_from_geometry_are_the_topology_bonds(ala2):
    found = {tuple(b) for b in find_bonds(ala2.atomic_numbers, ala2.positions).tolist()}
    assert found == {tuple(sorted(b)) for b in ala2.bonds}


def test_unknown_element_asks_for_explicit_bonds():
    with pytest.raises(ValueError, match="pass the bonds explicitly"):
        find_bonds([1, 118], np.array([[0.0, 0, 0], [0.1, 0, 0]]))


def test_fit_recovers_known_terms(ala2):
    truth = BondedPrior(torch.float64)
    terms = example_prior_terms(ala2.atomic_numbers)
    types = atom_types(ala2.atomic_numbers, terms.bonds)
    # Give every type its own stiffness so the fit has something to tell apart.
    key = {t: 1.0 + 0.1 * i for i, t in enumerate(dict.fromkeys(types))}
    terms.bond_k = terms.bond_k * np.array([key[types[i]] * key[types[j]] for i, j in terms.bonds])
    terms.bond_r0 = np.array([0.11 if 1 in (ala2.atomic_numbers[i], ala2.atomic_numbers[j]) else 0.14
                              for i, j in terms.bonds])
    terms.angle_theta0 = np.full(len(terms.angles), np.radians(112.0))
    truth.set_terms(terms)
    rng = np.random.default_rng(0)
    xyz = ala2.positions[None] + rng.normal(0, 0.004, (200, 22, 3))
    fitted = fit_bonded_prior(ala2.atomic_numbers, xyz, _prior_forces(truth, xyz), bonds=terms.bonds)
    np.testing.assert_allclose(fitted.bond_k, terms.bond_k, rtol=1e-6)
    np.testing.assert_allclose(fitted.bond_r0, terms.bond_r0, rtol=1e-6)
    np.testing.assert_allclose(fitted.angle_k, terms.angle_k, rtol=1e-6)
    np.testing.assert_allclose(fitted.angle_theta0, terms.angle_theta0, rtol=1e-6)
    assert fitted.force_rms_after < 1e-6 * fitted.force_rms_before


def test_fit_to_amber_forces_finds_amber_stiffness_and_leaves_a_tenth(shipped):
    train, held_out = slice(0, 500), slice(500, 1000)
    terms = fit_bonded_prior(shipped.atomic_numbers, shipped.positions[train], shipped.forces[train])
    # ff14SB CT-HC / CT-H1: 340 kcal/mol/A^2 (k/2 in Amber's convention) = 284512 kJ/mol/nm^2, r0 0.109 nm.
    z = shipped.atomic_numbers
    c_h = [n for n, (i, j) in enumerate(terms.bonds) if sorted((z[i], z[j])) == [1, 6]]
    np.testing.assert_allclose(terms.bond_k[c_h], 284512.0, rtol=0.05)
    np.testing.assert_allclose(terms.bond_r0[c_h], 0.109, atol=0.001)
    prior = BondedPrior(torch.float64)
    prior.set_terms(terms)
    residual = shipped.forces[held_out] - _prior_forces(prior, shipped.positions[held_out])
    assert np.sqrt(np.mean(residual**2)) < 0.12 * np.sqrt(np.mean(shipped.forces[held_out] ** 2))


def test_equivalent_atoms_share_parameters(shipped):
    terms = fit_bonded_prior(shipped.atomic_numbers, shipped.positions[:300], shipped.forces[:300])
    # The three C-H bonds of the acetyl methyl group (C1 with H0, H2, H3).
    methyl = [n for n, b in enumerate(terms.bonds.tolist()) if b in ([0, 1], [1, 2], [1, 3])]
    assert len(methyl) == 3
    assert np.ptp(terms.bond_k[methyl]) == 0 and np.ptp(terms.bond_r0[methyl]) == 0


def test_terms_without_restoring_force_are_dropped(ala2):
    truth = BondedPrior(torch.float64)
    terms = example_prior_terms(ala2.atomic_numbers)
    types = atom_types(ala2.atomic_numbers, terms.bonds)
    pushed = np.array([types[i][0][0] == 8 or types[j][0][0] == 8 for i, j in terms.bonds])  # C=O bonds
    terms.bond_k = np.where(pushed, -2e4, terms.bond_k)
    truth.set_terms(terms)
    xyz = ala2.positions[None] + np.random.default_rng(1).normal(0, 0.004, (100, 22, 3))
    fitted = fit_bonded_prior(ala2.atomic_numbers, xyz, _prior_forces(truth, xyz), bonds=terms.bonds)
    assert len(fitted.bonds) == len(terms.bonds) - pushed.sum()
    assert (fitted.bond_k > 0).all() and (fitted.angle_k > 0).all()


def test_prior_adds_no_uncertainty_and_shifts_every_member_alike(ala2):
    plain = make_small_committee(ala2.atomic_numbers)
    with_prior = make_small_committee(ala2.atomic_numbers, "painn_prior")
    x = ala2.positions[None] + np.random.default_rng(2).normal(0, 0.01, (3, 22, 3))
    np.testing.assert_allclose(with_prior.uncertainty(x), plain.uncertainty(x), rtol=1e-8)
    de = with_prior.energies(x) - plain.energies(x)
    np.testing.assert_allclose(de, de[:, :1].repeat(3, 1), rtol=1e-10)
    assert (de > 0).all()


def test_trained_committee_carries_its_prior_through_save_load_and_fine_tuning(ala2, shipped, tmp_path):
    trainer = CommitteeTrainer("painn", dict(n_members=2, n_features=8, n_rbf=8, n_interactions=1),
                               TrainingConfig(epochs=1, batch_size=16), progress=False)
    assert trainer.prior == "bonded"
    data = Dataset(shipped.atomic_numbers)
    data.append(shipped.positions[:60], shipped.energies[:60], shipped.forces[:60], generation=0, sampler="md",
                oracle="amber")
    committee, _ = trainer.train(data)
    assert committee.metadata["prior"]["n_bonds"] == 21
    assert committee.potential.prior.n_terms == 21 + 36
    x = shipped.positions[100:104]
    loaded = Committee.load(committee.save(tmp_path / "c.pt"))
    np.testing.assert_allclose(loaded.energies(x), committee.energies(x), rtol=1e-5)
    # A C-H bond stretched by 30 % (about 150 kJ/mol in Amber): the prior's restoring force dominates what the members predict.
    stretched = x.copy()
    stretched[:, 0] = x[:, 1] + 1.3 * (x[:, 0] - x[:, 1])
    assert (loaded.energies(stretched) - loaded.energies(x) > 50.0).all()
    fine_tuner = CommitteeTrainer("painn", trainer.model_options,
                                  TrainingConfig(epochs=1, batch_size=16, warm_start_epochs=1,
                                                 learning_rate=1e-12), progress=False)
    tuned, _ = fine_tuner.train(data, start_from=loaded)
    torch.testing.assert_close(tuned.potential.prior.bond_k, committee.potential.prior.bond_k)
    np.testing.assert_allclose(tuned.energies(x), committee.energies(x), rtol=1e-4)


def test_prior_none_trains_without_one(shipped):
    trainer = CommitteeTrainer("painn", dict(n_members=2, n_features=8, n_rbf=8, n_interactions=1, prior="none"),
                               TrainingConfig(epochs=1), progress=False)
    data = Dataset(shipped.atomic_numbers)
    data.append(shipped.positions[:20], shipped.energies[:20], shipped.forces[:20], generation=0, sampler="md",
                oracle="amber")
    committee, _ = trainer.train(data)
    assert committee.potential.prior.n_terms == 0 and "prior" not in committee.metadata
    with pytest.raises(ValueError, match="prior must be one of"):
        CommitteeTrainer("painn", {"prior": "harmonic"})
