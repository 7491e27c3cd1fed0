"""Shared machinery of the MD-based samplers.

* argument normalisation at the boundary (seeds, temperatures, times, geometry checks, masses);
* :func:`run_langevin_replicas`: Langevin MD of R non-interacting replicas of a molecule in ONE
  OpenMM ``Context`` (one batched committee call per step), with frames every
  ``report_interval`` steps and per-replica handling of blow-ups: a replica whose frame is
  non-finite or fails the geometry check is *frozen* (its particles get mass 0, so OpenMM's
  integrators no longer move them) at its last good geometry and contributes no further frames,
  while the other replicas run on. Where a platform aborts a step on NaN coordinates (the CPU
  platform does), the interval is replayed one step at a time from the last report and the
  replicas with non-finite (or else the largest) forces are frozen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import openmm
from openmm import app, unit

from ..geometry import GeometryCheck
from ..units import to_nm

__all__ = [
    "ReplicaRun",
    "as_geometry_check",
    "as_platform",
    "check_frames",
    "check_seeds",
    "is_nan_error",
    "draw_seed",
    "masses_for",
    "platform_properties_for",
    "report_steps",
    "run_langevin_replicas",
    "score_frames",
    "to_kelvin",
    "to_per_ps",
    "to_ps",
]


# ---------------------------------------------------------------------- boundary conversions
def to_kelvin(value) -> float:
    """A temperature in K (plain numbers are K)."""
    if unit.is_quantity(value):
        if not value.unit.is_compatible(unit.kelvin):
            raise ValueError(f"a temperature has units of {value.unit}, which cannot be converted to kelvin")
        value = value.value_in_unit(unit.kelvin)
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"temperature must be a finite number >= 0 K, got {value}")
    return value


def to_ps(value) -> float:
    """A time in ps (plain numbers are ps)."""
    if unit.is_quantity(value):
        if not value.unit.is_compatible(unit.picosecond):
            raise ValueError(f"a time has units of {value.unit}, which cannot be converted to ps")
        value = value.value_in_unit(unit.picosecond)
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"time step must be a positive number of ps, got {value}")
    return value


def to_per_ps(value) -> float:
    """A friction coefficient in 1/ps (plain numbers are 1/ps)."""
    if unit.is_quantity(value):
        if not value.unit.is_compatible(unit.picosecond**-1):
            raise ValueError(f"a friction has units of {value.unit}, which cannot be converted to 1/ps")
        value = value.value_in_unit(unit.picosecond**-1)
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"friction must be a finite number >= 0 per ps, got {value}")
    return value


def as_geometry_check(check) -> GeometryCheck | None:
    """``None``, a :class:`GeometryCheck`, or a system (its bonds and reference geometry)."""
    if check is None or isinstance(check, GeometryCheck):
        return check
    if callable(check) and not hasattr(check, "bonds"):
        return check  # any callable positions [B, N, 3] -> (ok [B], reasons)
    return GeometryCheck.for_system(check)


def as_platform(platform) -> openmm.Platform:
    if isinstance(platform, openmm.Platform):
        return platform
    return openmm.Platform.getPlatformByName(str(platform))


def platform_properties_for(platform, properties: dict | None) -> dict:
    """The Context properties to use.

    On the CPU platform ``Threads`` defaults to ``"1"`` and ``DeterministicForces`` to
    ``"true"``: with several threads the CPU platform sums forces in a varying order (even with
    ``DeterministicForces``), so MD from the same seeds drifts apart (1e-10 nm after 200 steps,
    growing chaotically). One thread costs nothing for small molecules, where the committee
    (torch, with its own threads) dominates; pass ``{"Threads": "4"}`` for big classical systems.
    """
    properties = dict(properties or {})
    name = platform.getName() if isinstance(platform, openmm.Platform) else str(platform)
    if name == "CPU":
        properties.setdefault("Threads", "1")
        properties.setdefault("DeterministicForces", "true")
    return properties


def check_seeds(seeds, n_atoms: int) -> np.ndarray:
    """Seeds as float64 ``[S, N, 3]`` nm, or a ValueError that names the problem."""
    xyz = np.asarray(to_nm(seeds), dtype=np.float64)
    if xyz.ndim == 2:
        xyz = xyz[None]
    if xyz.ndim != 3 or xyz.shape[1:] != (n_atoms, 3):
        raise ValueError(f"seeds must have shape [S, {n_atoms}, 3] for this committee, got {xyz.shape}")
    if len(xyz) == 0:
        raise ValueError("give at least one seed geometry")
    if not np.isfinite(xyz).all():
        bad = np.flatnonzero(~np.isfinite(xyz).all(axis=(1, 2)))
        raise ValueError(f"seed geometries {bad[:10].tolist()} contain NaN or infinite coordinates")
    return xyz


def check_frames(check, frames: np.ndarray) -> tuple[np.ndarray, list]:
    """Validity ``[B]`` and reasons; without a check only finiteness is tested."""
    frames = np.asarray(frames, dtype=np.float64)
    if check is None:
        finite = np.isfinite(frames).all(axis=(1, 2))
        return finite, ["" if ok else "non-finite coordinates" for ok in finite]
    ok, reasons = check(frames)
    return np.asarray(ok, dtype=bool), list(reasons)


def draw_seed(rng: np.random.Generator) -> int:
    """A positive 31-bit integer from ``rng`` (OpenMM takes 0 to mean "pick one at random")."""
    return int(rng.integers(1, 2**31 - 1))


def masses_for(committee, system=None) -> np.ndarray:
    """Particle masses (dalton) of one molecule: the system's, else from the atomic numbers."""
    if system is not None and getattr(system, "masses", None) is not None:
        masses = np.asarray(system.masses, dtype=np.float64)
        if len(masses) != committee.n_atoms:
            raise ValueError(f"the system has {len(masses)} atoms but the committee {committee.n_atoms}")
        return masses
    out = []
    for z in committee.atomic_numbers:
        out.append(app.Element.getByAtomicNumber(int(z)).mass.value_in_unit(unit.dalton) if z > 0 else 1.0)
    return np.asarray(out, dtype=np.float64)


