"""Energy + force training of a member-stacked committee."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .models.committee import Committee, dataset_hash
from .models.own import check_trainable, describe_architecture, reinitialise
from .models.prior import fit_bonded_prior, load_terms, prior_size

__all__ = ["FROM_COMMITTEE", "CommitteeTrainer", "TrainingConfig", "TrainingReport", "check_finite_labels", "train_committee", "validation_mask"]


@dataclass
class TrainingConfig:
    """Hyperparameters of :func:`train_committee`.

    The loss of member m is ``energy_weight * mse_E / s_E^2 + force_weight * mse_F / s_F^2``
    with ``s_E`` the standard deviation of the training energies and ``s_F`` the RMS training
    force, so the weights mean the same thing for any molecule and unit system.
    """

    epochs: int = 200
    batch_size: int = 32
    learning_rate: float = 3e-3
    force_weight: float = 10.0
    energy_weight: float = 1.0
    # Energy weight for the last ``final_fraction`` of the epochs (MACE's second stage: forces
    # first, then the energies are pulled in); None keeps ``energy_weight`` throughout.
    final_energy_weight: Optional[float] = None
    final_fraction: float = 0.2
    # The model's output scale: "energy_std" (standard deviation of the training energies) or
    # "force_rms" (RMS training force times 0.1 nm, NequIP's choice in Angstrom units): for
    # stiff molecules the forces, not the energy spread, set the size of what must be learned.
    energy_scale: str = "energy_std"
    validation_fraction: float = 0.1
    # The validation split is drawn from this seed alone, structure by structure, so it is the
    # same for every generation of a run: data appended later never moves an old structure
    # between the splits (a warm start must not validate on frames it was trained on).
    split_seed: int = 0
    patience: int = 30
    bootstrap: bool = True
    seed: int = 0
    # "plateau": halve the rate when the validation loss stalls; "cosine": decay from
    # learning_rate to min_learning_rate over the epochs (better for a fixed epoch budget).
    lr_schedule: str = "plateau"
    min_learning_rate: float = 1e-5
    # Exponential moving average of the weights, used for validation and kept at the end
    # (None: the raw weights).
    ema_decay: Optional[float] = None
    # False: train every epoch and keep the last state. For tiny datasets, whose 2-3 validation
    # structures say little: near a minimum an untrained model (zero forces) can score best.
    keep_best: bool = True
    # Epochs of fine-tuning when a loop starts a generation from the previous committee's
    # weights (CommitteeTrainer.train(start_from=...)); None: every generation from scratch.
    warm_start_epochs: Optional[int] = None
    # Its learning rate (None: learning_rate). Lower than a from-scratch rate, or the first
    # steps on the new data throw the model out of the minimum it was started in.
    warm_start_learning_rate: Optional[float] = None

    def __post_init__(self):
        if self.energy_scale not in ("energy_std", "force_rms"):
            raise ValueError(f"energy_scale must be 'energy_std' or 'force_rms', got {self.energy_scale!r}")
        if self.lr_schedule not in ("plateau", "cosine"):
            raise ValueError(f"lr_schedule must be 'plateau' or 'cosine', got {self.lr_schedule!r}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if not 0.0 <= self.final_fraction <= 1.0:
            raise ValueError(f"final_fraction must be in [0, 1], got {self.final_fraction}")
        for name in ("learning_rate", "force_weight", "energy_weight", "min_learning_rate"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite non-negative number, got {value}")


@dataclass
class TrainingReport:
    """Validation errors (kJ/mol, kJ/mol/nm) per member and of the committee mean, and the
    history of the validation loss."""

    energy_mae: list
    force_mae: list
    energy_rmse: list
    force_rmse: list
    best_epoch: int
    epochs_run: int
    wall_seconds: float
    history: list = field(default_factory=list)
    committee: dict = field(default_factory=dict)

    def summary(self) -> dict:
        out = {
            "val_energy_mae_kj_mol": float(np.mean(self.energy_mae)),
            "val_force_mae_kj_mol_nm": float(np.mean(self.force_mae)),
            "val_energy_rmse_kj_mol": float(np.mean(self.energy_rmse)),
            "val_force_rmse_kj_mol_nm": float(np.mean(self.force_rmse)),
            "val_member_force_mae_kj_mol_nm": [float(v) for v in self.force_mae],
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "wall_seconds": self.wall_seconds,
        }
        out.update({f"val_committee_{k}": float(v) for k, v in self.committee.items()})
        return out


def validation_mask(n: int, fraction: float, split_seed: int = 0) -> np.ndarray:
    """Which of ``n`` structures are validation structures, stable as the data grow.

    Structure i is in the validation split when the i-th draw of a generator seeded with
    ``split_seed`` is below ``fraction``; the draws of the first n structures do not depend on
    how many follow, so appending data never moves a structure between the splits. At least
    one structure is always held out.
    """
    u = np.random.default_rng(split_seed).random(n)
    mask = u < fraction
    if not mask.any():
        mask[int(np.argmin(u))] = True
    if mask.all():
        mask[int(np.argmax(u))] = False
    return mask


def check_finite_labels(positions, energies, forces) -> None:
    """Raise ``ValueError`` naming the frames whose positions, energies or forces are not finite."""
    bad = {}
    for name, array in (("positions", positions), ("energies", energies), ("forces", forces)):
        a = np.asarray(array, dtype=np.float64)
        finite = np.isfinite(a.reshape(len(a), -1)).all(1)
        if not finite.all():
            bad[name] = np.flatnonzero(~finite)
    if bad:
        parts = [f"{name} at frames {idx[:10].tolist()}{' ...' if len(idx) > 10 else ''}" for name, idx in bad.items()]
        raise ValueError(
            "the training data contain non-finite values (" + "; ".join(parts) + "); remove or relabel those "
            "frames before training (a committee trained on them would predict NaN)")


def _errors(potential, positions, energies, forces, batch_size=128):
    """Validation errors per member (lists) and of the committee mean (dict), in float64."""
    e_err, f_err, e_mean_err, f_mean_err = [], [], [], []
    for s in range(0, len(positions), batch_size):
        e, f = potential.energies_and_forces(positions[s : s + batch_size], False)
        e, f = e.double(), f.double()
        ref_e, ref_f = energies[s : s + batch_size].double(), forces[s : s + batch_size].double()
        e_err.append(e - ref_e[:, None])
        f_err.append(f - ref_f[:, None])
        e_mean_err.append(e.mean(1) - ref_e)
        f_mean_err.append(f.mean(1) - ref_f)
    e_err, f_err = torch.cat(e_err), torch.cat(f_err)  # [V, M], [V, M, N, 3]
    e_mean_err, f_mean_err = torch.cat(e_mean_err), torch.cat(f_mean_err)
    committee = {
        "energy_mae_kj_mol": float(e_mean_err.abs().mean()),
        "energy_rmse_kj_mol": float(e_mean_err.pow(2).mean().sqrt()),
        "force_mae_kj_mol_nm": float(f_mean_err.abs().mean()),
        "force_rmse_kj_mol_nm": float(f_mean_err.pow(2).mean().sqrt()),
    }
    return (
        e_err.abs().mean(0).tolist(),
        f_err.abs().mean(dim=(0, 2, 3)).tolist(),
        e_err.pow(2).mean(0).sqrt().tolist(),
        f_err.pow(2).mean(dim=(0, 2, 3)).sqrt().tolist(),
        committee,
    )


class _EMA:
    """Exponential moving average of a module's floating-point parameters."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_mul_(self.shadow, self.decay)
        torch._foreach_add_(self.shadow, [p.detach() for p in self.params], alpha=1.0 - self.decay)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the live and the averaged weights (call twice to undo)."""
        for p, q in zip(self.params, self.shadow):
            tmp = p.detach().clone()
            p.copy_(q)
            q.copy_(tmp)


def train_committee(committee: Committee, positions, energies, forces, config: TrainingConfig | None = None,
                    progress: bool = True, keep_energy_scale: bool = False, fit_prior: bool = False,
                    bonds=None) -> TrainingReport:
    """Fit every member of a committee to energies and forces, in place.

    Members see different bootstrap resamples of the training split (``config.bootstrap``) and
    start from different weights, which is what makes their disagreement an uncertainty.
    The energy shift/scale of the model are set from the data (``keep_energy_scale=True``
    keeps those of a fine-tuned model, whose weights were fitted to them); the best state on
    the validation split is kept (early stopping). The committee's metadata gets the training
    energies (for the attack's normalisation), the data hash and the validation metrics of
    every member and of the committee mean, and the training distance ranges (``domain``: bond
    and nearest-neighbour distances, see :meth:`Committee.domain_check`).

    Any committee trains: the built-in stacked members, a committee of your own models
    (:meth:`Committee.from_models`: each member an ``nn.Module`` from positions ``[B, N, 3]`` nm
    to energies ``[B]`` kJ/mol; the shift and scale live in the committee around the members'
    outputs, so your model learns a target of order one and needs no buffers of its own), and
    a loaded TorchScript committee, whose weights are trained in place. Your own members are
    probed on the first training geometries before any step (see
    :func:`openmm_adv.models.own.check_trainable`). A committee saved before the shift and scale
    existed is trained without them (on raw energies). Modules are in ``train()`` mode for the
    steps and left in ``eval()`` mode.

    With ``fit_prior=True`` the committee's bonded prior (harmonic bonds and angles, see
    :mod:`openmm_adv.models.prior`) is first fitted to the training split's forces, with
    ``bonds`` (``[n_b, 2]``, e.g. from the topology) or bonds found from distances, and the
    members learn what it leaves. A prior already in the committee (a fine-tuned one) is kept.

    Raises
    ------
    ValueError
        Non-finite values in the data (the frames are named), too few structures, or a
        training run that diverged (non-finite loss).
    CommitteeError
        A member that cannot be trained (wrong output shape, no dependence on the positions,
        non-finite outputs, no parameters, the same module twice); the message names it.
    """
    config = config or TrainingConfig()
    n = len(positions)
    if n < 4 or len(energies) != n or len(forces) != n:
        raise ValueError(f"need matching positions/energies/forces with at least 4 structures, got "
                         f"{len(positions)}, {len(energies)}, {len(forces)}")
    check_finite_labels(positions, energies, forces)
    check_trainable(committee, positions)
    potential = committee.potential
    members = potential.members
    # Committees saved before ModelEnsemble had an energy shift and scale are fitted without them.
    normalised = hasattr(members, "energy_shift") and hasattr(members, "energy_scale")
    dtype = potential.dtype_probe.dtype
    x = torch.as_tensor(np.asarray(positions), dtype=dtype)
    e = torch.as_tensor(np.asarray(energies, dtype=np.float64))
    f = torch.as_tensor(np.asarray(forces), dtype=dtype)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    is_val = validation_mask(n, config.validation_fraction, config.split_seed)
    val, train = np.flatnonzero(is_val), np.flatnonzero(~is_val)
    n_val = len(val)
    m = committee.n_members
    # Bootstrap: member k weights each training structure by how often it was drawn.
    if config.bootstrap:
        weights = np.stack([np.bincount(rng.integers(0, len(train), len(train)), minlength=len(train)) for _ in range(m)])
    else:
        weights = np.ones((m, len(train)))
    weights = torch.as_tensor(weights, dtype=dtype)

    if fit_prior:
        terms = fit_bonded_prior(committee.atomic_numbers, np.asarray(positions)[train], np.asarray(forces)[train],
                                 bonds=bonds)
        load_terms(potential.prior, terms)
        committee.metadata["prior"] = {"kind": "bonded", **terms.summary()}
    # The members learn what the prior leaves: their output scale follows those residuals.
    e_left, f_left = e[train], f[train].double()
    if prior_size(potential.prior) > 0:
        prior_e, prior_f = _prior_labels(potential.prior, x[train])
        e_left, f_left = e_left - prior_e, f_left - prior_f
    s_e = float(e_left.std().clamp_min(1e-3)) if len(train) > 1 else 1.0
    s_f = float(f_left.pow(2).mean().sqrt().clamp_min(1e-3))
    if not keep_energy_scale and normalised:
        with torch.no_grad():
            members.energy_shift.fill_(float(e_left.mean()))
            members.energy_scale.fill_(s_e if config.energy_scale == "energy_std" else 0.1 * s_f)
    # Energies are compared after removing the shift in float64, so float32 members do not
    # lose digits on large absolute energies (xTB: -1e5 kJ/mol).
    shift = float(members.energy_shift) if normalised else float(e[train].mean())
    e_rel = (e - shift).to(dtype)

    optimiser = torch.optim.Adam(potential.parameters(), lr=config.learning_rate)
    if config.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, config.epochs),
                                                               eta_min=config.min_learning_rate)
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5, patience=max(2, config.patience // 3),
                                                               min_lr=config.min_learning_rate)
    ema = _EMA(potential, config.ema_decay) if config.ema_decay is not None else None
    final_start = config.epochs - int(round(config.final_fraction * config.epochs))
    best_loss, best_state, best_epoch, history = np.inf, None, -1, []
    start = time.perf_counter()
    bar = tqdm(range(config.epochs), desc="training", disable=not progress, leave=False)
    epoch = -1
    for epoch in bar:
        potential.train()
        energy_weight = config.energy_weight
        if config.final_energy_weight is not None and epoch >= final_start:
            energy_weight = config.final_energy_weight
        perm = rng.permutation(len(train))
        for s in range(0, len(perm), config.batch_size):
            batch = perm[s : s + config.batch_size]
            idx = train[batch]
            pred_e, pred_f = potential.energies_and_forces(x[idx], True)
            w = weights[:, batch].T  # [b, M]
            loss_e = ((pred_e - shift - e_rel[idx, None]).pow(2) * w).sum(0) / w.sum(0).clamp_min(1)
            loss_f = ((pred_f - f[idx, None]).pow(2).mean(dim=(2, 3)) * w).sum(0) / w.sum(0).clamp_min(1)
            loss = (energy_weight * loss_e / s_e**2 + config.force_weight * loss_f / s_f**2).sum()
            if not torch.isfinite(loss):
                raise ValueError(
                    f"training diverged at epoch {epoch} (non-finite loss); lower learning_rate "
                    f"(now {optimiser.param_groups[0]['lr']:.2g}) or check the data for outliers")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if ema is not None:
                ema.update()
        if ema is not None:
            ema.swap()
        # Validation and the saved model see deterministic members (dropout off, for instance).
        potential.eval()
        e_mae, f_mae, e_rmse, f_rmse, comm = _errors(potential, x[val], e[val], f[val])
        val_loss = float(energy_weight * np.mean(np.square(e_rmse)) / s_e**2
                         + config.force_weight * np.mean(np.square(f_rmse)) / s_f**2)
        if config.lr_schedule == "cosine":
            scheduler.step()
        else:
            scheduler.step(val_loss)
        history.append({"epoch": epoch, "val_loss": val_loss, "val_energy_mae": float(np.mean(e_mae)),
                        "val_force_mae": float(np.mean(f_mae)), "val_committee_force_mae": comm["force_mae_kj_mol_nm"],
                        "lr": optimiser.param_groups[0]["lr"]})
        bar.set_postfix(E_mae=f"{np.mean(e_mae):.2f}", F_mae=f"{np.mean(f_mae):.1f}")
        # The energy weight of the final stage changes the loss's scale: compare within a stage.
        if epoch == final_start and config.final_energy_weight is not None:
            best_loss = np.inf
        improved = np.isfinite(val_loss) and val_loss < best_loss
        if improved or not config.keep_best:
            best_loss, best_state, best_epoch = val_loss, copy.deepcopy(potential.state_dict()), epoch
        if ema is not None:
            ema.swap()
        if not improved and config.keep_best and epoch - best_epoch >= config.patience and config.lr_schedule == "plateau":
            break
    bar.close()
    potential.eval()
    if best_state is None:
        raise ValueError("training produced no finite validation loss; lower learning_rate or check the data")
    potential.load_state_dict(best_state)
    e_mae, f_mae, e_rmse, f_rmse, comm = _errors(potential, x[val], e[val], f[val])
    if not np.all(np.isfinite(e_mae + f_mae)):
        raise ValueError("the trained committee predicts non-finite values on the validation split; "
                         "lower learning_rate or check the data")
    bad = committee.non_finite_weights()
    if bad:  # weights the validation frames do not reach can diverge unseen (keep_best: false keeps them)
        raise ValueError(f"training left non-finite weights ({', '.join(bad[:3])}); the committee is not kept: "
                         "lower learning_rate or check the data")
    report = TrainingReport(e_mae, f_mae, e_rmse, f_rmse, best_epoch, epoch + 1, time.perf_counter() - start,
                            history, comm)
    committee.metadata.update(
        training_energies=[float(v) for v in np.asarray(energies)[train]],
        training_data_hash=dataset_hash(np.asarray(positions), np.asarray(energies), np.asarray(forces)),
        training_config=asdict(config),
        metrics=report.summary(),
        n_training=int(len(train)),
        n_validation=int(n_val),
    )
    # The distances the committee has seen, so geometries far outside them are flagged instead
    # of scored (Committee.domain_check).
    committee.record_domain(positions, bonds=bonds)
    return report


def _prior_labels(prior, x: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The prior's energies ``[F]`` and forces ``[F, N, 3]`` (float64) on frames ``x``."""
    dtype = prior.bond_k.dtype
    prior.double()
    energies, forces = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].detach().double().requires_grad_(True)
        with torch.enable_grad():
            energy = prior(xb)
            gradient = torch.autograd.grad(energy.sum(), xb)[0]
        energies.append(energy.detach())
        forces.append(-gradient)
    prior.to(dtype)
    return torch.cat(energies), torch.cat(forces)


