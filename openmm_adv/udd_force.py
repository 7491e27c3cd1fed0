"""The uncertainty-driven dynamics (UDD) force (Kulichenko et al., Nat. Comput. Sci. 3, 230, 2023).

UDD adds to the committee-mean energy a bias that *lowers* the energy where the committee
disagrees, so MD drifts towards uncertain regions, but saturates so it cannot pull the
molecule arbitrarily far::

    E_b = A [exp(-sigma^2 / (N_atoms B^2)) - 1]        (in [-A, 0])

with ``sigma^2`` the variance of the members' energies (population variance, the square of the
``energy_std`` metric), ``A`` the depth of the bias (kJ/mol) and ``B`` a per-atom energy scale
(kJ/mol per atom^0.5): the bias saturates once ``sigma`` exceeds about ``sqrt(N_atoms) B``.
Its force is ``-dE_b/dx = -(A / (N B^2)) exp(-sigma^2/(N B^2)) d(sigma^2)/dx``: only first
derivatives of the members, as cheap as plain committee MD.

``n_members_in_denominator=True`` divides ``sigma^2`` by ``M N_atoms B^2`` instead, as apax's
UDD implementation does (equivalent to ``B -> B sqrt(M)``).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import openmm
import torch
from torch import Tensor, nn

from .forces import _build, _Replicas
from .models.committee import Committee

__all__ = ["UDDModule", "udd_bias_energy", "udd_bias_force"]


class UDDModule(_Replicas):
    """Energy = sum over replicas of (committee mean + UDD bias), or of the bias alone."""

    def __init__(self, potential: nn.Module, n_replicas: int, A: float, B: float, include_mean: bool,
                 n_members_in_denominator: bool):
        super().__init__(potential, n_replicas)
        if not A >= 0 or not B > 0:
            raise ValueError(f"UDD needs A >= 0 and B > 0, got A={A}, B={B}")
        self.A = float(A)
        scale = float(self.n_atoms) * float(B) ** 2
        if n_members_in_denominator:
            scale *= float(potential.n_members)
        self.inverse_scale = 1.0 / scale
        self.include_mean = bool(include_mean)

    @torch.jit.export
    def replica_values(self, replicas: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Per replica: committee-mean energy, energy variance and bias (each ``[R]``)."""
        energies = self.potential(replicas)
        variance = energies.var(dim=1, unbiased=False)
        bias = self.A * (torch.exp(-variance * self.inverse_scale) - 1.0)
        return energies.mean(dim=1), variance, bias

    def forward(self, positions: Tensor) -> Tensor:
        mean, variance, bias = self.replica_values(self._split(positions))
        if self.include_mean:
            return (mean + bias).sum()
        return bias.sum()


def udd_bias_energy(member_energies, A: float, B: float, n_atoms: int, n_members_in_denominator: bool = False) -> np.ndarray:
    """The UDD bias ``[B]`` (kJ/mol) from member energies ``[B, M]`` (e.g. ``Committee.energies``)."""
    e = np.asarray(member_energies, dtype=np.float64)
    scale = n_atoms * float(B) ** 2 * (e.shape[1] if n_members_in_denominator else 1)
    return float(A) * (np.exp(-e.var(axis=1) / scale) - 1.0)


def udd_bias_force(
    committee: Committee,
    A: float,
    B: float,
    n_replicas: int = 1,
    include_mean: bool = True,
    n_members_in_denominator: bool = False,
    force_group: int = 0,
    backend: str = "torch",
    use_cuda_graphs: bool = False,
) -> openmm.Force:
    """An OpenMM force for uncertainty-driven dynamics.

    Parameters
    ----------
    committee : Committee
    A : float
        Depth of the bias in kJ/mol (the bias lies in ``[-A, 0]``).
    B : float
        Energy scale in kJ/mol per atom^0.5: ``E_b = A [exp(-sigma^2 / (N_atoms B^2)) - 1]``.
    n_replicas : int
        Non-interacting copies of the molecule in the System.
    include_mean : bool
        True (default): the energy is the committee mean plus the bias, the whole UDD potential
        in one force and one model call. False: the bias alone (add a
        :func:`~openmm_adv.forces.mean_energy_force` yourself).
    n_members_in_denominator : bool
        Divide ``sigma^2`` by ``M N_atoms B^2`` (apax's convention) instead of ``N_atoms B^2``.
    force_group : int
    backend : {"torch", "python"}
    use_cuda_graphs : bool
    """
    module = UDDModule(committee.potential, n_replicas, A, B, include_mean, n_members_in_denominator)
    return _build(module, committee, backend, force_group, use_cuda_graphs)
