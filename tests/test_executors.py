"""Labellers: each label handed over once as it completes, dead workers' structures rerun, hung
structures timed out, and the same labels in a process pool, on a Dask cluster and in process."""

import time

import numpy as np
import pytest
import yaml
from oracle_faults import Misbehaves, harmonic

from openmm_adv.cli import main
from openmm_adv.config import ConfigError, ExecutorConfig, LabelRunConfig, OracleConfig, parse_section
from openmm_adv.executors import (
    DaskLabeller,
    InProcessLabeller,
    ProcessLabeller,
    make_labeller,
    start_dask,
    timeout_reason,
)
from openmm_adv.oracles import AnalyticOracle

BAD = 3  # the structure that misbehaves


def _positions(n=8, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 0.5, size=(n, 1, 3))


def _run(labeller, oracle, x):
    """Every hand-over of ``labeller.run`` as (index, labels), in order."""
    calls = []
    labeller.run(oracle, x, lambda i, labels, seconds: calls.append((i, labels)))
    return calls


def assert_each_once_and_serial(calls, x, failed=None):
    """Each structure handed over exactly once; the labelled ones carry the serial labels, and
    ``failed`` maps the index that must have failed to the start of its reason."""
    failed = failed or {}
    assert sorted(i for i, _ in calls) == list(range(len(x)))
    serial = AnalyticOracle(harmonic, n_atoms=1).compute(x)
    for i, labels in calls:
        if i in failed:
            assert not labels.ok[0] and labels.errors[0].startswith(failed[i]), (i, labels.errors[0])
        else:
            assert labels.ok[0], (i, labels.errors[0])
            assert labels.energies[0] == serial.energies[i]
            np.testing.assert_array_equal(labels.forces[0], serial.forces[i])


def misbehaving(mode, x, tmp_path=None):
    marker = None if tmp_path is None else tmp_path / f"{mode}.marker"
    return AnalyticOracle(Misbehaves(mode, x[BAD, 0, 0], marker), n_atoms=1)


# -- process pool ------------------------------------------------------------------------------
def test_process_pool_reruns_the_structures_of_a_worker_that_died(tmp_path):
    x = _positions()
    with ProcessLabeller(2, retries=2) as labeller:
        calls = _run(labeller, misbehaving("crash", x, tmp_path), x)
    assert (tmp_path / "crash.marker").exists()  # it did kill a worker
    assert_each_once_and_serial(calls, x)


def test_a_structure_that_always_kills_its_worker_is_the_only_one_recorded_failed():
    """Its neighbour in the other worker dies with the pool too; run alone afterwards, it is cleared."""
    x = _positions()
    calls = _run(ProcessLabeller(2, retries=1), misbehaving("crash_always", x), x)
    assert_each_once_and_serial(calls, x, failed={BAD: "executor: the worker process died while labelling it, 2 times"})


def test_a_hanging_structure_times_out_and_the_rest_is_labelled():
    x = _positions()
    start = time.perf_counter()
    labels = misbehaving("hang", x).label(x, n_workers=2, timeout=2)
    assert time.perf_counter() - start < 60  # the hour-long sleep was cut short
    assert labels.failures() == [(BAD, "timeout after 2 s")]
    serial = AnalyticOracle(harmonic, n_atoms=1).compute(x)
    keep = np.arange(len(x)) != BAD
    np.testing.assert_array_equal(labels.energies[keep], serial.energies[keep])
    assert np.isnan(labels.energies[BAD])


def test_an_interrupted_run_does_not_wait_for_a_hung_structure():
    """A caller's callback that raises (Ctrl-C, a loop's checkpoint hook) ends the run at once,
    even with a structure hung in a worker: that worker is killed, not waited for."""
    x = _positions()

    def interrupt(i, labels, seconds):
        raise KeyboardInterrupt

    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        ProcessLabeller(2).run(misbehaving("hang", x), x, interrupt, indices=[BAD, 0, 1, 2])
    assert time.perf_counter() - start < 60


def test_labels_come_back_in_input_order_with_a_labeller(ala2):
    from openmm_adv.oracles import OpenMMOracle

    oracle = OpenMMOracle.from_molecular_system(ala2)
    x = ala2.positions[None] + 0.01 * np.random.default_rng(1).normal(size=(5, ala2.n_atoms, 3))
    seen = []
    with ProcessLabeller(2) as labeller:
        pooled = oracle.label(x, executor=labeller, on_label=lambda i, labels, s: seen.append(i))
    assert sorted(seen) == list(range(5))
    np.testing.assert_array_equal(pooled.energies, oracle.compute(x).energies)
    np.testing.assert_array_equal(pooled.forces, oracle.compute(x).forces)


def test_an_oracle_that_cannot_travel_is_refused_before_any_work():
    oracle = AnalyticOracle(lambda x: (0.0, np.zeros_like(x)), n_atoms=1)
    with pytest.raises(ValueError, match="cannot be sent to worker processes.*workers: 1"):
        ProcessLabeller(2).check(oracle)
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        ProcessLabeller(2, timeout=0)


