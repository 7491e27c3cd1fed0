"""Well-tempered metadynamics on the committee: on system CVs (phi/psi) or on the uncertainty.

Both samplers run Langevin MD on the committee-mean energy
(:func:`~openmm_adv.forces.mean_energy_force`) plus the bias of ``openmm.app.Metadynamics``
(Barducci, Bussi & Parrinello, PRL 100, 020603, 2008).

Walkers. ``app.Metadynamics`` biases the CVs of one molecule in one ``Simulation``, so seeds
cannot be batched as replicas of one Context the way the MD samplers batch them. The seeds
(or ``n_walkers`` of them, drawn with ``rng``) are run **one after another**, ``n_steps`` each.
With ``share_bias=True`` (default) they share ONE Context and ONE bias, which keeps growing
from walker to walker: the walkers act as a serial multiple-walker metadynamics that restarts
from every seed, so later walkers profit from the hills of earlier ones. With
``share_bias=False`` every walker starts from a zero bias in a fresh Context (independent
runs; the bias of each is in ``info["free_energy"]``).
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import openmm
from openmm import app, unit
from tqdm.auto import tqdm

from .._errors import first_line
from ..forces import UncertaintyForceWarning, mean_energy_force, uncertainty_force
from ..models.committee import Committee
from ..models.uncertainty import check_metric
from .candidates import Candidates
from ._replicas import (
    as_geometry_check,
    as_platform,
    bare_topology,
    check_frames,
    check_seeds,
    draw_seed,
    is_nan_error,
    masses_for,
    platform_properties_for,
    report_steps,
    score_frames,
    to_kelvin,
    to_per_ps,
    to_ps,
)

__all__ = ["MetadynamicsSampler", "UncertaintyMetadynamicsSampler", "uncertainty_cv_force"]

#: added to the uncertainty inside ``log`` so a committee that agrees exactly gives a finite CV
LOG_FLOOR = 1e-10


def uncertainty_cv_force(
    committee: Committee,
    metric: str = "force_variance",
    log: bool = True,
    backend: str = "torch",
    use_cuda_graphs: bool = False,
) -> openmm.Force:
    """A force whose energy is the committee uncertainty of one molecule, or its logarithm.

    ``log=True``: an ``openmm.CustomCVForce`` with expression ``log(u + 1e-10)`` whose
    collective variable ``u`` is :func:`~openmm_adv.forces.uncertainty_force` (a TorchForce).
    ``log=False``: that TorchForce itself. Either can be the ``force`` of an
    ``app.BiasVariable``.
    """
    with warnings.catch_warnings():
        # Inside a bias the force acts only through the bias, whose forces the integrator
        # integrates, so OpenMM's half-step velocity shift with them is the right one.
        warnings.simplefilter("ignore", UncertaintyForceWarning)
        u = uncertainty_force(committee, metric=metric, n_replicas=1, backend=backend, use_cuda_graphs=use_cuda_graphs)
    if not log:
        return u
    cv = openmm.CustomCVForce(f"log(u + {LOG_FLOOR!r})")
    cv.addCollectiveVariable("u", u)
    return cv


class _GuardedMetadynamics(app.Metadynamics):
    """``app.Metadynamics`` that skips a deposit at a non-finite CV value or height.

    A walker that blows up between two reports can reach a deposit with NaN coordinates (the
    Reference platform does not stop on NaN); one NaN Gaussian would poison the bias grid that
    later walkers share.
    """

    n_skipped = 0

    def _addGaussian(self, position, height, context):
        h = height.value_in_unit(unit.kilojoule_per_mole) if unit.is_quantity(height) else height
        if np.all(np.isfinite(np.asarray(position, dtype=np.float64))) and np.isfinite(h):
            super()._addGaussian(position, height, context)
        else:
            self.n_skipped += 1


class _MetadynamicsBase:
    """The walker loop shared by both samplers; subclasses define the bias variables."""

    name = "metadynamics"
    #: committee evaluations of one geometry per evaluation of the bias variables
    cv_cost = 0

    def __init__(
        self,
        temperature,
        timestep,
        n_steps: int,
        report_interval: int,
        friction,
        height,
        bias_factor: float,
        frequency: int,
        grid_width,
        n_walkers: int | None,
        share_bias: bool,
        metric: str,
        system,
        geometry_check,
        platform,
        platform_properties: dict | None,
        backend: str,
        use_cuda_graphs: bool,
        scoring_batch_size: int,
        progress: bool,
        walker_temperatures=None,
    ):
        if n_steps < 1 or report_interval < 1 or frequency < 1:
            raise ValueError("n_steps, report_interval and frequency must be >= 1")
        if not bias_factor > 1:
            raise ValueError(f"bias_factor must be > 1 (well-tempered metadynamics), got {bias_factor}")
        if n_walkers is not None and n_walkers < 1:
            raise ValueError("n_walkers must be >= 1 (or None for every seed)")
        self.temperature = to_kelvin(temperature)
        # Walker k runs at walker_temperatures[k % len] (e.g. 300 and 500 K, as in Tan et al. 2025:
        # the hot walkers cross barriers the bias has not filled yet); the well-tempered bias
        # keeps ``temperature`` as its reference.
        self.walker_temperatures = None if walker_temperatures is None else [to_kelvin(t) for t in walker_temperatures]
        if self.walker_temperatures is not None and (not self.walker_temperatures
                                                     or min(self.walker_temperatures) <= 0):
            raise ValueError(f"walker_temperatures must be positive temperatures (K), got {walker_temperatures}")
        self.timestep = to_ps(timestep)
        self.n_steps = int(n_steps)
        self.report_interval = int(report_interval)
        self.friction = to_per_ps(friction)
        self.height = float(height.value_in_unit(unit.kilojoule_per_mole)) if unit.is_quantity(height) else float(height)
        if not self.height > 0:
            raise ValueError(f"height must be a positive energy, got {self.height} kJ/mol")
        self.bias_factor = float(bias_factor)
        self.frequency = int(frequency)
        self.grid_width = grid_width
        self.n_walkers = None if n_walkers is None else int(n_walkers)
        self.share_bias = bool(share_bias)
        self.metric = check_metric(metric)
        self.system = system
        self.geometry_check = as_geometry_check(geometry_check)
        self.platform = platform
        self.platform_properties = dict(platform_properties or {})
        self.backend = backend
        self.use_cuda_graphs = use_cuda_graphs
        self.scoring_batch_size = int(scoring_batch_size)
        self.progress = progress
        self.options = dict(
            temperature=self.temperature, timestep=self.timestep, n_steps=self.n_steps,
            report_interval=self.report_interval, friction=self.friction, height=self.height,
            bias_factor=self.bias_factor, frequency=self.frequency, n_walkers=self.n_walkers,
            share_bias=self.share_bias, metric=self.metric, platform=str(platform), backend=backend,
            walker_temperatures=self.walker_temperatures,
        )

    def walker_temperature(self, k: int) -> float:
        """The temperature (K) of the ``k``-th walker run."""
        return self.temperature if self.walker_temperatures is None else self.walker_temperatures[k % len(self.walker_temperatures)]

    # ------------------------------------------------------------------ subclass hooks
    def _prepare(self, committee: Committee, seeds: np.ndarray) -> int:
        """Per-call set-up from the seeds; returns committee evaluations spent."""
        return 0

    def _bias_variables(self, committee: Committee) -> list:
        raise NotImplementedError

    def _cv_names(self) -> list:
        raise NotImplementedError

    # ------------------------------------------------------------------ the walker loop
    def _new_walker(self, committee: Committee, masses: np.ndarray, topology, rng):
        system = openmm.System()
        for mass in masses:
            system.addParticle(float(mass))
        system.addForce(mean_energy_force(committee, n_replicas=1, force_group=0, backend=self.backend,
                                          use_cuda_graphs=self.use_cuda_graphs))
        variables = self._bias_variables(committee)
        meta = _GuardedMetadynamics(system, variables, self.temperature * unit.kelvin, self.bias_factor,
                                self.height * unit.kilojoule_per_mole, self.frequency)
        integrator = openmm.LangevinMiddleIntegrator(self.temperature, self.friction, self.timestep)
        integrator.setRandomNumberSeed(draw_seed(rng))
        simulation = app.Simulation(topology, system, integrator, as_platform(self.platform),
                                    platform_properties_for(self.platform, self.platform_properties))
        return meta, simulation, variables

    def sample(self, committee: Committee, seeds, rng: np.random.Generator | None = None) -> Candidates:
        """Metadynamics walkers from the seeds ``[S, N, 3]`` (nm); every physical frame is a candidate."""
        start = time.perf_counter()
        rng = np.random.default_rng() if rng is None else rng
        seeds = check_seeds(seeds, committee.n_atoms)
        n_evals = self._prepare(committee, seeds)
        walkers = np.arange(len(seeds))
        if self.n_walkers is not None and self.n_walkers < len(seeds):
            walkers = np.sort(rng.choice(len(seeds), size=self.n_walkers, replace=False))
        masses = masses_for(committee, self.system)
        topology = getattr(self.system, "topology", None)
        if topology is None or topology.getNumAtoms() != committee.n_atoms:
            topology = bare_topology(committee.n_atoms, committee.atomic_numbers)
        schedule = report_steps(self.n_steps, self.report_interval)

        frames, seed_index, steps, cvs, reasons, free_energies = [], [], [], [], [], []
        n_unphysical = n_exploded = md_steps = deposits = cv_calls = 0
        meta = simulation = variables = None
        bar = tqdm(total=len(walkers) * self.n_steps, desc=self.name, unit="step", disable=not self.progress, leave=False)
        walker_temperatures = []
        for k, s in enumerate(walkers):
            if meta is None or not self.share_bias:
                if meta is not None:
                    free_energies.append(np.asarray(meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole)))
                meta, simulation, variables = self._new_walker(committee, masses, topology, rng)
            temperature = self.walker_temperature(k)
            walker_temperatures.append(temperature)
            simulation.integrator.setTemperature(temperature)
            simulation.context.setPositions(seeds[s])
            simulation.context.setVelocitiesToTemperature(temperature, draw_seed(rng))
            done = 0
            for step in schedule:
                first = simulation.currentStep
                try:
                    meta.step(simulation, int(step - done))
                except openmm.OpenMMException as exc:
                    if not is_nan_error(exc):
                        raise
                    n_exploded += 1
                    reasons.append(f"walker from seed {s} at step {done}: {first_line(exc)}")
                    break
                finally:
                    md_steps += simulation.currentStep - first
                    deposits += simulation.currentStep // self.frequency - first // self.frequency
                bar.update(int(step - done))
                done = int(step)
                x = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
                x = np.asarray(x.value_in_unit(unit.nanometer), dtype=np.float64)
                ok, why = check_frames(self.geometry_check, x[None])
                if not ok[0]:
                    n_unphysical += 1
                    n_exploded += 1
                    reasons.append(f"walker from seed {s} at step {done}: {why[0]}")
                    break
                cvs.append(np.asarray(meta.getCollectiveVariables(simulation), dtype=np.float64))
                cv_calls += 1
                frames.append(x)
                seed_index.append(s)
                steps.append(done)
            if done < self.n_steps:
                bar.update(self.n_steps - done)
        bar.close()
        if meta is not None:
            free_energies.append(np.asarray(meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole)))
        del simulation, meta

        n_atoms = committee.n_atoms
        frames = np.asarray(frames, dtype=np.float64).reshape(-1, n_atoms, 3)
        names = self._cv_names()
        cvs = np.asarray(cvs, dtype=np.float64).reshape(-1, len(names))
        energies, u, _ = score_frames(committee, frames, self.metric, self.scoring_batch_size)
        # MD steps evaluate the mean force and (cv_cost) the bias variables; each deposit and each
        # reported frame evaluates the variables once more (plus the energy at a deposit).
        n_evals += md_steps * (1 + self.cv_cost) + self.cv_cost * (2 * deposits + cv_calls) + len(frames)
        info = {
            "step": np.asarray(steps, dtype=np.int64),
            "walker": np.asarray(seed_index, dtype=np.int64),
            "walkers": walkers,
            "walker_temperatures": np.asarray(walker_temperatures, dtype=np.float64),
            "cv": cvs,
            "cv_names": names,
            "cv_grid": [(v.minValue, v.maxValue, v.gridWidth, v.periodic) for v in variables] if variables else [],
            "free_energy": free_energies[0] if self.share_bias and free_energies else free_energies,
            "n_md_steps": int(md_steps),
            "n_depositions": int(deposits),
            "n_unphysical": int(n_unphysical),
            "n_exploded": int(n_exploded),
            "explosions": reasons,
        }
        for k, name in enumerate(names):
            info[name] = cvs[:, k]
        return Candidates(
            positions=frames,
            energies=energies,
            uncertainty=u,
            metric=self.metric,
            sampler=self.name,
            seed_index=np.asarray(seed_index, dtype=np.int64),
            n_force_evaluations=int(n_evals),
            oracle_calls=0,
            wall_seconds=time.perf_counter() - start,
            info=info,
        )


class MetadynamicsSampler(_MetadynamicsBase):
    """Well-tempered metadynamics on system CVs (default phi and psi) with the committee mean.

    Parameters
    ----------
    system : MolecularSystem
        Gives the CVs (``system.collective_variables[name].openmm_force()``), the masses and the
        topology.
    cvs : sequence of str
        CV names (1 to 3; all periodic or none).
    width : float or sequence of float
        Gaussian width (standard deviation) per CV, in the CV's units (rad for dihedrals).
    cv_ranges : dict, optional
        ``name -> (min, max)``; dihedrals default to ``(-pi, pi)`` (periodic), other CVs need one.
    height : float or Quantity
        Initial Gaussian height, kJ/mol.
    bias_factor : float
        Well-tempered bias factor (CVs sampled as if at ``temperature * bias_factor``).
    frequency : int
        Steps between Gaussian depositions.
    grid_width : int or sequence of int, optional
        Grid points per CV (OpenMM's choice by default).
    temperature, timestep, friction
        K, ps, 1/ps (Langevin, ``LangevinMiddleIntegrator``).
    n_steps : int
        MD steps per walker.
    report_interval : int
        Steps between frames.
    n_walkers : int, optional
        Walkers to run (seeds drawn with ``rng``); default one per seed.
    share_bias : bool
        Walkers run one after another sharing one bias (default) or each from a zero bias.
    walker_temperatures : sequence of float, optional
        K; walker k runs at ``walker_temperatures[k % len]`` (the bias keeps ``temperature`` as
        its reference). Default: every walker at ``temperature``.
    metric : str
        The uncertainty the candidates carry.
    geometry_check : GeometryCheck or MolecularSystem, optional
        A walker whose frame fails it stops there (``n_exploded``; the frame is dropped).
    platform, platform_properties, backend, use_cuda_graphs, scoring_batch_size, progress
        As for :class:`~openmm_adv.samplers.md.CommitteeMDSampler` (on CPU, ``Threads`` defaults
        to ``"1"`` and ``DeterministicForces`` to ``"true"``).

    Notes
    -----
    Defaults are the common alanine-dipeptide setting: 300 K, height 1.2 kJ/mol, width 0.35 rad,
    bias factor 6, a deposit every 500 steps. Cost: one committee evaluation per MD step (walkers
    x steps) + one per scored frame. ``info``: ``step``, ``walker`` and the CV values (``phi``,
    ``psi``; also ``cv`` ``[K, d]``) per candidate, ``free_energy`` (the bias grid turned into a
    free energy, ``app.Metadynamics.getFreeEnergy``; a list per walker when not shared),
    ``cv_grid``, ``n_depositions``, ``n_exploded``, ``n_unphysical``.
    """

    name = "metadynamics"

    def __init__(
        self,
        system,
        cvs=("phi", "psi"),
        width=0.35,
        cv_ranges: dict | None = None,
        height=1.2,
        bias_factor: float = 6.0,
        frequency: int = 500,
        grid_width=None,
        temperature=300.0,
        timestep=0.0005,
        n_steps: int = 5000,
        report_interval: int = 100,
        friction=1.0,
        n_walkers: int | None = None,
        share_bias: bool = True,
        metric: str = "force_variance",
        geometry_check=None,
        platform="CPU",
        platform_properties: dict | None = None,
        backend: str = "torch",
        use_cuda_graphs: bool = False,
        scoring_batch_size: int = 256,
        progress: bool = True,
        walker_temperatures=None,
    ):
        super().__init__(
            temperature, timestep, n_steps, report_interval, friction, height, bias_factor, frequency, grid_width,
            n_walkers, share_bias, metric, system, geometry_check, platform, platform_properties, backend,
            use_cuda_graphs, scoring_batch_size, progress, walker_temperatures,
        )
        cvs = [cvs] if isinstance(cvs, str) else list(cvs)
        if not 1 <= len(cvs) <= 3:
            raise ValueError(f"metadynamics takes 1 to 3 CVs, got {cvs}")
        unknown = [c for c in cvs if c not in system.collective_variables]
        if unknown:
            raise ValueError(f"unknown CVs {unknown} for {system.name}; it has {sorted(system.collective_variables)}")
        self.cvs = cvs
        widths = np.broadcast_to(np.asarray(width, dtype=np.float64), (len(cvs),))
        grids = [None] * len(cvs) if grid_width is None else list(np.broadcast_to(np.asarray(grid_width), (len(cvs),)))
        cv_ranges = dict(cv_ranges or {})
        self._specs = []
        for name, w, g in zip(cvs, widths, grids):
            cv = system.collective_variables[name]
            if name in cv_ranges:
                lo, hi = (float(v) for v in cv_ranges[name])
            elif cv.periodic:
                lo, hi = -math.pi, math.pi
            else:
                raise ValueError(f"CV {name!r} is not periodic: give its range in cv_ranges={{'{name}': (min, max)}}")
            if not (hi > lo and w > 0):
                raise ValueError(f"CV {name!r}: need max > min and width > 0, got ({lo}, {hi}), width {w}")
            self._specs.append((cv, lo, hi, float(w), cv.periodic, None if g is None else int(g)))
        if len({spec[4] for spec in self._specs}) > 1:
            raise ValueError("metadynamics cannot mix periodic and non-periodic CVs")
        self.options.update(cvs=list(cvs), width=[float(w) for w in widths])

    def _bias_variables(self, committee: Committee) -> list:
        return [app.BiasVariable(cv.openmm_force(), lo, hi, w, periodic, g) for cv, lo, hi, w, periodic, g in self._specs]

    def _cv_names(self) -> list:
        return list(self.cvs)


class UncertaintyMetadynamicsSampler(_MetadynamicsBase):
    """Well-tempered metadynamics with the committee uncertainty (or its log) as the CV.

    The CV is :func:`uncertainty_cv_force`: an ``openmm.CustomCVForce`` ``log(u + 1e-10)`` over
    the :func:`~openmm_adv.forces.uncertainty_force` TorchForce (``log_cv=True``, default), or
    ``u`` itself. MD runs on the committee mean plus the metadynamics bias on that CV, so the
    bias fills the low-uncertainty region the walker sits in and pushes it towards geometries
    the committee disagrees on (Tan, Dietschreit & Gomez-Bombarelli, JCP 162, 034114, 2025, with
    metadynamics as the bias).

    Why log: the force variance spans orders of magnitude (for the shipped alanine committee,
    ~7e3 (kJ/mol/nm)^2 on its training data, ~4e5 after 0.01 nm random displacements). On a
    linear grid, Gaussians sized for the data would need thousands of grid points to reach the
    uncertain region; in log space one width (default 0.25, i.e. a factor 1.3) fits the whole
    range.

    Parameters
    ----------
    cv_metric : str
        Uncertainty metric of the CV (default ``force_variance``).
    log_cv : bool
        CV = ``log(u)`` (default) or ``u``.
    cv_range : (float, float), optional
        The CV's grid ``[min, max]`` in CV units. Default from the seeds' uncertainties u_s:
        ``[log min u_s - 2, log max u_s + 8]`` (log CV: down to 1/7 of the least, up to ~3000x
        the largest seed value) or ``[0, 20 max u_s]`` (linear CV). Outside the grid the bias
        force is zero (OpenMM's convention).
    width : float, optional
        Gaussian width in CV units; default 0.25 (log CV) or 1/40 of the range (linear CV).
    height, bias_factor, frequency, grid_width, temperature, timestep, n_steps, report_interval,
    friction, n_walkers, share_bias, metric, system, geometry_check, platform,
    platform_properties, backend, use_cuda_graphs, scoring_batch_size, progress
        As for :class:`MetadynamicsSampler`; ``system`` is optional here (masses and topology;
        element masses otherwise).

    Notes
    -----
    Cost per MD step: two committee evaluations (the mean force and the CV; the CV's is a
    double-backward pass, ~2-3x the cost of the mean force's), plus two CV evaluations per
    deposition and one per reported frame, one per seed to set the range, and one per scored
    frame. ``info``: ``step``, ``walker``, ``cv`` (the CV of each candidate as the
    ``CustomCVForce`` reported it, also under the CV's name e.g. ``log_force_variance``),
    ``cv_range``, ``free_energy``, ``n_depositions``, ``n_exploded``, ``n_unphysical``.
    """

    name = "uncertainty_metadynamics"
    cv_cost = 1
    AUTO_LOG_MARGIN = (2.0, 8.0)
    AUTO_LINEAR_FACTOR = 20.0

    def __init__(
        self,
        cv_metric: str = "force_variance",
        log_cv: bool = True,
        cv_range=None,
        width: float | None = None,
        height=1.2,
        bias_factor: float = 6.0,
        frequency: int = 500,
        grid_width: int | None = None,
        temperature=300.0,
        timestep=0.0005,
        n_steps: int = 5000,
        report_interval: int = 100,
        friction=1.0,
        n_walkers: int | None = None,
        share_bias: bool = True,
        metric: str = "force_variance",
        system=None,
        geometry_check=None,
        platform="CPU",
        platform_properties: dict | None = None,
        backend: str = "torch",
        use_cuda_graphs: bool = False,
        scoring_batch_size: int = 256,
        progress: bool = True,
        walker_temperatures=None,
    ):
        super().__init__(
            temperature, timestep, n_steps, report_interval, friction, height, bias_factor, frequency, grid_width,
            n_walkers, share_bias, metric, system, geometry_check, platform, platform_properties, backend,
            use_cuda_graphs, scoring_batch_size, progress, walker_temperatures,
        )
        self.cv_metric = check_metric(cv_metric)
        self.log_cv = bool(log_cv)
        if cv_range is not None:
            cv_range = (float(cv_range[0]), float(cv_range[1]))
            if not cv_range[1] > cv_range[0]:
                raise ValueError(f"cv_range needs max > min, got {cv_range}")
        self.cv_range = cv_range
        if width is not None and not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        self.width = width
        self._range = cv_range
        self.options.update(cv_metric=self.cv_metric, log_cv=self.log_cv, cv_range=cv_range, width=width)

    def auto_range(self, u: np.ndarray) -> tuple[float, float]:
        """The CV grid chosen for seeds with uncertainties ``u``.

        Linear: from 0 (or below the lowest seed, for a CV that can be negative such as
        ``gmm_nll``) to ``AUTO_LINEAR_FACTOR`` times the largest seed value.
        """
        u = np.asarray(u, dtype=np.float64)
        if self.log_cv:
            below, above = self.AUTO_LOG_MARGIN
            return float(np.log(u.min() + LOG_FLOOR) - below), float(np.log(u.max() + LOG_FLOOR) + above)
        high = float(self.AUTO_LINEAR_FACTOR * max(u.max(), LOG_FLOOR))
        low = 0.0 if u.min() >= 0 else float(u.min()) - 0.05 * (high - float(u.min()))
        return low, high

    def _prepare(self, committee: Committee, seeds: np.ndarray) -> int:
        if self.cv_range is not None:
            self._range = self.cv_range
            return 0
        # The grid spans what the bias force computes: the raw values (Committee.uncertainty
        # would report inf for a seed out of the committee's domain).
        self._range = self.auto_range(committee.uncertainty(seeds, self.cv_metric, domain=False))
        return len(seeds)

    def _bias_variables(self, committee: Committee) -> list:
        lo, hi = self._range
        width = self.width if self.width is not None else (0.25 if self.log_cv else (hi - lo) / 40.0)
        force = uncertainty_cv_force(committee, self.cv_metric, log=self.log_cv, backend=self.backend,
                                     use_cuda_graphs=self.use_cuda_graphs)
        return [app.BiasVariable(force, lo, hi, width, False, self.grid_width)]

    def _cv_names(self) -> list:
        return [("log_" if self.log_cv else "") + self.cv_metric]

    def sample(self, committee: Committee, seeds, rng: np.random.Generator | None = None) -> Candidates:
        candidates = super().sample(committee, seeds, rng)
        candidates.info["cv_range"] = tuple(self._range)
        return candidates
