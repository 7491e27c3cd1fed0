"""The files of an active-learning run folder: atomic writes, checked reads, the JSONL log.

Every artifact is written to a temporary file, flushed to disk and renamed over its final name,
so a kill leaves the old file or the new one. Reads verify what they can (zip CRCs of npz and
TorchScript files, the keys each artifact must hold, JSON syntax), so a file damaged on disk is
noticed instead of being trained on; :func:`read_or_discard` then moves it aside for the loop
to redo its stage.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ._errors import first_line

__all__ = ["UNREADABLE", "append_log", "atomic_savez", "atomic_write_text", "check_zip", "load_npz",
           "read_candidates", "read_json", "read_label", "read_log", "read_log_lines", "read_or_discard",
           "read_selected"]

# What reading a truncated or corrupt artifact raises: zip, CRC, zlib and JSON errors; HDF5 and
# TorchScript errors arrive as ValueError from Dataset.load and Committee.load.
UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_savez(path: Path, arrays: dict) -> None:
    """``numpy.savez`` to ``path`` through a temporary file, fsync and rename."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_npz(path: Path, required: Sequence[str] = ()) -> dict:
    """Every array of an npz file (zipfile checks each one's CRC); a missing ``required`` key
    is a KeyError."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    missing = [k for k in required if k not in arrays]
    if missing:
        raise KeyError(f"{path.name} lacks {', '.join(missing)}")
    return arrays


def check_zip(path: Path) -> None:
    """Raise ValueError unless every member of the zip archive at ``path`` matches its CRC.

    TorchScript's reader skips the CRCs, so a committee file with a corrupted weight would
    otherwise load silently.
    """
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise ValueError(f"{bad} in {path.name} fails its CRC check")


def read_json(path: Path) -> dict:
    """A JSON object from ``path`` (anything else is a ValueError)."""
    value = json.loads(path.read_text())
    if not isinstance(value, dict):
        raise ValueError(f"{path.name} holds {type(value).__name__}, not a JSON object")
    return value


def _with_meta(arrays: dict) -> dict:
    json.loads(str(arrays["meta"]))  # a torn meta record is corruption too
    return arrays


def read_candidates(path: Path) -> dict:
    """A generation's ``candidates.npz``."""
    return _with_meta(load_npz(path, ("positions", "energies", "uncertainty", "sampler", "seed_index",
                                      "reference_uncertainty", "meta")))


def read_selected(path: Path) -> dict:
    """A generation's ``selected.npz``."""
    return _with_meta(load_npz(path, ("positions", "energies", "uncertainty", "sampler", "seed_index", "meta")))


def read_label(path: Path) -> dict:
    """One structure's label file (``labels/00000.npz``)."""
    return load_npz(path, ("energy", "forces", "ok", "error", "seconds", "oracle"))


def read_or_discard(path: Path, read: Callable, redo: str, echo: Callable[[str], None]):
    """``read(path)``, or None when the file is missing or unreadable.

    An unreadable file is moved aside as ``<name>.corrupt`` (kept for inspection) and ``echo``
    gets a warning naming it, the problem, and ``redo``: what is done instead.
    """
    if not path.exists():
        return None
    try:
        return read(path)
    except PermissionError:
        raise  # not corruption: the user has to fix the permissions
    except UNREADABLE as exc:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        kind = "zlib.error" if isinstance(exc, zlib.error) else type(exc).__name__
        echo(f"warning: {path} is unreadable ({kind}: {first_line(exc)}); moved it to {aside.name} and {redo}")
        return None


def read_log(path: str | Path) -> list[dict]:
    """The records of a loop's ``log.jsonl`` (an unreadable line, such as a torn last line
    from a kill, is skipped)."""
    return read_log_lines(Path(path))[0]


def read_log_lines(path: Path) -> tuple[list[dict], list[int]]:
    """The log's records, and the numbers of the lines that are not one JSON record each."""
    if not path.exists():
        return [], []
    records, bad = [], []
    for number, line in enumerate(path.read_bytes().decode("utf-8", errors="replace").splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and "generation" in record:
            records.append(record)
        elif line.strip():
            bad.append(number)
    return records, bad


def append_log(path: Path, record: dict) -> None:
    """Add or replace ``record`` (by its generation) in the log, atomically.

    The file is rewritten through a temporary file, which drops a torn line a kill may have
    left; records stay in generation order (``final`` last) even when one is written again.
    """
    records = [r for r in read_log(path) if r.get("generation") != record["generation"]] + [record]
    records.sort(key=lambda r: (0, r["generation"]) if isinstance(r["generation"], int) else (1, 0))
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