def test_a_loop_records_a_hung_label_and_goes_on(tmp_path):
    """The first structure the oracle is asked for hangs; the generation still ends, with it
    recorded as a failure, and every other label in the dataset."""
    from test_loop import _loop_kwargs

    from openmm_adv.data import Dataset
    from openmm_adv.loop import ActiveLearningLoop
    from openmm_adv.oracle_record import descriptor_of

    kwargs = _loop_kwargs(tmp_path / "run", n_generations=1)
    exact = kwargs["oracle"]
    kwargs["oracle"] = AnalyticOracle(Misbehaves("hang", marker=tmp_path / "hung", inner=exact.energy_forces_fn),
                                      n_atoms=1, name=exact.name)
    # Data that record their oracle need no probe, so the first call is a label of generation 1.
    kwargs["initial_data"].oracle_record = descriptor_of(kwargs["oracle"])
    with ProcessLabeller(2, timeout=3) as labeller:
        records = ActiveLearningLoop(**kwargs, labeller=labeller, final_training=False).run()
    record = records[0]
    assert record["failures"] == [{"index": record["failures"][0]["index"], "reason": "timeout after 3 s"}]
    assert record["new_structures"] == record["oracle_calls"] - 1 > 0
    data = Dataset.load(tmp_path / "run" / "dataset.h5")
    new = data.provenance["generation"] == 1
    np.testing.assert_allclose(data.energies[new], exact.compute(data.positions[new]).energies)


def test_the_oracle_probe_of_unrecorded_data_times_out_like_a_label(tmp_path):
    """Data without an oracle record are probed with one label before the loop starts; through a
    labeller with a timeout, a probe that hangs is a note, not a hung run."""
    from test_loop import _loop_kwargs

    from openmm_adv.loop import ActiveLearningLoop

    kwargs = _loop_kwargs(tmp_path / "run", n_generations=1)
    exact = kwargs["oracle"]
    kwargs["oracle"] = AnalyticOracle(Misbehaves("hang", marker=tmp_path / "hung", inner=exact.energy_forces_fn),
                                      n_atoms=1, name=exact.name)
    notes = []
    kwargs["echo"] = notes.append
    with ProcessLabeller(1, timeout=3) as labeller:
        records = ActiveLearningLoop(**kwargs, labeller=labeller, final_training=False).run()
    assert any("timeout after 3 s" in note and "not compared" in note for note in notes)
    assert records[0]["failures"] == [] and records[0]["new_structures"] > 0


# -- configuration ----------------------------------------------------------------------------
def test_make_labeller_follows_the_oracle_section():
    def oracle(**section):
        return parse_section(OracleConfig, section, "oracle")

    assert isinstance(make_labeller(oracle()), InProcessLabeller)
    assert isinstance(make_labeller(oracle(workers=3)), ProcessLabeller)
    timed = make_labeller(oracle(timeout=30))  # a timeout needs a process that can be killed
    assert isinstance(timed, ProcessLabeller) and (timed.workers, timed.timeout) == (1, 30.0)
    assert "timeout 30 s" in timed.describe()


@pytest.mark.parametrize("section, message", [
    ({"timeout": 0}, r"oracle\.timeout: must be greater than 0"),
    ({"timeout": float("inf")}, r"oracle\.timeout: must be a finite number"),
    ({"executor": {"kind": "process", "cluster": "slurm"}}, r"oracle\.executor\.kind: .*set kind: dask"),
    ({"executor": {"kind": "dask", "cluster": "address"}}, r"oracle\.executor\.address: cluster 'address' needs"),
    ({"executor": {"kind": "dask", "address": "tcp://h:1"}}, r"oracle\.executor\.cluster: an address is only read"),
    ({"executor": {"kind": "dask", "cluster": "k8s"}}, r"oracle\.executor\.cluster: 'k8s' is not allowed"),
    ({"executor": {"kind": "dask", "retries": -1}}, r"oracle\.executor\.retries: must be at least 0"),
])
def test_executor_config_errors_name_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        parse_section(OracleConfig, section, "oracle")


def test_dask_without_its_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "distributed", None)  # as if not installed
    section = parse_section(OracleConfig, {"executor": {"kind": "dask"}}, "oracle")
    with pytest.raises(ValueError, match=r"needs dask.distributed: pip install 'openmm-adv\[dask\]'"):
        make_labeller(section)


def test_compare_dask_flag_errors_are_one_line(capsys):
    assert main(["compare", "double_well", "--dask", "kubernetes", "--output", "unused"]) == 2
    assert "--dask kubernetes: give local, a scheduler address" in capsys.readouterr().err


# -- Dask ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dask_client():
    pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install 'openmm-adv[dask]')")
    client, cluster = start_dask("local", workers=2, retries=2, options={"silence_logs": 40})  # logging.ERROR
    yield client
    client.close()
    cluster.close()


