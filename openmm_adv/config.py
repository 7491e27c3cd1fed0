"""Validated YAML configuration for the command line and the active-learning loop.

Each section is a dataclass; :func:`parse_section` turns a mapping into one, rejecting unknown
keys, wrong types and impossible values with an error that names the key (``samplers.attack.kT``).
Limits on a field live in its metadata: ``ge``/``gt``/``le``/``lt`` for numbers, ``choices``
for strings, ``allow_inf`` for the numbers where ``.inf`` means "no limit" (NaN is never a
setting). A key given twice in one mapping is an error, not "the last one wins".
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

__all__ = [
    "ConfigError",
    "parse_section",
    "load_yaml",
    "SystemConfig",
    "DataConfig",
    "OracleConfig",
    "ExecutorConfig",
    "ModelConfig",
    "TrainingSection",
    "AttackConfig",
    "SelectionConfig",
    "LoopConfig",
    "LoopRunConfig",
    "LabelRunConfig",
    "InitRunConfig",
    "MDRunConfig",
    "TrainRunConfig",
    "AttackRunConfig",
]


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or impossible."""


def _limits(**kwargs):
    return {"metadata": kwargs}


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return origin.__name__
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(tp, value, where: str):
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: must not be null (expected {_describe(tp)})")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: expected {_describe(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not allowed; use {_describe(tp)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(item, v, f"{where}[{k}]") for k, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        if args and is_dataclass(args[1]):
            return {k: parse_section(args[1], v, f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    if is_dataclass(tp):
        return parse_section(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads 3e-3 (no dot) as a string; accept numeric strings of that form.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} at {where}")


def _check_limits(meta: dict, value, where: str) -> None:
    if value is None or isinstance(value, (dict, list)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            raise ConfigError(f"{where}: .nan is not a setting; give a number")
        if not meta.get("allow_inf"):
            raise ConfigError(f"{where}: must be a finite number, got {value}")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{where}: {value!r} is not allowed; use one of {', '.join(map(repr, meta['choices']))}")
    for key, test, words in (("gt", lambda a, b: a > b, "greater than"), ("ge", lambda a, b: a >= b, "at least"),
                             ("lt", lambda a, b: a < b, "less than"), ("le", lambda a, b: a <= b, "at most")):
        if key in meta and not test(value, meta[key]):
            raise ConfigError(f"{where}: must be {words} {meta[key]}, got {value!r}")


def parse_section(cls, data, where: str = ""):
    """Build dataclass ``cls`` from a mapping, validating every key (errors name ``where.key``)."""
    label = where or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping of settings, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls) if not f.name.startswith("_")]
    for key in data:
        if key not in known:
            close = [k for k in known if k.lower() == str(key).lower()] or difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{_join(where, key)}: unknown key{hint} (allowed: {', '.join(known)})")
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{_join(where, f.name)}: required key is missing")
            continue
        key_where = _join(where, f.name)
        value = _coerce(hints[f.name], data[f.name], key_where)
        _check_limits(dict(f.metadata), value, key_where)
        kwargs[f.name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        check(where)
    return obj


def _join(where: str, key) -> str:
    return f"{where}.{key}" if where else str(key)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, line: int, first_line: int):
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line, self.first_line = key, line, first_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last value silently, so a setting the user wrote would be ignored)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                try:
                    key = self.construct_object(key_node, deep=True)
                    hash(key)
                except (TypeError, yaml.YAMLError):
                    continue  # unhashable keys are PyYAML's to report
                line = key_node.start_mark.line + 1
                if key in seen and key != "<<":
                    raise _DuplicateKey(key, line, seen[key])
                seen[key] = line
        return super().construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 lambda loader, node: loader.construct_mapping(node))


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with a clear error for a missing file, bad syntax or a key given twice."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise ConfigError(f"{path} line {exc.line}: key {exc.key!r} is given twice (also on line {exc.first_line}); "
                          "YAML would keep only the last one: remove one of them") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------- sections
