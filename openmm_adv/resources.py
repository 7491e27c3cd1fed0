"""Paths of the shipped default model and data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["default_committee_path", "default_dataset_path"]


def _shipped(name: str) -> Path:
    path = Path(str(resources.files("openmm_adv.torchscript_models") / name))
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped file {name} is missing from {path.parent}; reinstall openmm-adv or "
            "regenerate it with 'python torchscript_models/make_ala2_committee.py'"
        )
    return path


def default_committee_path() -> Path:
    """The shipped 5-member committee for alanine dipeptide (trained on 300 K C7eq Amber data)."""
    return _shipped("ala2_committee.pt")


def default_dataset_path() -> Path:
    """The shipped Amber-labelled 300 K alanine dipeptide frames the default committee was trained on."""
    return _shipped("ala2_c7eq_300K.h5")
