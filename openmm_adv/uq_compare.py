"""Uncertainty methods measured the same way: the committee against single models.

A ``uq_compare`` protocol (``protocols/uq_compare/protocol.yaml``) trains, per dataset, a
committee of ``ensemble_members`` PaiNN models and one PaiNN model with the same settings, adds
to the single model each single-model uncertainty (a Gaussian mixture on its features, a
mean-variance head, an evidential head), and measures every method on in-domain and
out-of-domain test structures with :mod:`openmm_adv.calibration`: Spearman, ROC-AUC for
flagging the structures whose force error is above a threshold, miscalibration area and
calibrated NLL, plus the force error itself, the cost (training and evaluation time) and the
robustness of MD on the model (:func:`openmm_adv.analysis.nn_md_stability`).

Datasets:

- ``ala2``: alanine dipeptide, Amber labels. Training frames from the shipped 300 K C7eq MD;
  in-domain test: the shipped test set's C7eq frames; out-of-domain: its frames in every other
  basin (C5, alpha_R, alpha_L, C7ax) and between basins.
- ``ammonia_xtb``: ammonia labelled with GFN2-xTB (tblite). Training frames from 300 K MD on the
  shipped model force field in one pyramid; in-domain test: more 300 K frames; out-of-domain:
  1200 K frames (stretched bonds, flattened and inverted pyramids).

Every stage writes its result under the output folder and is skipped when rerun (labels,
models, metrics), so a killed run resumes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from . import config as cfg

__all__ = ["UQCompareProtocol", "UQDatasetConfig", "load_uq_protocol", "run_uq_compare"]

METHODS = ("ensemble", "gmm", "mve", "evidential")
DATASET_KINDS = ("ala2", "ammonia_xtb")


@dataclass
class UQDatasetConfig:
    """One dataset: its ``kind`` (``ala2`` or ``ammonia_xtb``), how many training structures
    (the last ``validation_fraction`` of the training section's split is the calibration set),
    how many test structures of each domain, and the force error (kJ/mol/nm, per-structure RMS)
    above which a structure counts as badly predicted for the ROC-AUC; null: the 90th
    percentile of the method's own in-domain errors."""

    kind: str = field(default="ala2", metadata={"choices": DATASET_KINDS})
    train_frames: int = field(default=200, metadata={"ge": 8})
    test_frames: int = field(default=300, metadata={"ge": 10})
    error_threshold: Optional[float] = field(default=None, metadata={"gt": 0.0})
    seed: int = 0
    # ammonia_xtb: MD temperatures of the in-domain and the out-of-domain frames (K)
    temperature: float = field(default=300.0, metadata={"gt": 0.0})
    hot_temperature: float = field(default=1200.0, metadata={"gt": 0.0})


@dataclass
class RobustnessConfig:
    """NN-MD on each trained model from ``n_runs`` training structures (replicas batched in one
    Context), ``n_steps`` of ``timestep_fs`` at each of ``temperatures`` (K); a run fails when a
    bond leaves 0.7-1.5x its reference length or atoms clash
    (:class:`~openmm_adv.geometry.GeometryCheck`). A hot run probes what the model does where its
    training data did not go, which is where MD on a model breaks."""

    n_runs: int = field(default=4, metadata={"ge": 1})
    n_steps: int = field(default=5000, metadata={"ge": 0})
    timestep_fs: float = field(default=1.0, metadata={"gt": 0.0})
    temperatures: list[float] = field(default_factory=lambda: [300.0])


@dataclass
class UQCompareProtocol:
    """A uq_compare study."""

    name: str
    datasets: dict[str, UQDatasetConfig]
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    ensemble_members: int = field(default=5, metadata={"ge": 2})
    model: cfg.ModelConfig = field(default_factory=cfg.ModelConfig)
    training: cfg.TrainingSection = field(default_factory=cfg.TrainingSection)
    gmm_components: int = field(default=15, metadata={"ge": 1})
    gmm_alpha: float = field(default=0.05, metadata={"gt": 0.0, "lt": 1.0})
    head_epochs: int = field(default=100, metadata={"ge": 1})
    evidential_lambda: float = field(default=0.5, metadata={"ge": 0.0})
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    threads: Optional[int] = field(default=None, metadata={"ge": 1})
    description: str = ""

    def check(self, where: str) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise cfg.ConfigError(f"{cfg._join(where, 'methods')}: {unknown or 'none given'}; choose from {', '.join(METHODS)}")
        if not self.datasets:
            raise cfg.ConfigError(f"{cfg._join(where, 'datasets')}: give at least one dataset")


def load_uq_protocol(path) -> UQCompareProtocol:
    """Read and validate a uq_compare protocol YAML."""
    return cfg.parse_section(UQCompareProtocol, cfg.load_yaml(path))


# ---------------------------------------------------------------------- data
@dataclass
class _Split:
    positions: np.ndarray
    energies: np.ndarray
    forces: np.ndarray


def _ala2_data(spec: UQDatasetConfig):
    from .data import Dataset
    from .reference_data import assign_basin, load_test_set
    from .systems import alanine_dipeptide
    from .torchscript_models import __file__ as shipped

    system = alanine_dipeptide()
    rng = np.random.default_rng(spec.seed)
    md = Dataset.load(Path(shipped).parent / "ala2_c7eq_300K.h5")
    if spec.train_frames > len(md):
        raise ValueError(f"ala2: train_frames {spec.train_frames} is more than the {len(md)} shipped C7eq frames")
    train = md.subset(np.sort(rng.choice(len(md), spec.train_frames, replace=False)))
    test = load_test_set()
    cvs = system.compute_cvs(test.positions)
    basin = assign_basin(np.degrees(cvs["phi"]), np.degrees(cvs["psi"]))
    splits = {}
    for name, mask in (("in-domain", basin == "C7eq"), ("out-of-domain", basin != "C7eq")):
        index = np.flatnonzero(mask)
        index = np.sort(rng.choice(index, min(spec.test_frames, len(index)), replace=False))
        splits[name] = _Split(test.positions[index], test.energies[index], test.forces[index])
    return system, _Split(train.positions, train.energies, train.forces), splits


def _ammonia_data(spec: UQDatasetConfig, folder: Path, echo):
    from .data import Dataset
    from .initial_data import reference_md_frames
    from .oracles import make_oracle
    from .systems import ammonia

    system = ammonia()
    path = folder / "labels.h5"
    if not path.exists():
        sets = {"train": (spec.train_frames, spec.temperature, spec.seed),
                "in-domain": (spec.test_frames, spec.temperature, spec.seed + 1),
                "out-of-domain": (spec.test_frames, spec.hot_temperature, spec.seed + 2)}
        oracle = make_oracle("xtb", system)
        data = Dataset(system.atomic_numbers)
        for k, (name, (n, temperature, seed)) in enumerate(sets.items()):
            echo(f"ammonia_xtb: {n} frames of {temperature:g} K MD ({name}), labelled with GFN2-xTB")
            frames = reference_md_frames(system, system.positions, n, temperature, interval=50,
                                         equilibration_steps=2000, timestep_fs=0.5, friction=1.0, seed=seed)
            labels = oracle.label(frames)
            keep = labels.ok
            data.append(frames[keep], labels.energies[keep], labels.forces[keep], generation=k, sampler=name)
        folder.mkdir(parents=True, exist_ok=True)
        data.save(path)
    data = Dataset.load(path)
    by_generation = data.provenance["generation"]
    parts = [data.subset(np.flatnonzero(by_generation == k)) for k in range(3)]
    as_split = [_Split(p.positions, p.energies, p.forces) for p in parts]
    return system, as_split[0], {"in-domain": as_split[1], "out-of-domain": as_split[2]}


# ---------------------------------------------------------------------- models
def _train_models(protocol: UQCompareProtocol, system, train: _Split, folder: Path, echo) -> tuple[dict, dict]:
    """Every method's model (trained or loaded from ``folder``) and its training seconds."""
    from .models import Committee
    from .train import TrainingConfig, train_committee

    config = TrainingConfig(**asdict(protocol.training))
    options = {k: v for k, v in asdict(protocol.model).items()
               if k in ("n_features", "n_rbf", "n_interactions", "cutoff", "neighbor_list", "seed") and v is not None}
    prior = protocol.model.prior in (None, "bonded")
    costs_path = folder / "training_seconds.json"
    costs = json.loads(costs_path.read_text()) if costs_path.exists() else {}
    models = {}

    def trained(name: str, build):
        path = folder / f"{name}.pt"
        if path.exists() and name in costs:
            return Committee.load(path)
        echo(f"training {name} on {len(train.positions)} structures")
        start = time.perf_counter()
        model = build()
        costs[name] = time.perf_counter() - start
        model.save(path)
        costs_path.write_text(json.dumps(costs, indent=1) + "\n")
        return model

    def committee(members: int):
        def build():
            c = Committee.painn(system.atomic_numbers, n_members=members, **options)
            single_config = TrainingConfig(**{**asdict(config), "bootstrap": config.bootstrap and members > 1})
            train_committee(c, train.positions, train.energies, train.forces, single_config, progress=False,
                            fit_prior=prior, bonds=system.bonds)
            return c
        return build

    folder.mkdir(parents=True, exist_ok=True)
    if "ensemble" in protocol.methods:
        models["ensemble"] = trained("ensemble", committee(protocol.ensemble_members))
    singles = [m for m in protocol.methods if m != "ensemble"]
    if singles:
        single = trained("single", committee(1))
        for method in singles:
            models[method] = trained(method, lambda method=method: _single_method(protocol, method, single, train, config))
            costs[f"{method}_total"] = costs["single"] + costs[method]
    costs_path.write_text(json.dumps(costs, indent=1) + "\n")
    return models, costs


def _single_method(protocol, method: str, single, train: _Split, config):
    from .train import validation_mask

    if method == "gmm":
        from .models.gmm import fit_gaussian_mixture

        held_out = validation_mask(len(train.positions), config.validation_fraction, config.split_seed)
        return fit_gaussian_mixture(single, train.positions[~held_out], train.positions[held_out],
                                    train.forces[held_out], n_components=protocol.gmm_components,
                                    alpha=protocol.gmm_alpha, seed=config.seed)
    from .train_heads import HeadTrainingConfig, train_with_head

    head = HeadTrainingConfig(epochs=protocol.head_epochs, batch_size=config.batch_size,
                              learning_rate=0.3 * config.learning_rate,
                              evidential_lambda=protocol.evidential_lambda, seed=config.seed)
    return train_with_head(single, train.positions, train.energies, train.forces, method, head, config, progress=False)


# ---------------------------------------------------------------------- metrics
def _evaluate(model, split: _Split) -> dict:
    """Mean forces, force_variance and the wall time per structure of one model on one split."""
    start = time.perf_counter()
    energies, forces, u = model.evaluate_in_batches(split.positions, batch_size=64, metric="force_variance", domain=False)
    seconds = time.perf_counter() - start
    return {"forces": forces, "energies": energies, "u": u, "seconds_per_structure": seconds / len(split.positions)}


def _metrics(evaluation: dict, split: _Split, threshold: float) -> dict:
    from .calibration import calibration_report, per_frame_force_rmse

    residuals = evaluation["forces"] - split.forces
    err = per_frame_force_rmse(evaluation["forces"], split.forces)
    u = evaluation["u"]
    sigma = np.sqrt(np.maximum(u, 1e-12))
    report = calibration_report(u, err, threshold=threshold, sigma=sigma, residuals=residuals)
    report.update(force_rmse=float(np.sqrt(np.mean(residuals**2))),
                  energy_rmse=float(np.sqrt(np.mean((evaluation["energies"] - split.energies) ** 2))),
                  median_sigma=float(np.median(sigma)), median_error=float(np.median(err)))
    return report


def _robustness(protocol: UQCompareProtocol, model, system, train: _Split, seed: int) -> dict:
    from .analysis import nn_md_stability

    r = protocol.robustness
    if r.n_steps == 0:
        return {}
    seeds = train.positions[np.random.default_rng(seed).choice(len(train.positions), r.n_runs, replace=False)]
    out = {}
    for temperature in r.temperatures:
        start = time.perf_counter()
        run = nn_md_stability(model, system, seeds, temperature=float(temperature), timestep=r.timestep_fs * 1e-3,
                              n_steps=r.n_steps, seed=seed)
        run["wall_seconds"] = time.perf_counter() - start
        out[f"{float(temperature):g}"] = run
    return out


def run_uq_compare(protocol: UQCompareProtocol, output_dir, echo=print) -> dict:
    """Run (or resume) every dataset x method and write ``results.json``, ``REPORT.md`` and
    one error-versus-uncertainty figure per dataset."""
    from ._torch import configure_threads
    from .calibration import per_frame_force_rmse
    from .plots import error_vs_uncertainty_plot

    configure_threads(protocol.threads)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "protocol.json").write_text(json.dumps(asdict(protocol), indent=1, default=str) + "\n")
    results = {}
    start = time.perf_counter()
    for name, spec in protocol.datasets.items():
        folder = out / name
        if spec.kind == "ala2":
            system, train, splits = _ala2_data(spec)
        else:
            system, train, splits = _ammonia_data(spec, folder, echo)
        models, costs = _train_models(protocol, system, train, folder, echo)
        cached = folder / "metrics.json"
        per_method = json.loads(cached.read_text()) if cached.exists() else {}
        panels = {}
        for method, model in models.items():
            evaluations = {split: _evaluate(model, data) for split, data in splits.items()}
            errors = {split: per_frame_force_rmse(evaluations[split]["forces"], data.forces)
                      for split, data in splits.items()}
            threshold = (spec.error_threshold if spec.error_threshold is not None
                         else float(np.percentile(errors["in-domain"], 90)))
            if method not in per_method:
                echo(f"{name}: measuring {method}")
                row = {"threshold": threshold, "training_seconds": costs.get(f"{method}_total", costs.get(method)),
                       "eval_ms_per_structure": 1e3 * float(np.mean([e["seconds_per_structure"] for e in evaluations.values()]))}
                for split, data in splits.items():
                    row[split] = _metrics(evaluations[split], data, threshold)
                both = _Split(*(np.concatenate([getattr(s, k) for s in splits.values()]) for k in ("positions", "energies", "forces")))
                merged = {k: np.concatenate([evaluations[s][k] for s in splits]) for k in ("forces", "energies", "u")}
                row["all"] = _metrics(merged, both, threshold)
                row["robustness"] = _robustness(protocol, model, system, train, spec.seed)
                per_method[method] = row
                cached.write_text(json.dumps(per_method, indent=1, default=float) + "\n")
            panels[method] = {split: (np.sqrt(np.maximum(evaluations[split]["u"], 1e-12)), errors[split])
                              for split in splits}
        error_vs_uncertainty_plot(out / f"error_vs_uncertainty_{name}.png", panels,
                                  title=f"{name}: force RMSE against predicted sigma (sqrt of force_variance)")
        results[name] = {"n_train": len(train.positions), **{f"n_{k}": len(v.positions) for k, v in splits.items()},
                         "methods": per_method}
    results["wall_seconds"] = time.perf_counter() - start
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    (out / "REPORT.md").write_text(uq_report(protocol, results))
    echo(f"wrote {out / 'REPORT.md'}")
    return results