@dataclass
class SystemConfig:
    """The molecule: a shipped one by ``name`` (``alanine_dipeptide``, ``ammonia``,
    ``double_well``, ``mueller_brown``), or your own from files: ``structure`` (PDB, PDBx/mmCIF,
    xyz/extxyz, or what mdtraj reads), its reference potential as OpenMM force-field XMLs
    (``forcefield``) or a serialized System (``system_xml``), or none (label with xtb or ase);
    ``charge`` and ``multiplicity`` for quantum oracles; ``cvs``: ``name: {dihedral: [a, b, c, d]}``,
    ``{distance: [a, b]}`` or ``{coordinate: a, axis: x}``, atoms as 0-based indices or mdtraj
    selections that match one atom each. Relative paths are read from the working directory."""

    name: Optional[str] = None
    structure: Optional[str] = None
    forcefield: Optional[list[str]] = None
    system_xml: Optional[str] = None
    charge: Optional[int] = None
    multiplicity: Optional[int] = field(default=None, **_limits(ge=1))
    cvs: Optional[dict] = None

    def __post_init__(self):
        if self.structure is None:
            if self.forcefield or self.system_xml or self.cvs:
                raise ConfigError("system: forcefield, system_xml and cvs describe your own files: give "
                                  "system.structure too")
            # the shipped definitions, listed without importing OpenMM (config stays light)
            shipped = sorted(p.stem for p in (Path(__file__).parent / "systems" / "data").glob("*.yaml"))
            if self.shipped not in shipped:
                raise ConfigError(f"system.name: {self.shipped!r} is not a shipped system ({', '.join(shipped)}); "
                                  f"for your own molecule give system.structure (and forcefield or system_xml)")
        elif self.forcefield and self.system_xml:
            raise ConfigError("system: give either forcefield or system_xml, not both")

    @property
    def shipped(self) -> str | None:
        """The shipped system this section names (alanine dipeptide when it names nothing), or
        None for a system from files."""
        return (self.name or "alanine_dipeptide") if self.structure is None else None


@dataclass
class DataConfig:
    """A labelled dataset: ``path`` (``default`` = the shipped alanine dipeptide frames) and an
    optional random subset of ``max_frames`` drawn with ``seed``."""

    path: str = "default"
    max_frames: Optional[int] = field(default=None, **_limits(ge=4))
    seed: int = 0


_DASK_CLUSTERS = ("local", "address", "slurm", "pbs", "sge", "lsf", "htcondor", "moab", "oar")


@dataclass
class ExecutorConfig:
    """Where parallel work runs (see :mod:`openmm_adv.executors`). ``kind``: ``process`` (a
    pool of processes on this machine, the default) or ``dask`` (a ``dask.distributed``
    cluster; ``pip install 'openmm-adv[dask]'``). ``cluster`` (dask): ``local`` (a
    LocalCluster), ``address`` (a running scheduler at ``address``), or a batch system through
    dask-jobqueue (``slurm``, ``pbs``, ``sge``, ``lsf``, ``htcondor``, ``moab``, ``oar``) whose
    keyword arguments (``cores``, ``memory``, ``queue``, ``account``, ``walltime``, ...) go in
    ``options``; see ``examples/dask_slurm``. The number of workers comes from the section
    that uses this one (``oracle.workers``, ``compare --workers``). ``retries``: reruns of a task
    whose worker died."""

    kind: str = field(default="process", **_limits(choices=("process", "dask")))
    cluster: str = field(default="local", **_limits(choices=_DASK_CLUSTERS))
    address: Optional[str] = None
    threads_per_worker: int = field(default=1, **_limits(ge=1))
    retries: int = field(default=2, **_limits(ge=0))
    options: dict = field(default_factory=dict)

    def check(self, where: str) -> None:
        if self.kind == "process" and (self.cluster != "local" or self.address or self.options
                                       or self.threads_per_worker != 1):
            raise ConfigError(f"{_join(where, 'kind')}: cluster, address, threads_per_worker and options describe "
                              f"a dask cluster; set kind: dask (or drop them)")
        if self.cluster == "address" and not self.address:
            raise ConfigError(f"{_join(where, 'address')}: cluster 'address' needs the scheduler's address, "
                              f"e.g. tcp://host:8786")
        if self.address and self.cluster != "address":
            raise ConfigError(f"{_join(where, 'cluster')}: an address is only read with cluster: address "
                              f"(got cluster {self.cluster!r})")


