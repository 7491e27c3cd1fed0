"""MACE committees: mace-torch models as committee members (optional extra ``[mace]``).

A :class:`MACEMember` wraps one mace-torch model (built in Python, a ``.model`` file written by
``mace_run_train``, or its TorchScript ``*_compiled.model``) so that it maps positions
``[B, N, 3]`` in nm to energies ``[B]`` in kJ/mol, like every other committee member. The
molecular graph (every ordered pair of distinct atoms closer than the model's ``r_max``, no
periodic images) is built inside ``forward`` with torch operations only, so a committee of MACE
members compiles to TorchScript and runs in an openmm-torch ``TorchForce``. Forces come from
autograd in :class:`~openmm_adv.models.potential.CommitteePotential` (the model is called with
``compute_force=False``), and the attack's force is a double backward through the model.

:func:`mace_committee` builds a :class:`~openmm_adv.models.committee.Committee` from models or
files; :func:`train_mace_committee` trains the members with mace's own ``mace_run_train`` CLI,
one subprocess per member with its own seed.

mace-torch is not a base dependency: ``pip install -e '.[mace]'``. Importing this module does
not import mace; building a member does. Note that ``import mace`` sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the whole process (mace-torch does this so that
e3nn 0.4.4 can load its constants with torch >= 2.6): after it, ``torch.load`` unpickles
arbitrary objects, so load only files you trust.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import torch
from torch import Tensor, nn

from .._errors import first_line

__all__ = [
    "EV_TO_KJ_PER_MOL",
    "MACE_DEFAULTS",
    "MACEMember",
    "MACENotInstalledError",
    "MACETrainingError",
    "load_mace_model",
    "mace_committee",
    "mace_hyperparameters",
    "require_mace",
    "train_mace_committee",
]

#: kJ/mol per eV (e * N_A / 1000), the constant of :func:`openmm_adv.data.write_extxyz`.
EV_TO_KJ_PER_MOL = 96.48533212331
#: Angstrom per nm.
ANGSTROM_PER_NM = 10.0
INSTALL_HINT = "pip install -e '.[mace]'  (mace-torch==0.3.16)"

#: Settings passed to ``mace_run_train`` by :func:`train_mace_committee` unless overridden:
#: a small MACE (32 channels with l <= 1 node features, spherical harmonics up to l = 3,
#: body order 4 through correlation 3, two interactions, 5 A cutoff), float64, CPU, an
#: exponential moving average of the weights and a second stage (SWA: higher energy weight
#: over the last quarter of the epochs). E0s are fitted to the training energies ("average"),
#: since a molecular data set has no isolated-atom energies. 100 epochs.
MACE_DEFAULTS: Dict[str, Any] = {
    "model": "MACE",
    "hidden_irreps": "32x0e+32x1o",
    "max_ell": 3,
    "correlation": 3,
    "num_interactions": 2,
    "r_max": 5.0,
    "E0s": "average",
    "batch_size": 10,
    "valid_batch_size": 10,
    "valid_fraction": 0.1,
    "max_num_epochs": 100,
    "ema": True,
    "ema_decay": 0.99,
    "swa": True,
    "default_dtype": "float64",
    "device": "cpu",
    "plot": False,
    "save_cpu": True,
}

# Options that train_mace_committee sets itself (one value per member or per call).
_RESERVED = ("name", "seed", "train_file", "work_dir", "model_dir", "log_dir", "checkpoints_dir", "results_dir")


class MACENotInstalledError(ImportError):
    """mace-torch is missing; the message says how to install it."""


class MACETrainingError(RuntimeError):
    """``mace_run_train`` failed; the message holds the tail of its log."""


def require_mace():
    """Import mace (before e3nn, which it patches) or raise :class:`MACENotInstalledError`."""
    try:
        import mace  # noqa: F401  (sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD before e3nn loads)
    except ImportError as exc:
        raise MACENotInstalledError(
            f"MACE committees need mace-torch, which is not installed ({exc}); install it with: {INSTALL_HINT}"
        ) from exc
    return mace


# ---------------------------------------------------------------------- loading and inspection
def load_mace_model(path: str | Path) -> nn.Module:
    """Load a MACE model file: TorchScript (``*_compiled.model``) or a pickled model (``*.model``).

    Pickled models are read with ``torch.load(weights_only=False)``, which runs code from the
    file: load only files you trust.
    """
    return _load(path)[0]


def _load(path: str | Path) -> tuple[nn.Module, Dict[str, Any]]:
    """The model and, for TorchScript written by mace_run_train, its ``config.yaml`` (JSON)."""
    require_mace()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no MACE model file at {path}")
    extra = {"config.yaml": ""}
    try:
        model = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception:  # not TorchScript: try a pickled module
        pass
    else:
        try:
            config = json.loads(extra["config.yaml"]) if extra["config.yaml"] else {}
        except ValueError:
            config = {}
        return model, config if isinstance(config, dict) else {}
    try:
        model = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(
            f"{path} is neither a TorchScript model nor a MACE model saved by mace_run_train "
            f"(corrupt or truncated file?): {first_line(exc)}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a MACE model (torch.nn.Module)")
    return model, {}


def _model_dtype(model: nn.Module) -> torch.dtype:
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def _class_name(model: nn.Module) -> str:
    if isinstance(model, torch.jit.ScriptModule):
        return str(getattr(model, "original_name", type(model).__name__))
    return type(model).__name__


def _table(model: nn.Module) -> tuple[list[int], float, list[str]]:
    """The model's atomic-number table, r_max (Angstrom) and heads, or a clear error."""
    try:
        table = [int(z) for z in model.atomic_numbers.tolist()]
        r_max = float(model.r_max)
    except (AttributeError, RuntimeError, TypeError) as exc:
        raise TypeError(
            f"{_class_name(model)} does not look like a mace-torch model (it needs the buffers "
            f"'atomic_numbers' and 'r_max' of mace.modules.MACE): {first_line(exc)}"
        ) from exc
    heads = [str(h) for h in getattr(model, "heads", None) or ["Default"]]
    return table, r_max, heads


