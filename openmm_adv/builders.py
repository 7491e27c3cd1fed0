"""Turn validated config sections (:mod:`openmm_adv.config`) into the objects they describe."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from .config import AttackConfig, ConfigError, DataConfig, ModelConfig, OracleConfig, SelectionConfig, TrainingSection
from .data import Dataset
from .geometry import GeometryCheck
from .resources import default_committee_path, default_dataset_path
from .selection import Selector
from .systems import get_system
from .train import CommitteeTrainer, TrainingConfig

__all__ = [
    "build_system",
    "load_data",
    "build_oracle",
    "build_trainer",
    "build_samplers",
    "build_selector",
    "committee_path",
]


def build_system(config):
    return get_system(config.name)


def load_data(config: DataConfig, system=None, where: str = "data") -> Dataset:
    """Load a dataset (``default`` = the shipped alanine dipeptide frames), optionally a subset."""
    if config.path == "default":
        if system is not None and system.name != "alanine_dipeptide":
            raise ConfigError(f"{where}.path: the shipped default data are alanine dipeptide; give a dataset for {system.name}")
        path = default_dataset_path()
    else:
        path = Path(config.path)
    if not path.exists():
        raise ConfigError(f"{where}.path: {path} does not exist")
    if path.suffix in (".xyz", ".extxyz"):
        data = Dataset.from_extxyz(path)
    else:
        data = Dataset.load(path)
    if system is not None and not np.array_equal(data.atomic_numbers, system.atomic_numbers):
        raise ConfigError(f"{where}.path: {path} holds {data.n_atoms} atoms that do not match system {system.name}")
    if config.max_frames is not None and config.max_frames < len(data):
        pick = np.sort(np.random.default_rng(config.seed).choice(len(data), config.max_frames, replace=False))
        data = data.subset(pick)
    return data


def build_oracle(config: OracleConfig, system):
    from .oracles import make_oracle

    try:
        return make_oracle(config.kind, system, **config.options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"oracle: {exc}") from exc


def build_trainer(model: ModelConfig, training: TrainingSection, progress: bool = True) -> CommitteeTrainer:
    options = asdict(model)
    architecture = options.pop("architecture")
    return CommitteeTrainer(architecture=architecture, model_options=options,
                            config=TrainingConfig(**asdict(training)), progress=progress)


def attack_options(config: AttackConfig, system, progress: bool) -> dict:
    options = asdict(config)
    options.update(geometry_check=system, progress=progress)
    return options


def build_samplers(samplers: dict, system, progress: bool = True) -> list:
    from .samplers import AttackSampler

    built = []
    for name, section in samplers.items():
        if name == "attack":
            built.append(AttackSampler(**attack_options(section, system, progress)))
        else:  # guarded by config validation; kept for API callers
            raise ConfigError(f"samplers.{name}: unknown sampler")
    return built


def build_selector(config: SelectionConfig, system) -> Selector:
    options = asdict(config)
    physical = options.pop("physical_filter")
    return Selector(**options, geometry_check=GeometryCheck.for_system(system) if physical else None)


def committee_path(value: str | None) -> Path | None:
    """``default`` -> the shipped committee; a path is checked for existence."""
    if value is None:
        return None
    if value == "default":
        return default_committee_path()
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"committee: {path} does not exist")
    return path
