"""Dataset storage, extxyz, and training."""

import numpy as np
import pytest
import torch

from openmm_adv.data import Dataset, read_extxyz, write_extxyz
from openmm_adv.models import Committee
from openmm_adv.systems import double_well
from openmm_adv.train import CommitteeTrainer, TrainingConfig, train_committee, validation_mask


def test_dataset_round_trip(tmp_path, ala2, perturbed):
    x = perturbed(3)
    e, f = ala2.reference_energies_forces(x)
    d = Dataset(ala2.atomic_numbers)
    d.append(x, e, f, generation=2, sampler="attack", uncertainty=[1, 2, 3], oracle="amber14")
    path = d.save(tmp_path / "d.h5")
    back = Dataset.load(path)
    np.testing.assert_array_equal(back.positions, x)
    np.testing.assert_array_equal(back.forces, f)
    assert back.provenance["sampler"][0] == b"attack" and back.provenance["generation"].tolist() == [2, 2, 2]
    assert not (tmp_path / "d.h5.tmp").exists()
    with pytest.raises(ValueError, match="finite"):
        d.append(x[:1] * np.nan, e[:1], f[:1])
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="corrupt"):
        Dataset.load(tmp_path / "junk.h5")


def test_extxyz_round_trip_and_ase(tmp_path, ala2, perturbed):
    x = perturbed(2)
    e, f = ala2.reference_energies_forces(x)
    path = write_extxyz(tmp_path / "a.extxyz", ala2.atomic_numbers, x, e, f)
    z, x2, e2, f2 = read_extxyz(path)
    np.testing.assert_array_equal(z, ala2.atomic_numbers)
    np.testing.assert_allclose(x2, x, atol=1e-10)
    np.testing.assert_allclose(e2, e, rtol=1e-9)
    np.testing.assert_allclose(f2, f, rtol=1e-8, atol=1e-7)
    ase_io = pytest.importorskip("ase.io")
    atoms = ase_io.read(str(path), index=":")
    assert len(atoms) == 2
    assert atoms[0].get_potential_energy() == pytest.approx(e[0] / 96.48533212331, rel=1e-8)
    np.testing.assert_allclose(atoms[1].positions, x[1] * 10, atol=1e-8)


def test_training_fits_the_double_well():
    toy = double_well()
    rng = np.random.default_rng(0)
    xy = rng.uniform([-1.4, -0.4], [1.4, 0.4], size=(256, 2))
    x = np.concatenate([xy, np.zeros((256, 1))], 1)[:, None, :]
    e, f = toy.reference_energies_forces(x)
    committee = Committee.mlp(n_members=3, hidden=32, seed=1)
    before = np.abs(committee.energies(x).mean(1) - e).mean()
    report = train_committee(committee, x, e, f, TrainingConfig(epochs=60, batch_size=32, learning_rate=1e-2, patience=60), progress=False)
    assert report.summary()["val_energy_mae_kj_mol"] < 0.25 * before
    n_val = committee.metadata["n_validation"]
    assert 10 <= n_val <= 45 and len(committee.metadata["training_energies"]) == 256 - n_val
    assert committee.metadata["metrics"]["epochs_run"] == report.epochs_run
    # members stay different (bootstrap + different initialisation)
    assert committee.uncertainty(x[:4]).min() > 0


def test_keep_best_false_trains_every_epoch():
    toy = double_well()
    rng = np.random.default_rng(1)
    xy = rng.normal([-1.0, 0.0], 0.1, size=(20, 2))
    x = np.concatenate([xy, np.zeros((20, 1))], 1)[:, None, :]
    e, f = toy.reference_energies_forces(x)
    committee = Committee.mlp(n_members=2, hidden=8, seed=0)
    report = train_committee(committee, x, e, f, TrainingConfig(epochs=12, patience=2, keep_best=False), progress=False)
    assert report.epochs_run == 12 and report.best_epoch == 11


def _toy_dataset(n, seed, centre=(-1.0, 0.0), scale=0.3):
    toy = double_well()
    rng = np.random.default_rng(seed)
    xy = rng.normal(centre, scale, size=(n, 2))
    x = np.concatenate([xy, np.zeros((n, 1))], 1)[:, None, :]
    e, f = toy.reference_energies_forces(x)
    data = Dataset(toy.atomic_numbers)
    data.append(x, e, f, generation=0, sampler="test", oracle="analytic")
    return data


def test_warm_start_fine_tunes_the_given_committee(tmp_path):
    data = _toy_dataset(64, 0)
    trainer = CommitteeTrainer("mlp", {"n_members": 3, "hidden": 16},
                               TrainingConfig(epochs=80, batch_size=16, learning_rate=1e-2, patience=80,
                                              warm_start_epochs=1, warm_start_learning_rate=1e-7), progress=False)
    source, _ = trainer.train(data, seed=0)
    probe = data.positions[:16]
    # one epoch at a negligible rate: the fine-tuned committee is the source committee
    tuned, report = trainer.train(data, seed=5, start_from=source)
    assert report.epochs_run == 1
    np.testing.assert_allclose(tuned.energies(probe), source.energies(probe), atol=1e-3)
    assert tuned.metadata["fine_tuned_from"] == source.metadata["training_data_hash"]
    # a fresh committee from the same seed is nowhere near it
    fresh = trainer.new_committee(data.atomic_numbers, seed=5)
    assert np.abs(fresh.energies(probe) - source.energies(probe)).max() > 1.0
    # a saved (TorchScript) committee is a starting point too, and fine-tuning on new data
    # moves the model towards it
    source.save(tmp_path / "source.pt")
    loaded = Committee.load(tmp_path / "source.pt")
    trainer.config.warm_start_learning_rate = 1e-2
    trainer.config.warm_start_epochs = 40
    right = _toy_dataset(64, 1, centre=(1.0, 0.0))
    before = np.abs(loaded.energies(right.positions).mean(1) - right.energies).mean()
    tuned, _ = trainer.train(right, seed=6, start_from=loaded)
    after = np.abs(tuned.energies(right.positions).mean(1) - right.energies).mean()
    assert after < 0.5 * before


