"""Committee NN potentials, single-model uncertainties, uncertainty metrics and TorchScript persistence."""

from .committee import Committee, CommitteeError, dataset_hash
from .domain import Domain, DomainCheck
from .ensemble import ModelEnsemble
from .gmm import GaussianMixturePotential, fit_gaussian_mixture
from .heads import VarianceHeadPotential
from .mace import MACEMember, mace_committee, train_mace_committee
from .mlp import StackedMLP
from .painn import StackedPaiNN
from .potential import CommitteePotential
from .prior import BondedPrior, fit_bonded_prior
from .schnet import StackedSchNet
from .uncertainty import METRICS, energy_std, force_variance, max_force_deviation, uncertainty

__all__ = [
    "METRICS",
    "BondedPrior",
    "Committee",
    "CommitteeError",
    "CommitteePotential",
    "Domain",
    "DomainCheck",
    "GaussianMixturePotential",
    "MACEMember",
    "ModelEnsemble",
    "StackedMLP",
    "StackedPaiNN",
    "StackedSchNet",
    "VarianceHeadPotential",
    "dataset_hash",
    "energy_std",
    "fit_bonded_prior",
    "fit_gaussian_mixture",
    "force_variance",
    "mace_committee",
    "max_force_deviation",
    "train_mace_committee",
    "uncertainty",
]