@dataclass
class OracleConfig:
    """Ground truth. ``kind``: ``openmm`` (the system's force field), ``xtb`` (GFN2-xTB via
    tblite), ``ase`` (``calculator: module:callable``), ``analytic`` (toys). ``options`` go to
    the oracle (e.g. ``charge``, ``multiplicity``, ``threads`` for xtb; ``platform`` for openmm).
    ``workers`` > 1 labels in parallel: in a local process pool, or on a Dask cluster when
    ``executor.kind`` is ``dask``. ``timeout`` (s per structure): a structure that runs over is
    recorded as failed and its worker process killed (null: no limit). A dataset records the
    oracle that labelled it and refuses labels of another one (another kind, force field, xTB
    method, charge ...); ``allow_mixed: true`` (or ``--allow-mixed-oracles``) mixes them on purpose."""

    kind: str = field(default="openmm", **_limits(choices=("openmm", "xtb", "ase", "analytic")))
    options: dict = field(default_factory=dict)
    workers: int = field(default=1, **_limits(ge=1))
    timeout: Optional[float] = field(default=None, **_limits(gt=0.0))
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    allow_mixed: bool = False

    def check(self, where: str) -> None:
        if self.timeout is not None and not self.timeout < float("inf"):
            raise ConfigError(f"{_join(where, 'timeout')}: must be a finite number of seconds (null: no limit)")


@dataclass
class ModelConfig:
    """The committee architecture: ``painn`` (equivariant, the default for molecules),
    ``schnet`` (the invariant first design), ``mlp`` (2D toys) or ``from_committee`` (the
    architecture of a committee file: your own models, see :meth:`CommitteeTrainer.from_committee`;
    ``committee`` names the file, default the loop's ``initial_committee``; its sizes and member
    count are its own, so the size keys are not read). Null: ``from_committee`` when
    ``committee`` is given or the ``initial_committee`` is not one of the built-in
    architectures, else ``painn``. Unset (null) sizes take the architecture's own defaults
    (:class:`openmm_adv.models.StackedPaiNN`, ``StackedSchNet``, ``StackedMLP``); ``cutoff`` in
    nm; ``neighbor_list`` (painn): ``auto``, ``all_pairs`` or ``cutoff``; ``prior``:
    ``bonded`` (harmonic bonds and angles fitted to the training forces, the members learn the
    rest) or ``none``; null: ``bonded`` for painn, ``none`` otherwise (``from_committee`` then
    keeps the committee's own prior). ``uncertainty``: ``ensemble`` (the members' disagreement,
    ``n_members`` >= 2) or a single model's (``n_members: 1``, painn): ``gmm`` (a Gaussian
    mixture of ``gmm_components`` components on the learned features, conformal ``gmm_alpha``,
    calibrated on the validation split), ``mve`` (a variance head) or ``evidential`` (an
    evidential head), the heads trained on the likelihood for ``head_epochs`` epochs."""

    architecture: Optional[str] = field(default=None, **_limits(choices=("painn", "schnet", "mlp", "from_committee")))
    committee: Optional[str] = None
    n_members: int = field(default=5, **_limits(ge=1))
    n_features: Optional[int] = field(default=None, **_limits(ge=1))
    n_rbf: Optional[int] = field(default=None, **_limits(ge=1))
    n_interactions: Optional[int] = field(default=None, **_limits(ge=1))
    cutoff: Optional[float] = field(default=None, **_limits(gt=0.0))
    neighbor_list: Optional[str] = field(default=None, **_limits(choices=("auto", "all_pairs", "cutoff")))
    hidden: Optional[int] = field(default=None, **_limits(ge=1))
    prior: Optional[str] = field(default=None, **_limits(choices=("bonded", "none")))
    seed: int = 0
    uncertainty: str = field(default="ensemble", **_limits(choices=("ensemble", "gmm", "mve", "evidential")))
    gmm_components: int = field(default=15, **_limits(ge=1))
    gmm_alpha: float = field(default=0.05, **_limits(gt=0.0, lt=1.0))
    head_epochs: int = field(default=100, **_limits(ge=1))

    def check(self, where: str) -> None:
        if self.uncertainty == "ensemble" and self.n_members < 2:
            raise ConfigError(f"{_join(where, 'n_members')}: a committee needs at least 2 members to disagree; "
                              "for one model choose a single-model uncertainty (uncertainty: gmm, mve or evidential)")
        if self.uncertainty != "ensemble":
            if self.n_members != 1:
                raise ConfigError(f"{_join(where, 'n_members')}: uncertainty {self.uncertainty} reads one model's "
                                  f"features; set n_members: 1 (got {self.n_members}) or uncertainty: ensemble")
            if self.architecture not in (None, "painn"):
                raise ConfigError(f"{_join(where, 'architecture')}: uncertainty {self.uncertainty} needs the learned "
                                  f"per-atom features of painn, not {self.architecture}")
        if self.committee is not None and self.architecture not in (None, "from_committee"):
            raise ConfigError(f"{_join(where, 'committee')}: only read with architecture from_committee "
                              f"(got architecture {self.architecture!r}); drop one of the two")


