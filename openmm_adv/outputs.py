"""Checks that a command's outputs can be written, made before it does any work.

A label or a training run that finds a read-only folder only when it saves loses minutes to
hours of oracle or GPU time; these checks fail at once with the path and the fix.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["OutputNotWritableError", "check_writable_file", "check_writable_folder"]


class OutputNotWritableError(ValueError):
    """An output file or folder cannot be written."""


def check_writable_folder(path: str | Path, what: str = "output folder") -> Path:
    """Raise :class:`OutputNotWritableError` unless files can be created in folder ``path``.

    A folder that does not exist yet is checked where it would be created (its nearest existing
    ancestor), since the command creates it. The test writes and removes a temporary file there:
    permission bits alone say nothing about read-only file systems, ACLs or the root user.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputNotWritableError(f"{what} {path} is a file, not a folder; choose another name")
    existing, reason = _probe(path)
    if reason is not None:
        where = "" if existing == path else f" (it would be created in {existing})"
        raise OutputNotWritableError(f"cannot write {what} {path}{where}: {reason}; choose another output or make "
                                     "the folder writable")
    return path


def check_writable_file(path: str | Path, what: str = "output") -> Path:
    """Raise :class:`OutputNotWritableError` unless file ``path`` can be written.

    Outputs are written to a temporary file beside the target and renamed over it, so it is
    the folder that must be writable (or, when missing, the folder it would be created in).
    """
    path = Path(path)
    if path.is_dir():
        raise OutputNotWritableError(f"{what} {path} is a folder; give a file name")
    existing, reason = _probe(path.parent)
    if reason is not None:
        raise OutputNotWritableError(f"cannot write {what} {path}: folder {existing} is not writable ({reason}); "
                                     "choose another output or make the folder writable")
    return path


def _probe(folder: Path) -> tuple[Path, str | None]:
    """The nearest existing folder at or above ``folder``, and why no file can be created in it
    (None when one can)."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return existing, f"{existing} is a file, not a folder"
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".openmm-adv-write-test-")
    except OSError as exc:
        return existing, exc.strerror or str(exc)
    os.close(handle)
    os.unlink(probe)
    return existing, None