def report_steps(n_steps: int, report_interval: int) -> np.ndarray:
    """Steps at which frames are taken: every ``report_interval`` steps, and the last step."""
    steps = np.arange(report_interval, n_steps + 1, report_interval)
    if steps.size == 0 or steps[-1] != n_steps:
        steps = np.append(steps, n_steps)
    return steps.astype(np.int64)


def score_frames(committee, frames, metric: str, batch_size: int = 256):
    """Committee-mean energy ``[K]``, uncertainty ``[K]`` (``metric``) and member-energy variance
    ``[K]`` of frames ``[K, N, 3]``, one committee evaluation per frame."""
    frames = np.asarray(frames, dtype=np.float64)
    mean, u, var = [], [], []
    for first in range(0, len(frames), batch_size):
        e, _, value = committee.energies_forces_uncertainty(frames[first : first + batch_size], metric)
        mean.append(e.mean(axis=1))
        var.append(e.var(axis=1))
        u.append(value)
    if not mean:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    return np.concatenate(mean), np.concatenate(u), np.concatenate(var)


def bare_topology(n_atoms: int, atomic_numbers=None) -> app.Topology:
    """A one-residue topology with ``n_atoms`` atoms (what ``app.Simulation`` needs)."""
    top = app.Topology()
    residue = top.addResidue("MOL", top.addChain())
    for k in range(n_atoms):
        z = 0 if atomic_numbers is None else int(atomic_numbers[k])
        element = app.Element.getByAtomicNumber(z) if z > 0 else None
        top.addAtom(f"A{k}", element, residue)
    return top