def _dask(client, **options):
    client.wait_for_workers(2, timeout=120)  # a worker an earlier test killed is back
    return DaskLabeller(client=client, **options)


def test_dask_gives_the_serial_labels_each_once(dask_client):
    x = _positions(12, seed=1)
    assert_each_once_and_serial(_run(_dask(dask_client), AnalyticOracle(harmonic, n_atoms=1), x), x)
    labels = AnalyticOracle(harmonic, n_atoms=1).label(x, executor=_dask(dask_client))
    np.testing.assert_array_equal(labels.energies, np.sum(x**2, axis=(1, 2)))


def test_dask_reruns_a_structure_whose_worker_was_killed_mid_task(dask_client, tmp_path):
    x = _positions()
    calls = _run(_dask(dask_client), misbehaving("crash", x, tmp_path), x)
    assert (tmp_path / "crash.marker").exists()
    assert_each_once_and_serial(calls, x)


def test_dask_records_a_structure_that_keeps_killing_workers(dask_client):
    x = _positions()
    calls = _run(_dask(dask_client), misbehaving("crash_always", x), x)
    assert_each_once_and_serial(calls, x, failed={BAD: "executor: KilledWorker"})


def test_dask_times_out_a_hanging_structure_and_replaces_its_worker(dask_client):
    x = _positions()
    labeller = _dask(dask_client, timeout=2)
    start = time.perf_counter()
    calls = _run(labeller, misbehaving("hang", x), x)
    assert time.perf_counter() - start < 60
    assert_each_once_and_serial(calls, x, failed={BAD: timeout_reason(2)})
    labeller.close()  # waits for the restart; the client is the fixture's
    dask_client.wait_for_workers(2, timeout=60)
    assert_each_once_and_serial(_run(_dask(dask_client), AnalyticOracle(harmonic, n_atoms=1), x), x)


def test_label_command_on_an_unreachable_scheduler_is_a_one_line_error(tmp_path, capsys, ala2):
    pytest.importorskip("distributed", reason="dask.distributed is not installed")
    from openmm_adv.data import write_extxyz

    write_extxyz(tmp_path / "in.extxyz", ala2.atomic_numbers, ala2.positions[None])
    config = {"input": str(tmp_path / "in.extxyz"), "output": str(tmp_path / "out.h5"),
              "oracle": {"executor": {"kind": "dask", "cluster": "address", "address": "tcp://127.0.0.1:9",
                                      "options": {"timeout": 1}}}}
    (tmp_path / "label.yaml").write_text(yaml.safe_dump(config))
    assert main(["label", str(tmp_path / "label.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the dask scheduler at tcp://127.0.0.1:9" in err and "Traceback" not in err


def test_the_slurm_example_makes_a_jobqueue_cluster():
    jobqueue = pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed")
    from pathlib import Path

    from openmm_adv.config import load_yaml

    path = Path(__file__).resolve().parents[1] / "examples" / "dask_slurm" / "label.yaml"
    config = parse_section(LabelRunConfig, load_yaml(path))
    executor = config.oracle.executor
    assert (executor.kind, executor.cluster) == ("dask", "slurm") and config.oracle.timeout
    options = {**executor.options, "scheduler_options": {"dashboard_address": ":0"}}  # 8787 may be taken here
    with jobqueue.SLURMCluster(**options) as cluster:  # nothing is submitted before scale()
        script = cluster.job_script()
    assert "#SBATCH" in script and f"-t {executor.options['walltime']}" in script and "-p cpu" in script
    assert isinstance(parse_section(ExecutorConfig, {"kind": "dask", "cluster": "slurm"}), ExecutorConfig)


@pytest.mark.slow
def test_compare_loops_on_a_dask_cluster_give_the_serial_numbers(tmp_path):
    pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install 'openmm-adv[dask]')")
    import json
    import shutil

    from test_compare import _small

    samplers = {"attack": {"kind": "attack", "options": {"kT": 5.0, "n_steps": 20, "step_size": 0.03,
                                                         "batch_size": 8, "platform": "Reference"}},
                "random": {"kind": "random_displacement", "options": {"sigma": 0.5, "n_per_seed": 4}}}
    path = _small("double_well", tmp_path, repeats=1, generations=1, samplers=samplers,
                  training={"epochs": 10, "patience": 10}, metrics={"grid_points": 12})
    serial, on_dask = tmp_path / "serial", tmp_path / "dask"
    assert main(["compare", str(path), "--output", str(serial), "--quiet"]) == 0
    shutil.copytree(serial / "runs" / "_initial", on_dask / "runs" / "_initial")  # the loops are what is tested
    assert main(["compare", str(path), "--output", str(on_dask), "--quiet", "--dask", "local", "--workers", "2"]) == 0
    timeless = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]  # noqa: E731
    assert timeless(json.loads((on_dask / "metrics.json").read_text())) == \
        timeless(json.loads((serial / "metrics.json").read_text()))
