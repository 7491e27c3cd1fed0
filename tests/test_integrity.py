"""Data integrity where data enter: every hostile input of issue 12's table, refused before any
work with one line that names the problem and the fix, and the dataset left byte for byte as
it was.

New names of the package are imported inside the tests, so that each test also runs (and
fails) against the code before these checks existed.
"""

import hashlib
import json
import os
import shutil
import subprocess
import zipfile

import numpy as np
import pytest
import torch

from openmm_adv.cli import main
from openmm_adv.data import Dataset, read_extxyz, write_extxyz
from openmm_adv.resources import default_committee_path, default_dataset_path

TINY_MODEL = {"n_members": 2, "n_features": 8, "n_rbf": 8, "n_interactions": 1}


# ---------------------------------------------------------------------------- helpers
def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def write_yaml(path, data):
    import yaml

    path.write_text(yaml.safe_dump(data))
    return str(path)


def refused(capsys, command, *argv):
    """Run the CLI; assert exit 2 and exactly one stderr line for ``command``; return it."""
    code = main([command, *map(str, argv)])
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit {code}, stderr: {err}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"openmm-adv {command}: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def amber_frames():
    """40 frames of the shipped Amber-labelled alanine dipeptide data."""
    return Dataset.load(default_dataset_path()).subset(np.arange(40))


@pytest.fixture
def amber_dataset(tmp_path, amber_frames):
    """An Amber dataset written before oracle records existed (none stored)."""
    path = tmp_path / "amber.h5"
    amber_frames.save(path)
    return path


@pytest.fixture
def frames_to_label(tmp_path, amber_frames):
    path = tmp_path / "frames.extxyz"
    write_extxyz(path, amber_frames.atomic_numbers, amber_frames.positions[30:33])
    return path


@pytest.fixture
def no_labelling(monkeypatch):
    """Fail the test if any oracle starts labelling a batch (checks must come first)."""
    from openmm_adv.oracles.base import Oracle

    def forbidden(self, *args, **kwargs):
        raise AssertionError("the oracle ran before the input was refused")

    monkeypatch.setattr(Oracle, "label", forbidden)


