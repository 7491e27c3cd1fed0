"""Active-learning loop: reproducibility, and resume after a kill at every kind of checkpoint."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from openmm_adv.data import Dataset
from openmm_adv.loop import ActiveLearningLoop, LoopInterrupted, read_log
from openmm_adv.oracles import AnalyticOracle
from openmm_adv.samplers import AttackSampler
from openmm_adv.selection import Selector
from openmm_adv.systems import double_well
from openmm_adv.train import CommitteeTrainer, TrainingConfig


def _initial_data(toy, n=24, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.normal([-1.0, 0.0], [0.12, 0.12], size=(n, 2))
    x = np.concatenate([xy, np.zeros((n, 1))], 1)[:, None, :]
    e, f = toy.reference_energies_forces(x)
    data = Dataset(toy.atomic_numbers)
    data.append(x, e, f, generation=0, sampler="initial", oracle="analytic")
    return data


def make_loop(run_dir, n_generations=2, seed=0, workers=1):
    return ActiveLearningLoop(**_loop_kwargs(run_dir, n_generations, seed, workers))


def _loop_kwargs(run_dir, n_generations=2, seed=0, workers=1):
    toy = double_well()
    return dict(
        system=toy,
        oracle=AnalyticOracle.for_toy(toy),
        samplers=[AttackSampler(kT=5.0, n_steps=20, step_size=0.05, max_step=0.1, max_displacement=1.0,
                                batch_size=8, report_interval=5, platform="Reference", progress=False)],
        selector=Selector(min_rmsd=0.02, max_selected=4),
        trainer=CommitteeTrainer("mlp", {"n_members": 3, "hidden": 16},
                                 TrainingConfig(epochs=15, batch_size=8, learning_rate=1e-2, patience=15),
                                 progress=False),
        initial_data=_initial_data(toy),
        run_dir=run_dir,
        n_generations=n_generations,
        seeds_per_generation=8,
        seed=seed,
        label_workers=workers,
        progress=False,
        echo=None,
    )


def _content(path):
    """Everything in a dataset except the wall-clock time stamps."""
    data = Dataset.load(path)
    prov = {k: v for k, v in data.provenance.items() if k != "time"}
    return data.positions, data.energies, data.forces, prov


def assert_same_dataset(a, b):
    pa, ea, fa, prova = _content(a)
    pb, eb, fb, provb = _content(b)
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(ea, eb)
    np.testing.assert_array_equal(fa, fb)
    for key in prova:
        np.testing.assert_array_equal(prova[key], provb[key], err_msg=key)


def _without_times(record):
    if isinstance(record, dict):
        return {k: _without_times(v) for k, v in record.items() if "seconds" not in k}
    return record


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    loop = make_loop(run_dir)
    records = loop.run()
    return run_dir, records, loop.oracle_calls_this_session


def test_loop_runs_and_logs(uninterrupted):
    run_dir, records, calls = uninterrupted
    assert [r["generation"] for r in records] == [1, 2, "final"]
    data = Dataset.load(run_dir / "dataset.h5")
    assert len(data) == 24 + sum(r["new_structures"] for r in records[:2])
    assert calls == sum(r["oracle_calls"] for r in records[:2]) > 0
    for record in records[:2]:
        assert record["dataset_size"] == int((data.provenance["generation"] <= record["generation"]).sum())
        assert set(record["stage_seconds"]) == {"train", "sample", "select", "label"}
        assert record["uncertainty"]["candidates_median"] is not None
        assert record["selection"]["selected"] == record["oracle_calls"]
        assert record["samplers"]["attack"]["force_evaluations"] > 0
        new = data.provenance["generation"] == record["generation"]
        summary = record["new_labels"]
        assert summary["energy_above_min_kj_mol"]["max"] == pytest.approx((data.energies[new] - data.energies.min()).max())
        assert summary["cvs"]["x"]["unit"] == "nm"
        assert summary["cvs"]["x"]["min"] == pytest.approx(data.positions[new, 0, 0].min())
        assert summary["cvs"]["y"]["max"] == pytest.approx(data.positions[new, 0, 1].max())
    assert set(data.provenance["sampler"][24:].tolist()) == {b"attack"}
    assert (run_dir / "final" / "committee.pt").exists()


def test_same_seed_same_run(tmp_path, uninterrupted):
    make_loop(tmp_path / "again").run()
    assert_same_dataset(uninterrupted[0] / "dataset.h5", tmp_path / "again" / "dataset.h5")


def test_different_seed_different_run(tmp_path, uninterrupted):
    make_loop(tmp_path / "other", seed=1).run()
    assert not np.array_equal(Dataset.load(tmp_path / "other" / "dataset.h5").positions[24:28],
                              Dataset.load(uninterrupted[0] / "dataset.h5").positions[24:28])


@pytest.mark.parametrize("event,generation,occurrence", [
    ("trained", 1, 1), ("sampled", 1, 1), ("selected", 2, 1), ("labelled", 1, 2),
    ("appended", 1, 1), ("logged", 2, 1), ("trained", 3, 1),
])
def test_resume_after_a_kill_at_each_stage(tmp_path, uninterrupted, event, generation, occurrence):
    loop = make_loop(tmp_path)
    seen = {"n": 0}

    def kill(e, g):
        if (e, g) == (event, generation):
            seen["n"] += 1
            if seen["n"] == occurrence:
                raise LoopInterrupted(f"killed after {e} in generation {g}")

    loop.checkpoint_hook = kill
    with pytest.raises(LoopInterrupted):
        loop.run()
    resumed = make_loop(tmp_path)
    records = resumed.run()
    assert_same_dataset(uninterrupted[0] / "dataset.h5", tmp_path / "dataset.h5")
    # no label lost, none computed twice
    assert loop.oracle_calls_this_session + resumed.oracle_calls_this_session == uninterrupted[2]
    assert [r["generation"] for r in records] == [1, 2, "final"]
    assert [_without_times(r) for r in records[:2]] == [_without_times(r) for r in uninterrupted[1][:2]]


def test_resume_refuses_changed_settings_and_can_extend(tmp_path):
    make_loop(tmp_path, n_generations=1).run()
    with pytest.raises(ValueError, match="different settings"):
        make_loop(tmp_path, n_generations=1, seed=5).run()
    records = make_loop(tmp_path, n_generations=2).run()
    assert [r["generation"] for r in records] == [1, 2, "final"]
    assert records[-1]["after_generation"] == 2 and records[-1]["dataset_size"] == records[1]["dataset_size"]


def test_oracle_failures_are_logged_not_fatal(tmp_path):
    loop = make_loop(tmp_path, n_generations=1)

    class FlakyOracle:
        """Fails on every second structure, as a non-converging SCF would."""

        name = "flaky"

        def __init__(self, inner):
            self.inner = inner
            self.calls = 0

        def compute(self, positions):
            labels = self.inner.compute(positions)
            self.calls += 1
            if self.calls % 2 == 0:
                labels.ok[:] = False
                labels.errors[0] = "SCF did not converge"
                labels.energies[:] = np.nan
            return labels

    loop.oracle = FlakyOracle(loop.oracle)
    records = loop.run()
    first = records[0]
    assert first["oracle_failures"] >= 1
    assert first["new_structures"] == first["oracle_calls"] - first["oracle_failures"]
    assert all(f["reason"] == "SCF did not converge" for f in first["failures"])
    assert np.isfinite(Dataset.load(tmp_path / "dataset.h5").energies).all()


def test_second_loop_on_the_same_folder_is_refused(tmp_path):
    import fcntl

    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="another openmm-adv loop"):
            make_loop(tmp_path).run()


def test_sigkill_during_labelling_then_resume(tmp_path, uninterrupted):
    """A real SIGKILL (no Python clean-up at all) in the middle of labelling generation 2."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_loop import make_loop
        loop = make_loop({str(tmp_path)!r})
        count = {{"n": 0}}
        def hook(event, generation):
            if event == "labelled" and generation == 2:
                count["n"] += 1
                if count["n"] == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
        loop.checkpoint_hook = hook
        loop.run()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [r["generation"] for r in read_log(tmp_path / "log.jsonl")] == [1]
    assert len(list((tmp_path / "gen_002" / "labels").glob("*.npz"))) == 2
    resumed = make_loop(tmp_path)
    resumed.run()
    assert_same_dataset(uninterrupted[0] / "dataset.h5", tmp_path / "dataset.h5")
    first_gen_calls = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])["oracle_calls"]
    assert resumed.oracle_calls_this_session == uninterrupted[2] - first_gen_calls - 2


