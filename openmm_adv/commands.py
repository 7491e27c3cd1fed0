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
from .outputs import check_writable_file, check_writable_folder
from .executors import make_labeller
from .label_journal import LabelJournal, journal_key

__all__ = ["run_init", "run_md", "run_label", "run_train", "run_attack", "run_loop", "run_export", "example_config"]


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
            data = Dataset.load(path, check_finite=False)  # only the positions are read: the oracle checks them
        except ValueError:
            pass  # maybe an mdtraj HDF5 trajectory
        else:
            if not np.array_equal(data.atomic_numbers, system.atomic_numbers):
                raise ValueError(f"{path}: its atoms do not match system {system.name} ({data.n_atoms} vs "
                                 f"{system.n_atoms} atoms)")
            return data.positions
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

    Before the oracle runs, the output must be writable and, when it exists, a readable dataset
    of the same molecule labelled by the same oracle (see :mod:`openmm_adv.oracle_record`;
    ``config.oracle.allow_mixed`` lets another one in), and the input's geometry must be in nm.
    Each label is saved as it comes back, in ``<output>.partial/`` (see
    :class:`~openmm_adv.label_journal.LabelJournal`), so a killed run resumes where it stopped;
    the folder is removed once the labels are in the dataset. Labels that fail, or that
    :func:`openmm_adv.plausibility.label_problems` refuses (out of the data's energy range, absurd
    forces), are written to ``<output>.failures.json`` with their reasons; they never stop the
    run, but a run in which every label is refused is an error.
    """
    from .oracle_record import check_oracle
    from .plausibility import label_problems, units_problem

    output = Path(config.output)
    check_writable_file(output, "output")
    system = build_system(config.system)
    existing = _label_target(output, system)
    positions = _read_frames(Path(config.input), system)
    problem = units_problem(system.atomic_numbers, positions)
    if problem is not None:
        raise ValueError(f"input {config.input}: {problem}")
    oracle = build_oracle(config.oracle, system)
    recipe = {"system": _plain(config.system), "oracle": {"kind": config.oracle.kind, "options": config.oracle.options}}
    journal = LabelJournal(Path(str(output) + ".partial"), journal_key(positions, recipe), len(positions))
    pending = journal.pending()
    with make_labeller(config.oracle) as labeller:
        record = check_oracle(oracle, existing, str(output), config.oracle.allow_mixed, echo, labeller=labeller)
        earlier = len(positions) - len(pending)
        echo(f"labelling {len(pending)} frames of {config.input} with {oracle.name} on {labeller.describe()}"
             + (f" ({earlier} labelled by an earlier run, kept in {journal.folder})" if earlier else ""))
        start = time.perf_counter()
        labeller.run(oracle, positions, journal.save, indices=pending)
    labels = journal.labels(system.n_atoms, oracle.name)
    reasons = list(labels.errors)
    labelled = np.asarray(labels.ok, dtype=bool)
    ok = labelled.copy()
    # The data's lowest energy, or for a new dataset the batch's median (robust to one outlier).
    lowest = (float(existing.energies.min()) if len(existing)
              else float(np.median(labels.energies[ok])) if ok.any() else None)
    cap = _label_cap(config.max_label_energy, system)
    for i, problem in zip(np.flatnonzero(ok), label_problems(labels.energies[ok], labels.forces[ok], system.n_atoms,
                                                               lowest, cap)):
        if problem is not None:
            ok[i], reasons[i] = False, problem
    failures = [{"frame": int(i), "reason": reasons[i]} for i in np.flatnonzero(~ok)]
    failure_path = Path(str(output) + ".failures.json")
    if failures:
        _atomic_write_json(failure_path, failures)
    if labelled.any() and not ok.any():
        first = next(f for f in failures if labelled[f["frame"]])
        journal.remove()
        raise ValueError(f"every label was refused, nothing was appended to {output}; frame {first['frame']}: "
                         f"{first['reason']} (all reasons in {failure_path})")
    records = Dataset(system.atomic_numbers)
    if ok.any():
        records.append(positions[ok], labels.energies[ok], labels.forces[ok], generation=config.generation,
                       sampler=config.sampler, oracle=oracle.name)
        records.oracle_record = record
    # Tagged, so that a run resumed after a kill between the append and the journal's removal
    # appends once.
    size = Dataset.append_to_file(output, records, tag=f"label-{journal.id}",
                                  allow_mixed_oracles=config.oracle.allow_mixed)
    journal.remove()
    summary = {"frames": len(positions), "labelled": int(ok.sum()), "failed": len(failures),
               "dataset_size": size, "seconds": time.perf_counter() - start}
    echo(f"labelled {summary['labelled']}/{summary['frames']} in {summary['seconds']:.1f} s; {output} now holds {size}"
         + (f"; {len(failures)} failed or refused, reasons in {failure_path}" if failures else ""))
    return summary


def _label_target(output: Path, system) -> Dataset:
    """The dataset labels will be appended to (empty when ``output`` does not exist yet),
    read whole so that a truncated, corrupt or other-molecule file fails before any labelling."""
    if not output.exists():
        return Dataset(system.atomic_numbers)
    data = Dataset.load(output)
    if not np.array_equal(data.atomic_numbers, system.atomic_numbers):
        raise ValueError(f"output {output} holds another molecule ({data.n_atoms} atoms) than system {system.name} "
                         f"({system.n_atoms} atoms, or another atom order); label into a dataset of this molecule or "
                         "a new file")
    return data


def run_init(config: cfg.InitRunConfig, progress: bool = True, echo=print) -> dict:
    """The first labelled data of a molecule (see :mod:`openmm_adv.initial_data`), written to a
    new dataset ``config.output``; returns a summary with the label energies it produced.

    Raises
    ------
    ValueError
        When the output exists (``init`` never appends), the method needs what the system
        lacks (``md`` without a reference force field, ``import`` without ``input``), or no
        label survives.
    """
    from tqdm.auto import tqdm

    from . import initial_data as init
    from .plausibility import label_problems, units_problem

    output = Path(config.output)
    if output.exists():
        raise ValueError(f"{output} exists: init writes a new dataset; remove it, choose another output, or "
                         f"add frames with 'openmm-adv label'")
    if not output.parent.exists():
        raise ValueError(f"the folder of {output} does not exist: create it first")
    check_writable_file(output, "output")
    system = build_system(config.system)
    method = config.method
    if method == "auto":
        method = "import" if config.input else ("md" if system.has_reference_potential else "displacements")
    if method == "md" and not system.has_reference_potential:
        raise ValueError(f"method md runs the reference force field, which {system.name!r} does not have: use "
                         f"method: displacements, or give system.forcefield or system.system_xml")
    if method == "import" and not config.input:
        raise ValueError("method import needs input: a trajectory, extxyz file or dataset to read frames from")
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    oracle = build_oracle(config.oracle, system)
    oracle_calls, info = 0, {"method": method}
    records = None
    x0 = system.positions
    if method != "import" and config.minimise:
        if system.has_reference_potential:
            x0 = init.minimise_with_reference(system, x0)
            info["minimised_with"] = "reference force field"
        else:
            echo(f"minimising {system.name} with {oracle.name}")
            x0, calls = init.minimise_with_oracle(oracle, x0)
            oracle_calls += calls
            info["minimised_with"] = f"{oracle.name} ({calls} calls)"
    if method == "md":
        echo(f"{config.n_frames} frames of {config.temperature:g} K MD with the reference force field "
             f"(a frame every {config.md.interval} steps of {config.md.timestep_fs:g} fs)")
        with tqdm(total=config.n_frames, desc="md frames", disable=not progress) as bar:
            positions = init.reference_md_frames(
                system, x0, config.n_frames, config.temperature, config.md.interval, config.md.equilibration_steps,
                config.md.timestep_fs, config.md.friction, config.seed, progress=bar.update)
    elif method == "displacements":
        if system.has_reference_potential:
            hessian = init.numerical_hessian(lambda x: system.reference_energies_forces(x, platform="Reference")[1], x0)
            info["hessian_from"] = "reference force field"
        else:
            echo(f"Hessian of {system.name} from {6 * system.n_atoms} {oracle.name} force calls")
            hessian = init.numerical_hessian(lambda x: _oracle_forces(oracle, x), x0)
            oracle_calls += 6 * system.n_atoms
            info["hessian_from"] = oracle.name
        positions, modes = init.thermal_displacements(x0, system.masses, hessian, config.n_frames - 1,
                                                      config.temperature, rng)
        positions = np.concatenate([x0[None], positions])  # the minimum itself is data too
        info.update(modes)
    else:
        records = _import_frames(Path(config.input), system, config)
        positions = records.positions if records is not None else _read_frames(Path(config.input), system)
        info["frames_in_file"] = int(len(positions))
        problem = units_problem(system.atomic_numbers, positions)
        if problem is not None:
            raise ValueError(f"input {config.input}: {problem}")
        if len(positions) > config.n_frames:  # evenly spaced: a trajectory's neighbours are near copies
            pick = np.linspace(0, len(positions) - 1, config.n_frames).round().astype(int)
            positions = positions[pick]
            records = records.subset(pick) if records is not None else None
    if records is None:
        with make_labeller(config.oracle) as labeller:
            echo(f"labelling {len(positions)} frames with {oracle.name} on {labeller.describe()}")
            labels = oracle.label(positions, executor=labeller)
        oracle_calls += len(positions)
        ok = np.asarray(labels.ok, dtype=bool)
        info["oracle_failures"] = int((~ok).sum())
        positions, energies, forces = positions[ok], labels.energies[ok], labels.forces[ok]
        label_source, record = oracle.name, oracle.descriptor()
    else:
        energies, forces, label_source, record = records.energies, records.forces, "file", records.oracle_record
    if len(energies) == 0:
        raise ValueError("no frame was labelled: see the oracle's failures above")
    cap = _label_cap(config.max_label_energy, system)
    above = energies - energies.min()
    keep = above <= cap if cap is not None else np.ones(len(above), dtype=bool)
    problems = label_problems(energies, forces, system.n_atoms)  # absurd forces or energies per atom
    sane = np.array([p is None for p in problems], dtype=bool)
    if not (keep & sane).any():
        reason = next(p for p in problems if p is not None)  # the lowest label is never above the cap
        raise ValueError(f"no label is plausible, {output} is not written; e.g. {reason}")
    refused_implausible = int((keep & ~sane).sum())
    keep &= sane
    above = energies - energies[keep].min()
    dataset = Dataset(system.atomic_numbers)
    dataset.append(positions[keep], energies[keep], forces[keep], generation=0, sampler=f"init_{method}",
                   oracle=label_source)
    dataset.oracle_record = record
    dataset.save(output)
    summary = {**info, "frames": int(len(energies)), "kept": int(keep.sum()),
               "refused_above_cap": int((~keep).sum()) - refused_implausible, "refused_implausible": refused_implausible,
               "max_label_energy_kj_mol": cap, "oracle_calls": oracle_calls,
               "energy_above_min_kj_mol": {"median": float(np.median(above[keep])), "p95": float(np.percentile(above[keep], 95)),
                                           "max": float(above[keep].max())},
               "force_rms_kj_mol_nm": float(np.sqrt(np.mean(forces[keep] ** 2))),
               "seconds": time.perf_counter() - start, "output": str(output)}
    from .loop import _new_label_summary

    summary["cvs"] = _new_label_summary(system, dataset, 0).get("cvs", {})
    _atomic_write_json(Path(str(output) + ".init.json"), {**summary, "config": _plain(config)})
    e = summary["energy_above_min_kj_mol"]
    echo(f"wrote {summary['kept']} labelled frames to {output} ({method}; {oracle_calls} oracle calls, "
         f"{summary['seconds']:.0f} s); energies above the lowest: median {e['median']:.1f}, 95th percentile "
         f"{e['p95']:.1f}, max {e['max']:.1f} kJ/mol; force RMS {summary['force_rms_kj_mol_nm']:.0f} kJ/mol/nm"
         + (f"; {summary['refused_above_cap']} refused above {cap:.0f} kJ/mol" if summary["refused_above_cap"] else "")
         + (f"; {refused_implausible} refused as implausible (absurd forces or energy)" if refused_implausible else ""))
    for name, r in summary["cvs"].items():
        echo(f"  {name}: {r['min']:.3g} to {r['max']:.3g} {r['unit']} (median {r['median']:.3g})")
    return summary


def _label_cap(value: float | None, system) -> float | None:
    """The cap on label energies: the configured one, none for ``inf``, else the molecule's default."""
    from .plausibility import default_max_label_energy

    if value is None:
        return default_max_label_energy(system.n_atoms)
    return None if np.isinf(value) else float(value)


