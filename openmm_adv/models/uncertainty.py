"""Uncertainty metrics: the committee's (TorchScript functions, twice differentiable) and the
names of every method's.

The committee metrics take the per-member energies ``[B, M]`` (kJ/mol) and forces
``[B, M, N, 3]`` (kJ/mol/nm) and return ``[B]``. Single-model methods compute theirs inside
their potential (:mod:`openmm_adv.models.gmm`, :mod:`openmm_adv.models.heads`); every
potential answers ``energies_forces_uncertainty(positions, metric, create_graph)``, and
:func:`evaluate` calls it (or, for committees saved before it existed, computes it here).

``force_variance`` exists for every method and means the same thing: the predicted variance of
a force component, averaged over atoms, in (kJ/mol/nm)^2. It is the default everywhere, so an
attack, a selection window or a reporter written for a committee runs unchanged on a single
model with a Gaussian mixture, a variance head or an evidential head.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

__all__ = ["METHOD_METRICS", "METRICS", "SIGNED_METRICS", "evaluate", "force_variance", "max_force_deviation", "energy_std", "uncertainty"]

#: metric name -> unit of its value
METRICS = {
    "force_variance": "(kJ/mol/nm)^2",
    "max_force_deviation": "kJ/mol/nm",
    "energy_std": "kJ/mol",
    # Gaussian mixture on learned features: the conformally scaled bound on the force error, and
    # the mean per-atom negative log-likelihood above the calibration set's lowest (the CV of
    # Tan, Dietschreit & Gomez-Bombarelli 2025).
    "gmm_error": "kJ/mol/nm",
    "gmm_nll": "nats",
    # evidential regression: the noise the model expects in its labels (force_variance is the
    # epistemic part, its uncertainty about the mean)
    "aleatoric_variance": "(kJ/mol/nm)^2",
}

#: metrics whose values may be negative (a log-likelihood relative to a calibration minimum)
SIGNED_METRICS = frozenset({"gmm_nll"})

#: uncertainty method -> the metrics it provides (its first is its default for calibration)
METHOD_METRICS = {
    "ensemble": ("force_variance", "max_force_deviation", "energy_std"),
    "gmm": ("force_variance", "gmm_error", "gmm_nll"),
    "mve": ("force_variance",),
    "evidential": ("force_variance", "aleatoric_variance"),
}



def force_variance(forces: Tensor) -> Tensor:
    """Variance over members of each force component, averaged over atoms and x/y/z."""
    return forces.var(dim=1, unbiased=False).mean(dim=(1, 2))


def max_force_deviation(forces: Tensor) -> Tensor:
    """DP-GEN's model deviation: max over atoms of sqrt(mean over members |F_i - <F_i>|^2)."""
    deviation = forces - forces.mean(dim=1, keepdim=True)
    per_atom = (deviation.pow(2).sum(dim=-1).mean(dim=1) + 1e-12).sqrt()
    return per_atom.amax(dim=1)


def energy_std(energies: Tensor) -> Tensor:
    """Standard deviation of the members' energies."""
    # 1e-12 keeps sqrt differentiable where the members agree exactly.
    return (energies.var(dim=1, unbiased=False) + 1e-12).sqrt()


def uncertainty(energies: Tensor, forces: Tensor, metric: str) -> Tensor:
    """Dispatch on the metric name (one of :data:`METRICS`)."""
    if metric == "force_variance":
        return force_variance(forces)
    if metric == "max_force_deviation":
        return max_force_deviation(forces)
    if metric == "energy_std":
        return energy_std(energies)
    raise ValueError("unknown uncertainty metric '" + metric + "'; use force_variance, max_force_deviation or energy_std")


def check_metric(metric: str, method: str | None = None) -> str:
    """``metric`` if it is known (and, with ``method``, provided by that method), else ValueError."""
    if metric not in METRICS:
        raise ValueError(f"unknown uncertainty metric {metric!r}; choose one of {sorted(METRICS)}")
    if method is not None:
        provided = METHOD_METRICS.get(method)
        if provided is None:
            raise ValueError(f"unknown uncertainty method {method!r}; one of {sorted(METHOD_METRICS)}")
        if metric not in provided:
            raise ValueError(f"the {method} uncertainty has no metric {metric!r}; it provides {', '.join(provided)} "
                             "(force_variance works for every method)")
    return metric


def evaluate(potential, positions: Tensor, metric: str, create_graph: bool = False):
    """Energies ``[B, M]``, forces ``[B, M, N, 3]`` and uncertainty ``[B]`` of any potential.

    Committees saved before single-model methods existed have no
    ``energies_forces_uncertainty``; their metric is computed here from the members.
    """
    if hasattr(potential, "energies_forces_uncertainty"):
        return potential.energies_forces_uncertainty(positions, metric, create_graph)
    energies, forces = potential.energies_and_forces(positions, create_graph)
    return energies, forces, uncertainty(energies, forces, metric)


class WithUncertainty(torch.nn.Module):
    """Gives a committee saved before ``energies_forces_uncertainty`` existed that method, so the
    forces of :mod:`openmm_adv.forces` compile against one interface."""

    def __init__(self, potential: torch.nn.Module):
        super().__init__()
        self.inner = potential
        self.n_members = int(potential.n_members)
        self.n_atoms = int(potential.n_atoms)

    def forward(self, positions: Tensor) -> Tensor:
        return self.inner(positions)

    @torch.jit.export
    def energies_and_forces(self, positions: Tensor, create_graph: bool = False) -> Tuple[Tensor, Tensor]:
        return self.inner.energies_and_forces(positions, create_graph)

    @torch.jit.export
    def energies_forces_uncertainty(self, positions: Tensor, metric: str, create_graph: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
        energies, forces = self.inner.energies_and_forces(positions, create_graph)
        return energies, forces, uncertainty(energies, forces, metric)


def with_uncertainty(potential: torch.nn.Module) -> torch.nn.Module:
    """``potential`` itself, or wrapped in :class:`WithUncertainty` where it lacks the method."""
    return potential if hasattr(potential, "energies_forces_uncertainty") else WithUncertainty(potential)
