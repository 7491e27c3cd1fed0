"""Uncertainty of one model from a Gaussian mixture fitted on its learned per-atom features.

Tan, Dietschreit & Gomez-Bombarelli (J. Chem. Phys. 162, 034114, 2025): fit a Gaussian
mixture (full covariances) to the per-atom features of the training structures; a geometry's
score is the negative log-likelihood of its atoms' features under the mixture, averaged over
atoms. Features unlike any seen in training have a low likelihood, so the score grows away from
the data without a second model. Two calibrations turn it into a usable number:

- the shift: the lowest score on a held-out calibration set is subtracted (``gmm_nll``, the CV
  of the paper, in nats; about 0 for typical in-domain geometries);
- the conformal scale: ``c`` such that the model's per-structure force RMSE is at most
  ``c * softplus(gmm_nll)`` on a fraction ``1 - alpha`` of the calibration set (``gmm_error``,
  kJ/mol/nm). ``force_variance = gmm_error ** 2`` gives every consumer written for committees
  (attack objective, selection windows, reporter) a value in the committee's units. softplus
  keeps the value positive and smooth for geometries scoring below the calibration minimum,
  where a plain shift would be negative and its logarithm (the attack's objective) undefined.

The mixture is fitted with scikit-learn on standardised features and evaluated in TorchScript,
so it runs inside OpenMM like a committee.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .feature_potential import FeaturePotential, check_feature_model

__all__ = ["GaussianMixtureDensity", "GaussianMixturePotential", "conformal_scale", "fit_gaussian_mixture"]

DEFAULT_COMPONENTS = 15
DEFAULT_ALPHA = 0.05


class GaussianMixtureDensity(nn.Module):
    """Negative log-density of a full-covariance Gaussian mixture, ``[..., F] -> [...]``.

    Parameters (all fitted on standardised features ``z = (x - feature_mean) / feature_scale``)
    ----------
    means : ``[K, F]``
    precision_cholesky : ``[K, F, F]``
        Cholesky factors ``P_k`` of the precisions (``Sigma_k^-1 = P_k P_k^T``), as scikit-learn
        stores them.
    weights : ``[K]``
    feature_mean, feature_scale : ``[F]``
    """

    def __init__(self, means, precision_cholesky, weights, feature_mean, feature_scale, dtype=torch.float32):
        super().__init__()
        means = torch.as_tensor(np.asarray(means), dtype=torch.float64)
        chol = torch.as_tensor(np.asarray(precision_cholesky), dtype=torch.float64)
        weights = torch.as_tensor(np.asarray(weights), dtype=torch.float64)
        k, f = means.shape
        if chol.shape != (k, f, f) or weights.shape != (k,):
            raise ValueError(f"mixture parameters do not fit together: means {tuple(means.shape)}, precision "
                             f"Cholesky factors {tuple(chol.shape)}, weights {tuple(weights.shape)}")
        log_det = torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
        # log of each component's weight and normalisation: the constant part of log p_k
        log_norm = torch.log(weights) - 0.5 * f * math.log(2.0 * math.pi) + log_det
        self.register_buffer("precision_cholesky", chol.to(dtype))
        # mu_k P_k, subtracted after z P_k: one batched product per call
        self.register_buffer("shifted_means", torch.einsum("kf,kfg->kg", means, chol).to(dtype))
        self.register_buffer("log_norm", log_norm.to(dtype))
        self.register_buffer("feature_mean", torch.as_tensor(np.asarray(feature_mean), dtype=dtype))
        self.register_buffer("feature_scale", torch.as_tensor(np.asarray(feature_scale), dtype=dtype))
        self.n_components = int(k)
        self.n_features = int(f)

    def forward(self, features: Tensor) -> Tensor:
        z = (features - self.feature_mean.to(features.dtype)) / self.feature_scale.to(features.dtype)
        y = torch.einsum("...f,kfg->...kg", z, self.precision_cholesky.to(features.dtype)) - self.shifted_means.to(features.dtype)
        log_p = self.log_norm.to(features.dtype) - 0.5 * y.pow(2).sum(-1)
        return -torch.logsumexp(log_p, dim=-1)


class GaussianMixturePotential(FeaturePotential):
    """A one-member potential whose uncertainty is the Gaussian-mixture score of its features.

    Energies and forces are the base model's. Metrics: ``gmm_nll`` (nats), ``gmm_error``
    (kJ/mol/nm) and ``force_variance`` (``gmm_error ** 2``); see the module docstring.
    """

    def __init__(self, base: nn.Module, density: GaussianMixtureDensity, nll_shift: float, scale: float):
        super().__init__(base)
        self.density = density
        self.register_buffer("nll_shift", torch.tensor(float(nll_shift), dtype=torch.float64))
        self.register_buffer("conformal", torch.tensor(float(scale), dtype=torch.float64))

    @torch.jit.export
    def gmm_nll(self, features: Tensor) -> Tensor:
        """Mean over atoms of the per-atom negative log-likelihood, minus the calibration minimum."""
        return self.density(features).mean(dim=-1) - self.nll_shift.to(features.dtype)

    @torch.jit.export
    def energies_forces_uncertainty(self, positions: Tensor, metric: str, create_graph: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
        features, energies, forces = self.features_energies_forces(positions, create_graph)
        score = self.gmm_nll(features)
        if metric == "gmm_nll":
            u = score
        elif metric == "gmm_error":
            u = self.conformal.to(score.dtype) * nn.functional.softplus(score)
        elif metric == "force_variance":
            u = (self.conformal.to(score.dtype) * nn.functional.softplus(score)).pow(2)
        else:
            raise ValueError("the Gaussian-mixture uncertainty has no metric '" + metric
                             + "'; use force_variance, gmm_error or gmm_nll")
        if not create_graph and not positions.requires_grad:
            return energies.detach(), forces.detach(), u.detach()
        return energies, forces, u


def _features(potential, positions: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Per-atom features ``[S, N, F]`` of the one-member model on ``positions`` (no gradient)."""
    dtype = potential.dtype_probe.dtype
    out = []
    with torch.no_grad():
        for start in range(0, len(positions), batch_size):
            x = torch.as_tensor(np.asarray(positions[start : start + batch_size]), dtype=dtype)
            out.append(potential.members.atom_features(x.unsqueeze(1))[:, 0].double().numpy())
    return np.concatenate(out)


