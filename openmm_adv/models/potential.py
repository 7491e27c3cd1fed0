"""The TorchScript-facing committee: energies and per-member forces from positions ``[B, N, 3]``."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .prior import BondedPrior
from .uncertainty import uncertainty

__all__ = ["CommitteePotential"]


class CommitteePotential(nn.Module):
    """Wrap a member-stacked energy model (``[B, M, N, 3] -> [B, M]``).

    It checks the input shape, casts positions to the model's dtype (OpenMM's Reference and
    CPU platforms hand over float64) and computes every member's forces with ONE backward pass:
    each member gets its own copy of the positions and the sum of all energies is
    differentiated.

    ``prior`` is a :class:`~openmm_adv.models.prior.BondedPrior` shared by all members (zero
    until the trainer fits it); each member's energy is its network's plus the prior's.
    """

    def __init__(self, members: nn.Module):
        super().__init__()
        self.members = members
        self.n_members = int(members.n_members)
        self.n_atoms = int(members.n_atoms)
        self.register_buffer("atomic_numbers", members.atomic_numbers.clone())
        dtype = next(members.parameters()).dtype if any(True for _ in members.parameters()) else torch.float32
        self.register_buffer("dtype_probe", torch.zeros(0, dtype=dtype))
        self.prior = BondedPrior(dtype)

    def _checked(self, positions: Tensor) -> Tensor:
        if positions.dim() != 3 or positions.shape[2] != 3:
            raise ValueError("committee positions must have shape [B, N, 3], got " + str(positions.shape))
        if positions.shape[1] != self.n_atoms:
            raise ValueError(
                "positions have " + str(positions.shape[1]) + " atoms but the committee was built for "
                + str(self.n_atoms)
            )
        return positions.to(self.dtype_probe.dtype)

    def forward(self, positions: Tensor) -> Tensor:
        """Per-member energies ``[B, M]`` (kJ/mol) for positions ``[B, N, 3]`` (nm)."""
        pos = self._checked(positions)
        return self.members(pos.unsqueeze(1).expand(-1, self.n_members, -1, -1)) + self.prior(pos).unsqueeze(1)

    @torch.jit.export
    def energies_and_forces(self, positions: Tensor, create_graph: bool = False) -> Tuple[Tensor, Tensor]:
        """Per-member energies ``[B, M]`` and forces ``[B, M, N, 3]`` (kJ/mol/nm).

        With ``create_graph=True`` the forces stay differentiable with respect to the positions
        (what uncertainty-gradient attacks and force training need).
        """
        pos = self._checked(positions)
        if not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        per_member = pos.unsqueeze(1).repeat(1, self.n_members, 1, 1)
        energies = self.members(per_member) + self.prior(per_member)
        grads = torch.autograd.grad(
            [energies.sum()], [per_member], create_graph=create_graph, retain_graph=create_graph
        )
        gradient = grads[0]
        assert gradient is not None
        if not create_graph:
            return energies.detach(), -gradient.detach()
        return energies, -gradient

    @torch.jit.export
    def energies_forces_uncertainty(self, positions: Tensor, metric: str, create_graph: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
        """Per-member energies ``[B, M]``, forces ``[B, M, N, 3]`` and the committee's
        uncertainty ``metric`` ``[B]`` (see :mod:`openmm_adv.models.uncertainty`).

        The interface every potential of the project shares (single-model methods override it).
        """
        energies, forces = self.energies_and_forces(positions, create_graph)
        return energies, forces, uncertainty(energies, forces, metric)