# ---------------------------------------------------------------------- batched Langevin MD
@dataclass
class ReplicaRun:
    """What :func:`run_langevin_replicas` returns.

    ``frames[k]`` was taken at ``step[k]`` from replica ``replica[k]``; only frames that passed
    the check (and preceded any blow-up of their replica) are kept. ``exploded_at[r]`` is the
    report step at which replica r was frozen (-1: never).
    """

    frames: np.ndarray
    replica: np.ndarray
    step: np.ndarray
    exploded_at: np.ndarray
    reasons: list = field(default_factory=list)
    n_unphysical: int = 0
    n_steps_run: int = 0
    n_force_evaluations: int = 0

    @property
    def n_exploded(self) -> int:
        return int((self.exploded_at >= 0).sum())


def is_nan_error(exc: Exception) -> bool:
    """OpenMM's "Particle coordinate is NaN" (and kin): a blow-up, not a programming error."""
    return re.search(r"\bnan\b", str(exc), flags=re.IGNORECASE) is not None


def _state_arrays(context, n_replicas: int, n_atoms: int, velocities: bool = False):
    state = context.getState(getPositions=True, getVelocities=velocities)
    x = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)).reshape(n_replicas, n_atoms, 3)
    if not velocities:
        return x
    v = np.asarray(state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
    return x, v.reshape(n_replicas, n_atoms, 3)


def run_langevin_replicas(
    force: openmm.Force,
    masses: np.ndarray,
    start: np.ndarray,
    *,
    temperature: float,
    friction: float,
    timestep: float,
    n_steps: int,
    report_interval: int,
    seed: int,
    check=None,
    platform="CPU",
    platform_properties: dict | None = None,
    extra_forces=(),
    bar=None,
) -> ReplicaRun:
    """Langevin MD (``LangevinMiddleIntegrator``) of ``R = len(start)`` replicas in one Context.

    Parameters
    ----------
    force : openmm.Force
        Built for ``R`` replicas (particle ``r * N + i`` is atom i of replica r).
    masses : numpy.ndarray
        ``[N]`` dalton, one molecule.
    start : numpy.ndarray
        ``[R, N, 3]`` nm.
    temperature, friction, timestep : float
        K, 1/ps, ps.
    seed : int
        Seeds both the integrator's noise and the initial velocities (Maxwell-Boltzmann).
    check : callable, optional
        ``check(frames [R, N, 3]) -> (ok [R], reasons)``; finiteness only when None.
    extra_forces : sequence of openmm.Force
        Further forces for the same particles.
    bar : tqdm, optional
        Updated with the number of MD steps.
    """
    start = np.asarray(start, dtype=np.float64)
    n_replicas, n_atoms = start.shape[:2]
    system = openmm.System()
    for _ in range(n_replicas):
        for mass in masses:
            system.addParticle(float(mass))
    system.addForce(force)
    for extra in extra_forces:
        system.addForce(extra)
    integrator = openmm.LangevinMiddleIntegrator(temperature, friction, timestep)
    integrator.setRandomNumberSeed(int(seed))
    context = openmm.Context(system, integrator, as_platform(platform), platform_properties_for(platform, platform_properties))
    context.setPositions(start.reshape(-1, 3))
    context.setVelocitiesToTemperature(temperature, int(seed))

    alive = np.ones(n_replicas, dtype=bool)
    exploded_at = np.full(n_replicas, -1, dtype=np.int64)
    last_good = start.copy()
    saved_x, saved_v = _state_arrays(context, n_replicas, n_atoms, velocities=True)
    frames, replica, steps, reasons = [], [], [], []
    n_unphysical = 0
    n_extra = 0
    steps_run = 0

    def freeze(which: np.ndarray, at_step: int, x: np.ndarray, v: np.ndarray, why: str = "") -> None:
        """Mass 0 for the replicas in ``which``, parked at their last good geometry."""
        for r in np.flatnonzero(which):
            if why:
                reasons.append(f"replica {r} before step {at_step}: {why}")
            for i in range(n_atoms):
                system.setParticleMass(int(r * n_atoms + i), 0.0)
            alive[r] = False
            exploded_at[r] = at_step
        x = x.copy()
        v = v.copy()
        x[which] = last_good[which]
        v[which] = 0.0
        context.reinitialize(preserveState=True)
        context.setPositions(x.reshape(-1, 3))
        context.setVelocities(v.reshape(-1, 3))

    def replay(n: int, at_step: int) -> int:
        """Redo ``n`` steps from the last report one at a time, freezing the culprits."""
        nonlocal n_extra
        context.setPositions(saved_x.reshape(-1, 3))
        context.setVelocities(saved_v.reshape(-1, 3))
        done = 0
        while done < n and alive.any():
            x, v = _state_arrays(context, n_replicas, n_atoms, velocities=True)
            # A step can leave NaN coordinates without complaint; the next one then aborts.
            broken = alive & ~(np.isfinite(x).all(axis=(1, 2)) & np.isfinite(v).all(axis=(1, 2)))
            if broken.any():
                freeze(broken, at_step, np.nan_to_num(x), np.nan_to_num(v), "non-finite coordinates")
                continue
            try:
                integrator.step(1)
                done += 1
                continue
            except openmm.OpenMMException as exc:
                if not is_nan_error(exc):
                    raise
            context.setPositions(x.reshape(-1, 3))
            context.setVelocities(v.reshape(-1, 3))
            f = context.getState(getForces=True).getForces(asNumpy=True)
            f = np.asarray(f.value_in_unit(unit.kilojoule_per_mole / unit.nanometer)).reshape(n_replicas, n_atoms, 3)
            n_extra += n_replicas
            culprits = alive & ~np.isfinite(f).all(axis=(1, 2))
            why = "non-finite forces"
            if not culprits.any():
                why = "the largest force when the platform aborted a step"
                size = np.where(alive, np.nan_to_num(np.abs(f), nan=np.inf).max(axis=(1, 2)), -1.0)
                culprits = np.zeros(n_replicas, dtype=bool)
                culprits[int(np.argmax(size))] = True
            freeze(culprits, at_step, x, v, why)
        return done

    done = 0
    for step in report_steps(n_steps, report_interval):
        if not alive.any():
            break
        n = int(step - done)
        try:
            integrator.step(n)
        except openmm.OpenMMException as exc:
            if not is_nan_error(exc):
                raise
            replay(n, int(step))
        steps_run += n
        if bar is not None:
            bar.update(n)
        done = int(step)
        x, v = _state_arrays(context, n_replicas, n_atoms, velocities=True)
        ok, why = check_frames(check, x)
        newly_bad = alive & ~ok
        n_unphysical += int(newly_bad.sum())
        for r in np.flatnonzero(alive & ok):
            frames.append(x[r].copy())
            replica.append(r)
            steps.append(done)
        for r in np.flatnonzero(newly_bad):
            reasons.append(f"replica {r} at step {done}: {why[r]}")
        last_good[alive & ok] = x[alive & ok]
        if newly_bad.any():
            freeze(newly_bad, done, x, v)
            x, v = _state_arrays(context, n_replicas, n_atoms, velocities=True)
        saved_x, saved_v = x, v
    if bar is not None and steps_run < n_steps:
        bar.update(n_steps - steps_run)
    del context, integrator
    return ReplicaRun(
        frames=np.asarray(frames, dtype=np.float64).reshape(-1, n_atoms, 3),
        replica=np.asarray(replica, dtype=np.int64),
        step=np.asarray(steps, dtype=np.int64),
        exploded_at=exploded_at,
        reasons=reasons,
        n_unphysical=n_unphysical,
        n_steps_run=steps_run,
        n_force_evaluations=steps_run * n_replicas + n_extra,
    )