@dataclass
class TrainingSection:
    """Trainer settings (see :class:`openmm_adv.train.TrainingConfig`); ``keep_best: false``
    trains every epoch and keeps the last state (no early stopping); ``warm_start_epochs: K``
    makes a loop fine-tune the previous generation's committee for K epochs instead of
    training every generation from scratch for ``epochs`` (at ``warm_start_learning_rate``,
    default ``learning_rate``); ``lr_schedule``: ``plateau`` or ``cosine``; ``ema_decay``:
    moving average of the weights (null: off); ``final_energy_weight``: energy weight of the
    last ``final_fraction`` of the epochs; ``energy_scale``: the model's output scale from the
    energy spread (``energy_std``) or the RMS force (``force_rms``); ``split_seed`` fixes the validation split for the
    whole run."""

    epochs: int = field(default=200, **_limits(ge=1))
    batch_size: int = field(default=32, **_limits(ge=1))
    learning_rate: float = field(default=3e-3, **_limits(gt=0.0))
    force_weight: float = field(default=10.0, **_limits(ge=0.0))
    energy_weight: float = field(default=1.0, **_limits(ge=0.0))
    final_energy_weight: Optional[float] = field(default=None, **_limits(ge=0.0))
    final_fraction: float = field(default=0.2, **_limits(ge=0.0, le=1.0))
    energy_scale: str = field(default="energy_std", **_limits(choices=("energy_std", "force_rms")))
    validation_fraction: float = field(default=0.1, **_limits(gt=0.0, lt=1.0))
    split_seed: int = 0
    patience: int = field(default=30, **_limits(ge=1))
    bootstrap: bool = True
    lr_schedule: str = field(default="plateau", **_limits(choices=("plateau", "cosine")))
    min_learning_rate: float = field(default=1e-5, **_limits(gt=0.0))
    ema_decay: Optional[float] = field(default=None, **_limits(gt=0.0, lt=1.0))
    keep_best: bool = True
    warm_start_epochs: Optional[int] = field(default=None, **_limits(ge=1))
    warm_start_learning_rate: Optional[float] = field(default=None, **_limits(gt=0.0))


@dataclass
class AttackConfig:
    """Adversarial attack settings (see :class:`openmm_adv.samplers.Attack`); ``kT`` in kJ/mol,
    ``step_size``, ``max_step`` and ``max_displacement`` in nm."""

    kT: float = field(default=20.9, **_limits(gt=0.0))
    n_steps: int = field(default=150, **_limits(ge=1))
    step_size: float = field(default=0.004, **_limits(gt=0.0))
    optimizer: str = field(default="adam", **_limits(choices=("adam", "gradient")))
    objective: str = field(default="log", **_limits(choices=("log", "linear")))
    metric: str = field(default="force_variance",
                        **_limits(choices=("force_variance", "max_force_deviation", "energy_std")))
    batch_size: int = field(default=16, **_limits(ge=1))
    max_step: float = field(default=0.02, **_limits(gt=0.0))
    max_displacement: float = field(default=0.3, **_limits(gt=0.0))
    report_interval: int = field(default=5, **_limits(ge=1))
    platform: str = field(default="CPU", **_limits(choices=("Reference", "CPU", "CUDA")))
    use_cuda_graphs: bool = False


