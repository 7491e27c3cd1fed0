"""Thermal velocities that stay thermal beside forces the integrator does not integrate.

``Context.setVelocitiesToTemperature`` (OpenMM 8.4/8.5, ``Context.cpp``) draws
Maxwell-Boltzmann velocities and, for integrators whose velocities lag the positions by half a
step (``getVelocityTimeOffset() = dt/2``: ``LangevinMiddleIntegrator``, ``VerletIntegrator``,
``DPDIntegrator``, ``QTBIntegrator``), shifts them back with the forces of *every* force group,
``v -= (dt/2) F / m``. A force kept out of the dynamics in its own group, such as
:func:`openmm_adv.forces.uncertainty_force` used as a monitor, still enters that shift; its
gradient is not a force (the uncertainty is in (kJ/mol/nm)^2), and where the committee is
unsure it is large: alanine dipeptide at 300 K with a 2 fs step gets a mean kinetic energy of
287 kJ/mol instead of 82 in the Amber C7ax minimum (a basin the shipped committee never saw),
and up to 3.5e4 kJ/mol at a strained geometry. :func:`set_velocities_to_temperature` makes the
same kind of draw and the same shift, but with the forces the integrator integrates.
"""

from __future__ import annotations

import numpy as np
import openmm
from openmm import unit

__all__ = ["set_velocities_to_temperature", "integration_force_groups", "velocity_time_offset"]

_ALL_GROUPS = 0xFFFFFFFF
# Integrators whose C++ getVelocityTimeOffset() is getStepSize()/2 in OpenMM 8.4 and 8.5 (the
# method itself is not in the Python API; every other integrator keeps the base class's 0).
_LEAPFROG = tuple(getattr(openmm, name) for name in
                  ("LangevinMiddleIntegrator", "VerletIntegrator", "DPDIntegrator", "QTBIntegrator")
                  if hasattr(openmm, name))
# Drude integrators draw Drude pairs at their own temperature, which a per-particle draw
# cannot reproduce.
_DRUDE = tuple(getattr(openmm, name) for name in ("DrudeIntegrator", "DrudeNoseHooverIntegrator") if hasattr(openmm, name))


def integration_force_groups(integrator: openmm.Integrator) -> int:
    """The bit mask of the force groups ``integrator`` integrates (all 32 unless restricted)."""
    return int(integrator.getIntegrationForceGroups()) & _ALL_GROUPS


def velocity_time_offset(integrator: openmm.Integrator) -> float:
    """How far (ps) the integrator's velocities lag its positions: OpenMM's ``getVelocityTimeOffset``."""
    if isinstance(integrator, openmm.CompoundIntegrator):
        return velocity_time_offset(integrator.getIntegrator(0))
    if isinstance(integrator, _LEAPFROG):
        return integrator.getStepSize().value_in_unit(unit.picosecond) / 2
    return 0.0


def _group_mask(groups) -> int:
    if isinstance(groups, (int, np.integer)):
        return int(groups) & _ALL_GROUPS
    mask = 0
    for g in groups:
        if not 0 <= int(g) <= 31:
            raise ValueError(f"force groups must be in 0..31, got {g}")
        mask |= 1 << int(g)
    return mask


def set_velocities_to_temperature(context: openmm.Context, temperature, seed: int | None = None, groups=None,
                                  remove_com_motion: bool = False) -> np.ndarray:
    """Set Maxwell-Boltzmann velocities, safe beside forces that do not drive the dynamics.

    Use it instead of ``context.setVelocitiesToTemperature(temperature, seed)`` whenever the
    System holds a force the integrator leaves out (an uncertainty force in its own group, kept
    for ``getState(groups=...)``). Each particle of mass ``m > 0`` gets a velocity drawn from
    the Maxwell-Boltzmann distribution at ``temperature`` (numpy, from ``seed``); massless
    particles get zero. For integrators whose velocities lag the positions by half a step
    (:func:`velocity_time_offset`), the velocities are then shifted back as OpenMM does,
    ``v -= (dt/2) F / m``, but with the forces of ``groups`` only, by default the groups the
    integrator integrates, not every group in the System. Velocity constraints are applied last.

    Parameters
    ----------
    context : openmm.Context
    temperature : float or openmm.unit.Quantity
        In kelvin.
    seed : int, optional
        Seed of the numpy draw; ``None`` draws a fresh one. (OpenMM's own random stream is not
        reachable from Python, so the velocities differ from ``setVelocitiesToTemperature``'s
        for the same seed; their distribution is the same.)
    groups : int or iterable of int, optional
        Force groups (indices, or OpenMM's bit mask) whose forces enter the half-step shift.
        Default: ``integrator.getIntegrationForceGroups()``. Put a monitoring force in its own
        group and leave that group out with ``integrator.setIntegrationForceGroups({0})``.
    remove_com_motion : bool
        Remove the centre-of-mass velocity of the draw (OpenMM does not; a ``CMMotionRemover``
        in the System removes it at the first step anyway).

    Returns
    -------
    numpy.ndarray
        The velocities set, ``[N, 3]`` in nm/ps, after velocity constraints.

    Raises
    ------
    ValueError
        For Drude integrators (they draw Drude pairs at their own temperature): set velocities
        with ``context.setVelocitiesToTemperature`` before adding forces that are not integrated.
    """
    from .samplers._replicas import to_kelvin  # the samplers package imports forces, which imports this

    temperature = to_kelvin(temperature)
    integrator = context.getIntegrator()
    if isinstance(integrator, _DRUDE):
        raise ValueError(
            f"{type(integrator).__name__} draws Drude pairs at their own temperature, which this helper does not; "
            "call context.setVelocitiesToTemperature before adding forces the integrator does not integrate"
        )
    system = context.getSystem()
    n = system.getNumParticles()
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)])
    moving = masses > 0
    kT = (unit.MOLAR_GAS_CONSTANT_R * temperature * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
    rng = np.random.default_rng(seed)
    velocities = np.zeros((n, 3))
    velocities[moving] = rng.standard_normal((int(moving.sum()), 3)) * np.sqrt(kT / masses[moving])[:, None]
    if remove_com_motion and moving.sum() > 1:
        momentum = (masses[moving, None] * velocities[moving]).sum(axis=0)
        velocities[moving] -= momentum / masses[moving].sum()
    offset = velocity_time_offset(integrator)
    if offset != 0.0:
        mask = integration_force_groups(integrator) if groups is None else _group_mask(groups)
        forces = context.getState(getForces=True, groups=mask).getForces(asNumpy=True)
        forces = np.asarray(forces.value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
        velocities[moving] -= (offset / masses[moving, None]) * forces[moving]
    context.setVelocities(velocities)
    context.applyVelocityConstraints(1e-5)
    state = context.getState(getVelocities=True)
    return np.asarray(state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
