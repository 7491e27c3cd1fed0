"""Committee NN potentials, uncertainty metrics and TorchScript persistence."""

from .committee import Committee, CommitteeError, dataset_hash
from .ensemble import ModelEnsemble
from .mlp import StackedMLP
from .potential import CommitteePotential
from .schnet import StackedSchNet
from .uncertainty import METRICS, energy_std, force_variance, max_force_deviation, uncertainty

__all__ = [
    "METRICS",
    "Committee",
    "CommitteeError",
    "CommitteePotential",
    "ModelEnsemble",
    "StackedMLP",
    "StackedSchNet",
    "dataset_hash",
    "energy_std",
    "force_variance",
    "max_force_deviation",
    "uncertainty",
]
