"""Faults in the active-learning loop: kills at random points, corrupt checkpoints, failing oracles.

A kill is simulated by wrapping ``os.replace``, the one call through which every artifact of a run
(loop.json, dataset.h5, committee.pt, training.json, the npz files, log.jsonl) reaches its
final name. Dying just before the k-th rename leaves the state of a kill anywhere since the
previous rename (a stale temporary file included); dying just after it leaves the state of a kill
right after that file became durable. Nothing else the loop does persists, so these points are
all the states a kill can leave behind.
"""

import json
import os
import signal
import subprocess
import sys
import shutil
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from openmm_adv.data import Dataset
from openmm_adv.loop import ActiveLearningLoop, read_log
from openmm_adv.oracles import AnalyticOracle
from openmm_adv.samplers import AttackSampler
from openmm_adv.selection import Selector
from openmm_adv.systems import double_well
from openmm_adv.train import CommitteeTrainer, TrainingConfig

KILL_SEED = 2026  # the kill points are drawn from this seed (printed by the tests: run with -s)


class Killed(BaseException):
    """A simulated kill: a BaseException, so no ``except Exception`` in the code under test
    swallows it."""


def _initial_data(toy, n=16, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.normal([-1.0, 0.0], [0.12, 0.12], size=(n, 2))
    x = np.concatenate([xy, np.zeros((n, 1))], 1)[:, None, :]
    e, f = toy.reference_energies_forces(x)
    data = Dataset(toy.atomic_numbers)
    data.append(x, e, f, generation=0, sampler="initial", oracle="analytic")
    return data


class CountingOracle:
    """The analytic oracle, counting the structures it is asked to label (a kill can come
    after an oracle call and before the loop counts it)."""

    calls = 0

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name

    def compute(self, positions):
        CountingOracle.calls += len(positions)
        return self.inner.compute(positions)


def fault_loop_kwargs(run_dir, n_generations=2, **overrides):
    """The cheapest loop that runs every stage (train, sample, select, label, append, log,
    final training): the 2-D double well, its analytic oracle, a tiny MLP committee."""
    toy = double_well()
    kwargs = dict(
        system=toy,
        oracle=CountingOracle(AnalyticOracle.for_toy(toy)),
        samplers=[AttackSampler(kT=5.0, n_steps=10, step_size=0.05, max_step=0.1, max_displacement=1.0,
                                batch_size=4, report_interval=5, platform="Reference", progress=False)],
        selector=Selector(min_rmsd=0.02, max_selected=3),
        trainer=CommitteeTrainer("mlp", {"n_members": 2, "hidden": 8},
                                 TrainingConfig(epochs=3, batch_size=8, learning_rate=1e-2, patience=3),
                                 progress=False),
        initial_data=_initial_data(toy),
        run_dir=run_dir,
        n_generations=n_generations,
        seeds_per_generation=4,
        seed=0,
        progress=False,
        echo=None,
    )
    kwargs.update(overrides)
    return kwargs


def fault_loop(run_dir, **overrides):
    return ActiveLearningLoop(**fault_loop_kwargs(run_dir, **overrides))


class KillSwitch:
    """Replaces ``os.replace``; with ``kill_at=k`` the process "dies" at fault point ``k``
    (``2j - 1``: just before the j-th rename, ``2j``: just after it)."""

    def __init__(self, monkeypatch, kill_at=None):
        self.kill_at, self.points, self.renamed = kill_at, 0, []
        real = os.replace

        def replace(src, dst, *args, **kwargs):
            self._point(f"before renaming {Path(dst).name}")
            real(src, dst, *args, **kwargs)
            self.renamed.append(Path(dst))
            self._point(f"after renaming {Path(dst).name}")

        monkeypatch.setattr(os, "replace", replace)

    def _point(self, where):
        self.points += 1
        if self.points == self.kill_at:
            raise Killed(f"fault point {self.points}: {where}")


def _content(path):
    """Everything in a dataset except the wall-clock time stamps."""
    data = Dataset.load(path)
    return data.positions, data.energies, data.forces, {k: v for k, v in data.provenance.items() if k != "time"}


def assert_same_dataset(a, b):
    pa, ea, fa, prova = _content(a)
    pb, eb, fb, provb = _content(b)
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(ea, eb)
    np.testing.assert_array_equal(fa, fb)
    assert prova.keys() == provb.keys()
    for key in prova:
        np.testing.assert_array_equal(prova[key], provb[key], err_msg=key)


def _without_times(record):
    if isinstance(record, dict):
        return {k: _without_times(v) for k, v in record.items() if "seconds" not in k and k != "committee_path"}
    if isinstance(record, list):
        return [_without_times(v) for v in record]
    return record


def assert_same_log(a, b):
    assert [_without_times(r) for r in read_log(a)] == [_without_times(r) for r in read_log(b)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its folder, its number of fault points and of oracle calls."""
    run_dir = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        switch = KillSwitch(mp)
        CountingOracle.calls = 0
        fault_loop(run_dir).run()
    return run_dir, switch.points, CountingOracle.calls


# ---------------------------------------------------------------------------- the first append
def test_first_append_is_one_atomic_step(tmp_path, monkeypatch):
    """A kill at any point of the append that creates a dataset leaves no file or the whole
    tagged file; so a repeated append (a resumed run) never adds the records twice."""
    toy = double_well()
    records = _initial_data(toy, n=5)
    n_points = None
    kill_at = 1
    while n_points is None or kill_at <= n_points:
        path = tmp_path / f"kill_{kill_at}" / "data.h5"
        path.parent.mkdir()
        with monkeypatch.context() as mp:
            switch = KillSwitch(mp, kill_at)
            try:
                Dataset.append_to_file(path, records, tag="initial")
                n_points = switch.points
            except Killed:
                pass
        if path.exists():
            assert Dataset.file_tags(path) == ["initial"], f"kill at point {kill_at} left an untagged dataset"
        assert Dataset.append_to_file(path, records, tag="initial") == 5
        assert len(Dataset.load(path)) == 5
        kill_at += 1
    assert n_points >= 2


# ---------------------------------------------------------------------------- kills at random points
@pytest.mark.slow
def test_kills_at_random_points_resume_to_the_uninterrupted_run(tmp_path, reference, monkeypatch):
    """Twelve independent runs, each killed once at a fault point drawn from ``KILL_SEED`` over
    the whole run, then resumed: the dataset (positions, energies, forces, provenance) and the
    log are those of the uninterrupted run, and at most the one label being saved at the kill
    is computed again."""
    ref_dir, n_points, ref_calls = reference
    points = sorted(np.random.default_rng(KILL_SEED).choice(np.arange(1, n_points + 1), 12, replace=False).tolist())
    print(f"\n{n_points} fault points in an uninterrupted run; killing at {points} (seed {KILL_SEED})")
    for point in points:
        run_dir = tmp_path / f"kill_{point}"
        CountingOracle.calls = 0
        with monkeypatch.context() as mp:
            KillSwitch(mp, point)
            with pytest.raises(Killed) as killed:
                fault_loop(run_dir).run()
        fault_loop(run_dir).run()
        print(f"  {killed.value}: resumed, dataset and log identical")
        assert_same_dataset(ref_dir / "dataset.h5", run_dir / "dataset.h5")
        assert_same_log(ref_dir / "log.jsonl", run_dir / "log.jsonl")
        assert ref_calls <= CountingOracle.calls <= ref_calls + 1, point


def test_a_run_killed_again_and_again_at_random_points_ends_like_the_uninterrupted_run(tmp_path, reference, monkeypatch):
    """One run folder, each session killed a few fault points after it starts (drawn from
    ``KILL_SEED``) until a session finishes: the kills compound, the result does not change."""
    ref_dir, _, ref_calls = reference
    rng = np.random.default_rng(KILL_SEED + 1)
    kills = []
    CountingOracle.calls = 0
    for session in range(100):
        kill_at = int(rng.integers(1, 9))
        with monkeypatch.context() as mp:
            KillSwitch(mp, kill_at)
            try:
                fault_loop(tmp_path).run()
                break
            except Killed as killed:
                kills.append(f"session {session + 1}, {killed}")
    print(f"\n{len(kills)} kills before a session finished:\n  " + "\n  ".join(kills))
    assert len(kills) >= 10
    assert_same_dataset(ref_dir / "dataset.h5", tmp_path / "dataset.h5")
    assert_same_log(ref_dir / "log.jsonl", tmp_path / "log.jsonl")
    assert ref_calls <= CountingOracle.calls <= ref_calls + len(kills)


@pytest.mark.slow
def test_a_real_sigkill_at_a_random_fault_point_then_resume(tmp_path, reference):
    """The same with a real SIGKILL (no Python clean-up: open HDF5 handles, temporary files)."""
    ref_dir, n_points, _ = reference
    point = int(np.random.default_rng(KILL_SEED + 2).integers(1, n_points + 1))
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_loop_faults import fault_loop
        real, count = os.replace, [0]
        def replace(src, dst):
            count[0] += 1
            if 2 * count[0] - 1 == {point}:
                os.kill(os.getpid(), signal.SIGKILL)
            real(src, dst)
            if 2 * count[0] == {point}:
                os.kill(os.getpid(), signal.SIGKILL)
        os.replace = replace
        fault_loop({str(tmp_path)!r}).run()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    print(f"\nSIGKILL at fault point {point} of {n_points}")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    fault_loop(tmp_path).run()
    assert_same_dataset(ref_dir / "dataset.h5", tmp_path / "dataset.h5")
    assert_same_log(ref_dir / "log.jsonl", tmp_path / "log.jsonl")


# ---------------------------------------------------------------------------- corrupt checkpoints
def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garble(path, at=None):
    """Overwrite 64 bytes in the middle of the file (or at ``at``) with random ones."""
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at:at + 64] = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def garble_energies(path):
    """Garble the stored energies themselves (the file's structure stays intact): only the
    checksums notice."""
    with h5py.File(path, "r") as f:
        offset = f["energies"].id.get_chunk_info(0).byte_offset
    garble(path, offset + 8)


def garble_first_log_line(path):
    lines = path.read_text().splitlines(keepends=True)
    lines[0] = lines[0][:40] + "\x00garbage" + lines[0][60:]
    path.write_text("".join(lines))


@pytest.fixture(scope="module")
def killed_in_generation_2(tmp_path_factory):
    """A run killed after saving two of generation 2's labels: generation 1 logged, generation 2's
    committee, candidates, selection and two labels saved, dataset with generation 1."""
    from openmm_adv.loop import LoopInterrupted

    run_dir = tmp_path_factory.mktemp("killed")
    loop = fault_loop(run_dir)
    seen = []

    def kill(event, generation):
        if (event, generation) == ("labelled", 2):
            seen.append(event)
            if len(seen) == 2:
                raise LoopInterrupted("after two labels of generation 2")

    loop.checkpoint_hook = kill
    with pytest.raises(LoopInterrupted):
        loop.run()
    return run_dir


def _resume(run_dir):
    messages = []
    loop = fault_loop(run_dir, echo=messages.append)
    loop.run()
    return messages


@pytest.mark.parametrize("artifact,damage", [
    ("gen_002/candidates.npz", truncate),
    ("gen_002/selected.npz", truncate),
    ("gen_002/labels/00001.npz", truncate),
    ("gen_002/labels/00000.npz", garble),
    ("gen_002/committee.pt", truncate),
    ("gen_002/committee.pt", garble),
    ("gen_002/training.json", truncate),
    ("dataset.h5", truncate),
    ("dataset.h5", garble_energies),
    ("dataset.h5", Path.unlink),
    ("log.jsonl", garble_first_log_line),
], ids=lambda v: getattr(v, "__name__", v))
def test_a_corrupt_checkpoint_is_set_aside_and_its_stage_redone(tmp_path, killed_in_generation_2, reference,
                                                                 artifact, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(killed_in_generation_2, run_dir)
    damage(run_dir / artifact)
    messages = _resume(run_dir)
    warnings = [m for m in messages if m.startswith("warning:") and artifact in m]
    assert warnings, messages
    print(f"\n{artifact} ({damage.__name__}): {warnings[0]}")
    if damage is not Path.unlink and artifact != "log.jsonl":
        assert (run_dir / (artifact + ".corrupt")).exists()
    assert_same_dataset(reference[0] / "dataset.h5", run_dir / "dataset.h5")
    assert_same_log(reference[0] / "log.jsonl", run_dir / "log.jsonl")


def _drop_log_records(run_dir, generations):
    path = run_dir / "log.jsonl"
    kept = [line for line in path.read_text().splitlines(keepends=True)
            if json.loads(line)["generation"] not in generations]
    path.write_text("".join(kept))


def test_a_lost_log_record_is_written_again_as_it_was(tmp_path, reference):
    """Generation 1's log line garbled after generation 2 was appended: its record is written
    again with the dataset as generation 1 left it, in its place in the log."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    garble_first_log_line(run_dir / "log.jsonl")
    messages = _resume(run_dir)
    assert any("log.jsonl line(s) 1 are unreadable" in m for m in messages), messages
    assert_same_log(reference[0] / "log.jsonl", run_dir / "log.jsonl")


def test_a_checkpoint_lost_after_the_append_is_redone_on_the_data_it_was_made_from(tmp_path, reference):
    """Killed after generation 2's append and before its log record, then its selection lost:
    the selection is redone on the dataset without generation 2, and the log is unchanged."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    _drop_log_records(run_dir, {2, "final"})
    truncate(run_dir / "gen_002" / "selected.npz")
    messages = _resume(run_dir)
    assert any("gen_002/selected.npz is unreadable" in m for m in messages), messages
    assert_same_dataset(reference[0] / "dataset.h5", run_dir / "dataset.h5")
    assert_same_log(reference[0] / "log.jsonl", run_dir / "log.jsonl")


def test_a_corrupt_final_committee_is_trained_again(tmp_path, reference):
    from openmm_adv.models import Committee

    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    _drop_log_records(run_dir, {"final"})  # killed after the final training, before its record
    garble(run_dir / "final" / "committee.pt")
    messages = _resume(run_dir)
    assert any("final/committee.pt is unreadable" in m for m in messages), messages
    Committee.load(run_dir / "final" / "committee.pt")
    assert_same_log(reference[0] / "log.jsonl", run_dir / "log.jsonl")


def test_an_older_copy_of_the_dataset_gets_the_logged_generations_again(tmp_path, killed_in_generation_2, reference):
    """dataset.h5 put back from a copy made before generation 2 was appended, in a run whose
    log records generation 2: generation 2 is appended again, not left out."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    _drop_log_records(run_dir, {"final"})
    shutil.copyfile(killed_in_generation_2 / "dataset.h5", run_dir / "dataset.h5")
    messages = _resume(run_dir)
    assert any("dataset.h5 lacks generation 2, which the log records" in m for m in messages), messages
    assert_same_dataset(reference[0] / "dataset.h5", run_dir / "dataset.h5")
    assert_same_log(reference[0] / "log.jsonl", run_dir / "log.jsonl")


def test_a_lost_dataset_and_a_lost_selection_of_a_logged_generation(tmp_path, reference):
    """Two damaged files in a finished generation: the rebuild stops before generation 1, whose
    selection is redone, and generation 1 and 2 are appended again."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    _drop_log_records(run_dir, {"final"})
    truncate(run_dir / "dataset.h5")
    truncate(run_dir / "gen_001" / "selected.npz")
    messages = _resume(run_dir)
    assert any("gen_001/selected.npz is unreadable" in m for m in messages), messages
    assert_same_dataset(reference[0] / "dataset.h5", run_dir / "dataset.h5")
    assert_same_log(reference[0] / "log.jsonl", run_dir / "log.jsonl")


def test_a_corrupt_loop_manifest_is_a_clear_error(tmp_path, reference):
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    truncate(run_dir / "loop.json")
    with pytest.raises(ValueError, match=r"loop\.json is unreadable .* restore it, or delete it"):
        fault_loop(run_dir).run()


# ---------------------------------------------------------------------------- failing oracles
class UnreliableOracle:
    """Raises on some structures and returns NaN (reporting success) on others, as a crashing
    or silently diverging quantum-chemistry code would."""

    name = "unreliable"

    def __init__(self, inner, raise_every=3, nan_every=4):
        self.inner, self.raise_every, self.nan_every, self.calls = inner, raise_every, nan_every, 0

    def compute(self, positions):
        self.calls += 1
        if self.raise_every and self.calls % self.raise_every == 0:
            raise RuntimeError("SCF crashed\nstack trace follows")
        labels = self.inner.compute(positions)
        if self.nan_every and self.calls % self.nan_every == 0:
            labels.energies[:] = np.nan
        return labels


def _label_files(run_dir, g):
    from openmm_adv.run_files import read_label

    return [read_label(p) for p in sorted((run_dir / f"gen_{g:03d}" / "labels").glob("*.npz"))]


def test_an_oracle_that_raises_or_returns_nan_is_recorded_and_the_loop_goes_on(tmp_path):
    toy = double_well()
    loop = fault_loop(tmp_path, oracle=UnreliableOracle(AnalyticOracle.for_toy(toy)))
    records = loop.run()
    generations = [r for r in records if isinstance(r["generation"], int)]
    reasons = [f["reason"] for r in generations for f in r["failures"]]
    assert "oracle raised RuntimeError: SCF crashed" in reasons
    assert "non-finite energy or forces (the oracle reported success)" in reasons
    for record in generations:
        files = _label_files(tmp_path, record["generation"])
        assert sorted(str(l["error"]) for l in files if not l["ok"]) == sorted(f["reason"] for f in record["failures"])
        assert record["new_structures"] == record["oracle_calls"] - record["oracle_failures"]
    data = Dataset.load(tmp_path / "dataset.h5")
    assert len(data) == 16 + sum(r["new_structures"] for r in generations)
    assert np.isfinite(data.energies).all() and np.isfinite(data.forces).all()


@pytest.mark.parametrize("raise_every,nan_every", [(1, 0), (0, 1)], ids=["raises", "nan"])
def test_a_generation_where_every_label_fails_appends_nothing(tmp_path, raise_every, nan_every):
    toy = double_well()
    initial = _initial_data(toy)
    oracle = UnreliableOracle(AnalyticOracle.for_toy(toy), raise_every, nan_every)
    records = fault_loop(tmp_path, oracle=oracle, final_training=False).run()
    assert [r["generation"] for r in records] == [1, 2]
    for record in records:
        assert record["oracle_calls"] == record["oracle_failures"] > 0
        assert record["new_structures"] == 0 and record["dataset_size"] == 16
        assert record["committee_energy_error_on_new"]["mae_kj_mol"] is None
    data = Dataset.load(tmp_path / "dataset.h5")
    np.testing.assert_array_equal(data.positions, initial.positions)
    np.testing.assert_array_equal(data.energies, initial.energies)
    assert Dataset.file_tags(tmp_path / "dataset.h5") == ["initial", "generation-1", "generation-2"]