_METRICS = ("force_variance", "max_force_deviation", "energy_std", "gmm_error", "gmm_nll", "aleatoric_variance")


@dataclass
class TorsionAttackConfig:
    """Adversarial attack on the angles of rotatable bonds (see
    :class:`openmm_adv.samplers.TorsionAttack`): ``torsions`` ``rotatable`` (every rotatable
    bond of the topology), ``cvs`` (the system's dihedral CVs) or a list of 4-atom dihedrals;
    ``step_size``, ``max_step`` and ``max_turn`` (the most any angle may turn from its seed,
    a trust region; none: unbounded) in radians; ``kT`` in kJ/mol; ``novelty_weight`` > 0 adds
    ``-novelty_weight * log(S + exp(-novelty_cap))`` of the labelled data's CV kernel sum
    (bandwidth in radians) to the objective, and ``spread`` counts the other replicas of the
    batch as labelled; ``seeds: frontier`` starts from the labelled frames where the kernel
    density at ``frontier_bandwidth`` (none: ``novelty_bandwidth``) is lowest; ``jitter`` > 0
    (nm) displaces every found geometry by that Gaussian noise per coordinate;
    ``refine_steps`` Cartesian attack steps at ``refine_kT`` (kJ/mol) follow; atoms three or more
    bonds apart closer than ``clash_factor`` times their van der Waals radii are a clash."""

    kT: float = field(default=20.9, **_limits(gt=0.0))
    n_steps: int = field(default=150, **_limits(ge=1))
    step_size: float = field(default=0.05, **_limits(gt=0.0))
    max_step: float = field(default=0.3, **_limits(gt=0.0))
    max_turn: Optional[float] = field(default=None, **_limits(gt=0.0))
    torsions: Union[str, list[list[int]]] = "rotatable"
    metric: str = field(default="force_variance", **_limits(choices=_METRICS))
    batch_size: int = field(default=16, **_limits(ge=1))
    report_interval: int = field(default=5, **_limits(ge=1))
    novelty_weight: float = field(default=0.0, **_limits(ge=0.0))
    novelty_bandwidth: float = field(default=0.35, **_limits(gt=0.0))
    novelty_cap: float = field(default=float("inf"), **_limits(gt=0.0, allow_inf=True))
    spread: bool = False
    seeds: str = field(default="uniform", **_limits(choices=("uniform", "frontier")))
    frontier_bandwidth: Optional[float] = field(default=None, **_limits(gt=0.0))
    jitter: float = field(default=0.0, **_limits(ge=0.0))
    refine_steps: int = field(default=40, **_limits(ge=0))
    refine_kT: float = field(default=2.5, **_limits(gt=0.0))
    refine_step_size: float = field(default=0.001, **_limits(gt=0.0))
    clash_factor: float = field(default=0.6, **_limits(gt=0.0))
    platform: str = field(default="CPU", **_limits(choices=("Reference", "CPU", "CUDA")))


@dataclass
class _DynamicsConfig:
    temperature: float = field(default=300.0, **_limits(gt=0.0))
    timestep: float = field(default=0.0005, **_limits(gt=0.0))
    n_steps: int = field(default=2000, **_limits(ge=1))
    report_interval: int = field(default=50, **_limits(ge=1))
    friction: float = field(default=1.0, **_limits(gt=0.0))
    metric: str = field(default="force_variance", **_limits(choices=_METRICS))
    platform: str = field(default="CPU", **_limits(choices=("Reference", "CPU", "CUDA")))


@dataclass
class CommitteeMDConfig(_DynamicsConfig):
    """Langevin MD on the committee mean (K, ps); frames kept DP-GEN style when their ``metric``
    (default: max atomic force deviation, kJ/mol/nm) is in ``[lower, upper)``."""

    metric: str = field(default="max_force_deviation", **_limits(choices=_METRICS))
    lower: Optional[float] = None
    upper: Optional[float] = None
    use_cuda_graphs: bool = False


