"""Committees of your own energy models: checks before training, fresh weights, descriptions.

A committee built with :meth:`Committee.from_models` holds M independent ``nn.Module`` s
(positions ``[B, N, 3]`` nm -> energies ``[B]`` kJ/mol). The trainer and the active-learning
loop handle them like the built-in stacked members; this module holds what differs: a model of
unknown make is probed before any training step, and "training from scratch" means giving the
members fresh weights through their own ``reset_parameters``.
"""

from __future__ import annotations

import numpy as np
import torch

from .._errors import first_line
from .committee import Committee, CommitteeError
from .ensemble import ensemble_members, member_class

__all__ = ["BUILTIN_ARCHITECTURES", "check_trainable", "describe_architecture", "is_builtin", "reinitialise"]

#: ``metadata["architecture"]`` of the committees openmm-adv builds itself.
BUILTIN_ARCHITECTURES = ("StackedPaiNN", "StackedSchNet", "StackedMLP")


def is_builtin(committee: Committee) -> bool:
    """Whether the committee's members are one of openmm-adv's stacked architectures."""
    return committee.metadata.get("architecture") in BUILTIN_ARCHITECTURES


def describe_architecture(committee: Committee) -> dict:
    """What identifies the architecture of a committee (stored with a loop's settings and in the
    committees it trains): the metadata's architecture, the member classes, the parameter shapes."""
    members = ensemble_members(committee.potential)
    shapes = {name: list(p.shape) for name, p in committee.potential.named_parameters()}
    return {
        "architecture": committee.metadata.get("architecture", "custom"),
        "member_classes": [member_class(m) for m in members] if members is not None else None,
        "n_parameters": int(sum(int(np.prod(s)) for s in shapes.values())),
        "parameter_shapes_hash": _hash_shapes(shapes),
    }


def _hash_shapes(shapes: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(sorted(shapes.items())).encode()).hexdigest()[:16]


def check_trainable(committee: Committee, positions) -> None:
    """Probe every member on a few training geometries before any training step.

    Raises :class:`CommitteeError`, naming the member and the fix, when a member of your own
    has no trainable parameters, is the same module as another member, fails on positions
    ``[B, N, 3]``, returns anything but one energy per geometry (``[B]`` or ``[B, 1]``), returns
    non-finite energies or forces, or does not depend on the positions (no forces); and, for any
    committee, when its energies or forces on those geometries are not finite.
    """
    potential = committee.potential
    dtype = potential.dtype_probe.dtype
    x = torch.as_tensor(np.asarray(positions, dtype=np.float64)[:4], dtype=dtype)
    if len(x) < 2:
        raise ValueError("check_trainable needs at least two geometries")
    owner: dict[int, int] = {}
    alive = []  # keeps every parameter object alive, so no id() is reused while we compare
    for k, member in enumerate(ensemble_members(potential) or []):
        label = f"committee member {k} ({member_class(member)})"
        parameters = [p for p in member.parameters() if p.requires_grad]
        if not parameters:
            raise CommitteeError(f"{label} has no trainable parameters, so training cannot change it; give it "
                                 "nn.Parameter weights (or unfreeze them: requires_grad=True)")
        alive.append(parameters)
        # TorchScript hands out a new Python object per parameter access: only eager members compare.
        for p in parameters if not isinstance(member, torch.jit.ScriptModule) else []:
            if owner.setdefault(id(p), k) != k:
                raise CommitteeError(
                    f"{label} shares its parameters with member {owner[id(p)]} (the same module given twice?); "
                    "build every member separately, e.g. Committee.from_models([MyModel() for _ in range(M)], z): "
                    "members that are one model never disagree, so the committee has no uncertainty")
        _probe_member(member, x, label)
    with torch.enable_grad():
        energies, forces = potential.energies_and_forces(x, False)
    if not (torch.isfinite(energies).all() and torch.isfinite(forces).all()):
        raise CommitteeError("the committee's energies or forces on the first training geometries are not finite; "
                             "check the model and its inputs (positions in nm) before training")


def _probe_member(member: torch.nn.Module, x: torch.Tensor, label: str) -> None:
    expected = f"a member maps positions [B, N, 3] (nm) to energies [B] (kJ/mol)"
    xk = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        try:
            energy = member(xk)
        except Exception as exc:  # a user model can raise anything
            raise CommitteeError(f"{label} failed on positions of shape {list(x.shape)}: {first_line(exc)}; "
                                 f"{expected}") from exc
    if not isinstance(energy, torch.Tensor):
        raise CommitteeError(f"{label} returned a {type(energy).__name__}, not a tensor; {expected}")
    shape = list(energy.shape)
    if not (shape == [len(x)] or shape == [len(x), 1]):
        hint = (" (per-atom energies? sum them over the atoms)" if shape[-1:] == [x.shape[1]]
                else " (a batch total? return one energy per geometry)" if energy.numel() == 1 else "")
        raise CommitteeError(f"{label} returned energies of shape {shape} for {len(x)} geometries{hint}; "
                             f"{expected}")
    if not torch.isfinite(energy).all():
        raise CommitteeError(f"{label} returned non-finite energies on the first training geometries; check "
                             "its inputs (positions in nm) and its initialisation before training")
    gradient = None
    if energy.requires_grad:
        gradient = torch.autograd.grad(energy.sum(), xk, allow_unused=True)[0]
    if gradient is None or not bool((gradient != 0).any()):
        raise CommitteeError(
            f"{label}: its energy does not depend on the positions (no gradient), so it has no forces to "
            "train; compute the energy from the positions with differentiable torch operations (no .detach(), "
            ".numpy(), torch.no_grad() or integer casts on the way)")
    if not torch.isfinite(gradient).all():
        raise CommitteeError(f"{label} gives non-finite forces on the first training geometries (e.g. a "
                             "distance of zero under a square root or a division); fix that before training")


def reinitialise(committee: Committee, seed: int = 0) -> bool:
    """Give the members of an eager committee of your own models fresh weights, in place.

    Every member's outermost submodules that define ``reset_parameters`` (``nn.Linear``,
    ``nn.Embedding``, ... or your module's own) are reset, seeded from ``seed`` and the member's
    index, and the energy shift and scale go back to 0 and 1. Nothing is changed, and False is
    returned, when the committee is TorchScript or stacked, or when some parameter of a member
    lies outside every module with ``reset_parameters`` (define one on your module to cover it).
    """
    members = ensemble_members(committee.potential)
    if committee.is_scripted or members is None:
        return False
    plans = []
    for member in members:
        roots = _reset_roots(member)
        covered = {id(p) for root in roots for p in member.get_submodule(root).parameters()}
        if any(id(p) not in covered for p in member.parameters()):
            return False
        plans.append(roots)
    with torch.random.fork_rng(devices=[]):
        for k, (member, roots) in enumerate(zip(members, plans)):
            torch.manual_seed(int(np.random.SeedSequence([int(seed), k]).generate_state(1)[0]))
            for root in roots:
                member.get_submodule(root).reset_parameters()
    ensemble = committee.potential.members
    with torch.no_grad():
        ensemble.energy_shift.fill_(0.0)
        ensemble.energy_scale.fill_(1.0)
    return True


def _reset_roots(member: torch.nn.Module) -> list[str]:
    """Names of the outermost submodules with ``reset_parameters`` ("" is the member itself)."""
    roots: list[str] = []
    for name, module in member.named_modules():
        if any(root == "" or name == root or name.startswith(root + ".") for root in roots):
            continue
        if callable(getattr(module, "reset_parameters", None)):
            roots.append(name)
    return roots