_MODEL_OPTIONS = {
    "painn": {"n_members", "n_features", "n_rbf", "n_interactions", "cutoff", "neighbor_list", "seed"},
    "schnet": {"n_members", "n_features", "n_rbf", "n_interactions", "cutoff", "seed"},
    "mlp": {"n_members", "hidden", "seed"},
    # Sizes and member count are the template committee's own.
    "from_committee": {"seed"},
}
#: The architecture name of a trainer that trains copies of a committee of its own (``template``).
FROM_COMMITTEE = "from_committee"
PRIORS = ("bonded", "none")
# Without a choice, equivariant members learn on top of the bonded prior; the invariant SchNet
# keeps its original setting, so the comparisons recorded with it stay reproducible. A
# committee of one's own keeps whatever prior it has.
DEFAULT_PRIOR = {"painn": "bonded", "schnet": "none", "mlp": "none", FROM_COMMITTEE: "none"}


@dataclass
class CommitteeTrainer:
    """Builds a fresh committee and trains it on a :class:`~openmm_adv.data.Dataset`.

    By default the active-learning loop retrains from scratch every generation, so no
    generation inherits the previous committee's blind spots through its weights. With
    ``config.warm_start_epochs`` set, it passes the previous committee as ``start_from`` and
    fine-tunes it instead, which is several times cheaper for a small epoch count.

    With ``architecture="from_committee"`` (see :meth:`from_committee`) the trainer trains
    copies of ``template``, a committee of any architecture, typically your own models
    (:meth:`Committee.from_models`), eager or loaded from TorchScript. The rule:

    - from scratch: a copy of the template whose members get fresh weights from their own
      ``reset_parameters`` (``nn.Linear`` and the like, or one you define; seeded per
      generation and member), with the energy shift and scale fitted to the data. Where that
      cannot cover every parameter (TorchScript members, or parameters outside any module with
      ``reset_parameters``), the copy starts from the template's weights as they were given,
      never from a later generation's; its shift and scale are kept when they were fitted
      before (not 0 and 1) and fitted to the data otherwise.
    - fine-tuning (``start_from``, a loop's warm start): a copy of the template with
      ``start_from``'s weights, shift and scale (same architecture; checked).

    Every committee keeps the template's architecture and member classes (recorded in its
    metadata), so a loop's committees stay your architecture generation after generation.

    Parameters
    ----------
    architecture : {"painn", "schnet", "mlp", "from_committee"}
        ``painn`` (equivariant, default) or ``schnet`` for molecules; ``mlp`` for the
        one-particle 2D toys; ``from_committee``: the template's architecture.
    model_options : dict
        Keyword arguments of :meth:`Committee.painn` / :meth:`Committee.schnet` /
        :meth:`Committee.mlp` (``n_members``, ``n_features``, ``n_rbf``, ``n_interactions``,
        ``cutoff``, ``neighbor_list``, ``hidden``, ``seed``) and ``prior`` (``bonded``: fit
        harmonic bonds and angles to the training forces first and train the members on what
        they leave, see :mod:`openmm_adv.models.prior`; ``none``); options another
        architecture does not take are ignored, None means the architecture's default
        (``prior``: ``bonded`` for painn, ``none`` otherwise; for ``from_committee``, ``none``
        keeps the template's own prior and ``bonded`` refits one at every from-scratch start).
    config : TrainingConfig
    progress : bool
    template : Committee, optional
        The committee whose architecture ``from_committee`` trains. It must be TorchScript
        (loaded) or scriptable, because trained committees are saved as TorchScript; a loop
        given none takes its ``initial_committee``.
    uncertainty : dict, optional
        A single-model uncertainty instead of a committee's: ``{"method": "gmm" | "mve" |
        "evidential", "n_components": 15, "alpha": 0.05, "head_epochs": 100}``. One model
        (``n_members`` 1, painn, no bootstrap) is trained, then the Gaussian mixture is fitted
        on its features and calibrated on the validation split
        (:func:`openmm_adv.models.gmm.fit_gaussian_mixture`), or the head is trained on the
        likelihood (:func:`openmm_adv.train_heads.train_with_head`). A warm start fine-tunes the
        previous model's weights and refits the mixture or the head.
    """

    architecture: str = "painn"
    model_options: dict = field(default_factory=dict)
    config: TrainingConfig = field(default_factory=TrainingConfig)
    progress: bool = True
    template: Optional[Committee] = None
    uncertainty: Optional[dict] = None

    def __post_init__(self):
        if self.architecture not in _MODEL_OPTIONS:
            raise ValueError(f"architecture must be one of {sorted(_MODEL_OPTIONS)}, got {self.architecture!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS} (or None for the architecture's default), "
                             f"got {self.model_options.get('prior')!r}")
        if self.single_model:
            method = self.uncertainty["method"]
            if method not in ("gmm", "mve", "evidential") or self.architecture != "painn":
                raise ValueError(f"uncertainty method {method!r} with architecture {self.architecture!r}: single-model "
                                 "uncertainties are gmm, mve or evidential, on painn")
            if int(self.model_options.get("n_members") or 1) != 1:
                raise ValueError(f"a single-model uncertainty ({method}) trains one model; set n_members to 1")
        if self.template is not None:
            if self.architecture != FROM_COMMITTEE:
                raise ValueError(f"a template committee is only used with architecture {FROM_COMMITTEE!r}, "
                                 f"not {self.architecture!r}")
            if not isinstance(self.template, Committee):
                raise TypeError(f"template must be a Committee (Committee.from_models or Committee.load), "
                                f"got {type(self.template).__name__}")
            # Fail now, not at the first save after minutes of training.
            self.template.scripted()

    @classmethod
    def from_committee(cls, template, config: TrainingConfig | None = None, progress: bool = True,
                       prior: str | None = None, seed: int = 0) -> "CommitteeTrainer":
        """A trainer for copies of ``template`` (a :class:`Committee` or a committee file).

        See the class docstring for what "from scratch" and "fine-tuning" mean here.

        Raises
        ------
        CommitteeError
            A member of the template cannot be TorchScripted (the member and the line are named).
        """
        if isinstance(template, (str, Path)):
            template = Committee.load(template)
        return cls(FROM_COMMITTEE, {"prior": prior, "seed": seed}, config or TrainingConfig(), progress, template)

    @property
    def single_model(self) -> bool:
        """Whether one model with a single-model uncertainty is trained instead of a committee."""
        return bool(self.uncertainty) and self.uncertainty.get("method", "ensemble") != "ensemble"

    @property
    def prior(self) -> str:
        """The prior the members are trained on top of (``bonded`` or ``none``)."""
        choice = self.model_options.get("prior")
        return DEFAULT_PRIOR[self.architecture] if choice is None else choice

    def describe(self) -> dict:
        """The architecture and options, as a loop stores them with its settings."""
        out = {"architecture": self.architecture}
        if self.single_model:
            out["uncertainty"] = dict(self.uncertainty)
        if self.template is not None:
            out["template"] = describe_architecture(self.template)
        return out

    def new_committee(self, atomic_numbers, seed: int = 0) -> Committee:
        """An untrained committee; ``seed`` is added to the model's initialisation seed.

        Options set to None take the architecture's defaults. For ``from_committee``: a copy of
        the template, re-initialised where its members allow it (see the class docstring).
        """
        if self.architecture == FROM_COMMITTEE:
            return self._template_copy(atomic_numbers, seed)[0]
        options = {k: v for k, v in self.model_options.items() if v is not None}
        options["seed"] = int(options.get("seed", 0)) + int(seed)
        if self.single_model:
            options["n_members"] = 1
        allowed = _MODEL_OPTIONS[self.architecture]
        options = {k: v for k, v in options.items() if k in allowed}
        if self.architecture == "mlp":
            return Committee.mlp(n_atoms=len(atomic_numbers), **options)
        if self.architecture == "schnet":
            return Committee.schnet(atomic_numbers, **options)
        return Committee.painn(atomic_numbers, **options)

    def _require_template(self, atomic_numbers) -> Committee:
        if self.template is None:
            raise ValueError(f"architecture {FROM_COMMITTEE!r} trains copies of a template committee and none was "
                             "given: use CommitteeTrainer.from_committee(committee), or give the loop an "
                             "initial_committee")
        if not np.array_equal(self.template.atomic_numbers, np.asarray(atomic_numbers)):
            raise ValueError("the template committee was built for other atoms than the dataset's "
                             f"({self.template.n_atoms} atoms vs {len(atomic_numbers)}, or another order)")
        return self.template

    def _template_copy(self, atomic_numbers, seed: int) -> tuple[Committee, bool]:
        """A copy of the template with fresh weights where possible, and whether they are fresh."""
        committee = self._require_template(atomic_numbers).copy()
        committee.metadata.pop("fine_tuned_from", None)
        fresh = reinitialise(committee, int(self.model_options.get("seed") or 0) + int(seed))
        committee.metadata["initial_weights"] = "reinitialised" if fresh else "template"
        return committee, fresh

    def train(self, dataset, seed: int = 0, start_from: Committee | None = None,
              bonds=None) -> tuple[Committee, TrainingReport]:
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
            are None) instead of training new weights. Its energy shift, scale and prior are
            kept. The bootstrap weights are drawn anew from ``seed``.
        bonds : sequence of (int, int), optional
            The molecule's covalent bonds (e.g. ``MolecularSystem.bonds``, from its topology)
            for the bonded prior; found from interatomic distances when omitted.
        """
        config = TrainingConfig(**{**asdict(self.config), "seed": self.config.seed + int(seed)})
        if self.single_model:
            config.bootstrap = False  # one model: every training structure counts once
        keep_energy_scale = start_from is not None
        if self.architecture == FROM_COMMITTEE and start_from is None:
            committee, fresh = self._template_copy(dataset.atomic_numbers, seed)
            # Weights that were fitted to a shift and scale keep them; fresh or never-fitted
            # ones (an untrained model of your own: 0 and 1) get them from the data.
            keep_energy_scale = not fresh and not _identity_scale(committee)
        elif self.architecture == FROM_COMMITTEE:
            committee = self._require_template(dataset.atomic_numbers).copy()
            committee.metadata["initial_weights"] = "fine-tuned"
            if "prior" in start_from.metadata:
                committee.metadata["prior"] = start_from.metadata["prior"]
        else:
            committee = self.new_committee(dataset.atomic_numbers, seed)
        if start_from is not None:
            _copy_weights(start_from, committee)
            if config.warm_start_epochs is not None:
                config.epochs = config.warm_start_epochs
            if config.warm_start_learning_rate is not None:
                config.learning_rate = config.warm_start_learning_rate
        report = train_committee(committee, dataset.positions, dataset.energies, dataset.forces, config,
                                 progress=self.progress, keep_energy_scale=keep_energy_scale,
                                 fit_prior=self.prior == "bonded" and start_from is None,
                                 bonds=None if bonds is None or len(bonds) == 0 else bonds)
        if start_from is not None:
            committee.metadata["fine_tuned_from"] = start_from.metadata.get("training_data_hash")
        if self.single_model:
            committee = self._add_uncertainty(committee, dataset, config)
        return committee, report

    def _add_uncertainty(self, model: Committee, dataset, config: TrainingConfig) -> Committee:
        """The trained one-member model with its Gaussian mixture or likelihood-trained head."""
        method = self.uncertainty["method"]
        if method == "gmm":
            from .models.gmm import fit_gaussian_mixture

            held_out = validation_mask(len(dataset), config.validation_fraction, config.split_seed)
            return fit_gaussian_mixture(model, dataset.positions[~held_out], dataset.positions[held_out],
                                        dataset.forces[held_out],
                                        n_components=int(self.uncertainty.get("n_components", 15)),
                                        alpha=float(self.uncertainty.get("alpha", 0.05)), seed=config.seed)
        from .train_heads import HeadTrainingConfig, train_with_head

        head = HeadTrainingConfig(epochs=int(self.uncertainty.get("head_epochs", 100)),
                                  batch_size=config.batch_size, learning_rate=0.3 * config.learning_rate,
                                  seed=config.seed)
        return train_with_head(model, dataset.positions, dataset.energies, dataset.forces, method, head, config,
                               progress=self.progress)


def _identity_scale(committee: Committee) -> bool:
    """Whether the committee's energy shift and scale are still 0 and 1 (never fitted)."""
    members = committee.potential.members
    if not (hasattr(members, "energy_shift") and hasattr(members, "energy_scale")):
        return True
    return float(members.energy_shift) == 0.0 and float(members.energy_scale) == 1.0


