"""A sampler comparison: every sampler runs its own active-learning loop from the same start.

For each repeat, one committee is trained on the initial data and handed to every sampler's
loop as its generation-1 committee, so all samplers start from the same model; each loop then
gets the same oracle budget per generation (the selector's cap). Each loop is an
:class:`~openmm_adv.loop.ActiveLearningLoop` in its own folder, so a killed comparison resumes
where it stopped. Metrics are computed per generation from the committees the loops trained
and cached next to each loop.
"""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from .. import config as cfg
from .._torch import configure_threads
from ..builders import build_oracle, build_sampler, build_selector, build_system, build_trainer, load_data
from ..executors import make_labeller, start_dask
from ..loop import ActiveLearningLoop, _atomic_write_text, read_log
from .metrics import generation_metrics

__all__ = ["CompareProtocol", "MetricsConfig", "SamplerEntry", "load_protocol", "run_protocol"]


@dataclass
class MetricsConfig:
    """What is measured. ``fes_cutoff`` (kJ/mol) defines the accessible phi/psi bins for
    coverage; ``stability_*`` the NN-MD stability test of each final committee (0 steps: off;
    ``stability_timestep_fs`` 0.5 resolves free X-H vibrations with room to spare, 1.0 is what
    openmm-ml's examples run NN potentials at and halves the cost);
    ``grid_cutoff`` (kJ/mol above the minimum) the region of a 2D toy where errors count."""

    fes_cutoff: float = field(default=25.0, metadata={"gt": 0.0})
    stability_steps: int = field(default=10000, metadata={"ge": 0})
    stability_seeds: int = field(default=8, metadata={"ge": 1})
    stability_timestep_fs: float = field(default=0.5, metadata={"gt": 0.0})
    grid_cutoff: float = field(default=20.0, metadata={"gt": 0.0})
    grid_points: int = field(default=60, metadata={"ge": 4})


@dataclass
class SamplerEntry:
    """One sampler of the comparison: ``kind`` (see ``openmm-adv config loop``), its options,
    and optionally a selection and a number of seed geometries per generation that replace the
    protocol's for this sampler (the oracle budget stays the selection's ``max_selected``).

    ``model`` replaces the protocol's model for this sampler's loop (for instance one model
    with a Gaussian-mixture uncertainty, ``{uncertainty: gmm, n_members: 1}``, for the GMM-CV
    sampler): the loop then starts from its own initial model, trained on the same initial data
    with the same training section, instead of the shared committee."""

    kind: str
    options: dict = field(default_factory=dict)
    selection: Optional[cfg.SelectionConfig] = None
    seeds: Optional[int] = field(default=None, metadata={"ge": 1})
    model: Optional[cfg.ModelConfig] = None

    def check(self, where: str) -> None:
        if self.kind not in cfg.SAMPLER_CONFIGS:
            raise cfg.ConfigError(f"{where}.kind: unknown sampler {self.kind!r}; use one of {', '.join(cfg.SAMPLER_CONFIGS)}")
        self.options = cfg.parse_section(cfg.SAMPLER_CONFIGS[self.kind], self.options, f"{where}.options")


@dataclass
class CompareProtocol:
    """A comparison study (``protocols/*/protocol.yaml``)."""

    name: str
    samplers: dict[str, SamplerEntry]
    system: cfg.SystemConfig = field(default_factory=cfg.SystemConfig)
    initial_data: cfg.DataConfig = field(default_factory=cfg.DataConfig)
    oracle: cfg.OracleConfig = field(default_factory=cfg.OracleConfig)
    model: cfg.ModelConfig = field(default_factory=cfg.ModelConfig)
    training: cfg.TrainingSection = field(default_factory=cfg.TrainingSection)
    selection: cfg.SelectionConfig = field(default_factory=cfg.SelectionConfig)
    generations: int = field(default=5, metadata={"ge": 1})
    repeats: int = field(default=3, metadata={"ge": 1})
    seeds: int = field(default=16, metadata={"ge": 1})
    seed: int = 0
    threads: Optional[int] = field(default=None, metadata={"ge": 1})
    # kJ/mol above the dataset's lowest energy: labels beyond it are rejected (see ActiveLearningLoop).
    max_label_energy: Optional[float] = field(default=None, metadata={"gt": 0.0, "allow_inf": True})
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # Where the loops run (kind process: a local pool of --workers processes; dask: a cluster).
    executor: cfg.ExecutorConfig = field(default_factory=cfg.ExecutorConfig)
    description: str = ""

    def check(self, where: str) -> None:
        if not self.samplers:
            raise cfg.ConfigError(f"{cfg._join(where, 'samplers')}: give at least one sampler")


def load_protocol(path: str | Path, overrides: dict | None = None) -> CompareProtocol:
    """Read and validate a protocol YAML; ``overrides`` replace top-level keys (e.g. repeats)."""
    data = cfg.load_yaml(path)
    data.update(overrides or {})
    return cfg.parse_section(CompareProtocol, data)


