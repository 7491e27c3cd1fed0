"""Labelled geometries with provenance, stored in one HDF5 file; extxyz import/export."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np

__all__ = ["Dataset", "write_extxyz", "format_extxyz", "read_extxyz"]

_SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F", 15: "P", 16: "S", 17: "Cl"}
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
    temporary file and an atomic rename, so a crash never leaves a half-written file.

    Parameters
    ----------
    atomic_numbers : array_like
        ``[N]``.
    """

    def __init__(self, atomic_numbers):
        self.atomic_numbers = np.asarray(atomic_numbers, dtype=np.int64)
        n = len(self.atomic_numbers)
        self.positions = np.zeros((0, n, 3))
        self.energies = np.zeros(0)
        self.forces = np.zeros((0, n, 3))
        self.provenance = {k: np.zeros(0, dtype=v) for k, v in _PROVENANCE.items()}

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
        return out

    def extend(self, other: "Dataset") -> None:
        """Append every record of ``other`` (same atoms), provenance included."""
        self._check_same_atoms(other)
        self.positions = np.concatenate([self.positions, other.positions])
        self.energies = np.concatenate([self.energies, other.energies])
        self.forces = np.concatenate([self.forces, other.forces])
        for key, dtype in _PROVENANCE.items():
            self.provenance[key] = np.concatenate([self.provenance[key], other.provenance[key].astype(dtype)])

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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        n = self.n_atoms
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = "openmm-adv-dataset"
            f.attrs["format_version"] = 2
            f.attrs["units"] = "positions nm, energies kJ/mol, forces kJ/mol/nm"
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
    def append_to_file(path: str | Path, records: "Dataset", tag: str | None = None) -> int:
        """Append ``records`` to the dataset file at ``path`` atomically; returns the new size.

        ``tag`` makes the append idempotent: it is stored in the file in the same atomic step as
        the records, and an append whose tag is already there does nothing. A resumed job can
        therefore repeat its last append without duplicating records.

        The file is copied, extended and renamed over the original, so a crash at any moment
        leaves either the old file or the new one, never a half-written record. (HDF5 has no
        transactions: an in-place append killed mid-write can corrupt the whole file.) The
        copy costs O(file size), about 10 ms per MB.
        """
        path = Path(path)
        if not path.exists():
            # Data and tag in one file and one rename: a crash leaves no file or a tagged one.
            records.save(path, tags=[] if tag is None else [tag])
            return len(records)
        tmp = path.with_name(path.name + ".tmp")
        existing_numbers, resizable, tags = _inspect(path)
        if tag is not None and tag in tags:
            return len(Dataset.load(path))
        records._check_same_atoms(Dataset(existing_numbers))
        if not resizable:  # a format-1 file: rewrite it in the resizable layout
            whole = Dataset.load(path)
            whole.extend(records)
            whole.save(path, tags=tags + ([] if tag is None else [tag]))
            return len(whole)
        shutil.copyfile(path, tmp)
        k = len(records)
        with h5py.File(tmp, "a") as f:
            if tag is not None:
                f.attrs["append_tags"] = json.dumps(tags + [tag])
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

    @classmethod
    def load(cls, path: str | Path) -> "Dataset":
        """Read a dataset written by :meth:`save` or :meth:`append_to_file`."""
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
        except (OSError, KeyError) as exc:
            raise ValueError(f"cannot read dataset {path} (missing or corrupt HDF5): {exc}") from exc
        sizes = {len(out.positions), len(out.energies), len(out.forces), *(len(v) for v in out.provenance.values())}
        if len(sizes) != 1:
            raise ValueError(f"dataset {path} is inconsistent (arrays of lengths {sorted(sizes)}); it is corrupt")
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
        raise ValueError(f"cannot read dataset {path} (missing or corrupt HDF5): {exc}") from exc


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
    with open(path, "w") as handle:
        handle.write(format_extxyz(atomic_numbers, positions, energies, forces, info))
    return path


def format_extxyz(atomic_numbers, positions, energies=None, forces=None, info=None) -> str:
    """The text :func:`write_extxyz` writes, for callers that append frames to an open file.

    ``info`` maps a key to one value per frame (written as ``key=value`` in the frame's header).
    """
    kj_per_ev = 96.48533212331
    z = np.asarray(atomic_numbers)
    xyz = np.asarray(positions).reshape(-1, len(z), 3) * 10.0
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
            line = f"{_SYMBOLS.get(int(z[i]), 'X'):2s} {atom[0]:16.10f} {atom[1]:16.10f} {atom[2]:16.10f}"
            if forces is not None:
                fi = np.asarray(forces)[k, i] / kj_per_ev / 10.0
                line += f" {fi[0]:16.10f} {fi[1]:16.10f} {fi[2]:16.10f}"
            lines.append(line + "\n")
    return "".join(lines)


def read_extxyz(path: str | Path):
    """Read what :func:`write_extxyz` writes; returns positions (nm), energies, forces (OpenMM units)."""
    kj_per_ev = 96.48533212331
    symbols_to_z = {v: k for k, v in _SYMBOLS.items()}
    positions, energies, forces, numbers = [], [], [], None
    with open(path) as handle:
        while True:
            line = handle.readline()
            if not line.strip():
                break
            n = int(line)
            header = handle.readline()
            fields = dict(item.split("=", 1) for item in header.replace('"F F F"', "F").split() if "=" in item)
            rows = [handle.readline().split() for _ in range(n)]
            numbers = [symbols_to_z[r[0]] for r in rows]
            positions.append([[float(v) / 10.0 for v in r[1:4]] for r in rows])
            if "energy" in fields:
                energies.append(float(fields["energy"]) * kj_per_ev)
            if len(rows[0]) >= 7:
                forces.append([[float(v) * kj_per_ev * 10.0 for v in r[4:7]] for r in rows])
    return (
        np.asarray(numbers),
        np.asarray(positions),
        np.asarray(energies) if energies else None,
        np.asarray(forces) if forces else None,
    )
