"""Labelled geometries with provenance, stored in one HDF5 file; extxyz import/export."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np

from ._errors import first_line

__all__ = ["Dataset", "write_extxyz", "format_extxyz", "read_extxyz"]

_PROVENANCE = {
    "generation": np.int64,
    "sampler": "S32",
    "seed_index": np.int64,
    "uncertainty": np.float64,
    "oracle": "S32",
    "time": np.float64,
}


class Dataset:
    """Positions (nm), energies (kJ/mol), forces (kJ/mol/nm) and per-structure provenance.

    In memory the dataset is a set of numpy arrays; :meth:`save` writes one HDF5 file through a
    temporary file and an atomic rename, so a crash never leaves a half-written file. Non-finite
    values never enter one: :meth:`append`, :meth:`save` and :meth:`append_to_file` refuse them,
    and :meth:`load` names the rows of a file that holds any.

    Parameters
    ----------
    atomic_numbers : array_like
        ``[N]``.

    Attributes
    ----------
    oracle_record : dict or None
        The descriptor of the oracle that labelled the data (see :mod:`openmm_adv.oracle_record`),
        or None where unknown (a file written before records existed, or an import).
    """

    def __init__(self, atomic_numbers):
        self.atomic_numbers = np.asarray(atomic_numbers, dtype=np.int64)
        n = len(self.atomic_numbers)
        self.positions = np.zeros((0, n, 3))
        self.energies = np.zeros(0)
        self.forces = np.zeros((0, n, 3))
        self.provenance = {k: np.zeros(0, dtype=v) for k, v in _PROVENANCE.items()}
        self.oracle_record: dict | None = None

    def __len__(self) -> int:
        return int(len(self.energies))

    @property
    def n_atoms(self) -> int:
        return int(len(self.atomic_numbers))

    def append(self, positions, energies, forces, generation: int = 0, sampler: str = "", seed_index=None,
               uncertainty=None, oracle: str = "") -> None:
        """Add labelled structures (``[K, N, 3]``, ``[K]``, ``[K, N, 3]``)."""
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, self.n_atoms, 3)
        energies = np.asarray(energies, dtype=np.float64).reshape(-1)
        forces = np.asarray(forces, dtype=np.float64).reshape(-1, self.n_atoms, 3)
        k = len(positions)
        if len(energies) != k or len(forces) != k:
            raise ValueError(f"got {k} geometries, {len(energies)} energies and {len(forces)} force sets")
        if not (np.isfinite(positions).all() and np.isfinite(energies).all() and np.isfinite(forces).all()):
            raise ValueError("labelled data must be finite; record failed labels elsewhere")
        self.positions = np.concatenate([self.positions, positions])
        self.energies = np.concatenate([self.energies, energies])
        self.forces = np.concatenate([self.forces, forces])
        new = {
            "generation": np.full(k, generation),
            "sampler": np.full(k, sampler, dtype="S32"),
            "seed_index": np.full(k, -1) if seed_index is None else np.asarray(seed_index).reshape(k),
            "uncertainty": np.full(k, np.nan) if uncertainty is None else np.asarray(uncertainty, float).reshape(k),
            "oracle": np.full(k, oracle, dtype="S32"),
            "time": np.full(k, time.time()),
        }
        for key, dtype in _PROVENANCE.items():
            self.provenance[key] = np.concatenate([self.provenance[key], new[key].astype(dtype)])

    def subset(self, index) -> "Dataset":
        out = Dataset(self.atomic_numbers)
        out.positions, out.energies, out.forces = self.positions[index], self.energies[index], self.forces[index]
        out.provenance = {k: v[index] for k, v in self.provenance.items()}
        out.oracle_record = self.oracle_record
        return out

    def non_finite_rows(self) -> dict[str, np.ndarray]:
        """Rows whose positions, energies or forces are not finite, by array name (empty when clean)."""
        bad = {}
        if len(self) == 0:
            return bad
        for name in ("positions", "energies", "forces"):
            values = np.asarray(getattr(self, name), dtype=np.float64).reshape(len(self), -1)
            rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
            if len(rows):
                bad[name] = rows
        return bad

    def check_finite(self, where: str = "the dataset") -> None:
        """Raise ``ValueError`` naming the rows that hold NaN or infinite values."""
        bad = self.non_finite_rows()
        if bad:
            parts = "; ".join(f"{name} at rows {rows[:10].tolist()}{' ...' if len(rows) > 10 else ''}"
                              for name, rows in bad.items())
            raise ValueError(f"{where} holds non-finite values ({parts}): nothing can be trained on them; relabel "
                             "or remove those rows (in Python: Dataset.load(path, check_finite=False), then "
                             ".subset of the finite rows)")

    def extend(self, other: "Dataset", allow_mixed_oracles: bool = False) -> None:
        """Append every record of ``other`` (same atoms), provenance included.

        Raises
        ------
        OracleMismatchError
            When ``other`` was labelled by another oracle and ``allow_mixed_oracles`` is false.
        """
        from .oracle_record import merge_records

        self._check_same_atoms(other)
        record = self.oracle_record
        if len(other):
            record = merge_records(record, other.oracle_record, allow_mixed_oracles)
        self.positions = np.concatenate([self.positions, other.positions])
        self.energies = np.concatenate([self.energies, other.energies])
        self.forces = np.concatenate([self.forces, other.forces])
        for key, dtype in _PROVENANCE.items():
            self.provenance[key] = np.concatenate([self.provenance[key], other.provenance[key].astype(dtype)])
        self.oracle_record = record

    def _check_same_atoms(self, other: "Dataset") -> None:
        if not np.array_equal(self.atomic_numbers, other.atomic_numbers):
            raise ValueError(
                f"datasets hold different molecules ({len(self.atomic_numbers)} vs {len(other.atomic_numbers)} atoms, "
                "or a different atom order); keep one dataset per system"
            )

    def save(self, path: str | Path, *, tags=()) -> Path:
        """Write the whole dataset atomically (temporary file, fsync, rename).

        ``tags`` are append tags (see :meth:`append_to_file`) stored in the same atomic step.
        Every array carries a Fletcher-32 checksum, so a corrupted chunk is an error on reading,
        not a silently wrong label.
        """
        path = Path(path)
        self.check_finite(f"the data for {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        n = self.n_atoms
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = "openmm-adv-dataset"
            f.attrs["format_version"] = 2
            f.attrs["units"] = "positions nm, energies kJ/mol, forces kJ/mol/nm"
            _write_oracle_record(f, self.oracle_record)
            if tags:
                f.attrs["append_tags"] = json.dumps(list(tags))
            f["atomic_numbers"] = self.atomic_numbers
            # Resizable, chunked arrays so append_to_file extends them in place.
            f.create_dataset("positions", data=self.positions, maxshape=(None, n, 3), chunks=(64, n, 3), compression="gzip",
                             fletcher32=True)
            f.create_dataset("energies", data=self.energies, maxshape=(None,), chunks=(1024,), fletcher32=True)
            f.create_dataset("forces", data=self.forces, maxshape=(None, n, 3), chunks=(64, n, 3), compression="gzip",
                             fletcher32=True)
            group = f.create_group("provenance")
            for key, value in self.provenance.items():
                group.create_dataset(key, data=value, maxshape=(None,), chunks=(1024,), fletcher32=True)
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        return path

    @staticmethod
    def append_to_file(path: str | Path, records: "Dataset", tag: str | None = None,
                       allow_mixed_oracles: bool = False) -> int:
        """Append ``records`` to the dataset file at ``path`` atomically; returns the new size.

        Labels of another oracle than the file's (``records.oracle_record``, see
        :mod:`openmm_adv.oracle_record`) are refused with :class:`OracleMismatchError` unless
        ``allow_mixed_oracles``; a file that records no oracle adopts theirs. Non-finite values
        are refused with ``ValueError``. Either way the file is left as it was.

        ``tag`` makes the append idempotent: it is stored in the file in the same atomic step as
        the records, and an append whose tag is already there does nothing. A resumed job can
        therefore repeat its last append without duplicating records.

        The file is copied, extended and renamed over the original, so a crash at any moment
        leaves either the old file or the new one, never a half-written record. (HDF5 has no
        transactions: an in-place append killed mid-write can corrupt the whole file.) The
        copy costs O(file size), about 10 ms per MB.
        """
        path = Path(path)
        records.check_finite(f"the records for {path}")
        if not path.exists():
            # Data and tag in one file and one rename: a crash leaves no file or a tagged one.
            records.save(path, tags=[] if tag is None else [tag])
            return len(records)
        tmp = path.with_name(path.name + ".tmp")
        existing_numbers, resizable, tags = _inspect(path)
        if tag is not None and tag in tags:
            return len(Dataset.load(path, check_finite=False))
        records._check_same_atoms(Dataset(existing_numbers))
        old_record = Dataset.file_oracle_record(path)
        record = old_record
        if len(records):
            from .oracle_record import merge_records

            record = merge_records(old_record, records.oracle_record, allow_mixed_oracles, str(path))
        if not resizable:  # a format-1 file: rewrite it in the resizable layout
            whole = Dataset.load(path, check_finite=False)
            whole.extend(records, allow_mixed_oracles)
            whole.save(path, tags=tags + ([] if tag is None else [tag]))
            return len(whole)
        shutil.copyfile(path, tmp)
        k = len(records)
        with h5py.File(tmp, "a") as f:
            if tag is not None:
                f.attrs["append_tags"] = json.dumps(tags + [tag])
            if record != old_record:
                _write_oracle_record(f, record)
            old = f["energies"].shape[0]
            for name, values in (("positions", records.positions), ("energies", records.energies),
                                 ("forces", records.forces)):
                f[name].resize(old + k, axis=0)
                f[name][old:] = values
            for key, dtype in _PROVENANCE.items():
                column = f["provenance"][key]
                column.resize(old + k, axis=0)
                column[old:] = records.provenance[key].astype(dtype)
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        return old + k

    @staticmethod
    def file_tags(path: str | Path) -> list[str]:
        """The append tags stored in a dataset file (see :meth:`append_to_file`)."""
        return _inspect(Path(path))[2]

    @staticmethod
    def file_oracle_record(path: str | Path) -> dict | None:
        """The oracle record stored in a dataset file, or None for a file that has none."""
        path = Path(path)
        try:
            with h5py.File(path, "r") as f:
                return _read_oracle_record(f, path)
        except OSError as exc:
            raise ValueError(_unreadable(path, exc)) from exc

    @classmethod
    def load(cls, path: str | Path, check_finite: bool = True) -> "Dataset":
        """Read a dataset written by :meth:`save` or :meth:`append_to_file`.

        Raises
        ------
        ValueError
            For a file that is not a readable openmm-adv dataset, and (unless ``check_finite``
            is false) one holding non-finite values: the message names the file and the rows.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"dataset {path} does not exist")
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != "openmm-adv-dataset":
                    raise ValueError(f"{path} is an HDF5 file but not an openmm-adv dataset")
                out = cls(f["atomic_numbers"][()])
                out.positions = f["positions"][()]
                out.energies = f["energies"][()]
                out.forces = f["forces"][()]
                out.provenance = {k: f["provenance"][k][()] for k in _PROVENANCE}
                out.oracle_record = _read_oracle_record(f, path)
        except (OSError, KeyError) as exc:
            raise ValueError(_unreadable(path, exc)) from exc
        sizes = {len(out.positions), len(out.energies), len(out.forces), *(len(v) for v in out.provenance.values())}
        if len(sizes) != 1:
            raise ValueError(f"dataset {path} is inconsistent (arrays of lengths {sorted(sizes)}); it is corrupt")
        if out.positions.shape[1:] != (out.n_atoms, 3) or out.forces.shape[1:] != (out.n_atoms, 3):
            raise ValueError(f"dataset {path} is inconsistent (positions {out.positions.shape}, forces "
                             f"{out.forces.shape} for {out.n_atoms} atoms); it is corrupt")
        if check_finite:
            out.check_finite(f"dataset {path}")
        return out

    @classmethod
    def from_extxyz(cls, path: str | Path, generation: int = 0, sampler: str = "import", oracle: str = "extxyz") -> "Dataset":
        """Import labelled frames from an extended XYZ file (energies and forces required)."""
        z, x, e, f = read_extxyz(path)
        if e is None or f is None:
            raise ValueError(f"{path} has no energy or forces: label it first (openmm-adv label)")
        out = cls(z)
        out.append(x, e, f, generation=generation, sampler=sampler, oracle=oracle)
        return out

    def to_extxyz(self, path: str | Path) -> Path:
        """Export to extended XYZ with provenance per frame (ASE, MACE and NequIP read it)."""
        info = {
            "generation": self.provenance["generation"],
            "sampler": [s.decode() or "none" for s in self.provenance["sampler"]],
            "oracle": [s.decode() or "none" for s in self.provenance["oracle"]],
            "uncertainty": self.provenance["uncertainty"],
        }
        return write_extxyz(path, self.atomic_numbers, self.positions, self.energies, self.forces, info=info)