def _initial_committee(protocol: CompareProtocol, system, data, trainer, folder: Path, repeat: int, echo,
                       sampler: str | None = None) -> Path:
    path = folder / "committee.pt"
    if not path.exists():
        what = "the shared initial committee" if sampler is None else f"the initial model of {sampler}"
        echo(f"repeat {repeat}: training {what} on {len(data)} structures")
        committee, report = trainer.train(data, seed=1000 * (protocol.seed + repeat) + 1, bonds=system.bonds)
        folder.mkdir(parents=True, exist_ok=True)
        committee.save(path)
        _atomic_write_text(folder / "training.json", json.dumps(report.summary(), indent=1) + "\n")
    return path


def _loop_for(protocol: CompareProtocol, out: Path, repeat: int, name: str, system, oracle, trainer,
              initial: Path, labeller=None) -> ActiveLearningLoop:
    entry = protocol.samplers[name]
    data_config = _repeat_data_config(protocol, repeat)
    data = load_data(data_config, system, where="initial_data")
    selection = entry.selection or protocol.selection
    seeds = entry.seeds or protocol.seeds
    model = entry.model or protocol.model
    return ActiveLearningLoop(
        system=system, oracle=oracle, samplers=[build_sampler(entry.kind, entry.options, system, progress=False)],
        selector=build_selector(selection, system), trainer=trainer, initial_data=data,
        run_dir=out / "runs" / name / f"rep{repeat:02d}",
        n_generations=protocol.generations, seeds_per_generation=seeds, seed=protocol.seed + repeat,
        metric=getattr(entry.options, "metric", "force_variance"), initial_committee=initial,
        label_workers=protocol.oracle.workers, labeller=labeller, final_training=True, progress=False,
        max_label_energy=protocol.max_label_energy,
        settings={"sampler": name, "kind": entry.kind, "options": asdict(entry.options),
                  "selection": asdict(selection), "model": asdict(model),
                  "training": asdict(protocol.training), "initial_data": asdict(data_config),
                  "oracle": _label_settings(protocol.oracle), "seeds": seeds, "seed": protocol.seed + repeat,
                  "max_label_energy": protocol.max_label_energy},
        echo=lambda message: None,
    )


def _label_settings(oracle: cfg.OracleConfig) -> dict:
    """The oracle section as a loop's settings: where and how patiently labels are computed
    does not change what a label is, so it may differ on resume."""
    return {k: v for k, v in asdict(oracle).items() if k not in ("executor", "timeout")}


def _repeat_data_config(protocol: CompareProtocol, repeat: int) -> cfg.DataConfig:
    return cfg.DataConfig(**{**asdict(protocol.initial_data), "seed": protocol.initial_data.seed + repeat})


def _run_one_loop(protocol: CompareProtocol, out: Path, repeat: int, name: str, initial: Path) -> tuple[list[dict], str]:
    """Run (or resume) one sampler x repeat loop and return its metric rows and dataset path.

    Module-level and self-contained so that a spawned worker process can run it."""
    configure_threads(protocol.threads)
    system = build_system(protocol.system)
    trainer = build_trainer(protocol.samplers[name].model or protocol.model, protocol.training, progress=False)
    oracle = build_oracle(protocol.oracle, system)
    with make_labeller(protocol.oracle) as labeller:
        loop = _loop_for(protocol, out, repeat, name, system, oracle, trainer, initial, labeller)
        loop.run()
    return _cached_metrics(loop, protocol, system), str(loop.dataset_path)


