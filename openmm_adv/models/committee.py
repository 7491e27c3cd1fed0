"""The user-facing committee handle: build, evaluate, save and load (TorchScript + metadata)."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .. import __version__
from .._errors import first_line, torchscript_message
from .domain import DEFAULT_MARGIN, Domain, DomainCheck, training_ranges
from .ensemble import ModelEnsemble, ensemble_members, member_class
from .mlp import StackedMLP
from .potential import CommitteePotential
from .painn import StackedPaiNN
from .schnet import StackedSchNet
from .uncertainty import METHOD_METRICS, check_metric, evaluate

__all__ = ["Committee", "CommitteeError", "dataset_hash"]

METADATA_FILE = "openmm_adv_metadata.json"
FORMAT_VERSION = 1


class CommitteeError(ValueError):
    """A committee file or model that cannot be used as asked."""


def dataset_hash(*arrays: np.ndarray) -> str:
    """A short SHA-256 of the arrays' bytes, stored in the metadata to tie a model to its data."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


class Committee:
    """A committee of M energy models over one molecule's atoms.

    Wraps a :class:`~openmm_adv.models.potential.CommitteePotential` (eager or TorchScript) and
    its metadata. Positions are in nm, energies in kJ/mol, forces in kJ/mol/nm.

    Parameters
    ----------
    potential : CommitteePotential or torch.jit.ScriptModule
    metadata : dict, optional
        Free-form facts about the model (``training_energies`` is used to normalise the
        adversarial objective; see :class:`openmm_adv.samplers.attack.Attack`; ``domain`` holds
        the training distance ranges, see :meth:`domain_check`).

    Notes
    -----
    Out-of-domain geometries (:meth:`domain_check`: an atom with no neighbour inside the
    cutoff, bonds or nearest-neighbour distances far outside the training ranges) get an
    uncertainty of ``inf`` from :meth:`uncertainty` and :meth:`evaluate_in_batches`: there the
    members' agreement says nothing, and a geometry in Angstrom read as nm would otherwise score
    exactly 0, the most confident value. The forces built from a committee
    (:mod:`openmm_adv.forces`) compute the raw values: a force must stay finite and smooth.
    """

    def __init__(self, potential: nn.Module, metadata: dict[str, Any] | None = None):
        self.potential = potential
        self.metadata = dict(metadata or {})
        self.metadata.setdefault("atomic_numbers", [int(z) for z in potential.atomic_numbers.tolist()])
        self.metadata.setdefault("n_members", int(potential.n_members))
        self.metadata.setdefault("units", {"length": "nm", "energy": "kJ/mol", "force": "kJ/mol/nm"})

    # ------------------------------------------------------------------ construction
    @classmethod
    def painn(cls, atomic_numbers: Sequence[int], n_members: int = 5, dtype=torch.float32, **hyper) -> "Committee":
        """A new (untrained) member-stacked equivariant committee; see :class:`StackedPaiNN`.

        The default architecture for molecules.
        """
        members = StackedPaiNN(atomic_numbers, n_members=n_members, **hyper).to(dtype)
        return cls(CommitteePotential(members), {"architecture": "StackedPaiNN", "hyperparameters": members.hyperparameters})

    @classmethod
    def schnet(cls, atomic_numbers: Sequence[int], n_members: int = 5, dtype=torch.float32, **hyper) -> "Committee":
        """A new (untrained) member-stacked SchNet-like committee; see :class:`StackedSchNet`."""
        members = StackedSchNet(atomic_numbers, n_members=n_members, **hyper).to(dtype)
        return cls(CommitteePotential(members), {"architecture": "StackedSchNet", "hyperparameters": members.hyperparameters})

    @classmethod
    def mlp(cls, n_atoms: int = 1, n_members: int = 5, dtype=torch.float32, **hyper) -> "Committee":
        """A new (untrained) member-stacked MLP committee on x, y coordinates (2D toys)."""
        members = StackedMLP(n_atoms, n_members=n_members, **hyper).to(dtype)
        return cls(CommitteePotential(members), {"architecture": "StackedMLP", "hyperparameters": members.hyperparameters})

    @classmethod
    def from_models(cls, models: Sequence[nn.Module | str | Path], atomic_numbers: Sequence[int]) -> "Committee":
        """A committee of M independent energy models (modules or TorchScript file paths).

        Each model maps positions ``[B, N, 3]`` (nm) to energies ``[B]`` (kJ/mol). Give M
        separately built models (``[MyModel() for _ in range(M)]``): their different initial
        weights are what makes them disagree away from the data. The committee can be trained
        (:func:`openmm_adv.train.train_committee`, which fits an energy shift and scale around
        the models' outputs) and, when every model can be TorchScripted, saved and run as an
        OpenMM ``TorchForce``.

        Parameters
        ----------
        models : sequence of torch.nn.Module, str or Path
        atomic_numbers : sequence of int
            The molecule's atoms, in the order of the positions.
        """
        loaded = []
        for k, model in enumerate(models):
            if isinstance(model, (str, Path)):
                try:
                    model = torch.jit.load(str(model), map_location="cpu")
                except Exception as exc:  # torch raises RuntimeError/ValueError variants
                    raise CommitteeError(f"member {k}: cannot load TorchScript file {model}: {exc}") from exc
            elif not isinstance(model, nn.Module):
                raise CommitteeError(f"member {k} is a {type(model).__name__}, not a torch.nn.Module or a TorchScript "
                                     "file; wrap your energy function in an nn.Module whose forward maps positions "
                                     "[B, N, 3] (nm) to energies [B] (kJ/mol)")
            loaded.append(model)
        members = ModelEnsemble(loaded, atomic_numbers)
        return cls(CommitteePotential(members), {"architecture": "ModelEnsemble", "hyperparameters": members.hyperparameters})

    def copy(self) -> "Committee":
        """An independent copy: weights, buffers and metadata (eager or TorchScript as this one)."""
        if self.is_scripted:
            # copy.deepcopy of a ScriptModule gives parameters that are not leaves (an optimiser
            # refuses them); a save/load round trip gives a clean module.
            buffer = io.BytesIO()
            torch.jit.save(self.potential, buffer)
            buffer.seek(0)
            potential = torch.jit.load(buffer, map_location=self.potential.dtype_probe.device)
        else:
            potential = copy.deepcopy(self.potential)
        return Committee(potential, copy.deepcopy(self.metadata))

    # ------------------------------------------------------------------ properties
    @property
    def n_members(self) -> int:
        return int(self.potential.n_members)

    @property
    def n_atoms(self) -> int:
        return int(self.potential.n_atoms)

    @property
    def atomic_numbers(self) -> np.ndarray:
        return np.asarray(self.potential.atomic_numbers.tolist(), dtype=np.int64)

    @property
    def is_scripted(self) -> bool:
        return isinstance(self.potential, torch.jit.ScriptModule)

    def scripted(self) -> torch.jit.ScriptModule:
        """The potential as TorchScript (raises :class:`CommitteeError` if it cannot be scripted).

        When a member of your own cannot be compiled, the error names it and quotes the line
        TorchScript points at.
        """
        if self.is_scripted:
            return self.potential
        # Members first: once TorchScript has failed on a class inside a larger module, compiling
        # that class again reports "Can't redefine method" instead of the real problem.
        culprit = _unscriptable_member(self.potential)
        if culprit is not None:
            k, member, message = culprit
            raise CommitteeError(
                f"committee member {k} ({member_class(member)}) cannot be compiled to TorchScript, so the "
                f"committee cannot be saved or run in a TorchForce. TorchScript said: {message}. Make that "
                "forward scriptable (annotate arguments that are not tensors; no lambdas, numpy or other "
                "Python-only calls; torch.jit.script(member) prints the whole message), or keep the committee "
                "in memory and build its forces with backend='python' (openmm.PythonForce)"
            )
        try:
            return torch.jit.script(self.potential)
        except Exception as exc:
            raise CommitteeError(
                "the committee cannot be compiled to TorchScript, so it cannot run in a TorchForce; "
                "make its members scriptable, or build forces with backend='python' "
                f"(openmm.PythonForce). TorchScript said: {torchscript_message(exc)}"
            ) from exc

    # ------------------------------------------------------------------ evaluation (numpy in/out)
    def _tensor(self, positions) -> torch.Tensor:
        from ..units import to_nm

        xyz = np.asarray(to_nm(positions), dtype=np.float64)
        if xyz.ndim == 2:
            xyz = xyz[None]
        if xyz.ndim != 3 or xyz.shape[1:] != (self.n_atoms, 3):
            raise ValueError(
                f"positions of shape {xyz.shape} do not fit a committee for {self.n_atoms} atoms "
                f"(expected [B, {self.n_atoms}, 3] in nm)"
            )
        if not np.isfinite(xyz).all():
            raise ValueError("positions contain NaN or infinite coordinates")
        return torch.from_numpy(xyz)

    def energies(self, positions) -> np.ndarray:
        """Member energies ``[B, M]`` in kJ/mol."""
        with torch.no_grad():
            return self.potential(self._tensor(positions)).double().numpy()

    def energies_and_forces(self, positions) -> tuple[np.ndarray, np.ndarray]:
        """Member energies ``[B, M]`` and forces ``[B, M, N, 3]``."""
        with torch.enable_grad():
            e, f = self.potential.energies_and_forces(self._tensor(positions), False)
        return e.double().numpy(), f.double().numpy()

    @property
    def uncertainty_method(self) -> str:
        """``"ensemble"`` (members' disagreement), or the single-model method: ``"gmm"``,
        ``"mve"`` or ``"evidential"`` (:mod:`openmm_adv.models.gmm`, :mod:`~openmm_adv.models.heads`)."""
        stored = self.metadata.get("uncertainty")
        return str(stored.get("method", "ensemble")) if isinstance(stored, dict) else "ensemble"

    @property
    def metrics(self) -> tuple:
        """The uncertainty metrics this model provides (``force_variance`` always)."""
        return METHOD_METRICS.get(self.uncertainty_method, ("force_variance",))

    def check_metric(self, metric: str) -> str:
        """``metric`` if this model provides it, else a ``ValueError`` naming those it does."""
        check_metric(metric)
        if metric not in self.metrics:
            raise ValueError(f"this model's uncertainty ({self.uncertainty_method}) has no metric {metric!r}; it "
                             f"provides {', '.join(self.metrics)} (force_variance works for every method)")
        return metric

    def uncertainty(self, positions, metric: str = "force_variance", domain: bool = True) -> np.ndarray:
        """The uncertainty metric ``[B]`` (see :mod:`openmm_adv.models.uncertainty`).

        ``inf`` for geometries out of the committee's domain (:meth:`domain_check`) unless
        ``domain=False``, which gives the raw value everywhere.
        """
        self.check_metric(metric)
        x = self._tensor(positions)
        with torch.enable_grad():
            u = evaluate(self.potential, x, metric, False)[2].detach().double().numpy()
        return self._out_of_domain_inf(x.numpy(), u) if domain else u

    def energies_forces_uncertainty(self, positions, metric: str = "force_variance"):
        """Member energies ``[B, M]``, forces ``[B, M, N, 3]`` and the raw uncertainty ``[B]``
        (no domain rule), from one evaluation."""
        self.check_metric(metric)
        with torch.enable_grad():
            e, f, u = evaluate(self.potential, self._tensor(positions), metric, False)
        return e.detach().double().numpy(), f.detach().double().numpy(), u.detach().double().numpy()

    def evaluate_in_batches(self, positions, batch_size: int = 256, metric: str = "force_variance",
                            domain: bool = True):
        """Mean energy ``[B]``, mean forces ``[B, N, 3]`` and uncertainty ``[B]`` for many geometries.

        The uncertainty is ``inf`` for geometries out of the domain, as in :meth:`uncertainty`.
        """
        xyz = np.asarray(positions)
        self.check_metric(metric)
        e_out, f_out, u_out = [], [], []
        for start in range(0, len(xyz), batch_size):
            e, f, u = self.energies_forces_uncertainty(xyz[start : start + batch_size], metric)
            e_out.append(e.mean(1))
            f_out.append(f.mean(1))
            u_out.append(self._out_of_domain_inf(xyz[start : start + batch_size], u) if domain else u)
        return np.concatenate(e_out), np.concatenate(f_out), np.concatenate(u_out)

    # ------------------------------------------------------------------ domain
    @property
    def domain(self) -> Domain:
        """The committee's domain: the training ranges stored in ``metadata["domain"]`` and the
        model's cutoff; for a file saved without ranges, the cutoff rule alone."""
        try:
            return Domain.from_metadata(self.atomic_numbers, self.metadata.get("domain"), self._cutoff_nm())
        except (TypeError, ValueError) as exc:
            raise CommitteeError(f"the committee's domain metadata is unusable: {first_line(exc)}; delete "
                                 "metadata['domain'] (the cutoff rule stays) or retrain") from exc

    def domain_check(self, positions, margin: float | None = None) -> DomainCheck:
        """Which geometries are outside the committee's domain, and why.

        A geometry is out of the domain when an atom has no neighbour inside the model's cutoff
        (``isolated``), a bond is far outside its training range (``bond``) or an atom's
        nearest neighbour is (``nearest``); see :mod:`openmm_adv.models.domain`. There the
        members' agreement says nothing about the error, so :meth:`uncertainty` reports ``inf``.

        Parameters
        ----------
        positions : array_like
            ``[B, N, 3]`` or ``[N, 3]`` in nm (openmm.unit quantities are converted).
        margin : float, optional
            Relative margin around the training ranges (default: the stored one, 0.25).

        Returns
        -------
        DomainCheck
            ``out_of_domain`` ``[B]`` bool, ``reasons`` ``[B]`` str and the ``rules`` applied.
        """
        return self.domain.check(self._tensor(positions).numpy(), margin)

    def record_domain(self, positions, bonds=None, margin: float = DEFAULT_MARGIN,
                      cutoff_nm: float | None = None) -> Domain:
        """Measure the training ranges on ``positions`` ``[F, N, 3]`` (nm) and store them in
        ``metadata["domain"]`` (the trainers call this; call it for a committee trained elsewhere).

        Parameters
        ----------
        positions : array_like
            The geometries the committee was trained on.
        bonds : array_like, optional
            ``[n_b, 2]`` bonded pairs (default: found from the distances).
        margin : float
            Relative margin around the ranges.
        cutoff_nm : float, optional
            The model's cutoff where the architecture does not tell (committees of your own
            models); default: the model's.
        """
        if self.metadata.get("architecture") == "StackedMLP":
            self.metadata.pop("domain", None)  # coordinate models of the 2D toys: no distances to range
            return self.domain
        domain = training_ranges(self.atomic_numbers, self._tensor(positions).numpy(),
                                 cutoff_nm=self._cutoff_nm() if cutoff_nm is None else float(cutoff_nm),
                                 bonds=bonds, margin=margin)
        self.metadata["domain"] = domain.to_metadata()
        return domain

    def _cutoff_nm(self) -> float | None:
        """The model's interaction cutoff in nm, from its hyperparameters (None where unknown)."""
        stored = self.metadata.get("domain") or {}
        if isinstance(stored, dict) and stored.get("cutoff_nm") is not None:
            return float(stored["cutoff_nm"])
        hyper = self.metadata.get("hyperparameters") or {}
        if self.metadata.get("architecture") in ("StackedPaiNN", "StackedSchNet") and "cutoff" in hyper:
            return float(hyper["cutoff"])
        r_max = hyper.get("r_max_angstrom", (hyper.get("per_member") or {}).get("r_max_angstrom"))
        if r_max is not None:  # MACE; members with different r_max: the largest
            return float(np.max(r_max)) / 10.0
        return None

    def _out_of_domain_inf(self, positions: np.ndarray, u: np.ndarray) -> np.ndarray:
        flags = self.domain.check(positions).out_of_domain
        return np.where(flags, np.inf, u)

    # ------------------------------------------------------------------ persistence
    def non_finite_weights(self) -> list[str]:
        """Names of the parameters and buffers that hold NaN or infinite values."""
        return [name for name, value in self.potential.state_dict().items()
                if torch.is_floating_point(value) and not bool(torch.isfinite(value).all())]

    def save(self, path: str | Path, **extra_metadata) -> Path:
        """Write a TorchScript file with the metadata stored inside it (``_extra_files``).

        Raises
        ------
        CommitteeError
            For weights that are not finite (a diverged training): such a committee predicts
            NaN, so it is never written.
        """
        path = Path(path)
        bad = self.non_finite_weights()
        if bad:
            raise CommitteeError(f"the committee has non-finite weights ({', '.join(bad[:3])}"
                                 f"{' ...' if len(bad) > 3 else ''}), so {path} is not written: it would predict NaN; "
                                 "retrain with a lower learning_rate or check the data")
        metadata = dict(self.metadata)
        metadata.update(extra_metadata)
        metadata.update(format_version=FORMAT_VERSION, openmm_adv_version=__version__, torch_version=torch.__version__)
        scripted = self.scripted()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.jit.save(scripted, str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata, indent=1)})
        tmp.replace(path)  # atomic: a crash never leaves half a model at ``path``
        return path

    @classmethod
    def load(cls, path: str | Path, system=None, map_location: str = "cpu") -> "Committee":
        """Load a committee written by :meth:`save`.

        Parameters
        ----------
        path : str or Path
        system : MolecularSystem or sequence of int, optional
            If given, the committee's atoms must match it (count and atomic numbers, in order).
        """
        path = Path(path)
        if not path.is_file():
            raise CommitteeError(f"no committee file at {path}")
        extra = {METADATA_FILE: ""}
        try:
            module = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
        except Exception as exc:
            raise CommitteeError(
                f"{path} is not a readable TorchScript committee (corrupt or truncated file?): "
                f"{first_line(exc)}"
            ) from exc
        if not extra[METADATA_FILE]:
            raise CommitteeError(f"{path} has no openmm-adv metadata; was it written by Committee.save?")
        metadata = _parse_metadata(extra[METADATA_FILE], path)
        if not hasattr(module, "energies_and_forces"):
            raise CommitteeError(f"{path} is a TorchScript module but not an openmm-adv committee")
        _check_metadata_matches(metadata, module, path)
        committee = cls(module, metadata)
        try:
            committee.domain  # a corrupt domain fails here, naming the file, not at the first check
        except CommitteeError as exc:
            raise CommitteeError(f"{path}: {exc}") from exc
        if system is not None:
            committee.check_compatible(system)
        return committee

    def check_compatible(self, system) -> None:
        """Raise :class:`CommitteeError` unless the system's atoms are the committee's atoms."""
        z = np.asarray(getattr(system, "atomic_numbers", system), dtype=np.int64)
        name = getattr(system, "name", "the system")
        if len(z) != self.n_atoms:
            raise CommitteeError(
                f"the committee was trained for {self.n_atoms} atoms but {name} has {len(z)}; "
                "load a committee made for this system"
            )
        if not np.array_equal(z, self.atomic_numbers):
            diff = np.flatnonzero(z != self.atomic_numbers)[:5].tolist()
            raise CommitteeError(
                f"atomic numbers of {name} differ from the committee's at atoms {diff}; "
                "the atom order must match the training data"
            )

    def __repr__(self) -> str:
        return (
            f"Committee({self.metadata.get('architecture', 'custom')}, members={self.n_members}, "
            f"atoms={self.n_atoms}, scripted={self.is_scripted})"
        )