def _atomic_write_json(path: Path, payload: dict) -> None:
    from .loop import _atomic_write_text

    _atomic_write_text(path, json.dumps(payload, indent=1, default=str) + "\n")


def _oracle_forces(oracle, positions: np.ndarray) -> np.ndarray:
    labels = oracle.compute(positions)
    if not np.all(labels.ok):
        raise ValueError(f"the oracle failed on a displaced geometry of the Hessian: {labels.failures()[0][1]}")
    return labels.forces


def _import_frames(path: Path, system, config) -> Dataset | None:
    """Labelled records from ``path`` when it carries labels and they are wanted, else None."""
    if not config.use_file_labels or not path.exists():
        return None
    if path.suffix in (".h5", ".hdf5"):
        try:
            data = Dataset.load(path)
        except ValueError:
            return None
    elif path.suffix in (".xyz", ".extxyz"):
        numbers, positions, energies, forces = read_extxyz(path)
        if energies is None or forces is None:
            return None
        data = Dataset(numbers)
        data.append(positions, energies, forces, generation=0, sampler="import", oracle="file")
    else:
        return None
    if not np.array_equal(data.atomic_numbers, system.atomic_numbers):
        raise ValueError(f"{path}: its atoms do not match system {system.name} ({data.n_atoms} vs {system.n_atoms} atoms)")
    return data


