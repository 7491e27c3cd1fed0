"""Committee uncertainty metrics (TorchScript functions, twice differentiable).

Inputs are the committee's per-member energies ``[B, M]`` (kJ/mol) and forces
``[B, M, N, 3]`` (kJ/mol/nm); each metric returns ``[B]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["METRICS", "force_variance", "max_force_deviation", "energy_std", "uncertainty"]

#: metric name -> unit of its value
METRICS = {
    "force_variance": "(kJ/mol/nm)^2",
    "max_force_deviation": "kJ/mol/nm",
    "energy_std": "kJ/mol",
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


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown uncertainty metric {metric!r}; choose one of {sorted(METRICS)}")
    return metric