@pytest.fixture
def no_training(monkeypatch):
    from openmm_adv.train import CommitteeTrainer

    def forbidden(self, *args, **kwargs):
        raise AssertionError("training ran before the input was refused")

    monkeypatch.setattr(CommitteeTrainer, "train", forbidden)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nothing can be written in. Root ignores permission bits, so as root it is a
    read-only tmpfs mounted there (skipped where mounting is not allowed)."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mount = shutil.which("mount")
    if mount is None or subprocess.run([mount, "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                                       capture_output=True).returncode != 0:
        pytest.skip("root without permission to mount a read-only file system")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


# ---------------------------------------------------------------------------- table row 1: another oracle
def test_label_with_xtb_into_an_amber_dataset_is_refused(tmp_path, capsys, amber_dataset, frames_to_label, no_labelling):
    """The file records no oracle: one probe label of its lowest frame shows xTB is not Amber."""
    pytest.importorskip("tblite")
    before = digest(amber_dataset)
    config = write_yaml(tmp_path / "label.yaml", {"input": str(frames_to_label), "output": str(amber_dataset),
                                                   "oracle": {"kind": "xtb"}})
    line = refused(capsys, "label", config, "--quiet")
    assert "gfn2-xtb" in line and "--allow-mixed-oracles" in line
    assert digest(amber_dataset) == before


def test_label_with_another_oracle_than_the_recorded_one_is_refused_before_any_oracle_call(
        tmp_path, capsys, amber_dataset, frames_to_label, monkeypatch):
    """A dataset labelled through `label` records its oracle; another one is refused by record."""
    pytest.importorskip("tblite")
    config = {"input": str(frames_to_label), "output": str(amber_dataset)}
    assert main(["label", write_yaml(tmp_path / "amber.yaml", config), "--quiet"]) == 0
    assert Dataset.load(amber_dataset).oracle_record["kind"] == "openmm"
    before = digest(amber_dataset)
    from openmm_adv.oracles import XTBOracle

    monkeypatch.setattr(XTBOracle, "compute", lambda *a, **k: pytest.fail("xTB ran"))
    line = refused(capsys, "label", write_yaml(tmp_path / "xtb.yaml", {**config, "oracle": {"kind": "xtb"}}), "--quiet")
    assert "openmm" in line and "xtb" in line and "allow_mixed" in line
    assert digest(amber_dataset) == before


def test_mixing_on_purpose_is_recorded_and_still_range_checked(tmp_path, capsys, amber_dataset, frames_to_label):
    pytest.importorskip("tblite")
    before = digest(amber_dataset)
    config = write_yaml(tmp_path / "label.yaml", {"input": str(frames_to_label), "output": str(amber_dataset),
                                                   "oracle": {"kind": "xtb"}})
    # Allowed to mix, xTB's energy zero is still 1e5 kJ/mol below the data: every label is refused.
    line = refused(capsys, "label", config, "--allow-mixed-oracles", "--quiet")
    assert "below the dataset's lowest" in line
    assert digest(amber_dataset) == before
    config = write_yaml(tmp_path / "label_inf.yaml", {"input": str(frames_to_label), "output": str(amber_dataset),
                                                       "oracle": {"kind": "xtb", "allow_mixed": True},
                                                       "max_label_energy": float("inf")})
    assert main(["label", config, "--quiet"]) == 0
    record = Dataset.load(amber_dataset).oracle_record
    assert record["kind"] == "mixed" and record["oracles"][-1]["kind"] == "xtb"


def test_loop_with_the_default_data_and_an_xtb_oracle_is_refused_before_training(tmp_path, capsys, no_training):
    pytest.importorskip("tblite")
    shipped = digest(default_dataset_path())
    config = write_yaml(tmp_path / "loop.yaml", {"oracle": {"kind": "xtb"}, "model": TINY_MODEL,
                                                  "training": {"epochs": 1}, "loop": {"generations": 1, "seeds": 2},
                                                  "samplers": {"attack": {"n_steps": 2}}})
    line = refused(capsys, "loop", config, "--run-dir", tmp_path / "run", "--quiet")
    assert "initial_data" in line and "gfn2-xtb" in line
    assert not (tmp_path / "run" / "dataset.h5").exists()
    assert digest(default_dataset_path()) == shipped


# ---------------------------------------------------------------------------- row 2: Angstrom as nm
@pytest.mark.parametrize("suffix", [".h5", ".extxyz"])
def test_frames_in_angstrom_given_as_nm_are_refused_before_labelling(tmp_path, capsys, amber_dataset, amber_frames,
                                                                     suffix, no_labelling):
    frames = tmp_path / f"angstrom{suffix}"
    x = amber_frames.positions[:3] * 10.0  # Angstrom values where nm belong
    if suffix == ".h5":
        wrong = Dataset(amber_frames.atomic_numbers)
        wrong.append(x, amber_frames.energies[:3], amber_frames.forces[:3])
        wrong.save(frames)
    else:
        write_extxyz(frames, amber_frames.atomic_numbers, x)  # an extxyz whose numbers are 10x Angstrom
    before = digest(amber_dataset)
    config = write_yaml(tmp_path / "label.yaml", {"input": str(frames), "output": str(amber_dataset)})
    line = refused(capsys, "label", config, "--quiet")
    assert "Angstrom" in line and "divide by 10" in line
    assert digest(amber_dataset) == before


def test_implausible_labels_are_refused_one_by_one_and_recorded(tmp_path, capsys, amber_dataset, amber_frames):
    """A stretched frame among good ones: the good ones are appended, it is recorded with its reason."""
    frames = amber_frames.positions[30:33].copy()
    frames[1, 0] += 0.1  # stretch a C-H bond by 1 Angstrom: over a thousand kJ/mol up
    path = tmp_path / "frames.extxyz"
    write_extxyz(path, amber_frames.atomic_numbers, frames)
    config = write_yaml(tmp_path / "label.yaml", {"input": str(path), "output": str(amber_dataset)})
    assert main(["label", config, "--quiet"]) == 0
    assert len(Dataset.load(amber_dataset)) == len(amber_frames) + 2
    failures = json.loads((tmp_path / "amber.h5.failures.json").read_text())
    assert [f["frame"] for f in failures] == [1] and "above the dataset's lowest" in failures[0]["reason"]


def test_label_problems_name_each_kind_of_implausible_label():
    from openmm_adv.plausibility import MAX_ATOMIC_FORCE, label_problems

    forces = np.zeros((5, 3, 3))
    forces[1, 0, 0] = 2 * MAX_ATOMIC_FORCE
    energies = np.array([0.0, 0.0, 1e6, 500.0, -500.0])
    problems = label_problems(energies, forces, 3, lowest=0.0, max_label_energy=100.0)
    assert problems[0] is None
    assert "atomic force" in problems[1] and "per atom" in problems[2]
    assert "above the dataset's lowest" in problems[3] and "below the dataset's lowest" in problems[4]
    assert label_problems(energies[3:], forces[3:], 3, lowest=0.0, max_label_energy=None) == [None, None]


def test_units_problem_sees_both_directions(amber_frames):
    from openmm_adv.plausibility import units_problem

    z, x = amber_frames.atomic_numbers, amber_frames.positions
    assert units_problem(z, x) is None
    assert "divide by 10" in units_problem(z, 10 * x)
    assert "too small" in units_problem(z, x / 10)


# ---------------------------------------------------------------------------- row 4: non-finite values
@pytest.fixture
def nan_dataset(tmp_path, amber_frames):
    path = tmp_path / "nan.h5"
    amber_frames.save(path)
    import h5py

    with h5py.File(path, "a") as f:  # as a foreign tool or a corrupted copy would leave it
        f["energies"][3] = np.nan
    return path


@pytest.mark.parametrize("keep_best", [True, False])
def test_a_nan_energy_is_refused_naming_the_file_and_row(tmp_path, capsys, nan_dataset, keep_best):
    config = write_yaml(tmp_path / "train.yaml", {"output": str(tmp_path / "c.pt"), "data": {"path": str(nan_dataset)},
                                                   "model": TINY_MODEL, "training": {"epochs": 1, "keep_best": keep_best}})
    line = refused(capsys, "train", config, "--quiet")
    assert str(nan_dataset) in line and "rows [3]" in line
    assert not (tmp_path / "c.pt").exists()


def test_non_finite_values_never_enter_a_dataset_file(tmp_path, amber_frames):
    data = amber_frames.subset(np.arange(5))
    data.forces = data.forces.copy()
    data.forces[2, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"forces at rows \[2\]"):
        data.save(tmp_path / "bad.h5")
    assert not (tmp_path / "bad.h5").exists()
    good = tmp_path / "good.h5"
    amber_frames.save(good)
    before = digest(good)
    with pytest.raises(ValueError, match=r"non-finite"):
        Dataset.append_to_file(good, data)
    assert digest(good) == before


class _MemberWithADeadWeight(torch.nn.Module):
    """A member with a parameter the energy never reaches: training leaves it as it is."""

    def __init__(self, seed):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(3, generator=torch.Generator().manual_seed(seed)))
        self.dead = torch.nn.Parameter(torch.tensor([0.0]))

    def forward(self, positions):
        return (positions * self.weight).sum(dim=(1, 2)) + (positions ** 2).sum(dim=(1, 2))


def test_a_committee_with_nan_weights_is_never_kept_or_saved(tmp_path, amber_frames):
    from openmm_adv.models import Committee
    from openmm_adv.train import TrainingConfig, train_committee

    committee = Committee.from_models([_MemberWithADeadWeight(k) for k in range(2)], amber_frames.atomic_numbers)
    with torch.no_grad():
        committee.potential.members.members[0].dead.fill_(float("nan"))
    config = TrainingConfig(epochs=2, keep_best=False, bootstrap=False)
    with pytest.raises(ValueError, match="non-finite weights"):
        train_committee(committee, amber_frames.positions, amber_frames.energies, amber_frames.forces, config,
                        progress=False)
    with pytest.raises(ValueError, match="non-finite weights"):
        committee.save(tmp_path / "nan.pt")
    assert not (tmp_path / "nan.pt").exists()


# ---------------------------------------------------------------------------- row 5: silent config values
def test_a_nan_selection_window_is_refused(tmp_path, capsys):
    config = write_yaml(tmp_path / "attack.yaml", {"output": str(tmp_path / "c.extxyz"), "n_seeds": 2,
                                                    "selection": {"lower": float("nan")}})
    line = refused(capsys, "attack", config, "--quiet")
    assert "selection.lower" in line and ".nan" in line
    assert not (tmp_path / "c.extxyz").exists()


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path, capsys):
    path = tmp_path / "attack.yaml"
    path.write_text(f"output: {tmp_path / 'c.extxyz'}\nn_seeds: 2\nselection:\n  lower: 1.0\n  lower: 2.0\n")
    line = refused(capsys, "attack", path, "--quiet")
    assert "'lower'" in line and "line 5" in line and "line 4" in line


