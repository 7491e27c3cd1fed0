"""A committee assembled from M independent user-supplied energy models."""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn

__all__ = ["ModelEnsemble", "ensemble_members", "member_class"]


class ModelEnsemble(nn.Module):
    """Wrap M independent energy models so they look like one member-stacked model.

    Each member maps positions ``[B, N, 3]`` in nm to energies ``[B]`` in kJ/mol (a model that
    returns ``[B, 1]`` is accepted too; any other shape is an error that names the member).
    Members are TorchScript modules, or plain modules that can be scripted; anything else can
    still run through the ``python`` force backend.

    The ensemble owns the energy normalisation: energy = ``energy_scale`` * member output +
    ``energy_shift``. Both are the identity (1 and 0) for ready-made models; when
    :func:`~openmm_adv.train.train_committee` fits the members it sets them from the data, so
    your own model learns a target of order one and needs no buffers of its own.

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
        self.hyperparameters = dict(n_members=self.n_members, member_types=[member_class(m) for m in members])
        self.register_buffer("atomic_numbers", torch.as_tensor(list(atomic_numbers), dtype=torch.long))
        self.register_buffer("energy_shift", torch.zeros(()))
        self.register_buffer("energy_scale", torch.ones(()))

    def forward(self, positions: Tensor) -> Tensor:
        """Energies ``[B, M]`` for per-member positions ``[B, M, N, 3]``."""
        n_batch = positions.shape[0]
        energies: List[Tensor] = []
        for m, member in enumerate(self.members):
            energy = member(positions[:, m])
            if energy.dim() == 2 and energy.shape[1] == 1:
                energy = energy.squeeze(1)
            # A reshape would silently accept per-atom energies for one geometry, or a batch sum.
            if energy.dim() != 1 or energy.shape[0] != n_batch:
                raise ValueError(
                    "committee member " + str(m) + " returned energies of shape " + str(list(energy.shape))
                    + " for " + str(n_batch) + " geometries; a member must return one energy per geometry, "
                    + "shape [B] in kJ/mol (sum per-atom energies over the atoms)"
                )
            energies.append(energy)
        return self.energy_scale * torch.stack(energies, dim=1) + self.energy_shift


def member_class(module: nn.Module) -> str:
    """The class name of a member, the same for an eager module and its TorchScript version."""
    if isinstance(module, torch.jit.ScriptModule):
        return str(getattr(module, "original_name", type(module).__name__))
    return type(module).__name__


def ensemble_members(potential: nn.Module) -> list | None:
    """The member modules of a committee potential built from independent models (eager or
    TorchScript, in order; a module given twice appears twice), or None for stacked members."""
    members = potential.members
    if member_class(members) != "ModelEnsemble":
        return None
    if isinstance(members.members, torch.jit.ScriptModule):
        # A scripted ModuleList has no len() or indexing in Python; its children are named 0..M-1.
        return [getattr(members.members, str(k)) for k in range(int(members.n_members))]
    return list(members.members)