# Keys of mace_run_train's config.yaml (inside its TorchScript files; every value a string) used
# where the model itself does not tell (TorchScript drops Python attributes such as irreps).
_CONFIG_KEYS: Dict[str, Callable[[Any], Any]] = {
    "hidden_irreps": str,
    "max_ell": int,
    "correlation": int,
    "num_bessel": int,
    "num_polynomial_cutoff": int,
    "avg_num_neighbors": float,
    "MLP_irreps": str,
    "radial_MLP": lambda v: json.loads(v) if isinstance(v, str) else v,
}


def mace_hyperparameters(model: nn.Module, config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """JSON-friendly facts about a MACE model (what can be read from it; more for Python models).

    ``config``: mace_run_train's ``config.yaml`` of a TorchScript file, read where the model
    itself does not tell.
    """
    require_mace()
    from e3nn import o3

    table, r_max, heads = _table(model)
    dtype = _model_dtype(model)
    h: Dict[str, Any] = {
        "model_class": _class_name(model),
        "r_max_angstrom": r_max,
        "atomic_numbers_table": table,
        "heads": heads,
        "dtype": str(dtype).replace("torch.", ""),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
    }
    readers: Dict[str, Callable[[], Any]] = {
        "num_interactions": lambda: int(model.num_interactions),
        # TorchScript keeps irreps as tuples: Irreps() reads both forms
        "hidden_irreps": lambda: str(o3.Irreps(model.products[0].linear.irreps_out)),
        "max_ell": lambda: int(model.spherical_harmonics._lmax),  # pylint: disable=protected-access
        "correlation": lambda: [len(p.symmetric_contractions.contractions[0].weights) + 1 for p in model.products],
        "num_bessel": lambda: int(len(model.radial_embedding.bessel_fn.bessel_weights)),
        "num_polynomial_cutoff": lambda: int(model.radial_embedding.cutoff_fn.p),
        "avg_num_neighbors": lambda: float(model.interactions[0].avg_num_neighbors),
        "atomic_energies_ev": lambda: model.atomic_energies_fn.atomic_energies.detach().cpu().tolist(),
        "scale_ev": lambda: model.scale_shift.scale.detach().cpu().tolist(),
        "shift_ev": lambda: model.scale_shift.shift.detach().cpu().tolist(),
    }
    for key, read in readers.items():
        try:
            h[key] = read()
        except Exception:  # not every model (or its TorchScript) exposes every attribute
            pass
    for key, parse in _CONFIG_KEYS.items():
        if key in h or key not in (config or {}):
            continue
        try:
            value = parse(config[key])
        except (TypeError, ValueError):
            continue
        if key == "correlation" and "num_interactions" in h:
            value = [value] * h["num_interactions"]  # mace writes the first layer's
        h[key] = value
    return h


def _compiled(model: nn.Module) -> nn.Module:
    """A TorchScript copy of a Python MACE model (e3nn's recursive compile); scripts pass through."""
    if isinstance(model, torch.jit.ScriptModule):
        return model
    from e3nn.util import jit as e3nn_jit

    model = copy.deepcopy(model).eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e3nn/TorchScript annotation chatter
            return e3nn_jit.compile(model)
    except Exception as exc:
        raise ValueError(
            f"the MACE model ({_class_name(model)}) cannot be compiled to TorchScript: {first_line(exc)}; "
            "pass compile=False and build forces with backend='python'"
        ) from exc


# ---------------------------------------------------------------------- the member
class MACEMember(nn.Module):
    """One mace-torch model as a committee member: positions ``[B, N, 3]`` nm -> energies ``[B]`` kJ/mol.

    Parameters
    ----------
    model : torch.nn.Module, str or Path
        A mace-torch model (``mace.modules.MACE`` / ``ScaleShiftMACE`` ...), a ``.model`` file
        written by ``mace_run_train``, or its TorchScript (``*_compiled.model``).
    atomic_numbers : sequence of int
        The molecule's atoms, in order; every element must be in the model's table.
    head : str, optional
        The readout head of a multi-head model (default: ``"Default"`` if the model has it,
        else its first head).
    compile : bool
        Compile a Python model to TorchScript (e3nn's recursive compile, on a copy), so the
        member can run in a ``TorchForce``. ``False`` keeps the eager model (``backend="python"``).

    Inside ``forward`` positions go to Angstrom (x10) in the model's dtype, the graph has an
    edge for every ordered pair of distinct atoms of the same molecule closer than ``r_max``
    (no periodic images: zero shifts and cell), and the energy goes from eV to kJ/mol.
    """

    def __init__(self, model, atomic_numbers: Sequence[int], head: Optional[str] = None, compile: bool = True):
        super().__init__()
        require_mace()
        config: Dict[str, Any] = {}
        if isinstance(model, (str, Path)):
            model, config = _load(model)
        if not isinstance(model, nn.Module):
            raise TypeError(f"a MACE member needs a torch.nn.Module or a model file, got {type(model).__name__}")
        table, r_max, heads = _table(model)
        z = [int(a) for a in atomic_numbers]
        if not z:
            raise ValueError("atomic_numbers is empty")
        missing = sorted(set(z) - set(table))
        if missing:
            raise ValueError(
                f"atomic numbers {missing} are not in the MACE model's table {table}; "
                "use a model trained on data with these elements (mace_run_train takes the table from "
                "the training set, or from --atomic_numbers)"
            )
        if head is None:
            head = "Default" if "Default" in heads else heads[0]
        if head not in heads:
            raise ValueError(f"head {head!r} is not one of the model's heads {heads}")
        self.hyperparameters = mace_hyperparameters(model, config)
        dtype = _model_dtype(model)
        self.model = _compiled(model) if compile else model
        n = len(z)
        one_hot = torch.zeros(n, len(table), dtype=dtype)
        one_hot[torch.arange(n), torch.tensor([table.index(a) for a in z])] = 1.0
        self.register_buffer("node_attrs", one_hot)
        self.register_buffer("atomic_numbers", torch.tensor(z, dtype=torch.long))
        self.register_buffer("distinct_pairs", ~torch.eye(n, dtype=torch.bool))
        self.register_buffer("dtype_probe", torch.zeros(0, dtype=dtype))
        self.n_atoms = n
        self.r_max = r_max  # Angstrom
        self.head = head
        self.head_index = heads.index(head)
        self.ev_to_kj_per_mol = EV_TO_KJ_PER_MOL  # attributes: TorchScript cannot read module globals
        self.angstrom_per_nm = ANGSTROM_PER_NM

    def forward(self, positions: Tensor) -> Tensor:
        if positions.dim() != 3 or positions.shape[1] != self.n_atoms or positions.shape[2] != 3:
            raise ValueError(
                "a MACE member expects positions of shape [B, " + str(self.n_atoms) + ", 3] in nm, got "
                + str(list(positions.shape))
            )
        n_batch = positions.shape[0]
        n = self.n_atoms
        device = positions.device
        dtype = self.dtype_probe.dtype
        # Multiply last: a fresh tensor, so MACE may call requires_grad_ on it.
        flat = positions.reshape(n_batch * n, 3).to(dtype) * self.angstrom_per_nm
        xyz = flat.detach().reshape(n_batch, n, 3)
        d2 = (xyz.unsqueeze(2) - xyz.unsqueeze(1)).pow(2).sum(-1)
        pairs = ((d2 < self.r_max * self.r_max) & self.distinct_pairs).nonzero()  # [E, 3]: molecule, i, j
        offset = pairs[:, 0] * n
        edge_index = torch.stack([offset + pairs[:, 1], offset + pairs[:, 2]])  # sender, receiver
        n_edges = pairs.shape[0]
        data: Dict[str, Tensor] = {
            "positions": flat,
            "node_attrs": self.node_attrs.repeat(n_batch, 1),
            "edge_index": edge_index,
            "shifts": torch.zeros(n_edges, 3, dtype=dtype, device=device),
            "unit_shifts": torch.zeros(n_edges, 3, dtype=dtype, device=device),
            "cell": torch.zeros(n_batch * 3, 3, dtype=dtype, device=device),
            "batch": torch.arange(n_batch, device=device).repeat_interleave(n),
            "ptr": torch.arange(n_batch + 1, device=device) * n,
            "head": torch.full([n_batch], self.head_index, dtype=torch.long, device=device),
        }
        out = self.model(data, training=False, compute_force=False)
        energy = out["energy"]
        if energy is None:
            raise ValueError("the MACE model returned no energy")
        return energy.reshape(n_batch) * self.ev_to_kj_per_mol


# ---------------------------------------------------------------------- committees
def _summarise(hypers: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Keys equal for every member once; differing keys as per-member lists."""
    common = {k: v for k, v in hypers[0].items() if all(h.get(k) == v for h in hypers[1:])}
    differing = sorted({k for h in hypers for k in h} - set(common))
    summary = dict(common)
    if differing:
        summary["per_member"] = {k: [h.get(k) for h in hypers] for k in differing}
    return summary


def mace_committee(models_or_paths, atomic_numbers: Sequence[int], head: Optional[str] = None, compile: bool = True):
    """A :class:`~openmm_adv.models.committee.Committee` of MACE members.

    Parameters
    ----------
    models_or_paths : sequence of torch.nn.Module, str, Path or MACEMember
        mace-torch models, their ``.model`` / ``*_compiled.model`` files, or ready members.
    atomic_numbers : sequence of int
        The molecule's atoms in order (e.g. ``alanine_dipeptide().atomic_numbers``).
    head, compile
        See :class:`MACEMember`.
    """
    from .committee import Committee

    z = [int(a) for a in atomic_numbers]
    members = []
    for k, model in enumerate(models_or_paths):
        if isinstance(model, MACEMember):
            if model.atomic_numbers.tolist() != z:
                raise ValueError(f"member {k} was built for other atomic numbers than {z}")
            members.append(model)
            continue
        try:
            members.append(MACEMember(model, z, head=head, compile=compile))
        except MACENotInstalledError:
            raise
        except Exception as exc:
            raise type(exc)(f"member {k}: {exc}") from exc
    committee = Committee.from_models(members, z)
    try:
        import mace

        version = mace.__version__
    except Exception:  # pragma: no cover - mace is importable here
        version = "unknown"
    hyper = _summarise([m.hyperparameters for m in members])
    hyper.update(n_members=len(members), member_types=["MACEMember"] * len(members), mace_torch_version=version)
    committee.metadata["architecture"] = "MACE"
    committee.metadata["hyperparameters"] = hyper
    return committee


# ---------------------------------------------------------------------- training with mace_run_train
def _cli() -> list[str]:
    """The ``mace_run_train`` command of this interpreter's environment."""
    beside = Path(sys.executable).parent / "mace_run_train"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("mace_run_train")
    if found:
        return [found]
    return [sys.executable, "-m", "mace.cli.run_train"]


def _cli_arguments(options: Dict[str, Any]) -> list[str]:
    """``--key=value`` arguments, checked against mace's own parser (unknown keys are refused)."""
    from mace.tools import build_default_arg_parser

    parser = build_default_arg_parser()
    known = parser._option_string_actions  # pylint: disable=protected-access
    args = []
    for key, value in options.items():
        flag = "--" + key
        if key in _RESERVED:
            raise ValueError(f"mace option {key!r} is set by train_mace_committee itself; leave it out")
        if flag not in known:
            close = difflib.get_close_matches(flag, list(known), n=1)
            hint = f"; did you mean {close[0][2:]!r}?" if close else ""
            raise ValueError(f"mace_run_train has no option {key!r}{hint}")
        if value is None:
            continue
        action = known[flag]
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):  # pylint: disable=protected-access
            if not isinstance(value, bool):
                raise ValueError(f"mace option {key!r} is a switch: give True or False, not {value!r}")
            if value != action.default:
                args.append(flag)
            continue
        args.append(f"{flag}={value}")
    return args


def _tail(path: Path, n_lines: int = 40) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(deque(handle, maxlen=n_lines))
    except OSError:
        return "(no log)"


def _run_member(command: list[str], log_path: Path, env: dict, progress: Callable[[str], None], label: str) -> None:
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if "Epoch" in line or "ERROR" in line or line.startswith("Traceback"):
                progress(f"{label} {line.rstrip()}")
        rc = process.wait()
    if rc != 0:
        raise MACETrainingError(
            f"{label}: mace_run_train exited with status {rc}; command: {' '.join(command)}\n"
            f"last lines of {log_path}:\n{_tail(log_path)}"
        )


def train_mace_committee(
    extxyz_train: str | Path,
    n_members: int,
    work_dir: str | Path,
    seeds: Optional[Sequence[int]] = None,
    atomic_numbers: Optional[Sequence[int]] = None,
    energy_key: str = "energy",
    forces_key: str = "forces",
    threads: Optional[int] = 1,
    progress: Optional[Callable[[str], None]] = print,
    **mace_options,
):
    """Train ``n_members`` MACE models with ``mace_run_train`` (one subprocess each) -> Committee.

    Parameters
    ----------
    extxyz_train : str or Path
        Training data in extended XYZ, Angstrom and eV, e.g. from
        :meth:`openmm_adv.data.Dataset.to_extxyz` (energy in the ``energy=`` header field,
        forces in the ``forces`` column: the default keys).
    n_members : int
        Committee size (at least 2).
    work_dir : str or Path
        Holds ``member_KK/`` (mace's work folder, ``train.log`` with its full output),
        ``member_KK.model`` (the trained model) and ``committee.pt`` (:meth:`Committee.save`).
        A member whose ``member_KK.model`` exists is not retrained, so rerunning the same call
        resumes; each model is written to a temporary name and renamed when complete.
    seeds : sequence of int, optional
        One per member (``--seed``; it drives initialisation, shuffling and the validation
        split); default ``0, 1, ..., n_members - 1``.
    atomic_numbers : sequence of int, optional
        The molecule's atoms in order; read from the file when it was written by
        :func:`openmm_adv.data.write_extxyz`.
    energy_key, forces_key : str
        The extxyz keys of the labels (``--energy_key``, ``--forces_key``).
    threads : int or None
        ``OMP_NUM_THREADS`` for each training process (``None``: inherit the environment).
    progress : callable or None
        Receives one line per member start/end and mace's per-epoch lines.
    **mace_options
        Any ``mace_run_train`` option (``max_num_epochs=200``, ``hidden_irreps="64x0e"``,
        ``swa=False``, ``device="cuda"`` ...), over :data:`MACE_DEFAULTS`; unknown names are
        refused before anything runs.

    Returns
    -------
    Committee
        MACE members, metadata ``architecture="MACE"``, the training options and seeds, and
        ``training_energies`` (kJ/mol) when the file could be read.
    """
    require_mace()
    from .committee import dataset_hash

    extxyz_train = Path(extxyz_train).resolve()
    if not extxyz_train.is_file():
        raise FileNotFoundError(f"no training file at {extxyz_train}")
    if n_members < 2:
        raise ValueError(f"a committee needs at least two members, got n_members={n_members}")
    seeds = list(range(n_members)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != n_members or len(set(seeds)) != n_members:
        raise ValueError(f"need {n_members} distinct seeds, got {seeds}")
    say = progress or (lambda line: None)

    training_energies = None
    data_hash = None
    positions = None
    try:
        from ..data import read_extxyz

        numbers, positions, energies, forces = read_extxyz(extxyz_train)
        if atomic_numbers is None:
            atomic_numbers = numbers.tolist()
        if energies is not None and energy_key == "energy":
            training_energies = [float(e) for e in energies]
        data_hash = dataset_hash(positions, *(a for a in (energies, forces) if a is not None))
    except Exception as exc:
        if atomic_numbers is None:
            raise ValueError(
                f"cannot read the atomic numbers from {extxyz_train} ({first_line(exc)}); pass atomic_numbers="
            ) from exc

    options = dict(MACE_DEFAULTS)
    options.update(energy_key=energy_key, forces_key=forces_key)
    options.update(mace_options)
    cli_args = _cli_arguments(options)

    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    command_base = _cli()
    model_paths = []
    for k, seed in enumerate(seeds):
        name = f"member_{k:02d}"
        final = work_dir / f"{name}.model"
        label = f"[MACE member {k + 1}/{n_members}, seed {seed}]"
        model_paths.append(final)
        if final.is_file():
            say(f"{label} {final} exists: not retrained")
            continue
        run_dir = work_dir / name
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a killed run: start that member again
        run_dir.mkdir()
        command = command_base + [f"--name={name}", f"--seed={seed}", f"--train_file={extxyz_train}", f"--work_dir={run_dir}"] + cli_args
        say(f"{label} training in {run_dir} (log: {run_dir / 'train.log'})")
        start = time.perf_counter()
        _run_member(command, run_dir / "train.log", env, say, label)
        produced = [run_dir / f"{name}_stagetwo.model", run_dir / f"{name}.model"]
        source = next((p for p in produced if p.is_file()), None)
        if source is None:
            raise MACETrainingError(
                f"{label}: mace_run_train finished but wrote none of {[str(p) for p in produced]}; "
                f"last lines of its log:\n{_tail(run_dir / 'train.log')}"
            )
        tmp = final.with_name(final.name + ".tmp")
        shutil.copyfile(source, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        say(f"{label} done in {time.perf_counter() - start:.1f} s: {final} (from {source.name})")

    committee = mace_committee(model_paths, atomic_numbers)
    committee.metadata["training"] = {
        "tool": "mace_run_train",
        "train_file": str(extxyz_train),
        "dataset_hash": data_hash,
        "seeds": seeds,
        "options": {k: v for k, v in options.items()},
        "member_files": [str(p) for p in model_paths],
    }
    if training_energies is not None:
        committee.metadata["training_energies"] = training_energies
    if positions is not None and len(positions) and [int(z) for z in numbers] == committee.atomic_numbers.tolist():
        committee.record_domain(positions)  # the training distance ranges (Committee.domain_check)
    committee.save(work_dir / "committee.pt")
    return committee
