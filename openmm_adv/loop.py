"""The active-learning loop: train -> sample -> select -> label -> append, generation by generation.

Every stage leaves one artifact in the run folder, written atomically (temporary file, fsync,
rename), and a stage whose artifact exists is never run again. Labels are saved one structure
at a time as the oracle returns them, and the append to the dataset carries an idempotency tag,
so a run killed at any point resumes with no label lost and none computed twice. An artifact
that cannot be read back (a truncated or corrupt file) is moved aside as ``<name>.corrupt`` and
its stage is run again, with a warning; a lost dataset.h5 is rebuilt from the initial data and
the generations' saved labels. Stages are deterministic given the seed, so the redone work
equals the lost work::

    run_dir/
      loop.json             settings the run was started with (checked on resume)
      dataset.h5            initial data + every generation's labels, with provenance
      log.jsonl             one JSON record per finished generation
      gen_001/committee.pt  the committee that sampled generation 1 (+ training.json)
      gen_001/candidates.npz, selected.npz, labels/00000.npz ...
      final/committee.pt    trained on everything (when ``final_training``)
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from ._errors import LoopBusyError, first_line
from .data import Dataset
from .executors import make_labeller
from .models.committee import Committee
from .models.own import is_builtin
from .oracle_record import check_oracle, descriptor_of, merge_records
from .plausibility import label_problems
from .run_files import append_log as _append_log
from .run_files import atomic_savez as _atomic_savez
from .run_files import atomic_write_text as _atomic_write_text  # also imported by commands and compare
from .run_files import (check_zip, read_candidates, read_json, read_label, read_log, read_log_lines, read_or_discard,
                        read_selected)
from .samplers.candidates import Candidates
from .selection import Selector
from .train import FROM_COMMITTEE, CommitteeTrainer

__all__ = ["ActiveLearningLoop", "LoopBusyError", "LoopInterrupted", "read_log"]

_FORMAT = "openmm-adv-loop/1"


#: Largest number of dataset frames scored each generation for the selector's percentile window.
REFERENCE_SAMPLE = 10_000


class LoopInterrupted(RuntimeError):
    """Raised by a checkpoint hook to stop a run at a chosen point (tests, schedulers)."""


class ActiveLearningLoop:
    """Run generations of committee training, sampling, selection and labelling in ``run_dir``.

    Parameters
    ----------
    system : MolecularSystem
    oracle : openmm_adv.oracles.Oracle
        Ground truth; must be picklable when it is labelled in other processes.
    samplers : sequence
        Objects with a ``name`` and ``sample(committee, seeds, rng) -> Candidates``
        (e.g. :class:`~openmm_adv.samplers.AttackSampler`).
    selector : Selector
    trainer : CommitteeTrainer
        Trains each generation's committee: from scratch, or by fine-tuning the previous
        generation's committee when its config sets ``warm_start_epochs``. A trainer with
        architecture ``from_committee`` and no template trains copies of ``initial_committee``
        (your own architecture stays yours in every generation; see :class:`CommitteeTrainer`
        for what "from scratch" means then).
    initial_data : Dataset
        Labelled structures the first committee is trained on; copied into the run folder.
    run_dir : path
    n_generations : int
    seeds_per_generation : int
        Seed geometries drawn (without replacement) from the dataset each generation.
    seed : int
        Drives every random choice (seed draws, training splits, bootstraps, initialisations).
    metric : str
        Uncertainty metric the selector works with (candidates are re-scored with it).
    initial_committee : Committee or path, optional
        Use this committee for generation 1 instead of training one on ``initial_data``. Later
        generations train the trainer's architecture: give
        ``CommitteeTrainer.from_committee(...)`` (or architecture ``from_committee``) to keep
        this committee's.
    label_workers : int
        Processes labelling in parallel (``1``: in this process); read when no ``labeller``
        is given.
    labeller : openmm_adv.executors.Labeller, optional
        Where the labels are computed (a process pool with a per-structure timeout, a Dask
        cluster; see :func:`openmm_adv.executors.make_labeller`). The caller owns it and
        closes it after :meth:`run`. Each label is saved as it comes back, in any order.
    final_training : bool
        After the last generation, train a committee on the whole dataset (``final/``).
    max_label_energy : float, optional
        kJ/mol. A label whose reference energy lies more than this above the lowest energy in
        the dataset is rejected: recorded with its reason like an oracle failure, counted as an
        oracle call, never trained on. Biased MD on a weak committee can fall into "holes"
        (near-clashes the committee thinks are low in energy) whose labels, thousands of kJ/mol
        up, wreck the next committee. So is one more than this below it (another oracle's
        energy zero). ``None``: no range check. Labels with absurd forces or energies per atom
        are rejected either way (:func:`openmm_adv.plausibility.label_problems`).
    allow_mixed_oracles : bool
        The dataset records its oracle (:mod:`openmm_adv.oracle_record`); a run whose oracle
        is not the one that labelled ``initial_data`` (or the run's dataset, on resume) is
        refused before any work unless this is true. Initial data without a record are probed:
        the oracle relabels their lowest-energy frame (one oracle call).
    progress : bool
    settings : dict, optional
        A JSON description of the run (the CLI passes its config). Stored in ``loop.json``;
        resuming with different settings is an error. ``n_generations`` may grow on resume.
    """

    def __init__(
        self,
        system,
        oracle,
        samplers: Sequence,
        selector: Selector,
        trainer: CommitteeTrainer,
        initial_data: Dataset,
        run_dir: str | Path,
        n_generations: int = 3,
        seeds_per_generation: int = 16,
        seed: int = 0,
        metric: str = "force_variance",
        initial_committee: Committee | str | Path | None = None,
        label_workers: int = 1,
        labeller=None,
        final_training: bool = True,
        max_label_energy: float | None = None,
        allow_mixed_oracles: bool = False,
        progress: bool = True,
        settings: dict | None = None,
        echo: Callable[[str], None] | None = print,
    ):
        if n_generations < 1 or seeds_per_generation < 1 or label_workers < 1:
            raise ValueError("n_generations, seeds_per_generation and label_workers must be >= 1")
        if not samplers:
            raise ValueError("give at least one sampler")
        names = [s.name for s in samplers]
        if len(set(names)) != len(names):
            raise ValueError(f"sampler names must be unique, got {names}")
        if not np.array_equal(np.asarray(initial_data.atomic_numbers), np.asarray(system.atomic_numbers)):
            raise ValueError("initial_data holds a different molecule than the system (atomic numbers differ)")
        if len(initial_data) < 4:
            raise ValueError(f"initial_data has {len(initial_data)} structures; training needs at least 4")
        self.system = system
        self.oracle = oracle
        self.samplers = list(samplers)
        self.selector = selector
        self.echo = echo or (lambda message: None)
        self.trainer = self._trainer_for(trainer, initial_committee)
        self.initial_data = initial_data
        self.run_dir = Path(run_dir)
        self.n_generations = int(n_generations)
        self.seeds_per_generation = int(seeds_per_generation)
        self.seed = int(seed)
        self.metric = metric
        self.initial_committee = initial_committee
        self.label_workers = int(label_workers)
        self.labeller = labeller
        if labeller is not None:
            labeller.check(oracle)  # an oracle that cannot travel to the workers fails now, not after training
        self.final_training = bool(final_training)
        if max_label_energy is not None and not max_label_energy > 0:
            raise ValueError(f"max_label_energy must be a positive energy in kJ/mol, got {max_label_energy}")
        self.max_label_energy = None if max_label_energy is None else float(max_label_energy)
        self.allow_mixed_oracles = bool(allow_mixed_oracles)
        self.progress = progress
        self.settings = settings if settings is not None else self._default_settings()
        self.oracle_calls_this_session = 0
        self._reported_log_lines: list[int] = []
        # Called after every checkpoint with (event, generation); tests raise LoopInterrupted here.
        self.checkpoint_hook: Callable[[str, int], None] | None = None

    def _trainer_for(self, trainer: CommitteeTrainer, initial_committee) -> CommitteeTrainer:
        """The trainer, given the initial committee as its template when it trains
        ``from_committee`` without one."""
        needs_template = trainer.architecture == FROM_COMMITTEE and trainer.template is None
        if initial_committee is None:
            if needs_template:
                raise ValueError(f"the trainer's architecture is {FROM_COMMITTEE!r} but it has no template and the "
                                 "loop no initial_committee to take it from; give one of them")
            return trainer
        initial = (initial_committee if isinstance(initial_committee, Committee)
                   else Committee.load(initial_committee, system=self.system))
        if needs_template:
            return dataclasses.replace(trainer, template=initial)
        if trainer.architecture != FROM_COMMITTEE and not is_builtin(initial):
            self.echo(f"note: generation 1 uses the initial committee ({initial.metadata.get('architecture', 'custom')}) "
                      f"but later generations train {trainer.architecture} members; to keep its architecture, use "
                      f"CommitteeTrainer.from_committee (model.architecture: {FROM_COMMITTEE})")
        return trainer

    # ------------------------------------------------------------------ paths and bookkeeping
    @property
    def dataset_path(self) -> Path:
        return self.run_dir / "dataset.h5"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "log.jsonl"

    def generation_dir(self, generation: int) -> Path:
        return self.run_dir / f"gen_{generation:03d}"

    def _default_settings(self) -> dict:
        def describe(obj):
            if is_dataclass(obj):
                return {k: describe(v) for k, v in asdict(obj).items()}
            options = getattr(obj, "attack_options", None) or getattr(obj, "options", None)
            if isinstance(options, dict) and hasattr(obj, "name"):
                return {"name": obj.name, **{k: describe(v) for k, v in options.items()}}
            if isinstance(obj, (int, float, str, bool)) or obj is None:
                return obj
            if isinstance(obj, dict):
                return {k: describe(v) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return [describe(v) for v in obj]
            return type(obj).__name__

        selector = {k: v for k, v in asdict(self.selector).items() if k not in ("last_report", "geometry_check")}
        return {
            "system": self.system.name, "oracle": getattr(self.oracle, "name", type(self.oracle).__name__),
            "samplers": [describe(s) for s in self.samplers], "selector": selector,
            "trainer": {**self.trainer.describe(), "model": describe(self.trainer.model_options),
                        "training": describe(self.trainer.config)},
            "seeds_per_generation": self.seeds_per_generation, "seed": self.seed, "metric": self.metric,
            "initial_committee": None if self.initial_committee is None else str(self.initial_committee),
            "n_initial": len(self.initial_data), "final_training": self.final_training,
        }

    def _checkpoint(self, event: str, generation: int) -> None:
        if self.checkpoint_hook is not None:
            self.checkpoint_hook(event, generation)

    def _prepare(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        manifest = self.run_dir / "loop.json"
        settings = json.loads(json.dumps(self.settings, default=str))
        resuming = manifest.exists()
        if resuming:
            try:
                stored = json.loads(manifest.read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"{manifest} is unreadable ({type(exc).__name__}: {first_line(exc)}); it records the settings the "
                    "run was started with: restore it, or delete it to resume with the settings given now"
                ) from None
            if not isinstance(stored, dict) or stored.get("format") != _FORMAT:
                raise ValueError(f"{manifest} was not written by this version of openmm-adv")
            changed, added = _settings_diff(stored["settings"], settings)
            if added and not changed:
                # Keys that a newer openmm-adv added to a section: the run was made without them.
                self.echo(f"note: resuming a run made before these settings existed: {', '.join(added)}")
                stored["settings"] = settings
                _atomic_write_text(manifest, json.dumps(stored, indent=1) + "\n")
            elif changed:
                raise ValueError(
                    f"{self.run_dir} holds a run with different settings (changed: {', '.join(changed)}); "
                    "resume with the original settings or start a new run folder"
                )
        else:
            _atomic_write_text(manifest, json.dumps({"format": _FORMAT, "settings": settings}, indent=1) + "\n")
        if resuming and self._dataset_lost():
            self._rebuild_dataset()
        if "initial" not in (Dataset.file_tags(self.dataset_path) if self.dataset_path.exists() else []):
            if self.dataset_path.exists():
                raise ValueError(f"{self.dataset_path} exists but was not created by this loop; use a new run folder")
            Dataset.append_to_file(self.dataset_path, self.initial_data, tag="initial")

    def _check_oracle(self) -> None:
        """Refuse, before any work, an oracle other than the one that labelled the data; a new
        run's initial data take the record the dataset file will carry."""
        try:
            tags = Dataset.file_tags(self.dataset_path) if self.dataset_path.exists() else []
        except ValueError:
            tags = []  # unreadable: _prepare sets it aside and rebuilds it from the initial data
        if "initial" in tags:
            merge_records(Dataset.file_oracle_record(self.dataset_path), descriptor_of(self.oracle),
                          self.allow_mixed_oracles, str(self.dataset_path))
            return
        record = check_oracle(self.oracle, self.initial_data, "initial_data", self.allow_mixed_oracles, self.echo,
                              labeller=self.labeller)
        self.initial_data = self.initial_data.subset(np.arange(len(self.initial_data)))
        self.initial_data.oracle_record = record

    def _dataset_lost(self) -> bool:
        """Whether a resumed run's dataset.h5 is missing after a generation began, or cannot be
        read whole (checksums verified); an unreadable one is moved aside, with a warning."""
        if not self.dataset_path.exists():
            lost = self.generation_dir(1).exists()
            if lost:
                self.echo(f"warning: {self.dataset_path} is missing; rebuilding it")
            return lost
        return self._read_or_discard(self.dataset_path, Dataset.load, "rebuilding it") is None

    def _rebuild_dataset(self) -> None:
        """Write dataset.h5 again: the initial data, then each generation whose selection and
        labels are all saved, in order (what the lost file held, or what the resumed run would
        append next)."""
        Dataset.append_to_file(self.dataset_path, self.initial_data, tag="initial")
        g = 1
        while True:
            gdir = self.generation_dir(g)
            selected = self._read_or_discard(gdir / "selected.npz", read_selected, "selecting again")
            if selected is None:
                break
            labels = [self._read_or_discard(gdir / "labels" / f"{i:05d}.npz", read_label, "labelling it again")
                      for i in range(len(selected["positions"]))]
            if any(label is None for label in labels):
                break
            self._append_stage(g, selected, labels)
            g += 1
        self.echo(f"rebuilt {self.dataset_path.name} from the initial data and {g - 1} generations' saved labels")

    def _read_or_discard(self, path: Path, read: Callable, redo: str):
        return read_or_discard(path, read, redo, self.echo)

    def _logged(self) -> dict:
        """The log's records by generation; a line that cannot be read (a torn last line from a
        kill, a corrupt line) is reported and its generation's record written again."""
        records, bad = read_log_lines(self.log_path)
        if bad and bad != self._reported_log_lines:
            self._reported_log_lines = bad
            self.echo(f"warning: {self.log_path} line(s) {', '.join(map(str, bad))} are unreadable; "
                      "the records they held are written again")
        return {r.get("generation"): r for r in records}

    def _loop_rows(self, data: Dataset, g: int) -> tuple[int, int]:
        """``(start, stop)``: the rows of ``data`` that generation ``g`` appended. The initial
        data come first, then each generation's labels in order, each with its generation in
        the provenance."""
        n_initial = len(self.initial_data)
        appended = data.provenance["generation"][n_initial:]
        start = n_initial + int(np.count_nonzero(appended < g))
        return start, start + int(np.count_nonzero(appended == g))

    # ------------------------------------------------------------------ run
    def run(self) -> list[dict]:
        """Run (or resume) every generation; returns the log records."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LoopBusyError(f"another openmm-adv loop is running in {self.run_dir}; wait for it or use another run folder") from None
            self._check_oracle()
            self._prepare()
            for generation in range(1, self.n_generations + 1):
                self._generation(generation)
            if self.final_training:
                self._final()
        return read_log(self.log_path)

    def _generation(self, g: int) -> dict:
        logged = self._logged()
        appended = f"generation-{g}" in Dataset.file_tags(self.dataset_path)
        if g in logged:
            if appended:
                return logged[g]
            # An older copy of the dataset put back, or one rebuilt past a lost artifact.
            self.echo(f"warning: {self.dataset_path} lacks generation {g}, which the log records; "
                      "appending it again from the run folder")
        gdir = self.generation_dir(g)
        (gdir / "labels").mkdir(parents=True, exist_ok=True)
        data = Dataset.load(self.dataset_path)
        if appended:
            # Appended but not logged: the stages below only read their artifacts back, unless
            # one has been lost since; then it is redone on the data it was first made from.
            data = data.subset(slice(0, self._loop_rows(data, g)[0]))
        committee = self._train_stage(g, data, gdir)
        candidates = self._sample_stage(g, committee, data, gdir)
        selected = self._select_stage(g, candidates, data, gdir)
        labels = self._label_stage(g, selected, gdir)
        self._append_stage(g, selected, labels)
        record = self._log_stage(g, gdir)
        self._checkpoint("logged", g)
        return record

    # ------------------------------------------------------------------ stages
    def _train_stage(self, g: int, data: Dataset, gdir: Path) -> Committee:
        path, info_path = gdir / "committee.pt", gdir / "training.json"
        redo = f"training generation {g}'s committee again"
        trained = (self._read_or_discard(info_path, read_json, redo) is not None
                   and (committee := self._read_or_discard(path, self._read_committee, redo)) is not None)
        if not trained:
            start = time.perf_counter()
            if g == 1 and self.initial_committee is not None:
                source = self.initial_committee
                committee = source if isinstance(source, Committee) else Committee.load(source, system=self.system)
                committee.save(path)
                info = {"source": "initial committee", "metrics": committee.metadata.get("metrics", {})}
            else:
                self.echo(f"generation {g}: training on {len(data)} structures")
                previous = self._warm_start_from(g - 1)
                committee, report = self.trainer.train(data, seed=self._stage_seed(g), start_from=previous,
                                                        bonds=self.system.bonds)
                committee.save(path)
                info = {"source": "fine-tuned" if previous is not None else "trained", "metrics": report.summary(),
                        "n_structures": len(data)}
                if "initial_weights" in committee.metadata:  # from_committee: reinitialised or the template's
                    info["initial_weights"] = committee.metadata["initial_weights"]
            info["seconds"] = time.perf_counter() - start
            _atomic_write_text(info_path, json.dumps(info, indent=1) + "\n")
            self._checkpoint("trained", g)
            committee = Committee.load(path, system=self.system)
        return committee

    def _read_committee(self, path: Path) -> Committee:
        check_zip(path)
        return Committee.load(path, system=self.system)

    def _sample_stage(self, g: int, committee: Committee, data: Dataset, gdir: Path) -> dict:
        path = gdir / "candidates.npz"
        found = self._read_or_discard(path, read_candidates, f"sampling generation {g} again")
        if found is not None:
            return found
        start = time.perf_counter()
        rng = np.random.default_rng([self.seed, g])
        pick = np.sort(rng.choice(len(data), size=min(self.seeds_per_generation, len(data)), replace=False))
        seeds = data.positions[pick]
        parts, costs = [], {}
        for k, sampler in enumerate(self.samplers):
            self.echo(f"generation {g}: sampling with {sampler.name} from {len(seeds)} seeds")
            if hasattr(sampler, "observe_dataset"):  # novelty and frontier seeds read what is labelled
                sampler.observe_dataset(data.positions)
            found: Candidates = sampler.sample(committee, seeds, np.random.default_rng([self.seed, g, k]))
            costs[sampler.name] = {
                "candidates": len(found), "force_evaluations": int(found.n_force_evaluations),
                "oracle_calls": int(found.oracle_calls), "seconds": float(found.wall_seconds),
            }
            parts.append((sampler.name, found))
        positions = np.concatenate([c.positions for _, c in parts]) if parts else np.zeros((0, self.system.n_atoms, 3))
        names = np.concatenate([np.full(len(c), name, dtype="S32") for name, c in parts])
        seed_index = np.concatenate([np.where(c.seed_index >= 0, pick[np.clip(c.seed_index, 0, len(pick) - 1)], -1)
                                     for _, c in parts]).astype(np.int64)
        # Re-score every candidate with one metric so the selector compares like with like.
        if len(positions):
            energies, _, uncertainty = committee.evaluate_in_batches(positions, metric=self.metric)
        else:
            energies, uncertainty = np.zeros(0), np.zeros(0)
        reference_uncertainty = committee.evaluate_in_batches(data.positions[self._reference_rows(g, len(data))],
                                                              metric=self.metric)[2]
        meta = {"costs": costs, "seed_frames": pick.tolist(), "seconds": time.perf_counter() - start}
        out = dict(positions=positions, energies=np.asarray(energies, float), uncertainty=np.asarray(uncertainty, float),
                   sampler=names, seed_index=seed_index, reference_uncertainty=np.asarray(reference_uncertainty, float),
                   meta=np.array(json.dumps(meta)))
        _atomic_savez(path, out)
        self._checkpoint("sampled", g)
        return read_candidates(path)

    def _reference_rows(self, g: int, n_frames: int) -> np.ndarray:
        """The dataset rows whose uncertainties stand for the data's in the percentile window:
        all of them up to :data:`REFERENCE_SAMPLE`, else that many drawn at random. A percentile
        needs the distribution, not every value (at 10,000 draws the standard error of a
        percentile's rank is 0.5 % at most), and the committee then scores a fixed number of
        frames per generation however large the dataset grows."""
        if n_frames <= REFERENCE_SAMPLE:
            return np.arange(n_frames)
        rng = np.random.default_rng([self.seed, g, REFERENCE_SAMPLE])
        return np.sort(rng.choice(n_frames, size=REFERENCE_SAMPLE, replace=False))

    def _select_stage(self, g: int, candidates: dict, data: Dataset, gdir: Path) -> dict:
        path = gdir / "selected.npz"
        chosen = self._read_or_discard(path, read_selected, f"selecting generation {g} again")
        if chosen is not None:
            return chosen
        start = time.perf_counter()
        pool = Candidates(
            positions=candidates["positions"], energies=candidates["energies"], uncertainty=candidates["uncertainty"],
            metric=self.metric, sampler="mixed", seed_index=candidates["seed_index"],
            info={"sampler": candidates["sampler"]},
        )
        chosen = self.selector.select(pool, dataset_positions=data.positions,
                                      reference_uncertainty=candidates["reference_uncertainty"],
                                      reference_energies=data.energies)
        report = dict(self.selector.last_report)
        report["window"] = [float(v) for v in report.get("window", [])]
        meta = {"report": report, "seconds": time.perf_counter() - start}
        _atomic_savez(path, dict(positions=chosen.positions, energies=chosen.energies, uncertainty=chosen.uncertainty,
                                 sampler=chosen.info["sampler"], seed_index=chosen.seed_index,
                                 meta=np.array(json.dumps(meta))))
        self._checkpoint("selected", g)
        return read_selected(path)

    def _label_stage(self, g: int, selected: dict, gdir: Path) -> list[dict]:
        positions = selected["positions"]
        label_dir = gdir / "labels"
        pending = [i for i in range(len(positions))
                   if self._read_or_discard(label_dir / f"{i:05d}.npz", read_label, "labelling it again") is None]
        if pending:
            where = f" on {self.labeller.describe()}" if self.labeller is not None else ""
            self.echo(f"generation {g}: labelling {len(pending)} of {len(positions)} structures with {self.oracle.name}{where}")
        bar = tqdm(total=len(pending), desc=f"labels gen {g}", disable=not self.progress, leave=False)
        # The dataset is not appended to before this generation's labels are all saved, so
        # the threshold is the same on resume.
        lowest = float(Dataset.load(self.dataset_path).energies.min()) if pending else None

        def save(i: int, labels, seconds: float) -> None:
            ok, error = bool(labels.ok[0]), labels.errors[0] or ""
            if ok and not (np.isfinite(labels.energies[0]) and np.isfinite(labels.forces[0]).all()):
                ok, error = False, "non-finite energy or forces (the oracle reported success)"
            problem = label_problems(labels.energies[:1], labels.forces[:1], self.system.n_atoms, lowest,
                                     self.max_label_energy)[0] if ok else None
            if problem is not None:
                ok, error = False, problem
            _atomic_savez(label_dir / f"{i:05d}.npz", dict(
                energy=np.asarray(labels.energies[0], float), forces=np.asarray(labels.forces[0], float),
                ok=np.asarray(ok), error=np.array(error),
                seconds=np.asarray(seconds), oracle=np.array(labels.oracle),
            ))
            self.oracle_calls_this_session += 1
            bar.update(1)
            self._checkpoint("labelled", g)

        if pending:
            if self.labeller is not None:
                self.labeller.run(self.oracle, positions, save, indices=pending)
            else:
                with make_labeller(workers=min(self.label_workers, len(pending))) as labeller:
                    labeller.run(self.oracle, positions, save, indices=pending)
        bar.close()
        return [read_label(label_dir / f"{i:05d}.npz") for i in range(len(positions))]

    def _append_stage(self, g: int, selected: dict, labels: list[dict]) -> None:
        ok = np.array([bool(l["ok"]) for l in labels], dtype=bool)
        records = Dataset(self.system.atomic_numbers)
        if ok.any():
            keep = np.flatnonzero(ok)
            samplers = selected["sampler"][keep]
            for name in np.unique(samplers):
                rows = keep[samplers == name]
                records.append(
                    selected["positions"][rows], [float(labels[i]["energy"]) for i in rows],
                    np.stack([labels[i]["forces"] for i in rows]), generation=g, sampler=name.decode(),
                    seed_index=selected["seed_index"][rows], uncertainty=selected["uncertainty"][rows],
                    oracle=str(labels[rows[0]]["oracle"]),
                )
        records.oracle_record = descriptor_of(self.oracle)
        Dataset.append_to_file(self.dataset_path, records, tag=f"generation-{g}",
                               allow_mixed_oracles=self.allow_mixed_oracles)
        self._checkpoint("appended", g)

    def _log_stage(self, g: int, gdir: Path) -> dict:
        training = read_json(gdir / "training.json")
        candidates = read_candidates(gdir / "candidates.npz")
        selected = read_selected(gdir / "selected.npz")
        labels = [read_label(gdir / "labels" / f"{i:05d}.npz") for i in range(len(selected["positions"]))]
        cmeta, smeta = json.loads(str(candidates["meta"])), json.loads(str(selected["meta"]))
        ok = np.array([bool(l["ok"]) for l in labels], dtype=bool)
        ref_e = np.array([float(l["energy"]) for l in labels])
        nn_error = np.abs(selected["energies"][ok] - ref_e[ok]) if ok.any() else np.zeros(0)
        data = Dataset.load(self.dataset_path)
        # The dataset as generation g left it: a record written again after a lost log line
        # must not count later generations' labels.
        start, stop = self._loop_rows(data, g)
        data = data.subset(slice(0, stop))
        ref_u, cand_u, sel_u = candidates["reference_uncertainty"], candidates["uncertainty"], selected["uncertainty"]
        record = {
            "generation": g,
            "dataset_size": len(data),
            "new_structures": stop - start,
            "oracle_calls": len(labels),
            "oracle_failures": int((~ok).sum()),
            "failures": [{"index": i, "reason": str(l["error"])} for i, l in enumerate(labels) if not bool(l["ok"])][:20],
            "stage_seconds": {
                "train": training["seconds"], "sample": cmeta["seconds"], "select": smeta["seconds"],
                "label": float(sum(float(l["seconds"]) for l in labels)),
            },
            "validation": training["metrics"],
            "committee": training["source"],
            "samplers": cmeta["costs"],
            "selection": smeta["report"],
            "uncertainty": {
                "metric": self.metric,
                "training_median": _stat(np.median, ref_u), "training_p80": _stat(lambda u: np.percentile(u, 80), ref_u),
                # out-of-domain candidates score inf (Committee.uncertainty): counted, not maxed
                "candidates_out_of_domain": int(np.count_nonzero(~np.isfinite(cand_u))),
                "candidates_median": _stat(np.median, cand_u),
                "candidates_max": _stat(np.max, cand_u[np.isfinite(cand_u)]),
                "selected_median": _stat(np.median, sel_u),
            },
            "committee_energy_error_on_new": {
                "mae_kj_mol": _stat(np.mean, nn_error), "max_kj_mol": _stat(np.max, nn_error),
            },
            "new_labels": _new_label_summary(self.system, data, g, start=start),
        }
        _append_log(self.log_path, record)
        error = record["committee_energy_error_on_new"]["mae_kj_mol"]
        self.echo(
            f"generation {g}: {record['new_structures']} new labels ({record['oracle_failures']} oracle failures), "
            f"dataset {record['dataset_size']}"
            + (f", committee energy MAE on them {error:.1f} kJ/mol" if error is not None else "")
        )
        return record

    def _final(self) -> dict:
        logged = self._logged()
        if logged.get("final", {}).get("after_generation") == self.n_generations:
            return logged["final"]
        fdir = self.run_dir / "final"
        fdir.mkdir(exist_ok=True)
        path, info_path = fdir / "committee.pt", fdir / "training.json"
        redo = "training the final committee again"
        info = self._read_or_discard(info_path, read_json, redo) or {}
        if info and self._read_or_discard(path, self._read_committee, redo) is None:
            info = {}
        # A run extended by more generations retrains its final committee on the larger dataset.
        if info.get("after_generation") != self.n_generations:
            data = Dataset.load(self.dataset_path)
            self.echo(f"final training on {len(data)} structures")
            start = time.perf_counter()
            previous = self._warm_start_from(self.n_generations)
            committee, report = self.trainer.train(data, seed=self._stage_seed(self.n_generations + 1),
                                                   start_from=previous, bonds=self.system.bonds)
            committee.save(path)
            info = {"source": "fine-tuned" if previous is not None else "trained", "metrics": report.summary(),
                    "n_structures": len(data), "after_generation": self.n_generations,
                    "seconds": time.perf_counter() - start}
            _atomic_write_text(info_path, json.dumps(info, indent=1) + "\n")
            self._checkpoint("trained", self.n_generations + 1)
        record = {"generation": "final", "after_generation": self.n_generations, "dataset_size": info["n_structures"],
                  "validation": info["metrics"], "stage_seconds": {"train": info["seconds"]},
                  "committee_path": str(path)}
        _append_log(self.log_path, record)
        self._checkpoint("logged", self.n_generations + 1)
        return record

    def _warm_start_from(self, generation: int) -> Committee | None:
        """The committee of ``generation`` when the trainer fine-tunes (``warm_start_epochs``)."""
        if self.trainer.config.warm_start_epochs is None or generation < 1:
            return None
        return Committee.load(self.generation_dir(generation) / "committee.pt", system=self.system)

    def _stage_seed(self, generation: int) -> int:
        return 1000 * self.seed + generation


# ---------------------------------------------------------------------------- helpers
def _settings_diff(stored, current, prefix: str = "") -> tuple[list[str], list[str]]:
    """Paths whose values differ, and paths present only in ``current`` (added keys)."""
    changed, added = [], []
    if isinstance(stored, dict) and isinstance(current, dict):
        for key in sorted(set(stored) | set(current), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in stored:
                added.append(path)
            elif key not in current:
                changed.append(path)
            else:
                c, a = _settings_diff(stored[key], current[key], path)
                changed += c
                added += a
    elif stored != current:
        changed.append(prefix)
    return changed, added


def _stat(function, values) -> float | None:
    values = np.asarray(values, dtype=float)
    return float(function(values)) if values.size else None


def _new_label_summary(system, data: Dataset, generation: int, start: int = 0) -> dict:
    """Where generation ``generation``'s labels (among rows ``start:``) lie: their reference
    energy above the data's lowest (relaxed geometries carry small forces, thermal ones the
    vibrations a test set is made of) and the range of each collective variable (degrees for
    dihedrals, nm otherwise)."""
    new = data.provenance["generation"] == generation
    new[:start] = False
    if not new.any():
        return {}
    above = data.energies[new] - data.energies.min()
    out = {"energy_above_min_kj_mol": {"median": float(np.median(above)), "max": float(above.max())}}
    cvs = getattr(system, "collective_variables", {}) or {}
    if cvs:
        values = system.compute_cvs(data.positions[new])
        out["cvs"] = {}
        for name, cv in cvs.items():
            v = np.degrees(values[name]) if cv.periodic else values[name]
            out["cvs"][name] = {"unit": "deg" if cv.periodic else cv.unit, "min": float(v.min()),
                                "median": float(np.median(v)), "max": float(v.max())}
    return out