def _inspect(path: Path):
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != "openmm-adv-dataset":
                raise ValueError(f"{path} is an HDF5 file but not an openmm-adv dataset")
            return f["atomic_numbers"][()], f["energies"].maxshape[0] is None, _tags(f)
    except (OSError, KeyError) as exc:
        raise ValueError(_unreadable(path, exc)) from exc


def _unreadable(path, exc: BaseException) -> str:
    return f"cannot read dataset {path} (truncated or corrupt HDF5: {first_line(exc)}); restore it or write to a new file"


def _write_oracle_record(f, record: dict | None) -> None:
    if record is None:
        if "oracle_record" in f.attrs:
            del f.attrs["oracle_record"]
    else:
        f.attrs["oracle_record"] = json.dumps(record, sort_keys=True, default=str)


def _read_oracle_record(f, path) -> dict | None:
    text = f.attrs.get("oracle_record")
    if text is None:
        return None
    try:
        record = json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"dataset {path}: its oracle record is not valid JSON ({exc}); the file is corrupt") from exc
    if not isinstance(record, dict) or "kind" not in record:
        raise ValueError(f"dataset {path}: its oracle record {text!r} names no oracle kind; the file is corrupt")
    return record


def _tags(f) -> list[str]:
    return list(json.loads(f.attrs.get("append_tags", "[]")))


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    # The rename itself is only durable once the directory entry is on disk.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_extxyz(path: str | Path, atomic_numbers, positions, energies=None, forces=None, info=None) -> Path:
    """Write extended XYZ (Angstrom, eV, eV/A: the units ASE, MACE and NequIP read).

    Parameters are in OpenMM units (nm, kJ/mol, kJ/mol/nm) and converted here.
    """
    path = Path(path)
    text = format_extxyz(atomic_numbers, positions, energies, forces, info)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    return path