def _parse_metadata(text, path: Path) -> dict:
    """The metadata stored in a committee file, or a :class:`CommitteeError` naming the file."""
    try:
        metadata = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CommitteeError(f"{path}: its metadata ({METADATA_FILE}) is not valid JSON ({exc}); the file is "
                             "corrupt: restore it or save the committee again") from None
    if not isinstance(metadata, dict):
        raise CommitteeError(f"{path}: its metadata ({METADATA_FILE}) is a JSON {type(metadata).__name__}, not an "
                             "object; the file is corrupt: restore it or save the committee again")
    return metadata


def _check_metadata_matches(metadata: dict, module, path: Path) -> None:
    """The metadata's atoms and member count must be the model's (a file pieced together from
    two committees, or edited by hand, would otherwise be used with the wrong atoms)."""
    fix = "the file is corrupt: restore it or save the committee again"
    members = metadata.get("n_members")
    if members is not None and members != int(module.n_members):
        raise CommitteeError(f"{path}: its metadata gives {members!r} members, the model inside has "
                             f"{int(module.n_members)}; {fix}")
    numbers = metadata.get("atomic_numbers")
    actual = [int(z) for z in module.atomic_numbers.tolist()]
    if numbers is not None and numbers != actual:
        size = len(numbers) if isinstance(numbers, list) else "?"
        raise CommitteeError(f"{path}: the atomic_numbers in its metadata ({size} atoms) are not the model's "
                             f"({len(actual)} atoms); {fix}")


# TorchScript's first complaint about a member class: later attempts on the same class only
# report "Can't redefine method", so the first message is kept for every later save or force.
_SCRIPT_ERRORS: "weakref.WeakKeyDictionary[type, str]" = weakref.WeakKeyDictionary()


def _unscriptable_member(potential: nn.Module):
    """``(index, member, TorchScript's message)`` of the first eager member that cannot be
    compiled, or None."""
    for k, member in enumerate(ensemble_members(potential) or []):
        if isinstance(member, torch.jit.ScriptModule):
            continue
        try:
            torch.jit.script(member)
        except Exception as exc:
            message = _SCRIPT_ERRORS.setdefault(type(member), torchscript_message(exc))
            return k, member, message
    return None