def test_process_pool_labelling_gives_the_same_dataset(tmp_path, uninterrupted):
    make_loop(tmp_path, workers=2).run()
    assert_same_dataset(uninterrupted[0] / "dataset.h5", tmp_path / "dataset.h5")


def test_dask_labelling_gives_the_same_dataset(tmp_path, uninterrupted):
    pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install 'openmm-adv[dask]')")
    from openmm_adv.executors import DaskLabeller

    with DaskLabeller("local", workers=2, options={"silence_logs": 40}) as labeller:
        ActiveLearningLoop(**_loop_kwargs(tmp_path), labeller=labeller).run()
    assert_same_dataset(uninterrupted[0] / "dataset.h5", tmp_path / "dataset.h5")


def test_resume_accepts_settings_added_by_a_newer_version(tmp_path):
    make_loop(tmp_path, n_generations=1).run()
    manifest = tmp_path / "loop.json"
    stored = json.loads(manifest.read_text())
    del stored["settings"]["selector"]["rank_by"]  # as written before that key existed
    manifest.write_text(json.dumps(stored))
    messages = []
    loop = make_loop(tmp_path, n_generations=1)
    loop.echo = messages.append
    loop.run()
    assert any("selector.rank_by" in m for m in messages)
    assert "rank_by" in json.loads(manifest.read_text())["settings"]["selector"]


