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