def test_export_of_a_generation_that_does_not_exist_is_refused(tmp_path, capsys, amber_dataset):
    line = refused(capsys, "export", amber_dataset, "--output", tmp_path / "g.extxyz", "--generation", 99)
    assert "--generation 99" in line and "generations are 0" in line
    assert not (tmp_path / "g.extxyz").exists()


# ---------------------------------------------------------------------------- row 6: read-only outputs
def _commands(tmp_path, out, amber_dataset, frames_to_label):
    model = {"model": TINY_MODEL, "training": {"epochs": 1}}
    return {
        "label": ["label", write_yaml(tmp_path / "label.yaml", {"input": str(frames_to_label),
                                                                "output": str(out / "new.h5")}), "--quiet"],
        "train": ["train", write_yaml(tmp_path / "train.yaml", {"output": str(out / "c.pt"),
                                                                "data": {"path": str(amber_dataset)}, **model}), "--quiet"],
        "attack": ["attack", write_yaml(tmp_path / "attack.yaml", {"output": str(out / "c.extxyz"), "n_seeds": 2}),
                   "--quiet"],
        "loop": ["loop", write_yaml(tmp_path / "loop.yaml", {**model, "loop": {"generations": 1}}),
                 "--run-dir", str(out / "run"), "--quiet"],
        "export": ["export", str(amber_dataset), "--output", str(out / "x.extxyz")],
        "demo": ["demo", "--output", str(out / "demo"), "--seeds", "2", "--steps", "2", "--quiet"],
        "init": ["init", write_yaml(tmp_path / "init.yaml", {"output": str(out / "init.h5"), "n_frames": 4}), "--quiet"],
        "md": ["md", write_yaml(tmp_path / "md.yaml", {"output": str(out / "md"), "n_steps": 10}), "--quiet"],
    }