@dataclass
class _MetadynamicsCommon(_DynamicsConfig):
    height: float = field(default=1.2, **_limits(gt=0.0))
    bias_factor: float = field(default=6.0, **_limits(gt=1.0))
    frequency: int = field(default=500, **_limits(ge=1))
    n_steps: int = field(default=5000, **_limits(ge=1))
    report_interval: int = field(default=100, **_limits(ge=1))
    n_walkers: Optional[int] = field(default=None, **_limits(ge=1))
    # K; walker k at walker_temperatures[k % len] (null: all at temperature)
    walker_temperatures: Optional[list[float]] = None


@dataclass
class MetadynamicsConfig(_MetadynamicsCommon):
    """Well-tempered metadynamics on the committee mean, biasing ``cvs`` (default phi, psi);
    ``width`` rad, ``height`` kJ/mol, deposit every ``frequency`` steps."""

    cvs: list[str] = field(default_factory=lambda: ["phi", "psi"])
    width: float = field(default=0.35, **_limits(gt=0.0))


@dataclass
class UncertaintyMetadynamicsConfig(_MetadynamicsCommon):
    """Well-tempered metadynamics with the committee uncertainty (``cv_metric``, log-scaled
    when ``log_cv``) as the collective variable. With a Gaussian-mixture model
    (``model.uncertainty: gmm``), ``cv_metric: gmm_nll, log_cv: false`` and
    ``walker_temperatures: [300, 500]`` is the GMM-CV sampler of Tan, Dietschreit and
    Gomez-Bombarelli (2025)."""

    cv_metric: str = field(default="force_variance", **_limits(choices=_METRICS))
    log_cv: bool = True
    width: Optional[float] = field(default=None, **_limits(gt=0.0))


@dataclass
class UDDConfig(_DynamicsConfig):
    """Uncertainty-driven dynamics: MD on the committee mean plus ``A [exp(-var/(N B^2)) - 1]``
    (kJ/mol); ``B`` None picks it from the seeds' energy spread times ``B_auto_factor``."""

    A: float = field(default=10.0, **_limits(gt=0.0))
    B: Optional[float] = field(default=None, **_limits(gt=0.0))
    B_auto_factor: float = field(default=3.0, **_limits(gt=0.0))
    lower: Optional[float] = None
    upper: Optional[float] = None


@dataclass
class RandomDisplacementConfig:
    """Dataset geometries displaced by Gaussian noise of ``sigma`` nm per coordinate."""

    sigma: float = field(default=0.01, **_limits(gt=0.0))
    n_per_seed: int = field(default=10, **_limits(ge=1))
    metric: str = field(default="force_variance", **_limits(choices=_METRICS))


@dataclass
class ReferenceMDConfig(_DynamicsConfig):
    """Langevin MD with the reference potential: the classic data collection."""

    report_interval: int = field(default=100, **_limits(ge=1))
    equilibration: int = field(default=0, **_limits(ge=0))


@dataclass
class SelectionConfig:
    """Which candidates get labelled (see :class:`openmm_adv.selection.Selector`). Windows are
    in the uncertainty metric's units or percentiles of the training set's uncertainties;
    ``energy_cap`` in kJ/mol above the lowest dataset energy; ``min_rmsd`` in nm; ``rank_by``
    ``spread`` caps by even spacing instead of by uncertainty (baselines)."""

    lower: Optional[float] = None
    upper: Optional[float] = None
    percentile_lower: Optional[float] = field(default=None, **_limits(ge=0.0, le=100.0))
    percentile_upper: Optional[float] = field(default=None, **_limits(ge=0.0, le=100.0))
    min_rmsd: float = field(default=0.01, **_limits(ge=0.0))
    max_selected: Optional[int] = field(default=16, **_limits(ge=0))
    energy_cap: Optional[float] = field(default=None, **_limits(gt=0.0))
    rank_by: str = field(default="uncertainty", **_limits(choices=("uncertainty", "spread")))
    physical_filter: bool = True

    def check(self, where: str) -> None:
        if self.lower is not None and self.upper is not None and self.lower >= self.upper:
            raise ConfigError(f"{_join(where, 'lower')}: must be below upper ({self.lower} >= {self.upper})")
        if (self.percentile_lower is not None and self.percentile_upper is not None
                and self.percentile_lower >= self.percentile_upper):
            raise ConfigError(f"{_join(where, 'percentile_lower')}: must be below percentile_upper")


