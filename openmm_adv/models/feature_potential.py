"""A single model whose uncertainty is read from its own learned per-atom features.

The base of the single-model uncertainty methods (:mod:`openmm_adv.models.gmm`,
:mod:`openmm_adv.models.heads`): one trained energy model (a member-stacked model with one
member, e.g. ``Committee.painn(z, n_members=1)``) whose members expose ``atom_features`` and
``energies_from_features`` (:class:`~openmm_adv.models.painn.StackedPaiNN` does). Features,
energy and forces come from one forward and one backward pass, and the uncertainty computed
from the features stays differentiable with respect to the positions, which is what the
attack's force and a metadynamics CV need.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

from .potential import CommitteePotential

__all__ = ["FeaturePotential", "check_feature_model"]


def check_feature_model(potential: nn.Module) -> None:
    """Raise ``ValueError`` unless ``potential`` is a one-member model with learned atom features."""
    members = getattr(potential, "members", None)
    if members is None or not isinstance(potential, (CommitteePotential, torch.jit.ScriptModule)):
        raise ValueError("single-model uncertainties need an openmm-adv potential (Committee.painn(z, n_members=1), "
                         f"trained); got a {type(potential).__name__}")
    if int(potential.n_members) != 1:
        raise ValueError(f"single-model uncertainties read one model's features, but this model has "
                         f"{int(potential.n_members)} members; train Committee.painn(z, n_members=1) (or keep the "
                         "committee and its own uncertainty)")
    if not (hasattr(members, "atom_features") and hasattr(members, "energies_from_features")):
        raise ValueError("the model has no learned per-atom features to read (atom_features); use the equivariant "
                         "StackedPaiNN (Committee.painn), or a file saved by openmm-adv 0.1 after single-model "
                         "uncertainties were added")


class FeaturePotential(CommitteePotential):
    """A one-member potential that shares the members and the prior of ``base``.

    Subclasses override ``energies_forces_uncertainty`` with a metric of the features.
    """

    def __init__(self, base: nn.Module):
        check_feature_model(base)
        super().__init__(base.members)
        self.prior = base.prior

    @torch.jit.export
    def features_energies_forces(self, positions: Tensor, create_graph: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
        """Atom features ``[B, N, F]``, energies ``[B, 1]`` and forces ``[B, 1, N, 3]``.

        The features keep their graph to the positions whenever those require a gradient (a
        ``TorchForce`` differentiates what is computed from them), whatever ``create_graph``
        says about the forces.
        """
        pos = self._checked(positions)
        if not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        per_member = pos.unsqueeze(1).repeat(1, self.n_members, 1, 1)
        features = self.members.atom_features(per_member)
        energies = self.members.energies_from_features(features) + self.prior(per_member)
        # The graph through the features is kept: the uncertainty is differentiated after this.
        grads = torch.autograd.grad([energies.sum()], [per_member], create_graph=create_graph, retain_graph=True)
        gradient = grads[0]
        assert gradient is not None
        return features[:, 0], energies, -gradient
