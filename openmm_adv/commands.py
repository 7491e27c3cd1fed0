"""What the ``label``, ``train``, ``attack``, ``loop``, ``export`` and ``config`` commands do.

Each function takes a validated config (see :mod:`openmm_adv.config`), so it can be called from
Python as well as from the command line.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

import numpy as np
import yaml

from . import config as cfg
from ._torch import configure_threads
from .builders import (
    attack_options,
    build_oracle,
    build_samplers,
    build_selector,
    build_system,
    build_trainer,
    committee_path,
    load_data,
)
from .data import Dataset, read_extxyz, write_extxyz

__all__ = ["run_label", "run_train", "run_attack", "run_loop", "run_export", "example_config"]


def _read_frames(path: Path, system) -> np.ndarray:
    """Geometries (nm) from extxyz, an openmm-adv dataset, or any trajectory mdtraj reads."""
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    if path.suffix in (".xyz", ".extxyz"):
        numbers, positions, _, _ = read_extxyz(path)
        if not np.array_equal(numbers, system.atomic_numbers):
            raise ValueError(f"{path}: its atoms do not match system {system.name} ({len(numbers)} vs {system.n_atoms} atoms)")
        return positions
    if path.suffix in (".h5", ".hdf5"):
        try:
            return Dataset.load(path).positions
        except ValueError:
            pass  # maybe an mdtraj HDF5 trajectory
    import mdtraj

    topology = mdtraj.Topology.from_openmm(system.topology)
    try:
        trajectory = mdtraj.load(str(path), top=topology) if path.suffix != ".pdb" else mdtraj.load(str(path))
    except Exception as exc:  # mdtraj raises many types for unreadable files
        raise ValueError(f"cannot read {path} as a trajectory of {system.name}: {exc}") from exc
    if trajectory.n_atoms != system.n_atoms:
        raise ValueError(f"{path} has {trajectory.n_atoms} atoms; system {system.name} has {system.n_atoms}")
    return np.asarray(trajectory.xyz, dtype=np.float64)


def run_label(config: cfg.LabelRunConfig, progress: bool = True, echo=print) -> dict:
    """Label every frame of ``config.input`` and append the successes to ``config.output``.

    Failures are written to ``<output>.failures.json`` with their reasons; they never stop the run.
    """
    system = build_system(config.system)
    oracle = build_oracle(config.oracle, system)
    positions = _read_frames(Path(config.input), system)
    echo(f"labelling {len(positions)} frames of {config.input} with {oracle.name} ({config.oracle.workers} worker(s))")
    start = time.perf_counter()
    labels = oracle.label(positions, n_workers=config.oracle.workers)
    ok = np.asarray(labels.ok, dtype=bool)
    records = Dataset(system.atomic_numbers)
    if ok.any():
        records.append(positions[ok], labels.energies[ok], labels.forces[ok], generation=config.generation,
                       sampler=config.sampler, oracle=oracle.name)
    size = Dataset.append_to_file(config.output, records)
    failures = [{"frame": int(i), "reason": reason} for i, reason in labels.failures()]
    failure_path = Path(str(config.output) + ".failures.json")
    if failures:
        failure_path.write_text(json.dumps(failures, indent=1) + "\n")
    summary = {"frames": len(positions), "labelled": int(ok.sum()), "failed": len(failures),
               "dataset_size": size, "seconds": time.perf_counter() - start}
    echo(f"labelled {summary['labelled']}/{summary['frames']} in {summary['seconds']:.1f} s; {config.output} now holds {size}"
         + (f"; {len(failures)} failures in {failure_path}" if failures else ""))
    return summary


def run_train(config: cfg.TrainRunConfig, progress: bool = True, echo=print) -> dict:
    """Train a committee on ``config.data`` and save it (TorchScript + metadata) to ``config.output``."""
    configure_threads(config.threads)
    system = build_system(config.system)
    data = load_data(config.data, system)
    trainer = build_trainer(config.model, config.training, progress=progress, system=system)
    if trainer.template is not None:
        described = f"{trainer.template.n_members}-member copy of {config.model.committee}"
    else:
        described = f"{config.model.n_members}-member {trainer.architecture}"
    echo(f"training a {described} committee on {len(data)} structures")
    committee, report = trainer.train(data, seed=config.seed, bonds=system.bonds)
    path = committee.save(config.output)
    summary = report.summary()
    Path(str(path) + ".training.json").write_text(json.dumps({**summary, "history": report.history}, indent=1) + "\n")
    echo(f"validation force MAE: members {summary['val_force_mae_kj_mol_nm']:.1f} kJ/mol/nm (mean), committee mean "
         f"{summary['val_committee_force_mae_kj_mol_nm']:.1f}; energy MAE: members "
         f"{summary['val_energy_mae_kj_mol']:.2f} kJ/mol, committee mean {summary['val_committee_energy_mae_kj_mol']:.2f} "
         f"(best epoch {summary['best_epoch']}, "
         f"{summary['epochs_run']} epochs, {summary['wall_seconds']:.0f} s); wrote {path}")
    prior = committee.metadata.get("prior")
    if prior:
        echo(f"bonded prior: {prior['n_bonds']} bonds and {prior['n_angles']} angles took the training forces' RMS "
             f"from {prior['training_force_rms_kj_mol_nm']:.0f} to {prior['residual_force_rms_kj_mol_nm']:.0f} "
             "kJ/mol/nm; the members learned the rest")
    return summary


def run_attack(config: cfg.AttackRunConfig, progress: bool = True, echo=print) -> dict:
    """Attack seeds with a committee, select, and write the chosen geometries (unlabelled extxyz)."""
    from .models import Committee
    from .samplers import Attack

    configure_threads(config.threads)
    system = build_system(config.system)
    committee = Committee.load(committee_path(config.committee), system=system)
    data = load_data(config.seeds, system, where="seeds")
    rng = np.random.default_rng(config.seeds.seed)
    pick = np.sort(rng.choice(len(data), size=min(config.n_seeds, len(data)), replace=False))
    result = Attack(committee, **attack_options(config.attack, system, progress)).run(data.positions[pick])
    candidates = result.candidates()
    selector = build_selector(config.selection, system)
    reference_uncertainty = None
    if config.selection.percentile_lower is not None or config.selection.percentile_upper is not None:
        reference_uncertainty = committee.evaluate_in_batches(data.positions, metric=config.attack.metric)[2]
    chosen = selector.select(candidates, dataset_positions=data.positions, reference_uncertainty=reference_uncertainty,
                             reference_energies=data.energies)
    write_extxyz(config.output, system.atomic_numbers, chosen.positions,
                 info={"uncertainty": chosen.uncertainty, "committee_energy": chosen.energies,
                       "seed_frame": pick[chosen.seed_index]})
    report = {k: v for k, v in selector.last_report.items() if k != "window"}
    flagged = Counter(flag.split(":")[0] for flag, ok in zip(result.flags, result.valid) if not ok)
    if flagged:
        echo("flagged attacks: " + ", ".join(f"{n} x {reason}" for reason, n in flagged.most_common()))
    echo(f"{int(result.valid.sum())}/{len(pick)} valid attacks in {result.wall_seconds:.1f} s; selection {report}; "
         f"wrote {len(chosen)} geometries to {config.output} (label them with 'openmm-adv label')")
    return {"valid": int(result.valid.sum()), "selected": len(chosen), "selection": report,
            "seconds": result.wall_seconds}


def run_loop(config: cfg.LoopRunConfig, run_dir: str | Path, progress: bool = True, echo=print) -> list[dict]:
    """Run or resume the active-learning loop described by ``config`` in ``run_dir``."""
    from .loop import ActiveLearningLoop

    configure_threads(config.loop.threads)
    system = build_system(config.system)
    initial_committee = committee_path(config.initial_committee)
    trainer = build_trainer(config.model, config.training, progress=progress, system=system,
                            initial_committee=initial_committee)
    settings = asdict(config)
    # Growing the number of generations is how a finished run is extended, so it is not part
    # of the settings a resume must match.
    settings["loop"].pop("generations")
    # The resolved architecture (a null one means painn or the initial committee's), so runs
    # made before it could be null resume; a template is stored by what identifies it.
    settings["model"]["architecture"] = trainer.architecture
    if trainer.template is not None:
        settings["model_template"] = trainer.describe()["template"]
    loop = ActiveLearningLoop(
        system=system,
        oracle=build_oracle(config.oracle, system),
        samplers=build_samplers(config.samplers, system, progress=progress),
        selector=build_selector(config.selection, system),
        trainer=trainer,
        initial_data=load_data(config.initial_data, system, where="initial_data"),
        run_dir=run_dir,
        n_generations=config.loop.generations,
        seeds_per_generation=config.loop.seeds,
        seed=config.loop.seed,
        metric=next(iter(config.samplers.values())).metric,
        initial_committee=initial_committee,
        label_workers=config.oracle.workers,
        final_training=config.loop.final_training,
        max_label_energy=config.loop.max_label_energy,
        progress=progress,
        settings=settings,
        echo=echo,
    )
    records = loop.run()
    echo(f"done: {len(records)} log records in {loop.log_path}; dataset {loop.dataset_path}")
    return records


def run_export(source: str | Path, output: str | Path, generation: int | None = None, echo=print) -> Path:
    """Convert between an openmm-adv HDF5 dataset and extended XYZ (a run folder means its dataset)."""
    source, output = Path(source), Path(output)
    if source.is_dir():
        source = source / "dataset.h5"
    data = Dataset.from_extxyz(source) if source.suffix in (".xyz", ".extxyz") else Dataset.load(source)
    if generation is not None:
        data = data.subset(np.flatnonzero(data.provenance["generation"] == generation))
    if output.suffix in (".xyz", ".extxyz"):
        data.to_extxyz(output)
    elif output.suffix in (".h5", ".hdf5"):
        data.save(output)
    else:
        raise ValueError(f"--output {output}: use a .extxyz or .h5 file name")
    echo(f"wrote {len(data)} structures to {output}")
    return output


_EXAMPLE_REQUIRED = {
    "label": {"input": "frames.extxyz", "output": "labelled.h5"},
    "train": {"output": "committee.pt"},
    "attack": {"output": "candidates.extxyz"},
    "loop": {},
}
_EXAMPLE_CLASSES = {"label": cfg.LabelRunConfig, "train": cfg.TrainRunConfig, "attack": cfg.AttackRunConfig,
                    "loop": cfg.LoopRunConfig}


def example_config(kind: str) -> str:
    """A YAML config for command ``kind`` with every key at its default."""
    cls = _EXAMPLE_CLASSES[kind]
    instance = cls(**_EXAMPLE_REQUIRED[kind])
    header = f"# openmm-adv {kind} config: every key with its default. Units: nm, kJ/mol, ps.\n"
    return header + yaml.safe_dump(_plain(instance), sort_keys=False)


def _plain(obj):
    if is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj
