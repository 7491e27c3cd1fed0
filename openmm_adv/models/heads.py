"""Single models that predict their own force uncertainty: mean-variance and evidential heads.

Both read the model's learned per-atom features with a small extra network (the head) and are
trained with a likelihood of the reference forces (:func:`openmm_adv.train_heads.train_with_head`),
as compared with ensembles by Tan et al. (npj Comput. Mater. 2023):

- **mean-variance estimation** (``"mve"``): one variance ``sigma_i^2`` per atom, shared by its
  three force components; Gaussian negative log-likelihood of the force errors.
- **deep evidential regression** (``"evidential"``, Amini et al. 2020): a normal-inverse-gamma
  prior per atom, parameters ``nu > 0, alpha > 1, beta > 0`` around the predicted force; its
  epistemic variance ``beta / (nu (alpha - 1))`` is ``force_variance``, its aleatoric one
  ``beta / (alpha - 1)`` is ``aleatoric_variance``.

The predicted force is always minus the gradient of the energy (conservative), so only the
spread comes from the head. Variances are predicted in units of the training forces' RMS
squared (``force_scale``) and reported in (kJ/mol/nm)^2, averaged over atoms.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

from .feature_potential import FeaturePotential

__all__ = ["HEAD_METHODS", "VarianceHeadPotential"]

#: method -> number of per-atom outputs of the head
HEAD_METHODS = {"mve": 1, "evidential": 3}


class VarianceHeadPotential(FeaturePotential):
    """A one-member potential with a per-atom uncertainty head on its features.

    Parameters
    ----------
    base : CommitteePotential
        The trained one-member model (its members and prior are shared, not copied).
    method : {"mve", "evidential"}
    force_scale : float
        RMS of the training forces (kJ/mol/nm): the head's unit of force.
    hidden : int, optional
        Width of the head's hidden layer (default: the feature width).
    seed : int
    """

    def __init__(self, base: nn.Module, method: str, force_scale: float, hidden: int | None = None, seed: int = 0):
        super().__init__(base)
        if method not in HEAD_METHODS:
            raise ValueError(f"unknown head method {method!r}; use one of {sorted(HEAD_METHODS)}")
        if not force_scale > 0:
            raise ValueError(f"force_scale must be a positive force in kJ/mol/nm, got {force_scale}")
        width = int(self.members.embedding.shape[-1])
        hidden = int(hidden or width)
        dtype = self.dtype_probe.dtype
        generator = torch.Generator().manual_seed(int(seed))
        self.head_w1 = nn.Parameter((torch.randn(width, hidden, generator=generator) / width**0.5).to(dtype))
        self.head_b1 = nn.Parameter(torch.zeros(hidden, dtype=dtype))
        # Small last layer: the head starts near a constant, so the likelihood training begins
        # from "every atom equally uncertain" instead of from noise.
        self.head_w2 = nn.Parameter((0.01 * torch.randn(hidden, HEAD_METHODS[method], generator=generator) / hidden**0.5).to(dtype))
        self.head_b2 = nn.Parameter(torch.zeros(HEAD_METHODS[method], dtype=dtype))
        self.evidential = method == "evidential"
        self.method = method
        self.register_buffer("force_scale", torch.tensor(float(force_scale), dtype=torch.float64))

    @torch.jit.export
    def head(self, features: Tensor) -> Tensor:
        """Per-atom parameters ``[B, N, k]`` in the head's units: MVE ``(sigma^2,)``;
        evidential ``(nu, alpha, beta)``."""
        hidden = nn.functional.silu(torch.matmul(features, self.head_w1.to(features.dtype)) + self.head_b1.to(features.dtype))
        raw = torch.matmul(hidden, self.head_w2.to(features.dtype)) + self.head_b2.to(features.dtype)
        positive = nn.functional.softplus(raw) + 1e-6  # keeps the likelihood finite on exact fits
        if self.evidential:
            # alpha > 1 keeps both variances finite
            return torch.stack([positive[..., 0], positive[..., 1] + 1.0, positive[..., 2]], dim=-1)
        return positive

    @torch.jit.export
    def energies_forces_head(self, positions: Tensor, create_graph: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
        """Energies ``[B, 1]``, forces ``[B, 1, N, 3]`` and the head's parameters ``[B, N, k]``."""
        features, energies, forces = self.features_energies_forces(positions, create_graph)
        return energies, forces, self.head(features)

    @torch.jit.export
    def energies_forces_uncertainty(self, positions: Tensor, metric: str, create_graph: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
        energies, forces, params = self.energies_forces_head(positions, create_graph)
        unit = self.force_scale.to(params.dtype).pow(2)
        if self.evidential:
            nu, alpha, beta = params[..., 0], params[..., 1], params[..., 2]
            if metric == "force_variance":
                per_atom = beta / (nu * (alpha - 1.0))
            elif metric == "aleatoric_variance":
                per_atom = beta / (alpha - 1.0)
            else:
                raise ValueError("the evidential uncertainty has no metric '" + metric
                                 + "'; use force_variance or aleatoric_variance")
        else:
            if metric != "force_variance":
                raise ValueError("the mean-variance uncertainty has no metric '" + metric + "'; use force_variance")
            per_atom = params[..., 0]
        u = unit * per_atom.mean(dim=-1)
        if not create_graph and not positions.requires_grad:
            return energies.detach(), forces.detach(), u.detach()
        return energies, forces, u