def run_md(config: cfg.MDRunConfig, progress: bool = True, echo=print) -> dict:
    """Langevin MD on the committee mean (an ordinary ``app.Simulation``) with the uncertainty
    logged along the run; see :class:`openmm_adv.config.MDRunConfig`. Writes
    ``trajectory.dcd``, ``state.csv``, ``uncertainty.csv``, ``to_label.extxyz`` (flagged frames)
    and ``summary.json`` to ``config.output``; returns the summary.
    """
    import openmm
    from openmm import app, unit
    from tqdm.auto import tqdm

    from .forces import mean_energy_force, set_velocities_to_temperature
    from .geometry import GeometryCheck
    from .models import Committee
    from .platforms import check_platform
    from .reporter import UncertaintyLimitExceeded, UncertaintyReporter

    out = check_writable_folder(config.output, "output folder")
    check_platform(config.platform, "platform")
    configure_threads(config.threads)
    out.mkdir(parents=True, exist_ok=True)
    system = build_system(config.system)
    committee = Committee.load(committee_path(config.committee), system=system)
    start = system.positions if config.start is None else _read_frames(Path(config.start), system)[-1]
    x0 = system.check_positions(start, "start")[0]

    omm = openmm.System()
    for mass in system.masses:
        omm.addParticle(float(mass))
    omm.addForce(mean_energy_force(committee))
    integrator = openmm.LangevinMiddleIntegrator(config.temperature * unit.kelvin, config.friction / unit.picosecond,
                                                 config.timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(config.seed + 1)
    platform = openmm.Platform.getPlatformByName(config.platform)
    simulation = app.Simulation(system.topology, omm, integrator, platform)
    simulation.context.setPositions(x0)
    set_velocities_to_temperature(simulation.context, config.temperature, seed=config.seed + 1)
    interval = config.report_interval
    simulation.reporters.append(app.DCDReporter(str(out / "trajectory.dcd"), interval))
    simulation.reporters.append(app.StateDataReporter(
        str(out / "state.csv"), interval, step=True, time=True, potentialEnergy=True, kineticEnergy=True,
        temperature=True, speed=True))
    check = _BrokenMoleculeStop(GeometryCheck.for_system(system), interval)
    simulation.reporters.append(check)
    uncertainty = UncertaintyReporter(
        committee, interval, str(out / "uncertainty.csv"), threshold=config.threshold, percentile=config.percentile,
        training_data=config.training_data, metric=config.metric, stop_after=config.stop_after,
        frames=str(out / "to_label.extxyz") if config.threshold is not None or config.percentile is not None else None)
    simulation.reporters.append(uncertainty)  # last, so the others report the step it may stop at

    echo(f"{config.n_steps} steps of {config.timestep_fs:g} fs at {config.temperature:g} K on the committee mean "
         f"({committee.n_members} members, {config.platform})")
    started, stopped, blew_up = time.perf_counter(), None, False
    chunk = max(interval, min(10 * interval, config.n_steps))
    with tqdm(total=config.n_steps, desc="md", unit="step", disable=not progress) as bar:
        while simulation.currentStep < config.n_steps:
            steps = min(chunk, config.n_steps - simulation.currentStep)
            try:
                simulation.step(steps)
            except (UncertaintyLimitExceeded, _MoleculeBroken) as exc:
                stopped = str(exc)
                break
            except openmm.OpenMMException as exc:  # NaN positions: the committee blew the molecule up
                stopped, blew_up = f"OpenMM stopped near step {simulation.currentStep}: {exc}", True
                break
            bar.update(steps)
    uncertainty.close()
    steps_run = int(simulation.currentStep)
    summary = {"steps": steps_run, "time_ps": steps_run * config.timestep_fs * 1e-3, "stopped": stopped,
               "stable": check.failure is None and not blew_up,
               "broken_at": check.failure, "flagged_frames": int(uncertainty.n_flagged),
               "out_of_domain_frames": int(uncertainty.n_out_of_domain),
               "uncertainty_threshold": uncertainty.threshold, "seconds": time.perf_counter() - started,
               "ns_per_day": steps_run * config.timestep_fs * 1e-6 / max(time.perf_counter() - started, 1e-9) * 86400}
    _atomic_write_json(out / "summary.json", {**summary, "config": _plain(config)})
    echo(f"{summary['time_ps']:.3g} ps in {summary['seconds']:.0f} s ({summary['ns_per_day']:.2f} ns/day); "
         + (f"stopped: {stopped}" if stopped else "the molecule stayed whole")
         + f"; {summary['flagged_frames']} frames flagged for labelling"
         + (f" ({summary['out_of_domain_frames']} out of the committee's domain)"
            if summary["out_of_domain_frames"] else "") + f"; wrote {out}")
    return summary


class _MoleculeBroken(RuntimeError):
    pass


class _BrokenMoleculeStop:
    """An OpenMM reporter that stops the run at the first broken bond or clash."""

    def __init__(self, check, interval: int):
        self.check, self.interval, self.failure = check, int(interval), None

    def describeNextReport(self, simulation):
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": False, "include": ["positions"]}

    def report(self, simulation, state):
        from openmm import unit

        x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[None]
        ok, reasons = self.check(np.asarray(x))
        if not ok[0]:
            self.failure = {"step": int(simulation.currentStep), "reason": reasons[0]}
            raise _MoleculeBroken(f"the molecule broke at step {simulation.currentStep}: {reasons[0]}")


def run_train(config: cfg.TrainRunConfig, progress: bool = True, echo=print) -> dict:
    """Train a committee on ``config.data`` and save it (TorchScript + metadata) to ``config.output``."""
    check_writable_file(config.output, "output")
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
    from .platforms import check_platform
    from .samplers import Attack

    check_writable_file(config.output, "output")
    check_platform(config.attack.platform, "attack.platform")
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
    outside = committee.domain_check(candidates.positions).out_of_domain if len(candidates) else None
    chosen = selector.select(candidates, dataset_positions=data.positions, reference_uncertainty=reference_uncertainty,
                             reference_energies=data.energies, out_of_domain=outside)
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

    check_writable_folder(run_dir, "run folder")
    configure_threads(config.loop.threads)
    system = build_system(config.system)
    initial_committee = committee_path(config.initial_committee)
    trainer = build_trainer(config.model, config.training, progress=progress, system=system,
                            initial_committee=initial_committee)
    settings = asdict(config)
    # Growing the number of generations is how a finished run is extended, so it is not part
    # of the settings a resume must match.
    settings["loop"].pop("generations")
    # Where and how patiently labels are computed does not change what a label is.
    settings["oracle"].pop("executor")
    settings["oracle"].pop("timeout")
    # The resolved architecture (a null one means painn or the initial committee's), so runs
    # made before it could be null resume; a template is stored by what identifies it.
    settings["model"]["architecture"] = trainer.architecture
    if trainer.template is not None:
        settings["model_template"] = trainer.describe()["template"]
    oracle = build_oracle(config.oracle, system)
    labeller = make_labeller(config.oracle)
    loop = ActiveLearningLoop(
        system=system,
        oracle=oracle,
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
        labeller=labeller,
        final_training=config.loop.final_training,
        max_label_energy=_label_cap(config.loop.max_label_energy, system),
        allow_mixed_oracles=config.oracle.allow_mixed,
        progress=progress,
        settings=settings,
        echo=echo,
    )
    with labeller:
        records = loop.run()
    echo(f"done: {len(records)} log records in {loop.log_path}; dataset {loop.dataset_path}")
    return records


def run_export(source: str | Path, output: str | Path, generation: int | None = None, echo=print) -> Path:
    """Convert between an openmm-adv HDF5 dataset and extended XYZ (a run folder means its dataset).

    Raises
    ------
    ValueError
        For an output name that is neither .extxyz nor .h5, an output that cannot be written, or
        a ``generation`` the dataset does not hold (the message lists those it does), or an empty
        dataset.
    """
    source, output = Path(source), Path(output)
    if output.suffix not in (".xyz", ".extxyz", ".h5", ".hdf5"):
        raise ValueError(f"--output {output}: use a .extxyz or .h5 file name")
    check_writable_file(output, "--output")
    if source.is_dir():
        source = source / "dataset.h5"
    if not source.exists():
        raise FileNotFoundError(f"dataset {source} does not exist")
    data = Dataset.from_extxyz(source) if source.suffix in (".xyz", ".extxyz") else Dataset.load(source)
    if not len(data):
        # An empty output would look like a successful export to the next tool in a pipeline.
        raise ValueError(f"{source} holds no structures: nothing to export")
    if generation is not None:
        held = np.unique(data.provenance["generation"])
        if generation not in held:
            raise ValueError(f"--generation {generation}: {source} holds no records of it; its generations are "
                             f"{', '.join(str(int(g)) for g in held) or 'none (it is empty)'}")
        data = data.subset(np.flatnonzero(data.provenance["generation"] == generation))
    if output.suffix in (".xyz", ".extxyz"):
        data.to_extxyz(output)
    else:
        data.save(output)
    echo(f"wrote {len(data)} structures to {output}")
    return output


_EXAMPLE_REQUIRED = {
    "init": {"output": "initial_data.h5"},
    "md": {"output": "md_output"},
    "label": {"input": "frames.extxyz", "output": "labelled.h5"},
    "train": {"output": "committee.pt"},
    "attack": {"output": "candidates.extxyz"},
    "loop": {},
}
_EXAMPLE_CLASSES = {"init": cfg.InitRunConfig, "md": cfg.MDRunConfig, "label": cfg.LabelRunConfig, "train": cfg.TrainRunConfig, "attack": cfg.AttackRunConfig,
                    "loop": cfg.LoopRunConfig}


def example_config(kind: str) -> str:
    """A YAML config for command ``kind`` with every key at its default."""
    cls = _EXAMPLE_CLASSES[kind]
    instance = cls(**_EXAMPLE_REQUIRED[kind])
    from .config_docs import commented_yaml

    header = f"# openmm-adv {kind} config: every key with its default and what it does. Units: nm, kJ/mol, ps, K.\n"
    return header + commented_yaml(instance) + "\n"


def _plain(obj):
    if is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj
