"""A member-stacked MLP on Cartesian coordinates, for the one-particle toy potentials."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["StackedMLP"]


class _StackedLinear(nn.Module):
    def __init__(self, generator: torch.Generator, m: int, fan_in: int, fan_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(m, fan_in, fan_out, generator=generator) / math.sqrt(fan_in))
        self.bias = nn.Parameter(0.1 * torch.randn(m, fan_out, generator=generator))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bmi,mio->bmo", x, self.weight) + self.bias.unsqueeze(0)


class StackedMLP(nn.Module):
    """M small MLPs ``E(x, y)`` evaluated in one pass (not rotation invariant: toys only).

    Parameters
    ----------
    n_atoms : int
        Number of particles whose x and y coordinates are the input (1 for the 2D toys).
    n_members : int
    hidden : int
        Width of the two hidden layers.
    seed : int
    """

    def __init__(self, n_atoms: int = 1, n_members: int = 5, hidden: int = 64, seed: int = 0):
        super().__init__()
        self.n_members = int(n_members)
        self.n_atoms = int(n_atoms)
        self.hyperparameters = dict(n_members=int(n_members), hidden=int(hidden), seed=int(seed))
        self.register_buffer("atomic_numbers", torch.full((n_atoms,), 6, dtype=torch.long))
        self.register_buffer("energy_shift", torch.zeros(()))
        self.register_buffer("energy_scale", torch.ones(()))
        g = torch.Generator().manual_seed(int(seed))
        dims = [2 * n_atoms, hidden, hidden, 1]
        self.layers = nn.ModuleList([_StackedLinear(g, n_members, a, b) for a, b in zip(dims[:-1], dims[1:])])

    def forward(self, positions: Tensor) -> Tensor:
        """Energies ``[B, M]`` for per-member positions ``[B, M, N, 3]``."""
        h = positions[..., :2].flatten(2)  # [B, M, 2N]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < last:
                h = nn.functional.silu(h)
        return self.energy_scale * h.squeeze(-1) + self.energy_shift
