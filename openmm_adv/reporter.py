"""An OpenMM reporter that watches the committee's uncertainty during any ``app.Simulation``.

It evaluates the committee on CPU with torch every ``reportInterval`` steps, from the positions
OpenMM hands every reporter; it adds nothing to the System, so the run is the same with or
without it. Frames above a threshold are appended to an extxyz file for labelling
(``openmm-adv label``), and the run can be stopped where the model leaves its domain. Frames out
of the committee's domain (:meth:`Committee.domain_check`: an atom with no neighbour inside the
cutoff, bonds or nearest-neighbour distances far outside the training ranges) are logged with an
uncertainty of ``inf`` and always flagged, never reported as confident.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from openmm import app, unit

from .data import Dataset, format_extxyz
from .models.committee import Committee, CommitteeError
from .models.uncertainty import METRICS, SIGNED_METRICS

__all__ = ["UncertaintyReporter", "UncertaintyLimitExceeded"]

#: metric name -> its unit as an openmm.unit Unit (thresholds given as quantities convert to it)
_METRIC_UNITS = {
    "force_variance": (unit.kilojoule_per_mole / unit.nanometer) ** 2,
    "max_force_deviation": unit.kilojoule_per_mole / unit.nanometer,
    "energy_std": unit.kilojoule_per_mole,
    "gmm_error": unit.kilojoule_per_mole / unit.nanometer,
    "gmm_nll": unit.dimensionless,  # nats above the calibration minimum
    "aleatoric_variance": (unit.kilojoule_per_mole / unit.nanometer) ** 2,
}


class UncertaintyLimitExceeded(RuntimeError):
    """Raised from :meth:`UncertaintyReporter.report` to stop ``Simulation.step``.

    The step that triggered it has been logged (and its frame written) before the raise, and
    the Simulation is consistent: ``simulation.currentStep`` is that step, and stepping again
    continues the run.

    Attributes
    ----------
    step : int
    time_ps : float
    uncertainty : float
        In the reporter's metric units.
    reason : str
    """

    def __init__(self, reason: str, step: int, time_ps: float, value: float):
        super().__init__(f"step {step} ({time_ps:g} ps): {reason}")
        self.reason = reason
        self.step = int(step)
        self.time_ps = float(time_ps)
        self.uncertainty = float(value)


def _metric_value(value, metric: str, what: str) -> float:
    """A threshold in the metric's units, from a plain number or an openmm.unit quantity."""
    target = _METRIC_UNITS[metric]
    if unit.is_quantity(value):
        if not value.unit.is_compatible(target):
            raise ValueError(
                f"{what} has units of {value.unit}, which do not fit the metric {metric!r} ({METRICS[metric]}); "
                f"pass a plain number in {METRICS[metric]} or a compatible openmm.unit quantity"
            )
        value = value.value_in_unit(target)
    value = float(value)
    if not np.isfinite(value) or (value < 0 and metric not in SIGNED_METRICS):
        raise ValueError(f"{what} must be a finite uncertainty >= 0 in {METRICS[metric]}, got {value}")
    return value


def _symbol(z) -> str:
    return app.element.Element.getByAtomicNumber(int(z)).symbol if z > 0 else "no element"