@pytest.mark.parametrize("command", ["label", "train", "attack", "loop", "export", "demo", "init", "md"])
def test_a_read_only_output_folder_is_refused_before_any_work(tmp_path, capsys, read_only_dir, amber_dataset,
                                                              frames_to_label, command, no_labelling, no_training):
    argv = _commands(tmp_path, read_only_dir, amber_dataset, frames_to_label)[command]
    line = refused(capsys, *argv)
    assert str(read_only_dir) in line and "writable" in line


# ---------------------------------------------------------------------------- row 7: bad target dataset
def test_label_into_a_truncated_dataset_fails_before_the_oracle_runs(tmp_path, capsys, amber_dataset, frames_to_label,
                                                                    no_labelling):
    data = amber_dataset.read_bytes()
    amber_dataset.write_bytes(data[: len(data) // 2])
    before = digest(amber_dataset)
    config = write_yaml(tmp_path / "label.yaml", {"input": str(frames_to_label), "output": str(amber_dataset)})
    line = refused(capsys, "label", config, "--quiet")
    assert str(amber_dataset) in line and "corrupt" in line
    assert digest(amber_dataset) == before


def test_label_into_another_molecules_dataset_fails_before_the_oracle_runs(tmp_path, capsys, frames_to_label,
                                                                          no_labelling):
    other = Dataset([8, 1, 1])
    other.append(np.array([[[0, 0, 0], [0.096, 0, 0], [-0.024, 0.093, 0]]]), [0.0], np.zeros((1, 3, 3)))
    path = tmp_path / "water.h5"
    other.save(path)
    before = digest(path)
    config = write_yaml(tmp_path / "label.yaml", {"input": str(frames_to_label), "output": str(path)})
    line = refused(capsys, "label", config, "--quiet")
    assert "another molecule" in line and "3 atoms" in line
    assert digest(path) == before


# ---------------------------------------------------------------------------- row 8: misleading messages
def test_a_platform_that_is_not_here_is_named_with_those_that_are(tmp_path, capsys):
    import openmm

    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if "CUDA" in names:
        pytest.skip("this machine has an OpenMM CUDA platform")
    line = refused(capsys, "demo", "--platform", "CUDA", "--output", tmp_path / "demo", "--seeds", "2", "--quiet")
    assert "'CUDA'" in line and "Reference" in line and "CPU" in line
    assert not (tmp_path / "demo").exists()


def test_an_infinite_learning_rate_names_the_key(tmp_path, capsys, amber_dataset, no_training):
    config = write_yaml(tmp_path / "train.yaml", {"output": str(tmp_path / "c.pt"), "data": {"path": str(amber_dataset)},
                                                   "model": TINY_MODEL, "training": {"learning_rate": float("inf")}})
    line = refused(capsys, "train", config, "--quiet")
    assert "training.learning_rate" in line and "finite" in line


@pytest.mark.parametrize("seeds", [0, 5000])
def test_demo_seeds_out_of_range(tmp_path, capsys, seeds):
    line = refused(capsys, "demo", "--seeds", seeds, "--output", tmp_path / "demo", "--quiet")
    assert "--seeds must be between 1 and 1000" in line
    assert not (tmp_path / "demo").exists()


def test_an_empty_seed_dataset_is_named(tmp_path, capsys, amber_frames):
    empty = tmp_path / "empty.h5"
    Dataset(amber_frames.atomic_numbers).save(empty)
    config = write_yaml(tmp_path / "attack.yaml", {"output": str(tmp_path / "c.extxyz"), "seeds": {"path": str(empty)}})
    line = refused(capsys, "attack", config, "--quiet")
    assert "seeds.path" in line and "holds no structures" in line


# ---------------------------------------------------------------------------- row 9: corrupt committee metadata
def test_a_committee_with_corrupt_metadata_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(default_committee_path()) as source, zipfile.ZipFile(bad, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.endswith("openmm_adv_metadata.json"):
                data = data[:50]  # cut mid-string
            target.writestr(item, data)
    config = write_yaml(tmp_path / "attack.yaml", {"output": str(tmp_path / "c.extxyz"), "committee": str(bad),
                                                    "n_seeds": 2})
    line = refused(capsys, "attack", config, "--quiet")
    assert str(bad) in line and "not valid JSON" in line


# ---------------------------------------------------------------------------- row 10: extxyz elements
def test_every_element_survives_an_extxyz_round_trip(tmp_path):
    z = np.arange(1, 117)
    x = np.random.default_rng(0).normal(size=(1, len(z), 3))
    write_extxyz(tmp_path / "all.extxyz", z, x, [1.0], np.zeros((1, len(z), 3)))
    numbers, positions, energies, forces = read_extxyz(tmp_path / "all.extxyz")
    np.testing.assert_array_equal(numbers, z)
    np.testing.assert_allclose(positions, x, atol=1e-10)


def test_an_unknown_element_symbol_is_named_with_its_line(tmp_path):
    path = tmp_path / "bad.extxyz"
    path.write_text('2\nProperties=species:S:1:pos:R:3 pbc="F F F"\nC 0 0 0\nXq 1 0 0\n')
    with pytest.raises(ValueError, match=r"line 4: unknown element symbol 'Xq'"):
        read_extxyz(path)


# ---------------------------------------------------------------------------- the oracle record itself
def test_the_oracle_record_travels_with_the_file_and_guards_appends(tmp_path, amber_frames):
    from openmm_adv.oracle_record import OracleMismatchError

    path = tmp_path / "data.h5"
    first = amber_frames.subset(np.arange(5))
    first.oracle_record = {"kind": "openmm", "system_sha256": "a"}
    first.save(path)
    assert Dataset.load(path).oracle_record == {"kind": "openmm", "system_sha256": "a"}
    other = amber_frames.subset(np.arange(5, 8))
    other.oracle_record = {"kind": "xtb", "method": "GFN2-xTB"}
    before = digest(path)
    with pytest.raises(OracleMismatchError, match="allow-mixed-oracles"):
        Dataset.append_to_file(path, other)
    assert digest(path) == before
    assert Dataset.append_to_file(path, other, allow_mixed_oracles=True) == 8
    assert [r["kind"] for r in Dataset.load(path).oracle_record["oracles"]] == ["openmm", "xtb"]
    legacy = tmp_path / "legacy.h5"
    amber_frames.subset(np.arange(5)).save(legacy)  # no record: adopts the first one appended
    Dataset.append_to_file(legacy, other)
    assert Dataset.load(legacy).oracle_record == {"kind": "xtb", "method": "GFN2-xTB"}


def test_oracle_descriptors_tell_oracles_apart_and_ignore_runtime_settings(ala2):
    from openmm_adv.oracles import make_oracle

    amber = make_oracle("openmm", ala2)
    assert amber.descriptor() == make_oracle("openmm", ala2, platform="CPU", name="amber").descriptor()
    pytest.importorskip("tblite")
    xtb = make_oracle("xtb", ala2)
    assert xtb.descriptor() == make_oracle("xtb", ala2, threads=2).descriptor()
    assert xtb.descriptor() != make_oracle("xtb", ala2, method="GFN1-xTB").descriptor() != amber.descriptor()


def test_the_probe_accepts_the_oracle_that_made_the_labels(tmp_path, ala2, amber_frames):
    """The shipped frames' Amber labels are reproduced by the openmm oracle: the loop's and
    label's check for files without a record lets them through."""
    from openmm_adv.oracle_record import check_oracle
    from openmm_adv.oracles import make_oracle

    record = check_oracle(make_oracle("openmm", ala2), amber_frames)
    assert record["kind"] == "openmm"