def run_protocol(protocol: CompareProtocol, output_dir: str | Path, progress: bool = True, echo=print,
                 workers: int = 1, executor: cfg.ExecutorConfig | None = None) -> dict:
    """Run (or resume) every sampler x repeat loop, compute the metrics and write the report.

    Parameters
    ----------
    protocol : CompareProtocol
    output_dir : str or Path
        Report folder; the loops live under ``runs/`` there, so rerunning resumes.
    progress : bool
        Show a progress bar over the loops.
    echo : callable
        Receives one-line status messages.
    workers : int
        Loops run at the same time, each in its own spawned process with ``protocol.threads``
        torch threads. The loops are independent once each repeat's shared initial committee is
        trained, and each writes only its own folder, so the results do not depend on
        ``workers``; only the wall time does. With a dask executor: the workers of the
        cluster (a LocalCluster or a batch system: workers started; a scheduler address:
        its own).
    executor : ExecutorConfig, optional
        Where the loops run (default ``protocol.executor``): a local process pool, or a Dask
        cluster whose workers see ``output_dir`` (a shared file system). A loop whose worker
        dies is rerun by the scheduler and resumes from its folder.
    """
    from .report import write_report

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    executor = protocol.executor if executor is None else executor
    if executor.kind == "dask" and protocol.oracle.executor.kind == "dask":
        # A loop task waiting on label tasks of the same cluster can hold every worker thread.
        raise ValueError("the loops run on dask and their labels would too (oracle.executor.kind: dask): label "
                         "inside each loop instead (oracle.executor.kind: process, oracle.workers: N)")
    configure_threads(protocol.threads)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(out / "protocol.json", json.dumps(asdict(protocol), indent=1, default=str) + "\n")
    start = time.perf_counter()
    initial = {}
    for repeat in range(protocol.repeats):
        for name, entry in protocol.samplers.items():
            # the shared committee, or the sampler's own initial model where it has its own model
            folder = "_initial" if entry.model is None else f"_initial_{name}"
            path = out / "runs" / folder / f"rep{repeat:02d}" / "committee.pt"
            if not path.exists():
                system = build_system(protocol.system)
                trainer = build_trainer(entry.model or protocol.model, protocol.training, progress=False)
                data = load_data(_repeat_data_config(protocol, repeat), system, where="initial_data")
                _initial_committee(protocol, system, data, trainer, path.parent, repeat, echo,
                                   None if entry.model is None else name)
            initial[(repeat, name)] = path
    jobs = [(r, name) for r in range(protocol.repeats) for name in protocol.samplers]
    results = {}
    bar = tqdm(total=len(jobs), desc=f"{protocol.name}", unit="loop", disable=not progress)
    if workers == 1 and executor.kind == "process":
        for repeat, name in jobs:
            bar.set_postfix(sampler=name, repeat=repeat)
            results[(repeat, name)] = _run_one_loop(protocol, out, repeat, name, initial[(repeat, name)])
            bar.update()
    elif executor.kind == "dask":
        _run_on_dask(protocol, out, jobs, initial, workers, executor, results, bar)
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(_run_one_loop, protocol, out, r, name, initial[(r, name)]): (r, name) for r, name in jobs}
            for future in as_completed(futures):
                repeat, name = futures[future]
                try:
                    results[(repeat, name)] = future.result()
                except Exception as error:
                    pool.shutdown(wait=True, cancel_futures=True)  # running loops finish, queued ones never start
                    raise _loop_failed(out, repeat, name, error) from error
                bar.set_postfix(done=f"{name}/rep{repeat:02d}")
                bar.update()
    bar.close()
    rows, points = [], {}
    for repeat, name in jobs:
        metrics, dataset = results[(repeat, name)]
        rows += [{"sampler": name, "repeat": repeat, **row} for row in metrics]
        points[(name, repeat)] = dataset
    summary = write_report(protocol, out, rows, points, wall_seconds=time.perf_counter() - start)
    echo(f"wrote {out / 'REPORT.md'}")
    return summary


def _loop_failed(out: Path, repeat: int, name: str, error: BaseException) -> RuntimeError:
    return RuntimeError(f"loop {name} repeat {repeat} failed: {error}; its folder "
                        f"{out / 'runs' / name / f'rep{repeat:02d}'} keeps the finished stages, "
                        "rerun the same command to resume")


def _run_on_dask(protocol: CompareProtocol, out: Path, jobs: list, initial: dict, workers: int,
                 executor: cfg.ExecutorConfig, results: dict, bar) -> None:
    """Run the loops as tasks of a Dask cluster, collecting their results as they finish."""
    # A loop that labels in worker processes of its own needs workers that may start processes.
    nested = protocol.oracle.workers > 1 or protocol.oracle.timeout is not None
    client, cluster = start_dask(executor.cluster, workers, executor.address, executor.threads_per_worker,
                                 executor.retries, executor.options, daemon_workers=not nested)
    try:
        from distributed import as_completed as completed_in_turn

        # Absolute paths: a worker's working directory need not be ours.
        out, initial = out.resolve(), {key: Path(p).resolve() for key, p in initial.items()}
        futures = {client.submit(_run_one_loop, protocol, out, r, name, initial[(r, name)], pure=False,
                                 key=f"openmm-adv-loop-{name}-rep{r:02d}-{uuid.uuid4().hex[:8]}"): (r, name)
                   for r, name in jobs}
        for future in completed_in_turn(futures):
            repeat, name = futures[future]
            try:
                results[(repeat, name)] = future.result()
            except Exception as error:  # the loop raised, or its workers kept dying (KilledWorker)
                client.cancel(list(futures))
                raise _loop_failed(out, repeat, name, error) from error
            bar.set_postfix(done=f"{name}/rep{repeat:02d}")
            bar.update()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _cached_metrics(loop: ActiveLearningLoop, protocol: CompareProtocol, system) -> list[dict]:
    path = loop.run_dir / "metrics.json"
    # version 2: oracle calls include the samplers' own reference evaluations (label_calls added)
    key = {"metrics": asdict(protocol.metrics), "generations": protocol.generations, "version": 2}
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["rows"]
    rows = generation_metrics(loop, protocol.metrics, system, read_log(loop.log_path))
    _atomic_write_text(path, json.dumps({"key": key, "rows": rows}, indent=1) + "\n")
    return rows
