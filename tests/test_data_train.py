"""Dataset storage, extxyz, and training."""

import numpy as np
import pytest
import torch

from openmm_adv.data import Dataset, read_extxyz, write_extxyz
from openmm_adv.models import Committee
from openmm_adv.systems import double_well
from openmm_adv.train import TrainingConfig, train_committee


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
    assert len(committee.metadata["training_energies"]) == 256 - 26
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