@dataclass
class LoopConfig:
    """Loop control: ``generations`` sample-label rounds, ``seeds`` seed geometries drawn from
    the dataset per generation, ``seed`` for every random choice, ``threads`` for torch;
    ``max_label_energy`` (kJ/mol above or below the dataset's lowest energy) rejects absurd labels
    (null: the molecule's default, :func:`openmm_adv.plausibility.default_max_label_energy`;
    ``.inf`` turns it off)."""

    generations: int = field(default=3, **_limits(ge=1))
    seeds: int = field(default=16, **_limits(ge=1))
    seed: int = 0
    final_training: bool = True
    threads: Optional[int] = field(default=None, **_limits(ge=1))
    max_label_energy: Optional[float] = field(default=None, **_limits(gt=0.0, allow_inf=True))


@dataclass
class LoopRunConfig:
    """``openmm-adv loop``: the whole active-learning run."""

    system: SystemConfig = field(default_factory=SystemConfig)
    initial_data: DataConfig = field(default_factory=DataConfig)
    initial_committee: Optional[str] = None
    oracle: OracleConfig = field(default_factory=OracleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingSection = field(default_factory=TrainingSection)
    samplers: dict = field(default_factory=lambda: {"attack": AttackConfig()})
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)

    def check(self, where: str) -> None:
        if not self.samplers:
            raise ConfigError(f"{_join(where, 'samplers')}: give at least one sampler (e.g. attack: {{}})")
        parsed = {}
        for name, options in self.samplers.items():
            if name not in SAMPLER_CONFIGS:
                raise ConfigError(f"{_join(where, 'samplers')}.{name}: unknown sampler; use one of {', '.join(SAMPLER_KINDS)}")
            section = SAMPLER_CONFIGS[name]
            parsed[name] = options if isinstance(options, section) else parse_section(section, options, f"{_join(where, 'samplers')}.{name}")
        self.samplers = parsed


SAMPLER_CONFIGS = {
    "attack": AttackConfig,
    "torsion_attack": TorsionAttackConfig,
    "committee_md": CommitteeMDConfig,
    "metadynamics": MetadynamicsConfig,
    "uncertainty_metadynamics": UncertaintyMetadynamicsConfig,
    "udd": UDDConfig,
    "random_displacement": RandomDisplacementConfig,
    "reference_md": ReferenceMDConfig,
}
SAMPLER_KINDS = tuple(SAMPLER_CONFIGS)