def format_extxyz(atomic_numbers, positions, energies=None, forces=None, info=None) -> str:
    """The text :func:`write_extxyz` writes, for callers that append frames to an open file.

    ``info`` maps a key to one value per frame (written as ``key=value`` in the frame's header).
    """
    kj_per_ev = 96.48533212331
    z = np.asarray(atomic_numbers)
    xyz = np.asarray(positions).reshape(-1, len(z), 3) * 10.0
    symbols = [_element_symbol(v) for v in z]
    lines = []
    for k, frame in enumerate(xyz):
        props = "species:S:1:pos:R:3"
        if forces is not None:
            props += ":forces:R:3"
        header = [f'Properties={props}', 'pbc="F F F"']
        if energies is not None:
            header.append(f"energy={energies[k] / kj_per_ev:.10f}")
        for key, values in (info or {}).items():
            header.append(f"{key}={values[k]}")
        lines.append(f"{len(z)}\n{' '.join(header)}\n")
        for i, atom in enumerate(frame):
            line = f"{symbols[i]:2s} {atom[0]:16.10f} {atom[1]:16.10f} {atom[2]:16.10f}"
            if forces is not None:
                fi = np.asarray(forces)[k, i] / kj_per_ev / 10.0
                line += f" {fi[0]:16.10f} {fi[1]:16.10f} {fi[2]:16.10f}"
            lines.append(line + "\n")
    return "".join(lines)


def read_extxyz(path: str | Path):
    """Read what :func:`write_extxyz` writes; returns atomic numbers, positions (nm), energies
    and forces (OpenMM units; None when the file has none).

    Raises
    ------
    ValueError
        For a file that is not extended XYZ, is truncated, names an unknown element or changes
        its atoms between frames; the message gives the line.
    """
    kj_per_ev = 96.48533212331
    positions, energies, forces, numbers = [], [], [], None
    with open(path) as handle:
        lines = handle.read().splitlines()
    at = 0
    while at < len(lines) and lines[at].strip():
        try:
            n = int(lines[at])
        except ValueError:
            raise ValueError(f"{path} line {at + 1}: expected the atom count of a frame, got {lines[at][:40]!r}; "
                             "is it an extended XYZ file?") from None
        if n < 1 or at + 2 + n > len(lines):
            raise ValueError(f"{path} line {at + 1}: a frame of {n} atoms, but {max(0, len(lines) - at - 2)} lines "
                             "follow; the file is truncated")
        header = lines[at + 1]
        fields = dict(item.split("=", 1) for item in header.replace('"F F F"', "F").split() if "=" in item)
        rows = [line.split() for line in lines[at + 2 : at + 2 + n]]
        frame_numbers = [_atomic_number(r[0] if r else "", path, at + 3 + i) for i, r in enumerate(rows)]
        if numbers is not None and frame_numbers != numbers:
            raise ValueError(f"{path} line {at + 1}: frame {len(positions)} has other atoms than the first frame; "
                             "keep one molecule per file")
        numbers = frame_numbers
        try:
            positions.append([[float(v) / 10.0 for v in r[1:4]] for r in rows])
            if "energy" in fields:
                energies.append(float(fields["energy"]) * kj_per_ev)
            if len(rows[0]) >= 7:
                forces.append([[float(v) * kj_per_ev * 10.0 for v in r[4:7]] for r in rows])
        except (ValueError, IndexError) as exc:
            raise ValueError(f"{path}: frame {len(positions)} (line {at + 1}) has a value that is not a number or "
                             f"a row that is short ({exc})") from None
        at += 2 + n
    if numbers is None:
        raise ValueError(f"{path} holds no frames")
    if energies and len(energies) != len(positions) or forces and len(forces) != len(positions):
        raise ValueError(f"{path}: some frames carry an energy or forces and others do not; label every frame or none")
    return (
        np.asarray(numbers),
        np.asarray(positions),
        np.asarray(energies) if energies else None,
        np.asarray(forces) if forces else None,
    )


def _element_symbol(z: int) -> str:
    """The chemical symbol of atomic number ``z`` (OpenMM's periodic table, H to Lv)."""
    from openmm.app.element import Element

    try:
        return Element.getByAtomicNumber(int(z)).symbol
    except KeyError:
        raise ValueError(f"atomic number {z} is not an element (1 to 116); extxyz cannot name it") from None


def _atomic_number(symbol: str, path, line: int) -> int:
    from openmm.app.element import Element

    try:
        return int(Element.getBySymbol(symbol).atomic_number)
    except (KeyError, AttributeError):
        raise ValueError(f"{path} line {line}: unknown element symbol {symbol!r}; each atom line starts with a "
                         "chemical symbol (H, C, Cl, Br, ...)") from None
