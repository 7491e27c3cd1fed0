"""``CustomIntegrator`` optimisers that climb an objective encoded as minus a force group's energy."""

from __future__ import annotations

import openmm

__all__ = ["attack_integrator", "reset_attack_integrator"]

OPTIMIZERS = ("adam", "gradient")


def attack_integrator(
    step_size: float,
    optimizer: str = "adam",
    force_group: int = 0,
    max_step: float = 0.02,
    max_displacement: float = 0.3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-8,
) -> openmm.CustomIntegrator:
    """An integrator whose every step moves the particles uphill on the objective.

    The objective is minus the potential energy of ``force_group`` (see
    :func:`openmm_adv.forces.adversarial_force`), so its gradient is that group's force ``f``.

    Parameters
    ----------
    step_size : float
        ``optimizer="adam"``: the largest step per coordinate in nm (Adam's learning rate).
        ``optimizer="gradient"``: ``x += step_size * f``, in nm^2 mol/kJ.
    optimizer : {"adam", "gradient"}
        Adam keeps per-degree-of-freedom moment variables ``moment1`` and ``moment2``.
    force_group : int
        The group holding the adversarial force; other groups are ignored.
    max_step : float
        No coordinate moves more than this (nm) in one step: a guard against blow-ups.
    max_displacement : float
        No coordinate leaves the interval ``[x0 - d, x0 + d]`` around where the attack started
        (nm); the paper clamps at 3 A.

    Notes
    -----
    The starting point ``x0`` is captured on the first step. Call
    :func:`reset_attack_integrator` before reusing the integrator from new positions.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {OPTIMIZERS}")
    if step_size <= 0 or max_step <= 0 or max_displacement <= 0:
        raise ValueError("step_size, max_step and max_displacement must be positive")
    f = f"f{int(force_group)}"
    integrator = openmm.CustomIntegrator(0.001)  # "dt" is unused: this is an optimiser
    for name, value in (
        ("lr", step_size), ("dmax", max_step), ("dlim", max_displacement),
        ("b1", beta1), ("b2", beta2), ("eps", epsilon), ("n_updates", 0.0), ("initialised", 0.0),
    ):
        integrator.addGlobalVariable(name, value)
    # Not "m", "v", "t": those are the built-in mass, velocity and time.
    integrator.addPerDofVariable("x0", 0.0)
    integrator.addPerDofVariable("moment1", 0.0)
    integrator.addPerDofVariable("moment2", 0.0)
    integrator.addComputePerDof("x0", "select(initialised, x0, x)")
    integrator.addComputeGlobal("initialised", "1")
    integrator.addComputeGlobal("n_updates", "n_updates + 1")
    if optimizer == "adam":
        integrator.addComputePerDof("moment1", f"b1*moment1 + (1-b1)*{f}")
        integrator.addComputePerDof("moment2", f"b2*moment2 + (1-b2)*{f}*{f}")
        step = "lr*(moment1/(1-b1^n_updates))/(sqrt(moment2/(1-b2^n_updates)) + eps)"
    else:
        step = f"lr*{f}"
    integrator.addComputePerDof("x", f"x + max(-dmax, min(dmax, {step}))")
    integrator.addComputePerDof("x", "x0 + max(-dlim, min(dlim, x - x0))")
    integrator.optimizer = optimizer
    return integrator


def reset_attack_integrator(integrator: openmm.CustomIntegrator, n_particles: int) -> None:
    """Forget the start point and Adam's moments so the next step starts a fresh attack."""
    zeros = [openmm.Vec3(0.0, 0.0, 0.0)] * n_particles
    integrator.setGlobalVariableByName("n_updates", 0.0)
    integrator.setGlobalVariableByName("initialised", 0.0)
    integrator.setPerDofVariableByName("moment1", zeros)
    integrator.setPerDofVariableByName("moment2", zeros)
