"""Energy + force training of a member-stacked committee."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .models.committee import Committee, dataset_hash

__all__ = ["CommitteeTrainer", "TrainingConfig", "TrainingReport", "train_committee"]


@dataclass
class TrainingConfig:
    """Hyperparameters of :func:`train_committee`.

    The loss of member m is ``mse_E / s_E^2 + force_weight * mse_F / s_F^2`` with ``s_E`` the
    standard deviation of the training energies and ``s_F`` the RMS training force, so the
    weight means the same thing for any molecule and unit system.
    """

    epochs: int = 200
    batch_size: int = 32
    learning_rate: float = 3e-3
    force_weight: float = 10.0
    validation_fraction: float = 0.1
    patience: int = 30
    bootstrap: bool = True
    seed: int = 0
    min_learning_rate: float = 1e-5
    # False: train every epoch and keep the last state. For tiny datasets, whose 2-3 validation
    # structures say little: near a minimum an untrained model (zero forces) can score best.
    keep_best: bool = True
    # Epochs of fine-tuning when a loop starts a generation from the previous committee's
    # weights (CommitteeTrainer.train(start_from=...)); None: every generation from scratch.
    warm_start_epochs: Optional[int] = None
    # Its learning rate (None: learning_rate). Lower than a from-scratch rate, or the first
    # steps on the new data throw the model out of the minimum it was started in.
    warm_start_learning_rate: Optional[float] = None


@dataclass
class TrainingReport:
    """Per-member validation errors (kJ/mol, kJ/mol/nm) and the history of the mean loss."""

    energy_mae: list
    force_mae: list
    energy_rmse: list
    force_rmse: list
    best_epoch: int
    epochs_run: int
    wall_seconds: float
    history: list = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "val_energy_mae_kj_mol": float(np.mean(self.energy_mae)),
            "val_force_mae_kj_mol_nm": float(np.mean(self.force_mae)),
            "val_energy_rmse_kj_mol": float(np.mean(self.energy_rmse)),
            "val_force_rmse_kj_mol_nm": float(np.mean(self.force_rmse)),
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "wall_seconds": self.wall_seconds,
        }


def _errors(potential, positions, energies, forces, batch_size=128):
    e_err, f_err = [], []
    for s in range(0, len(positions), batch_size):
        e, f = potential.energies_and_forces(positions[s : s + batch_size], False)
        e_err.append(e - energies[s : s + batch_size, None])
        f_err.append(f - forces[s : s + batch_size, None])
    e_err, f_err = torch.cat(e_err), torch.cat(f_err)  # [V, M], [V, M, N, 3]
    return (
        e_err.abs().mean(0).tolist(),
        f_err.abs().mean(dim=(0, 2, 3)).tolist(),
        e_err.pow(2).mean(0).sqrt().tolist(),
        f_err.pow(2).mean(dim=(0, 2, 3)).sqrt().tolist(),
    )


def train_committee(committee: Committee, positions, energies, forces, config: TrainingConfig | None = None,
                    progress: bool = True, keep_energy_scale: bool = False) -> TrainingReport:
    """Fit every member of an (eager) committee to energies and forces, in place.

    Members see different bootstrap resamples of the training split (``config.bootstrap``) and
    start from different weights, which is what makes their disagreement an uncertainty.
    The energy shift/scale of the model are set from the data (``keep_energy_scale=True``
    keeps those of a fine-tuned model, whose weights were fitted to them); the best state on
    the validation split is kept (early stopping). The committee's metadata gets the training
    energies (for the attack's normalisation), the data hash and the validation metrics.
    """
    config = config or TrainingConfig()
    if committee.is_scripted:
        raise ValueError("train the eager committee (Committee.schnet / Committee.mlp), then save it")
    potential = committee.potential
    members = potential.members
    dtype = potential.dtype_probe.dtype
    x = torch.as_tensor(np.asarray(positions), dtype=dtype)
    e = torch.as_tensor(np.asarray(energies), dtype=dtype)
    f = torch.as_tensor(np.asarray(forces), dtype=dtype)
    n = len(x)
    if n < 4 or len(e) != n or len(f) != n:
        raise ValueError(f"need matching positions/energies/forces with at least 4 structures, got {len(x)}, {len(e)}, {len(f)}")
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    order = rng.permutation(n)
    n_val = max(1, int(round(config.validation_fraction * n)))
    val, train = order[:n_val], order[n_val:]
    m = committee.n_members
    # Bootstrap: member k weights each training structure by how often it was drawn.
    if config.bootstrap:
        weights = np.stack([np.bincount(rng.integers(0, len(train), len(train)), minlength=len(train)) for _ in range(m)])
    else:
        weights = np.ones((m, len(train)))
    weights = torch.as_tensor(weights, dtype=dtype)

    s_e = float(e[train].std().clamp_min(1e-3))
    s_f = float(f[train].pow(2).mean().sqrt().clamp_min(1e-3))
    if not keep_energy_scale:
        with torch.no_grad():
            members.energy_shift.fill_(float(e[train].mean()))
            members.energy_scale.fill_(s_e)

    optimiser = torch.optim.Adam(potential.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5, patience=max(2, config.patience // 3),
                                                           min_lr=config.min_learning_rate)
    best_loss, best_state, best_epoch, history = np.inf, None, -1, []
    start = time.perf_counter()
    bar = tqdm(range(config.epochs), desc="training", disable=not progress, leave=False)
    epoch = -1
    for epoch in bar:
        perm = rng.permutation(len(train))
        for s in range(0, len(perm), config.batch_size):
            batch = perm[s : s + config.batch_size]
            idx = train[batch]
            pred_e, pred_f = potential.energies_and_forces(x[idx], True)
            w = weights[:, batch].T  # [b, M]
            loss_e = ((pred_e - e[idx, None]).pow(2) * w).sum(0) / w.sum(0).clamp_min(1)
            loss_f = ((pred_f - f[idx, None]).pow(2).mean(dim=(2, 3)) * w).sum(0) / w.sum(0).clamp_min(1)
            loss = (loss_e / s_e**2 + config.force_weight * loss_f / s_f**2).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        e_mae, f_mae, e_rmse, f_rmse = _errors(potential, x[val], e[val], f[val])
        val_loss = float(np.mean(np.square(e_rmse)) / s_e**2 + config.force_weight * np.mean(np.square(f_rmse)) / s_f**2)
        scheduler.step(val_loss)
        history.append({"epoch": epoch, "val_loss": val_loss, "val_energy_mae": float(np.mean(e_mae)),
                        "val_force_mae": float(np.mean(f_mae)), "lr": optimiser.param_groups[0]["lr"]})
        bar.set_postfix(E_mae=f"{np.mean(e_mae):.2f}", F_mae=f"{np.mean(f_mae):.1f}")
        if val_loss < best_loss or not config.keep_best:
            best_loss, best_state, best_epoch = val_loss, copy.deepcopy(potential.state_dict()), epoch
        elif epoch - best_epoch >= config.patience:
            break
    bar.close()
    potential.load_state_dict(best_state)
    e_mae, f_mae, e_rmse, f_rmse = _errors(potential, x[val], e[val], f[val])
    report = TrainingReport(e_mae, f_mae, e_rmse, f_rmse, best_epoch, epoch + 1, time.perf_counter() - start, history)
    committee.metadata.update(
        training_energies=[float(v) for v in np.asarray(energies)[train]],
        training_data_hash=dataset_hash(np.asarray(positions), np.asarray(energies), np.asarray(forces)),
        training_config=asdict(config),
        metrics=report.summary(),
        n_training=int(len(train)),
        n_validation=int(n_val),
    )
    return report


@dataclass
class CommitteeTrainer:
    """Builds a fresh committee and trains it on a :class:`~openmm_adv.data.Dataset`.

    By default the active-learning loop retrains from scratch every generation, so no
    generation inherits the previous committee's blind spots through its weights. With
    ``config.warm_start_epochs`` set, it passes the previous committee as ``start_from`` and
    fine-tunes it instead, which is several times cheaper for a small epoch count.

    Parameters
    ----------
    architecture : {"schnet", "mlp"}
        ``schnet`` for molecules; ``mlp`` for the one-particle 2D toys.
    model_options : dict
        Keyword arguments of :meth:`Committee.schnet` / :meth:`Committee.mlp` (``n_members``,
        ``n_features``, ``n_rbf``, ``n_interactions``, ``cutoff``, ``hidden``, ``seed``).
    config : TrainingConfig
    progress : bool
    """

    architecture: str = "schnet"
    model_options: dict = field(default_factory=dict)
    config: TrainingConfig = field(default_factory=TrainingConfig)
    progress: bool = True

    def __post_init__(self):
        if self.architecture not in ("schnet", "mlp"):
            raise ValueError(f"architecture must be 'schnet' or 'mlp', got {self.architecture!r}")

    def new_committee(self, atomic_numbers, seed: int = 0) -> Committee:
        """An untrained committee; ``seed`` is added to the model's initialisation seed."""
        options = dict(self.model_options)
        options["seed"] = int(options.get("seed", 0)) + int(seed)
        if self.architecture == "mlp":
            allowed = {"n_members", "hidden", "seed"}
            return Committee.mlp(n_atoms=len(atomic_numbers), **{k: v for k, v in options.items() if k in allowed})
        allowed = {"n_members", "n_features", "n_rbf", "n_interactions", "cutoff", "seed"}
        return Committee.schnet(atomic_numbers, **{k: v for k, v in options.items() if k in allowed})

    def train(self, dataset, seed: int = 0, start_from: Committee | None = None) -> tuple[Committee, TrainingReport]:
        """Train a committee on every record of ``dataset`` (its own validation split inside).

        Parameters
        ----------
        dataset : Dataset
        seed : int
            Offsets the initialisation, split and bootstrap seeds.
        start_from : Committee, optional
            Fine-tune a copy of this committee (eager or loaded TorchScript, same architecture
            and hyperparameters) for ``config.warm_start_epochs`` epochs at
            ``config.warm_start_learning_rate`` (``epochs`` and ``learning_rate`` where those
            are None) instead of training new weights. Its energy shift and scale are
            kept. The bootstrap weights are drawn anew from ``seed``.
        """
        config = TrainingConfig(**{**asdict(self.config), "seed": self.config.seed + int(seed)})
        committee = self.new_committee(dataset.atomic_numbers, seed)
        if start_from is not None:
            _copy_weights(start_from, committee)
            if config.warm_start_epochs is not None:
                config.epochs = config.warm_start_epochs
            if config.warm_start_learning_rate is not None:
                config.learning_rate = config.warm_start_learning_rate
        report = train_committee(committee, dataset.positions, dataset.energies, dataset.forces, config,
                                 progress=self.progress, keep_energy_scale=start_from is not None)
        if start_from is not None:
            committee.metadata["fine_tuned_from"] = start_from.metadata.get("training_data_hash")
        return committee, report


def _copy_weights(source: Committee, target: Committee) -> None:
    """Load ``source``'s weights into the eager ``target``, naming what does not match."""
    state = source.potential.state_dict()
    expected = target.potential.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            "cannot fine-tune: the committee to start from has another architecture or hyperparameters "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {wrong[:3]}); "
            "train from scratch (warm_start_epochs: null) or use the same model settings")
    target.potential.load_state_dict(state)