def _training_positions(training_data, committee: Committee) -> np.ndarray:
    from .units import to_nm

    if isinstance(training_data, (str, Path)):
        training_data = Dataset.load(training_data)
    if isinstance(training_data, Dataset):
        if not np.array_equal(training_data.atomic_numbers, committee.atomic_numbers):
            raise ValueError("training_data holds a different molecule (atoms or their order) than the committee")
        return training_data.positions
    xyz = np.asarray(to_nm(training_data), dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[1:] != (committee.n_atoms, 3) or len(xyz) == 0:
        raise ValueError(
            f"training_data must be a Dataset, the path of a dataset file, or positions [S, {committee.n_atoms}, 3] "
            f"in nm; got an array of shape {xyz.shape}"
        )
    return xyz


class UncertaintyReporter:
    """Log the committee uncertainty of a running ``app.Simulation``, write and stop on outliers.

    Add it to ``simulation.reporters`` like ``app.StateDataReporter``. Every ``reportInterval``
    steps (at the steps that are multiples of it, as OpenMM's reporters do) it takes the
    positions of the committee's atoms, unwrapped, so a molecule in a periodic box stays whole,
    and evaluates the committee on CPU with torch. Nothing is added to the System: the dynamics
    are the same with and without the reporter.

    Parameters
    ----------
    committee : Committee or str or Path
        The committee, or the path of a saved one (:meth:`Committee.load`).
    reportInterval : int
        Steps between reports.
    file : str, Path or file object, optional
        The log, one CSV line per report:
        ``step,time_ps,<metric>,energy_std_kj_mol,flagged,out_of_domain`` (the uncertainty in the
        metric's units, see :data:`~openmm_adv.models.uncertainty.METRICS`, ``inf`` out of the
        domain; the standard deviation of the members' energies in kJ/mol; 1 where the frame is
        above the threshold or out of the domain; 1 where it is out of the domain). Flushed after
        every report. A path is opened here and closed by :meth:`close`.
    threshold : float or openmm.unit.Quantity, optional
        Flag frames whose uncertainty is above this value (plain numbers are in the metric's
        units; a quantity such as ``300 * (unit.kilojoule_per_mole / unit.nanometer) ** 2`` is
        converted).
    percentile : float, optional
        Instead of ``threshold``: flag frames above this percentile (0-100) of the uncertainties
        of the committee's training set, computed here from ``training_data`` (committee files
        do not store them).
    training_data : Dataset, str, Path or array_like, optional
        The training set for ``percentile``: a :class:`~openmm_adv.data.Dataset`, the path of a
        dataset file, or positions ``[S, N, 3]`` in nm.
    metric : str
        ``force_variance`` (default), ``max_force_deviation`` or ``energy_std``.
    frames : str or Path, optional
        An extxyz file (``.xyz`` / ``.extxyz``) to which flagged frames are appended
        (Angstrom, unlabelled; header keys ``uncertainty``, ``energy_std_kj_mol``, ``step``,
        ``time_ps``, ``out_of_domain``), ready for ``openmm-adv label``. Frames out of the
        committee's domain are written too (``uncertainty=inf``, ``out_of_domain=1``; why is in
        :attr:`domain_reasons`). Each frame is flushed and fsync'ed as soon as it is written (before its log line), so a run killed at any moment
        keeps every frame flagged before the one being written.
        (An openmm-adv HDF5 ``Dataset`` holds labelled frames only, so it is not an output here.)
    atoms : array_like of int or str, optional
        The simulation atoms that are the committee's molecule, in the committee's atom order:
        indices, or an mdtraj selection string on ``simulation.topology`` (for example
        ``"resname ACE ALA NME"``). Default: every atom. The count and the elements are checked
        against the committee before the first step.
    stop_above : float or openmm.unit.Quantity, optional
        Stop the run (raise :class:`UncertaintyLimitExceeded`) at the first report whose
        uncertainty is above this value (units as for ``threshold``).
    stop_after : int, optional
        Stop the run after this many consecutive flagged reports.
    append : bool
        Append to existing ``file`` and ``frames`` (a resumed run) instead of starting them anew.

    Notes
    -----
    Stopping: ``Simulation.step`` has no stop flag, so the reporter raises
    :class:`UncertaintyLimitExceeded` from :meth:`report`, after logging and writing that frame;
    catch it around ``simulation.step``. Reporters later in ``simulation.reporters`` do not
    report that step, so add this one last.

    Examples
    --------
    >>> reporter = UncertaintyReporter(default_committee_path(), 100, "uncertainty.csv",
    ...                                percentile=99, training_data=default_dataset_path(),
    ...                                frames="flagged.extxyz", stop_after=10)
    >>> simulation.reporters.append(reporter)
    >>> try:
    ...     simulation.step(100_000)
    ... except UncertaintyLimitExceeded as stop:
    ...     print("left the committee's domain at step", stop.step)
    """

    def __init__(self, committee, reportInterval: int, file=None, *, threshold=None, percentile=None,
                 training_data=None, metric: str = "force_variance", frames=None, atoms=None, stop_above=None,
                 stop_after: int | None = None, append: bool = False):
        if isinstance(committee, (str, Path)):
            committee = Committee.load(committee)
        if not isinstance(committee, Committee):
            raise TypeError(f"committee must be a Committee or the path of a saved one, got {type(committee).__name__}")
        self.committee = committee
        if int(reportInterval) != reportInterval or reportInterval < 1:
            raise ValueError(f"reportInterval must be a whole number of steps >= 1, got {reportInterval}")
        self.report_interval = int(reportInterval)
        self.metric = committee.check_metric(metric)

        self.training_uncertainty = None
        if threshold is not None and percentile is not None:
            raise ValueError("give either threshold (a value) or percentile (of the training set's uncertainties), not both")
        if percentile is not None:
            if not 0.0 <= float(percentile) <= 100.0:
                raise ValueError(f"percentile must be in [0, 100], got {percentile}")
            if training_data is None:
                raise ValueError(
                    "percentile needs the training set's uncertainties, and committee files do not store them; "
                    "pass training_data= (the Dataset the committee was trained on, its .h5 path, or its positions)"
                )
            positions = _training_positions(training_data, committee)
            self.training_uncertainty = committee.evaluate_in_batches(positions, metric=self.metric)[2]
            finite = self.training_uncertainty[np.isfinite(self.training_uncertainty)]
            if len(finite) == 0:
                raise ValueError("every training_data geometry is out of the committee's domain "
                                 f"({committee.domain_check(positions[:1]).reasons[0]}); pass the committee's "
                                 "own training data, in nm")
            self.threshold = float(np.percentile(finite, float(percentile)))
        else:
            self.threshold = None if threshold is None else _metric_value(threshold, self.metric, "threshold")
        self.stop_above = None if stop_above is None else _metric_value(stop_above, self.metric, "stop_above")
        if stop_after is not None:
            if int(stop_after) != stop_after or stop_after < 1:
                raise ValueError(f"stop_after must be a number of reports >= 1, got {stop_after}")
            if self.threshold is None:
                raise ValueError("stop_after counts flagged reports: give threshold or percentile too")
            stop_after = int(stop_after)
        self.stop_after = stop_after
        if frames is not None and self.threshold is None:
            raise ValueError("frames= writes the flagged frames: give threshold or percentile too")

        self._atoms = atoms
        self._index = None
        self._checked_topology = None
        self._consecutive = 0
        #: per report: step, time (ps), uncertainty, members' energy std (kJ/mol), flagged,
        #: out of the committee's domain
        self.steps, self.times_ps, self.values, self.energy_stds, self.flags = [], [], [], [], []
        self.out_of_domain = []
        #: step -> why the frame was out of the committee's domain
        self.domain_reasons = {}

        self._log, self._owns_log = None, False
        if file is not None:
            if isinstance(file, (str, Path)):
                fresh = not append or not Path(file).exists() or Path(file).stat().st_size == 0
                self._log, self._owns_log = open(file, "a" if append else "w"), True
            else:
                self._log, fresh = file, not append
            if fresh:
                self._log.write(f"step,time_ps,{self.metric},energy_std_kj_mol,flagged,out_of_domain\n")
                self._log.flush()
        self._frames = None
        if frames is not None:
            path = Path(frames)
            if path.suffix not in (".xyz", ".extxyz"):
                raise ValueError(
                    f"frames={path}: flagged frames are unlabelled and go to an extxyz file (.extxyz or .xyz); "
                    "label them with 'openmm-adv label', which appends them to a dataset"
                )
            self._frames = open(path, "a" if append else "w")

    # ------------------------------------------------------------------ OpenMM reporter protocol
    def describeNextReport(self, simulation) -> dict:
        """When the next report is due and what it needs (OpenMM 8.4+ dict form)."""
        self._check_topology(simulation.topology)
        steps = self.report_interval - simulation.currentStep % self.report_interval
        # Unwrapped positions: a molecule in a periodic box stays whole.
        return {"steps": steps, "periodic": False, "include": ["positions"]}

    def report(self, simulation, state) -> None:
        """Evaluate the committee on this frame, log it, write it if flagged, and maybe stop.

        Raises
        ------
        UncertaintyLimitExceeded
            When ``stop_above`` or ``stop_after`` is reached.
        """
        self._check_topology(simulation.topology)
        xyz = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        x = np.asarray(xyz, dtype=np.float64)[self._index]
        energies, _, values = self.committee.energies_forces_uncertainty(x, self.metric)
        value = float(values[0])
        energy_std = float(energies[0].std())
        step = int(simulation.currentStep)
        time_ps = float(state.getTime().value_in_unit(unit.picosecond))
        domain = self.committee.domain_check(x)
        outside = bool(domain.out_of_domain[0])
        if outside:  # the members' agreement says nothing there (all atoms alone: exactly 0)
            value = float("inf")
            self.domain_reasons[step] = domain.reasons[0]
        # A non-finite uncertainty is out of any domain: flag it.
        flagged = outside or (self.threshold is not None and not value <= self.threshold)
        for column, item in zip((self.steps, self.times_ps, self.values, self.energy_stds, self.flags,
                                 self.out_of_domain), (step, time_ps, value, energy_std, flagged, outside)):
            column.append(item)
        # The frame first: a log line that says flagged means its frame is on disk.
        if flagged and self._frames is not None:
            info = {"uncertainty": [f"{value:.10g}"], "energy_std_kj_mol": [f"{energy_std:.10g}"],
                    "step": [step], "time_ps": [f"{time_ps:.10g}"], "out_of_domain": [int(outside)]}
            self._frames.write(format_extxyz(self.committee.atomic_numbers, x[None], info=info))
            self._frames.flush()
            os.fsync(self._frames.fileno())
        if self._log is not None:
            self._log.write(f"{step},{time_ps:.10g},{value:.10g},{energy_std:.10g},{int(flagged)},{int(outside)}\n")
            self._log.flush()
        self._consecutive = self._consecutive + 1 if flagged else 0
        if self.stop_above is not None and not value <= self.stop_above:
            why = f"out of the committee's domain: {domain.reasons[0]}" if outside else (
                f"uncertainty {value:.6g} {METRICS[self.metric]} above stop_above={self.stop_above:.6g}")
            raise UncertaintyLimitExceeded(why, step, time_ps, value)
        if self.stop_after is not None and self._consecutive >= self.stop_after:
            self._consecutive = 0
            raise UncertaintyLimitExceeded(
                f"{self.stop_after} consecutive reports above the threshold {self.threshold:.6g} {METRICS[self.metric]}"
                " or out of the committee's domain", step, time_ps, value)

    # ------------------------------------------------------------------ results and files
    @property
    def n_flagged(self) -> int:
        """How many reports were above the threshold or out of the committee's domain."""
        return int(sum(self.flags))

    @property
    def n_out_of_domain(self) -> int:
        """How many reports were out of the committee's domain."""
        return int(sum(self.out_of_domain))

    def close(self) -> None:
        """Close the files this reporter opened (a log given as a file object stays open)."""
        if self._owns_log and self._log is not None:
            self._log.close()
        self._log = None
        if self._frames is not None:
            self._frames.close()
            self._frames = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: files may already be gone
            pass

    # ------------------------------------------------------------------ atoms
    def _check_topology(self, topology) -> None:
        if topology is self._checked_topology:
            return
        self._index = self._select(topology)
        self._checked_topology = topology

    def _select(self, topology) -> np.ndarray:
        n_sim = topology.getNumAtoms()
        n = self.committee.n_atoms
        how = "pass atoms= (simulation atom indices in the committee's atom order, or an mdtraj selection string)"
        if self._atoms is None:
            index, what = np.arange(n_sim), f"the simulation ({n_sim} atoms)"
        elif isinstance(self._atoms, str):
            import mdtraj

            index = mdtraj.Topology.from_openmm(topology).select(self._atoms)
            what = f"the selection {self._atoms!r}"
        else:
            index = np.asarray(self._atoms)
            if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
                raise ValueError(f"atoms must be a 1-D array of integer indices or an mdtraj selection, got {self._atoms!r}")
            if len(index) and (index.min() < 0 or index.max() >= n_sim):
                raise ValueError(f"atoms holds indices outside the simulation's 0..{n_sim - 1}")
            what = f"atoms= ({len(index)} indices)"
        index = np.asarray(index, dtype=np.int64)
        if len(index) != n:
            raise CommitteeError(
                f"the committee is for {n} atoms but {what} gives {len(index)}; {how} that picks its molecule"
            )
        atoms = list(topology.atoms())
        got = np.array([atoms[i].element.atomic_number if atoms[i].element is not None else 0 for i in index])
        wrong = np.flatnonzero(got != self.committee.atomic_numbers)
        if len(wrong):
            detail = ", ".join(
                f"{k} (simulation atom {index[k]} {atoms[index[k]].name}: {_symbol(got[k])}, "
                f"committee: {_symbol(self.committee.atomic_numbers[k])})"
                for k in wrong[:5])
            raise CommitteeError(
                f"the elements of {what} differ from the committee's at positions {detail}; {how} in the "
                "committee's atom order (the order of its training data)"
            )
        return index