def test_warm_start_refuses_another_architecture():
    data = _toy_dataset(16, 0)
    small = CommitteeTrainer("mlp", {"n_members": 2, "hidden": 8}, TrainingConfig(epochs=1), progress=False)
    big = CommitteeTrainer("mlp", {"n_members": 2, "hidden": 16}, TrainingConfig(epochs=1), progress=False)
    source, _ = small.train(data)
    with pytest.raises(ValueError, match="another architecture or hyperparameters"):
        big.train(data, start_from=source)


def test_validation_split_is_fixed_as_the_data_grow():
    small, large = validation_mask(100, 0.1, split_seed=4), validation_mask(180, 0.1, split_seed=4)
    np.testing.assert_array_equal(large[:100], small)
    assert 0.03 < large.mean() < 0.2
    assert validation_mask(3, 0.01).sum() == 1 and validation_mask(3, 0.99).sum() == 2
    # two generations of a run: every structure keeps its split, whatever the seed offset
    first, second = _toy_dataset(40, 0), _toy_dataset(40, 0)
    second.append(_toy_dataset(30, 1).positions, _toy_dataset(30, 1).energies, _toy_dataset(30, 1).forces,
                  generation=1, sampler="test", oracle="analytic")
    trainer = CommitteeTrainer("mlp", {"n_members": 2, "hidden": 8}, TrainingConfig(epochs=1), progress=False)
    c1, _ = trainer.train(first, seed=0)
    c2, _ = trainer.train(second, seed=1)
    n1 = len(c1.metadata["training_energies"])
    assert c2.metadata["training_energies"][:n1] == c1.metadata["training_energies"]


def test_non_finite_labels_are_refused_with_their_frames():
    data = _toy_dataset(12, 0)
    e, f = data.energies.copy(), data.forces.copy()
    e[7] = np.nan
    f[3, 0, 1] = np.inf
    committee = Committee.mlp(n_members=2, hidden=8)
    with pytest.raises(ValueError, match=r"energies at frames \[7\]; forces at frames \[3\]"):
        train_committee(committee, data.positions, e, f, TrainingConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        train_committee(committee, data.positions, e, f, TrainingConfig(epochs=1, keep_best=False), progress=False)


def test_diverging_training_is_an_error_not_a_nan_committee():
    data = _toy_dataset(32, 0)
    committee = Committee.mlp(n_members=2, hidden=8)
    with pytest.raises(ValueError, match="diverged|non-finite"):
        train_committee(committee, data.positions, data.energies, data.forces,
                        TrainingConfig(epochs=20, learning_rate=1e30, keep_best=False), progress=False)


def test_committee_and_member_errors_are_reported():
    data = _toy_dataset(64, 0)
    committee = Committee.mlp(n_members=3, hidden=16, seed=2)
    report = train_committee(committee, data.positions, data.energies, data.forces,
                             TrainingConfig(epochs=5, ema_decay=0.9, lr_schedule="cosine"), progress=False)
    summary = report.summary()
    assert len(summary["val_member_force_mae_kj_mol_nm"]) == 3
    # the mean's absolute error is at most the members' mean absolute error (triangle inequality)
    assert summary["val_committee_force_mae_kj_mol_nm"] <= summary["val_force_mae_kj_mol_nm"] + 1e-9
    assert summary["val_committee_energy_mae_kj_mol"] <= summary["val_energy_mae_kj_mol"] + 1e-9
    assert committee.metadata["metrics"]["val_committee_force_mae_kj_mol_nm"] == summary["val_committee_force_mae_kj_mol_nm"]
    # cosine schedule: the rate decays to its floor over the epochs
    assert report.history[-1]["lr"] < 0.1 * report.history[0]["lr"]


def test_ema_weights_are_the_ones_kept():
    data = _toy_dataset(64, 0)
    raw, averaged = Committee.mlp(n_members=2, hidden=8, seed=2), Committee.mlp(n_members=2, hidden=8, seed=2)
    config = dict(epochs=6, keep_best=False, bootstrap=False)
    train_committee(raw, data.positions, data.energies, data.forces, TrainingConfig(**config), progress=False)
    train_committee(averaged, data.positions, data.energies, data.forces, TrainingConfig(ema_decay=0.99, **config),
                    progress=False)
    untrained = Committee.mlp(n_members=2, hidden=8, seed=2)
    probe = data.positions[:8]
    # with decay 0.99 over ~12 steps the average stays close to the initial weights
    d_avg = np.abs(averaged.energies(probe) - untrained.energies(probe)).max()
    d_raw = np.abs(raw.energies(probe) - untrained.energies(probe)).max()
    assert d_avg < d_raw