@dataclass
class LabelRunConfig:
    """``openmm-adv label``: label the frames of ``input`` (extxyz, an openmm-adv dataset, or any
    trajectory mdtraj reads with the system's topology) and append them to ``output``. Labels
    more than ``max_label_energy`` kJ/mol above or below the lowest energy in ``output`` (in
    the batch, for a new dataset; null: the molecule's default, see
    :func:`openmm_adv.plausibility.default_max_label_energy`; ``.inf``: no range check), or
    with absurd forces, are refused and recorded with the failures."""

    input: str
    output: str
    system: SystemConfig = field(default_factory=SystemConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    sampler: str = "import"
    generation: int = field(default=0, **_limits(ge=0))
    max_label_energy: Optional[float] = field(default=None, **_limits(gt=0.0, allow_inf=True))


@dataclass
class InitMDConfig:
    """Reference-force-field MD of ``openmm-adv init``: ``equilibration_steps``, then a frame
    every ``interval`` steps of ``timestep_fs`` (no constraints: keep it at 0.5 fs or less for
    hydrogens), Langevin ``friction`` in 1/ps."""

    timestep_fs: float = field(default=0.5, **_limits(gt=0.0, le=4.0))
    interval: int = field(default=200, **_limits(ge=1))
    equilibration_steps: int = field(default=2000, **_limits(ge=0))
    friction: float = field(default=1.0, **_limits(gt=0.0))


@dataclass
class InitRunConfig:
    """``openmm-adv init``: the first labelled data of a molecule, written to ``output`` (a new
    HDF5 dataset). ``method``: ``md`` (reference force field MD), ``displacements`` (harmonic
    normal-mode sampling at ``temperature``), ``import`` (frames of ``input``, with their labels
    when the file has them and ``use_file_labels``), or ``auto`` (import when ``input`` is
    given, else md where the system has a reference force field, else displacements).
    ``minimise`` first relaxes the structure (reference force field, else the oracle).
    ``max_label_energy`` (kJ/mol above the lowest label; null: the molecule's default, see
    :func:`openmm_adv.plausibility.default_max_label_energy`) refuses implausible labels."""

    output: str
    system: SystemConfig = field(default_factory=SystemConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    method: str = field(default="auto", **_limits(choices=("auto", "md", "displacements", "import")))
    n_frames: int = field(default=100, **_limits(ge=1))
    temperature: float = field(default=300.0, **_limits(gt=0.0))
    minimise: bool = True
    md: InitMDConfig = field(default_factory=InitMDConfig)
    input: Optional[str] = None
    use_file_labels: bool = True
    max_label_energy: Optional[float] = field(default=None, **_limits(gt=0.0, allow_inf=True))
    seed: int = 0


@dataclass
class MDRunConfig:
    """``openmm-adv md``: Langevin MD on a committee's mean energy in an ``app.Simulation``,
    writing the trajectory (DCD), the state log, the committee uncertainty along the run and
    the frames above ``threshold`` (or the ``percentile`` of ``training_data``'s uncertainties)
    to ``output``; it stops where a bond breaks or atoms clash."""

    output: str
    committee: str = "default"
    system: SystemConfig = field(default_factory=SystemConfig)
    start: Optional[str] = None
    temperature: float = field(default=300.0, **_limits(gt=0.0))
    timestep_fs: float = field(default=0.5, **_limits(gt=0.0, le=4.0))
    n_steps: int = field(default=2000, **_limits(ge=1))
    report_interval: int = field(default=100, **_limits(ge=1))
    friction: float = field(default=1.0, **_limits(gt=0.0))
    platform: str = field(default="CPU", **_limits(choices=("Reference", "CPU", "CUDA")))
    metric: str = field(default="force_variance", **_limits(choices=_METRICS))
    threshold: Optional[float] = field(default=None, **_limits(ge=0.0))
    percentile: Optional[float] = field(default=None, **_limits(ge=0.0, le=100.0))
    training_data: Optional[str] = None
    stop_after: Optional[int] = field(default=None, **_limits(ge=1))
    seed: int = 0
    threads: Optional[int] = field(default=None, **_limits(ge=1))

    def check(self, where: str) -> None:
        if self.percentile is not None and self.threshold is not None:
            raise ConfigError(f"{_join(where, 'percentile')}: give either threshold or percentile, not both")
        if self.percentile is not None and self.training_data is None:
            raise ConfigError(f"{_join(where, 'training_data')}: percentile needs the committee's training data "
                              f"(a dataset .h5) to compute the training set's uncertainties")


@dataclass
class TrainRunConfig:
    """``openmm-adv train``: fit a committee to a dataset and save it as TorchScript."""

    output: str
    data: DataConfig = field(default_factory=DataConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingSection = field(default_factory=TrainingSection)
    seed: int = 0
    threads: Optional[int] = field(default=None, **_limits(ge=1))


@dataclass
class AttackRunConfig:
    """``openmm-adv attack``: attack seeds drawn from ``seeds`` with ``committee`` and write the
    selected candidates (extxyz, unlabelled) to ``output``."""

    output: str
    committee: str = "default"
    seeds: DataConfig = field(default_factory=DataConfig)
    n_seeds: int = field(default=16, **_limits(ge=1))
    system: SystemConfig = field(default_factory=SystemConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    threads: Optional[int] = field(default=None, **_limits(ge=1))
