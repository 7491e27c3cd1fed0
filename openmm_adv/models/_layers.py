"""Pieces shared by the member-stacked models: weights with a member axis, the smooth cutoff,
and the per-molecule buffers every stacked model carries."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def stacked_weight(generator: torch.Generator, m: int, fan_in: int, fan_out: int, gain: float = 1.0) -> nn.Parameter:
    """A weight ``[M, fan_in, fan_out]``: one independent (LeCun-normal) matrix per member."""
    return nn.Parameter(gain * torch.randn(m, fan_in, fan_out, generator=generator) / math.sqrt(fan_in))


def stacked_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x [B, M, R, F]`` times the member's ``weight [M, F, G]`` plus ``bias [M, G]``."""
    return torch.matmul(x, weight.unsqueeze(0)) + bias[None, :, None, :]


def smooth_cutoff(x: Tensor, inside: Tensor) -> Tensor:
    """``1 - 28 x^6 + 48 x^7 - 21 x^8`` for ``x = r / cutoff`` inside, 0 outside.

    Value, slope and curvature vanish at the cutoff, so energies stay smooth to second order
    (attacks differentiate forces).
    """
    xs = torch.where(inside, x, torch.zeros_like(x))
    envelope = 1.0 - 28.0 * xs.pow(6) + 48.0 * xs.pow(7) - 21.0 * xs.pow(8)
    return torch.where(inside, envelope, torch.zeros_like(envelope))


def register_molecule(module: nn.Module, atomic_numbers) -> int:
    """Register the buffers of a model tied to one atom list; return the number of species.

    ``atomic_numbers`` and ``species_index`` (the atoms' rows in the embedding), ``identity``
    (``[N, N]``, keeps pair distances off zero on the diagonal), and ``energy_shift`` /
    ``energy_scale`` (energy = scale * model output + shift; set by the trainer).
    """
    z = torch.as_tensor(list(atomic_numbers), dtype=torch.long)
    species, species_index = torch.unique(z, return_inverse=True)
    module.register_buffer("atomic_numbers", z)
    module.register_buffer("species_index", species_index)
    module.register_buffer("identity", torch.eye(int(z.numel())))
    module.register_buffer("energy_shift", torch.zeros(()))
    module.register_buffer("energy_scale", torch.ones(()))
    return int(species.numel())