def _copy_weights(source: Committee, target: Committee) -> None:
    """Load ``source``'s weights into ``target`` (eager or TorchScript), naming what does not match."""
    state = source.potential.state_dict()
    # A single model's mixture or head is refitted after training: only the model's weights travel.
    expected_keys = set(target.potential.state_dict())
    state = {k: v for k, v in state.items() if k in expected_keys or not _is_uncertainty_key(k)}
    # The fitted prior travels with the weights (its size is the source's); a committee saved
    # before priors existed has none, which is an empty prior.
    _resize_prior(target.potential.prior, state, "prior.")
    expected = target.potential.state_dict()
    state = {**{k: v for k, v in expected.items() if k.startswith("prior.")}, **state}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            "cannot fine-tune: the committee to start from has another architecture or hyperparameters "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {wrong[:3]}); "
            "train from scratch (warm_start_epochs: null) or use the same model settings")
    target.potential.load_state_dict(state)


def _is_uncertainty_key(key: str) -> bool:
    """Whether a state-dict entry belongs to a single-model uncertainty (mixture or head)."""
    return key.startswith(("density.", "head_")) or key in ("nll_shift", "conformal", "force_scale")


def _resize_prior(prior, state: dict, prefix: str) -> None:
    """Give the prior's buffers the shapes stored in ``state`` (eager or TorchScript prior), so
    ``load_state_dict`` can fill them."""
    for name, buffer in list(prior.named_buffers()):
        key = prefix + name
        if key in state and state[key].shape != buffer.shape:
            setattr(prior, name, torch.zeros(state[key].shape, dtype=buffer.dtype))