def uq_report(protocol: UQCompareProtocol, results: dict) -> str:
    """The markdown report: per dataset, methods x metrics for each test split."""
    lines = [f"# {protocol.name}", "", protocol.description.strip(), ""]
    lines += ["Metrics of the uncertainty `force_variance` (every method's predicted variance of a force "
              "component, kJ/mol/nm squared; sigma is its square root) against each structure's force RMSE. "
              "Spearman and ROC-AUC: higher is better (ROC-AUC: flagging structures whose force RMSE is above "
              "the threshold); miscalibration area (0 to 0.5) and calibrated NLL (after one fitted scale of "
              "sigma, which is also reported): lower is better. Training time includes the single model's "
              "for the single-model methods.", ""]
    for name, block in results.items():
        if name == "wall_seconds":
            continue
        lines += [f"## {name}", "",
                  f"{block['n_train']} training structures; test: {block.get('n_in-domain', 0)} in-domain, "
                  f"{block.get('n_out-of-domain', 0)} out-of-domain.", "",
                  f"![error vs uncertainty](error_vs_uncertainty_{name}.png)", ""]
        for split in ("in-domain", "out-of-domain", "all"):
            lines += [f"### {split}", "",
                      "| method | force RMSE | Spearman | ROC-AUC (threshold) | miscalibration area | calibrated NLL (scale) | median sigma / median error |",
                      "|---|---|---|---|---|---|---|"]
            for method, row in block["methods"].items():
                m = row[split]
                nll = m.get("calibrated_nll", {})
                lines.append(f"| {method} | {m['force_rmse']:.1f} | {m['spearman']:.2f} | {m['roc_auc']:.2f} "
                             f"({row['threshold']:.0f}) | {m.get('miscalibration_area', float('nan')):.3f} | "
                             f"{nll.get('nll', float('nan')):.2f} ({nll.get('scale', float('nan')):.2g}) | "
                             f"{m['median_sigma']:.1f} / {m['median_error']:.1f} |")
            lines.append("")
        temperatures = [f"{float(t):g}" for t in protocol.robustness.temperatures]
        lines += ["### Cost and robustness", "",
                  "NN-MD: the fraction of runs still physical at the end, and their median survival (ps), per "
                  "temperature.", "",
                  "| method | training (s) | evaluation (ms / structure) | "
                  + " | ".join(f"stable at {t} K | median survival at {t} K (ps)" for t in temperatures) + " |",
                  "|---|---|---|" + "---|---|" * len(temperatures)]
        for method, row in block["methods"].items():
            rob = row.get("robustness") or {}
            cells = []
            for t in temperatures:
                run = rob.get(t, {})
                cells.append(f"{run.get('fraction_stable', float('nan')):.2f} | {run.get('median_survival_ps', float('nan')):.2f}")
            lines.append(f"| {method} | {row['training_seconds']:.0f} | {row['eval_ms_per_structure']:.2f} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"Wall time: {results.get('wall_seconds', 0.0) / 60:.1f} min.", ""]
    return "\n".join(lines)