def conformal_scale(errors, scores, alpha: float = DEFAULT_ALPHA) -> float:
    """The smallest ``c`` with ``errors <= c * softplus(scores)`` on at least ``1 - alpha`` of the set.

    Split-conformal: the ``k``-th smallest ratio with ``k = ceil((n + 1)(1 - alpha))`` (the
    largest when ``k > n``), so the bound holds with probability ``>= 1 - alpha`` for a new
    structure exchangeable with the set.
    """
    errors, scores = np.asarray(errors, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if errors.shape != scores.shape or errors.size == 0:
        raise ValueError(f"need one error per calibration score, got {errors.shape} and {scores.shape}")
    ratios = errors / np.logaddexp(0.0, scores)  # softplus, stable for large scores
    k = min(len(ratios), int(np.ceil((len(ratios) + 1) * (1.0 - alpha))))
    return float(np.sort(ratios)[k - 1])


def fit_gaussian_mixture(committee, train_positions, calibration_positions, calibration_forces,
                         n_components: int = DEFAULT_COMPONENTS, alpha: float = DEFAULT_ALPHA,
                         reg_covar: float = 1e-3, seed: int = 0):
    """Fit a Gaussian mixture on a trained single model's features; return a new handle.

    Parameters
    ----------
    committee : Committee
        A trained one-member model with learned features (``Committee.painn(z, n_members=1)``
        after :func:`~openmm_adv.train.train_committee`).
    train_positions : array_like
        ``[S, N, 3]`` nm: the structures the model was trained on (their atoms' features are
        what the mixture learns).
    calibration_positions, calibration_forces : array_like
        Held-out structures and their reference forces (kJ/mol/nm): they set the shift (lowest
        score) and the conformal scale (the model's own force errors on them).
    n_components : int
        Mixture components (15 in the paper); at most the number of training atoms.
    alpha : float
        Conformal miscoverage: ``gmm_error`` bounds the force RMSE on ``1 - alpha`` of new
        in-distribution structures.
    reg_covar : float
        Added to every covariance's diagonal, in units of the standardised features' variance;
        100 structures of 22 atoms give about 2000 feature vectors for 15 full covariances.
    seed : int

    Returns
    -------
    Committee
        Same weights, with a :class:`GaussianMixturePotential`; its metadata records the
        method, the mixture's settings, the shift and the scale.
    """
    from sklearn.mixture import GaussianMixture

    from .committee import Committee

    check_feature_model(committee.potential)
    train = np.asarray(train_positions, dtype=np.float64)
    calib = np.asarray(calibration_positions, dtype=np.float64)
    ref_f = np.asarray(calibration_forces, dtype=np.float64)
    if len(calib) < 2 or ref_f.shape != calib.shape:
        raise ValueError(f"the calibration set needs at least 2 structures with forces of its positions' shape, got "
                         f"positions {calib.shape} and forces {ref_f.shape}")
    feats = _features(committee.potential, train)
    flat = feats.reshape(-1, feats.shape[-1])
    if not 1 <= n_components <= len(flat):
        raise ValueError(f"n_components must be between 1 and the number of training atoms ({len(flat)}), got {n_components}")
    mean = flat.mean(0)
    scale = flat.std(0)
    scale = np.where(scale > 1e-8 * max(float(scale.max()), 1e-30), scale, 1.0)  # a dead channel: keep it unscaled
    mixture = GaussianMixture(n_components=int(n_components), covariance_type="full", reg_covar=float(reg_covar),
                              random_state=int(seed), n_init=1, max_iter=500)
    mixture.fit((flat - mean) / scale)
    dtype = committee.potential.dtype_probe.dtype
    density = GaussianMixtureDensity(mixture.means_, mixture.precisions_cholesky_, mixture.weights_, mean, scale, dtype)
    potential = GaussianMixturePotential(committee.potential, density, 0.0, 1.0)
    # calibration: the lowest score sets the shift, the model's own errors the scale
    with torch.no_grad():
        score = density(torch.as_tensor(_features(committee.potential, calib), dtype=dtype)).mean(-1).double().numpy()
    shift = float(score.min())
    e, f = committee.energies_and_forces(calib)
    errors = np.sqrt(np.mean((f[:, 0] - ref_f) ** 2, axis=(1, 2)))
    c = conformal_scale(errors, score - shift, alpha)
    potential.nll_shift.fill_(shift)
    potential.conformal.fill_(c)
    metadata = dict(committee.metadata)
    metadata.update(architecture=f"{committee.metadata.get('architecture', 'custom')}+GMM",
                    uncertainty={"method": "gmm", "n_components": int(n_components), "alpha": float(alpha),
                                 "reg_covar": float(reg_covar), "seed": int(seed), "nll_shift": shift,
                                 "conformal_scale": c, "n_features": int(feats.shape[-1]),
                                 "n_calibration": int(len(calib)), "converged": bool(mixture.converged_)})
    return Committee(potential, metadata)