def test_warm_started_generations_fine_tune_the_previous_committee(tmp_path):
    loop = make_loop(tmp_path / "warm")
    loop.trainer.config.warm_start_epochs = 3
    loop.trainer.config.warm_start_learning_rate = 1e-3
    loop.final_training = True
    loop.run()
    sources = [json.loads((loop.generation_dir(g) / "training.json").read_text())["source"] for g in (1, 2)]
    assert sources == ["trained", "fine-tuned"]
    final = json.loads((tmp_path / "warm" / "final" / "training.json").read_text())
    assert final["source"] == "fine-tuned" and final["metrics"]["epochs_run"] == 3


def test_max_label_energy_rejects_absurd_labels_but_counts_the_call(tmp_path):
    loop = make_loop(tmp_path / "capped")
    loop.max_label_energy = 2.0  # kJ/mol: most attacked points of the double well lie higher
    records = loop.run()
    data = Dataset.load(loop.dataset_path)
    initial_lowest = data.energies[data.provenance["generation"] == 0].min()
    new = data.provenance["generation"] >= 1
    assert np.all(data.energies[new] <= initial_lowest + 2.0)
    generations = [r for r in records if isinstance(r.get("generation"), int)]
    rejected = sum(r["oracle_failures"] for r in generations)
    assert rejected > 0
    assert all(f["reason"].startswith("rejected: reference energy") for r in generations for f in r["failures"])
    # every rejected label was still an oracle call
    assert sum(r["oracle_calls"] for r in generations) == int(new.sum()) + rejected
    with pytest.raises(ValueError, match="max_label_energy must be a positive energy"):
        ActiveLearningLoop(**{**_loop_kwargs(tmp_path / "bad"), "max_label_energy": 0.0})


def test_percentile_window_scores_a_bounded_sample_of_a_large_dataset(tmp_path, monkeypatch):
    """Past REFERENCE_SAMPLE frames the window's reference uncertainties come from a fixed-size
    random sample (the same on resume), so a generation's cost does not grow with the dataset."""
    import openmm_adv.loop as loop_module

    monkeypatch.setattr(loop_module, "REFERENCE_SAMPLE", 10)
    loop = make_loop(tmp_path, n_generations=1)
    loop.selector = Selector(min_rmsd=0.02, max_selected=4, percentile_lower=50.0)
    loop.run()
    candidates = np.load(tmp_path / "gen_001" / "candidates.npz")
    assert len(candidates["reference_uncertainty"]) == 10  # of the 24 initial frames
    rows = loop._reference_rows(1, 24)
    assert len(np.unique(rows)) == 10 and np.array_equal(rows, loop._reference_rows(1, 24))
    assert np.array_equal(loop._reference_rows(1, 8), np.arange(8))
