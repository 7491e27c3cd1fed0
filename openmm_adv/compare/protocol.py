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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from .. import config as cfg
from .._torch import configure_threads
from ..builders import build_oracle, build_sampler, build_selector, build_system, build_trainer, load_data
from ..loop import ActiveLearningLoop, _atomic_write_text, read_log
from .metrics import generation_metrics

__all__ = ["CompareProtocol", "MetricsConfig", "SamplerEntry", "load_protocol", "run_protocol"]


@dataclass
class MetricsConfig:
    """What is measured. ``fes_cutoff`` (kJ/mol) defines the accessible phi/psi bins for
    coverage; ``stability_*`` the NN-MD stability test of each final committee (0 steps: off);
    ``grid_cutoff`` (kJ/mol above the minimum) the region of a 2D toy where errors count."""

    fes_cutoff: float = field(default=25.0, metadata={"gt": 0.0})
    stability_steps: int = field(default=10000, metadata={"ge": 0})
    stability_seeds: int = field(default=8, metadata={"ge": 1})
    grid_cutoff: float = field(default=20.0, metadata={"gt": 0.0})
    grid_points: int = field(default=60, metadata={"ge": 4})


@dataclass
class SamplerEntry:
    """One sampler of the comparison: ``kind`` (see ``openmm-adv config loop``), its options,
    and an optional selection that replaces the protocol's for this sampler."""

    kind: str
    options: dict = field(default_factory=dict)
    selection: Optional[cfg.SelectionConfig] = None

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
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    description: str = ""

    def check(self, where: str) -> None:
        if not self.samplers:
            raise cfg.ConfigError(f"{cfg._join(where, 'samplers')}: give at least one sampler")


def load_protocol(path: str | Path, overrides: dict | None = None) -> CompareProtocol:
    """Read and validate a protocol YAML; ``overrides`` replace top-level keys (e.g. repeats)."""
    data = cfg.load_yaml(path)
    data.update(overrides or {})
    return cfg.parse_section(CompareProtocol, data)


def _initial_committee(protocol: CompareProtocol, system, data, trainer, folder: Path, repeat: int, echo) -> Path:
    path = folder / "committee.pt"
    if not path.exists():
        echo(f"repeat {repeat}: training the shared initial committee on {len(data)} structures")
        committee, report = trainer.train(data, seed=1000 * (protocol.seed + repeat) + 1)
        folder.mkdir(parents=True, exist_ok=True)
        committee.save(path)
        _atomic_write_text(folder / "training.json", json.dumps(report.summary(), indent=1) + "\n")
    return path


def run_protocol(protocol: CompareProtocol, output_dir: str | Path, progress: bool = True, echo=print) -> dict:
    """Run (or resume) every sampler x repeat loop, compute the metrics and write the report."""
    from .report import write_report

    configure_threads(protocol.threads)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(out / "protocol.json", json.dumps(asdict(protocol), indent=1, default=str) + "\n")
    system = build_system(protocol.system)
    trainer = build_trainer(protocol.model, protocol.training, progress=False)
    oracle = build_oracle(protocol.oracle, system)
    jobs = [(r, name) for r in range(protocol.repeats) for name in protocol.samplers]
    rows, points = [], {}
    bar = tqdm(jobs, desc=f"{protocol.name}", unit="loop", disable=not progress)
    start = time.perf_counter()
    for repeat, name in bar:
        bar.set_postfix(sampler=name, repeat=repeat)
        entry = protocol.samplers[name]
        data_config = cfg.DataConfig(**{**asdict(protocol.initial_data), "seed": protocol.initial_data.seed + repeat})
        data = load_data(data_config, system, where="initial_data")
        initial = _initial_committee(protocol, system, data, trainer, out / "runs" / "_initial" / f"rep{repeat:02d}",
                                     repeat, echo)
        run_dir = out / "runs" / name / f"rep{repeat:02d}"
        selection = entry.selection or protocol.selection
        loop = ActiveLearningLoop(
            system=system, oracle=oracle, samplers=[build_sampler(entry.kind, entry.options, system, progress=False)],
            selector=build_selector(selection, system), trainer=trainer, initial_data=data, run_dir=run_dir,
            n_generations=protocol.generations, seeds_per_generation=protocol.seeds, seed=protocol.seed + repeat,
            metric=getattr(entry.options, "metric", "force_variance"), initial_committee=initial,
            label_workers=protocol.oracle.workers, final_training=True, progress=False,
            settings={"sampler": name, "kind": entry.kind, "options": asdict(entry.options),
                      "selection": asdict(selection), "model": asdict(protocol.model),
                      "training": asdict(protocol.training), "initial_data": asdict(data_config),
                      "oracle": asdict(protocol.oracle), "seeds": protocol.seeds, "seed": protocol.seed + repeat},
            echo=lambda message: None,
        )
        loop.run()
        metrics = _cached_metrics(loop, protocol, system)
        for row in metrics:
            rows.append({"sampler": name, "repeat": repeat, **row})
        points[(name, repeat)] = str(loop.dataset_path)
    summary = write_report(protocol, out, rows, points, wall_seconds=time.perf_counter() - start)
    echo(f"wrote {out / 'REPORT.md'}")
    return summary


def _cached_metrics(loop: ActiveLearningLoop, protocol: CompareProtocol, system) -> list[dict]:
    path = loop.run_dir / "metrics.json"
    key = {"metrics": asdict(protocol.metrics), "generations": protocol.generations}
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["rows"]
    rows = generation_metrics(loop, protocol.metrics, system, read_log(loop.log_path))
    _atomic_write_text(path, json.dumps({"key": key, "rows": rows}, indent=1) + "\n")
    return rows
