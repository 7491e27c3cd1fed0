"""Likelihood training of a single model's uncertainty head (mean-variance or evidential).

Two stages, as usual for these methods: the one-member model is first trained on energies and
forces like any committee (:func:`openmm_adv.train.train_committee`), then the head is added
and the whole model is fine-tuned on the negative log-likelihood of the force errors (plus the
energy error, so the energy does not drift). Starting the likelihood from an already fitted mean
avoids its known failure: early on, a large predicted variance explains every error away and the
mean stops learning.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .models.committee import Committee
from .models.heads import HEAD_METHODS, VarianceHeadPotential
from .train import TrainingConfig, check_finite_labels, validation_mask

__all__ = ["HeadTrainingConfig", "evidential_nll", "gaussian_nll", "train_with_head"]


@dataclass
class HeadTrainingConfig:
    """Hyperparameters of the likelihood stage.

    ``evidential_lambda`` weighs the evidence regulariser ``|y - mu| (2 nu + alpha)`` (0.5, as in
    Tan et al. 2023); ``learning_rate`` is lower than a from-scratch rate because the mean is
    already fitted.
    """

    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 1e-3
    energy_weight: float = 1.0
    evidential_lambda: float = 0.5
    patience: int = 30
    seed: int = 0

    def __post_init__(self):
        for name in ("learning_rate", "energy_weight", "evidential_lambda"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite non-negative number, got {value}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")


def gaussian_nll(residual: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """Mean Gaussian negative log-likelihood (without the constant) of residuals ``[..., 3]``
    under per-atom variances ``[...]``."""
    v = variance.unsqueeze(-1)
    return 0.5 * (torch.log(v) + residual.pow(2) / v).mean()


def evidential_nll(residual: torch.Tensor, params: torch.Tensor, lam: float) -> torch.Tensor:
    """Mean normal-inverse-gamma negative log-likelihood of residuals ``[..., 3]`` plus
    ``lam`` times the evidence regulariser (Amini et al. 2020, eqs. 8 and 9)."""
    nu, alpha, beta = (params[..., i].unsqueeze(-1) for i in range(3))
    omega = 2.0 * beta * (1.0 + nu)
    nll = (0.5 * torch.log(math.pi / nu) - alpha * torch.log(omega)
           + (alpha + 0.5) * torch.log(residual.pow(2) * nu + omega)
           + torch.lgamma(alpha) - torch.lgamma(alpha + 0.5))
    return (nll + lam * residual.abs() * (2.0 * nu + alpha)).mean()


def _likelihood(method: str, residual, params, lam: float):
    if method == "evidential":
        return evidential_nll(residual, params, lam)
    return gaussian_nll(residual, params[..., 0])


def train_with_head(committee: Committee, positions, energies, forces, method: str,
                    config: HeadTrainingConfig | None = None, base_config: TrainingConfig | None = None,
                    progress: bool = True) -> Committee:
    """Add a ``method`` head to a trained one-member model and fine-tune on the likelihood.

    Parameters
    ----------
    committee : Committee
        A trained one-member model with learned features (``Committee.painn(z, n_members=1)``
        trained by :func:`~openmm_adv.train.train_committee`). It is not changed.
    positions, energies, forces : array_like
        The training data (nm, kJ/mol, kJ/mol/nm), the same as the first stage's: its
        validation split (``base_config.validation_fraction`` and ``split_seed``) picks the
        state with the lowest validation likelihood.
    method : {"mve", "evidential"}
    config : HeadTrainingConfig, optional
    base_config : TrainingConfig, optional
        The first stage's configuration (its split and force weight).

    Returns
    -------
    Committee
        A new handle with a :class:`~openmm_adv.models.heads.VarianceHeadPotential`; its
        metadata records the method, the likelihood stage and its validation figures.
    """
    if method not in HEAD_METHODS:
        raise ValueError(f"unknown head method {method!r}; use one of {sorted(HEAD_METHODS)}")
    config = config or HeadTrainingConfig()
    base_config = base_config or TrainingConfig()
    check_finite_labels(positions, energies, forces)
    n = len(positions)
    if n < 4 or len(energies) != n or len(forces) != n:
        raise ValueError(f"need matching positions/energies/forces with at least 4 structures, got "
                         f"{len(positions)}, {len(energies)}, {len(forces)}")
    trained = committee.copy()  # the head fine-tunes the shared weights: the caller's model stays as it was
    is_val = validation_mask(n, base_config.validation_fraction, base_config.split_seed)
    val, train = np.flatnonzero(is_val), np.flatnonzero(~is_val)
    f64 = np.asarray(forces, dtype=np.float64)
    s_f = float(max(np.sqrt(np.mean(f64[train] ** 2)), 1e-3))
    potential = VarianceHeadPotential(trained.potential, method, s_f, seed=config.seed)
    dtype = potential.dtype_probe.dtype
    x = torch.as_tensor(np.asarray(positions), dtype=dtype)
    f = torch.as_tensor(f64 / s_f, dtype=dtype)
    members = potential.members
    shift = float(members.energy_shift) if hasattr(members, "energy_shift") else float(np.mean(np.asarray(energies)[train]))
    e_rel = torch.as_tensor(np.asarray(energies, dtype=np.float64) - shift).to(dtype)
    s_e = float(max(np.std(np.asarray(energies, dtype=np.float64)[train]), 1e-3))
    lam = float(config.evidential_lambda)

    def batch_loss(idx, with_graph: bool):
        pred_e, pred_f, params = potential.energies_forces_head(x[idx], with_graph)
        residual = pred_f[:, 0] / s_f - f[idx]
        loss_e = (pred_e[:, 0] - shift - e_rel[idx]).pow(2).mean() / s_e**2
        return config.energy_weight * loss_e + _likelihood(method, residual, params, lam)

    optimiser = torch.optim.Adam(potential.parameters(), lr=config.learning_rate)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    best, best_state, best_epoch, history = np.inf, None, -1, []
    start = time.perf_counter()
    bar = tqdm(range(config.epochs), desc=f"{method} likelihood", disable=not progress, leave=False)
    epoch = -1
    for epoch in bar:
        potential.train()
        perm = rng.permutation(len(train))
        for s in range(0, len(perm), config.batch_size):
            loss = batch_loss(train[perm[s : s + config.batch_size]], True)
            if not torch.isfinite(loss):
                raise ValueError(f"{method} training diverged at epoch {epoch} (non-finite loss); lower the "
                                 "learning_rate or check the data")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        potential.eval()
        val_loss = float(batch_loss(val, False).detach())
        history.append({"epoch": epoch, "val_loss": val_loss})
        bar.set_postfix(val=f"{val_loss:.3f}")
        if np.isfinite(val_loss) and val_loss < best:
            best, best_state, best_epoch = val_loss, copy.deepcopy(potential.state_dict()), epoch
        elif epoch - best_epoch >= config.patience:
            break
    bar.close()
    if best_state is None:
        raise ValueError(f"{method} training produced no finite validation loss; lower the learning_rate")
    potential.load_state_dict(best_state)
    potential.eval()
    metadata = dict(trained.metadata)
    metadata.update(architecture=f"{trained.metadata.get('architecture', 'custom')}+{method}",
                    uncertainty={"method": method, "force_scale": s_f, "best_epoch": best_epoch,
                                 "epochs_run": epoch + 1, "val_loss": best,
                                 "wall_seconds": time.perf_counter() - start,
                                 "config": {k: getattr(config, k) for k in config.__dataclass_fields__}})
    return Committee(potential, metadata)
