"""Turn validated config sections (:mod:`openmm_adv.config`) into the objects they describe."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from .config import SAMPLER_CONFIGS, AttackConfig, ConfigError, DataConfig, ModelConfig, OracleConfig, SelectionConfig, TrainingSection
from .data import Dataset
from .geometry import GeometryCheck
from .resources import default_committee_path, default_dataset_path
from .selection import Selector
from .systems import get_system, load_system
from .train import FROM_COMMITTEE, CommitteeTrainer, TrainingConfig

__all__ = [
    "build_system",
    "load_data",
    "build_oracle",
    "toy_initial_data",
    "build_trainer",
    "build_sampler",
    "build_samplers",
    "build_selector",
    "committee_path",
]


def build_system(config):
    """The :class:`~openmm_adv.systems.MolecularSystem` of a ``system`` config section."""
    if config.structure is None:
        return get_system(config.shipped)
    try:
        return load_system(config.structure, name=config.name, forcefield=config.forcefield,
                           system_xml=config.system_xml, charge=config.charge,
                           multiplicity=config.multiplicity, cvs=config.cvs)
    except ValueError as exc:
        raise ConfigError(str(exc) if str(exc).startswith("system") else f"system: {exc}") from exc


def load_data(config: DataConfig, system=None, where: str = "data") -> Dataset:
    """Load a dataset (``default`` = the shipped alanine dipeptide frames), optionally a subset.

    Raises
    ------
    ConfigError
        For a missing, empty, unreadable or other-molecule file, non-finite values (the rows
        are named) and positions that are not in nm (see
        :func:`openmm_adv.plausibility.units_problem`).
    """
    from .plausibility import units_problem

    if config.path == "default":
        if system is not None and system.name in ("double_well", "mueller_brown"):
            return toy_initial_data(system, config.max_frames or 20, config.seed)
        if system is not None and system.name != "alanine_dipeptide":
            raise ConfigError(f"{where}.path: the shipped default data are alanine dipeptide; give a dataset for "
                              f"{system.name} (make the first one with 'openmm-adv init')")
        path = default_dataset_path()
    else:
        path = Path(config.path)
    if not path.exists():
        raise ConfigError(f"{where}.path: {path} does not exist")
    try:
        data = Dataset.from_extxyz(path) if path.suffix in (".xyz", ".extxyz") else Dataset.load(path)
    except ValueError as exc:
        raise ConfigError(f"{where}.path: {exc}") from exc
    if len(data) == 0:
        raise ConfigError(f"{where}.path: {path} holds no structures; give a dataset with labelled frames "
                          "(make one with 'openmm-adv init' or 'openmm-adv label')")
    if system is not None and not np.array_equal(data.atomic_numbers, system.atomic_numbers):
        raise ConfigError(f"{where}.path: {path} holds {data.n_atoms} atoms that do not match system {system.name}")
    problem = units_problem(data.atomic_numbers, data.positions)
    if problem is not None:
        raise ConfigError(f"{where}.path: {path}: {problem}")
    if config.max_frames is not None and config.max_frames < len(data):
        pick = np.sort(np.random.default_rng(config.seed).choice(len(data), config.max_frames, replace=False))
        data = data.subset(pick)
    return data


def toy_initial_data(system, n: int, seed: int = 0, spread: float = 0.15) -> Dataset:
    """``n`` exactly labelled points of a 2D toy, Gaussian (``spread`` nm) around its start
    minimum: the double well's left basin, as in the original tutorial."""
    rng = np.random.default_rng(seed)
    xy = system.positions[0, :2] + spread * rng.normal(size=(n, 2))
    x = np.concatenate([xy, np.zeros((n, 1))], 1)[:, None, :]
    energies, forces = system.reference_energies_forces(x)
    data = Dataset(system.atomic_numbers)
    data.append(x, energies, forces, generation=0, sampler="initial", oracle="analytic")
    return data


def build_oracle(config: OracleConfig, system):
    from .oracles import make_oracle

    try:
        return make_oracle(config.kind, system, **config.options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"oracle: {exc}") from exc


