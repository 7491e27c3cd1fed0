"""A committee assembled from M independent user-supplied energy models."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ModelEnsemble"]


class ModelEnsemble(nn.Module):
    """Wrap M independent energy models so they look like one member-stacked model.

    Each member maps positions ``[B, N, 3]`` in nm to energies ``[B]`` in kJ/mol (a model that
    returns ``[B, 1]`` is accepted too). Members are TorchScript modules, or plain modules that
    can be scripted; anything else can still run through the ``python`` force backend.

    Parameters
    ----------
    members : sequence of torch.nn.Module
    atomic_numbers : sequence of int
    """

    def __init__(self, members, atomic_numbers):
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"a committee needs at least two members, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.n_members = len(members)
        self.n_atoms = len(list(atomic_numbers))
        self.hyperparameters = dict(n_members=self.n_members, member_types=[type(m).__name__ for m in members])
        self.register_buffer("atomic_numbers", torch.as_tensor(list(atomic_numbers), dtype=torch.long))
        # energy = scale * member energy + shift: identity for ready-made models; the trainer
        # sets them from the data when it fits the members (as for the stacked models).
        self.register_buffer("energy_shift", torch.zeros(()))
        self.register_buffer("energy_scale", torch.ones(()))

    def forward(self, positions: Tensor) -> Tensor:
        """Energies ``[B, M]`` for per-member positions ``[B, M, N, 3]``."""
        energies: list[Tensor] = []
        for m, member in enumerate(self.members):
            energies.append(member(positions[:, m]).reshape(positions.shape[0]))
        return self.energy_scale * torch.stack(energies, dim=1) + self.energy_shift
