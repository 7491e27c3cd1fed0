"""Named training recipes: an architecture, its sizes and the trainer settings that go with it.

One place for the settings behind the shipped committee and the benchmarks, so the file that
regenerates the shipped model, ``benchmarks/member_accuracy.py`` and the examples cannot drift
apart. Each recipe was sized for the shipped 1000-frame alanine dipeptide set on 2 CPU cores;
see README.md ("Shipped committee") for what each one measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .train import CommitteeTrainer, TrainingConfig

__all__ = ["RECIPES", "Recipe", "recipe"]


@dataclass(frozen=True)
class Recipe:
    """An architecture with its model options and training settings."""

    architecture: str
    model_options: dict = field(default_factory=dict)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    description: str = ""

    def trainer(self, progress: bool = True, **training_overrides) -> CommitteeTrainer:
        """A :class:`CommitteeTrainer` for this recipe (training settings may be overridden)."""
        return CommitteeTrainer(self.architecture, dict(self.model_options),
                                replace(self.training, **training_overrides), progress=progress)


_PAINN_TRAINING = TrainingConfig(epochs=30, batch_size=16, learning_rate=1e-2, force_weight=100.0,
                                 lr_schedule="cosine", ema_decay=0.99, min_learning_rate=1e-5, patience=1000)

RECIPES = {
    # The default: equivariant members on a fitted bonded prior, forces weighted 100:1, cosine
    # decay, weight averaging.
    "painn": Recipe(
        "painn",
        dict(n_members=5, n_features=32, n_rbf=8, n_interactions=2, cutoff=0.5, prior="bonded"),
        _PAINN_TRAINING,
        "5 x StackedPaiNN (32 features, 8 Bessel functions, 2 blocks, 0.5 nm cutoff) on a bonded prior",
    ),
    # Larger members on the same prior: no more accurate, 1.6x dearer per attack step.
    "painn_large": Recipe(
        "painn",
        dict(n_members=5, n_features=32, n_rbf=16, n_interactions=3, cutoff=0.5, prior="bonded"),
        _PAINN_TRAINING,
        "5 x StackedPaiNN (32 features, 16 Bessel functions, 3 blocks, 0.5 nm cutoff) on a bonded prior",
    ),
    # The larger members learning the whole potential (the shipped committee before the prior).
    "painn_no_prior": Recipe(
        "painn",
        dict(n_members=5, n_features=32, n_rbf=16, n_interactions=3, cutoff=0.5, prior="none"),
        _PAINN_TRAINING,
        "5 x StackedPaiNN (32 features, 16 Bessel functions, 3 blocks, 0.5 nm cutoff), no prior",
    ),
    # The project's first members, kept for comparison.
    "schnet": Recipe(
        "schnet",
        dict(n_members=5, n_features=32, n_rbf=32, n_interactions=2, cutoff=0.4, prior="none"),
        TrainingConfig(epochs=70, batch_size=16, learning_rate=5e-3, force_weight=10.0, patience=15),
        "5 x StackedSchNet (32 features, 32 Gaussians, 2 interactions, 0.4 nm cutoff)",
    ),
}


def recipe(name: str) -> Recipe:
    """The recipe called ``name`` (one of :data:`RECIPES`)."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}") from None