def build_trainer(model: ModelConfig, training: TrainingSection, progress: bool = True, system=None,
                  initial_committee: str | Path | None = None, where: str = "model") -> CommitteeTrainer:
    """The trainer of a ``model`` and ``training`` section.

    ``initial_committee`` (a loop's, a path) decides a null ``model.architecture`` (see
    :class:`~openmm_adv.config.ModelConfig`) and is the template of ``from_committee`` when
    ``model.committee`` is not given; ``system`` checks the template's atoms.
    """
    from .models import Committee, CommitteeError
    from .models.own import is_builtin

    options = asdict(model)
    architecture = options.pop("architecture")
    template_path = options.pop("committee")
    uncertainty = {"method": options.pop("uncertainty"), "n_components": options.pop("gmm_components"),
                   "alpha": options.pop("gmm_alpha"), "head_epochs": options.pop("head_epochs")}
    if uncertainty["method"] != "ensemble":
        return CommitteeTrainer(architecture="painn", model_options=options, config=TrainingConfig(**asdict(training)),
                                progress=progress, uncertainty=uncertainty)
    if template_path is not None and architecture not in (None, FROM_COMMITTEE):
        raise ConfigError(f"{where}.committee: only read with architecture {FROM_COMMITTEE} (got {architecture!r})")
    initial = None
    if architecture in (None, FROM_COMMITTEE) and template_path is None and initial_committee is not None:
        initial = Committee.load(initial_committee, system=system)
    if architecture is None:
        own = template_path is not None or (initial is not None and not is_builtin(initial))
        architecture = FROM_COMMITTEE if own else "painn"
    if architecture != FROM_COMMITTEE:
        return CommitteeTrainer(architecture=architecture, model_options=options,
                                config=TrainingConfig(**asdict(training)), progress=progress)
    if template_path is not None:
        path = Path(template_path)
        if not path.is_file():
            raise ConfigError(f"{where}.committee: {path} does not exist")
        try:
            template = Committee.load(path, system=system)
        except CommitteeError as exc:
            raise ConfigError(f"{where}.committee: {exc}") from exc
    elif initial is not None:
        template = initial
    else:
        raise ConfigError(f"{where}.architecture: {FROM_COMMITTEE} trains the architecture of a committee file; "
                          f"give {where}.committee (or a loop's initial_committee)")
    options = {"prior": options["prior"], "seed": options["seed"]}
    return CommitteeTrainer(FROM_COMMITTEE, options, TrainingConfig(**asdict(training)), progress, template)


def attack_options(config: AttackConfig, system, progress: bool) -> dict:
    options = asdict(config)
    options.update(geometry_check=system, progress=progress)
    return options


def build_sampler(kind: str, options, system, progress: bool = True):
    """The sampler of ``kind`` configured by its section (see :data:`openmm_adv.config.SAMPLER_CONFIGS`)."""
    from . import samplers
    from .platforms import check_platform

    settings = asdict(options)
    if "platform" in settings:
        check_platform(settings["platform"], f"samplers.{kind}.platform")
    common = dict(geometry_check=system, progress=progress)
    if kind == "attack":
        return samplers.AttackSampler(**attack_options(options, system, progress))
    if kind == "torsion_attack":
        try:
            sampler = samplers.TorsionAttackSampler(system, progress=progress, **settings)
            samplers.torsion_attack.rotors_for(system, settings["torsions"])  # fail at start, not mid-run
        except ValueError as exc:
            raise ConfigError(f"samplers.torsion_attack: {exc}") from exc
        return sampler
    if kind == "committee_md":
        return samplers.CommitteeMDSampler(system=system, **settings, **common)
    if kind == "metadynamics":
        return samplers.MetadynamicsSampler(system, **{**settings, "cvs": tuple(settings["cvs"])}, **common)
    if kind == "uncertainty_metadynamics":
        return samplers.UncertaintyMetadynamicsSampler(system=system, **settings, **common)
    if kind == "udd":
        return samplers.UDDSampler(system=system, **settings, **common)
    if kind == "random_displacement":
        return samplers.RandomDisplacementSampler(**settings, **common)
    if kind == "reference_md":
        return samplers.ReferenceMDSampler(system, **settings, **common)
    raise ConfigError(f"unknown sampler kind {kind!r}; use one of {', '.join(SAMPLER_CONFIGS)}")


def build_samplers(samplers: dict, system, progress: bool = True) -> list:
    """Samplers of a loop config: ``{kind: section}``."""
    return [build_sampler(kind, section, system, progress) for kind, section in samplers.items()]


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
