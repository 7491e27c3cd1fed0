"""Labels saved one file per structure as they come back, so that a killed ``label`` run resumes.

``openmm-adv label`` appends to its dataset once, at the end; on a batch system the labels of
hours can come back before that. A :class:`LabelJournal` (a folder next to the output) holds each
label as soon as it is computed, written atomically, so a rerun of the same command computes
only what is missing. It is keyed by what decides the labels (the frames, the system, the
oracle and its options): a journal of other work is refused rather than mixed in.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import numpy as np

__all__ = ["LabelJournal", "journal_key"]

_FORMAT = "openmm-adv-label-journal/1"


def journal_key(positions: np.ndarray, description: dict) -> str:
    """A digest of the frames and of the JSON ``description`` of how they are labelled."""
    digest = hashlib.sha256(np.ascontiguousarray(positions, dtype=np.float64).tobytes())
    digest.update(json.dumps(description, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class LabelJournal:
    """The labels of one labelling job, one ``.npz`` per structure in ``folder``.

    Parameters
    ----------
    folder : path
        Created if missing, with a ``journal.json`` holding ``key``.
    key : str
        :func:`journal_key` of the job.
    n_structures : int

    Attributes
    ----------
    id : str
        Random, made with the journal: tag the dataset append with it (``label-<id>``), so that
        a run killed between the append and :meth:`remove` does not append twice on resume.

    Raises
    ------
    ValueError
        If ``folder`` holds the journal of another job (other frames, system or oracle).
    """

    def __init__(self, folder: str | Path, key: str, n_structures: int):
        from .loop import _atomic_write_text

        self.folder, self.key, self.n_structures = Path(folder), key, int(n_structures)
        manifest = self.folder / "journal.json"
        if manifest.exists():
            try:
                stored = json.loads(manifest.read_text())
            except json.JSONDecodeError:
                stored = {}
            expected = {"format": _FORMAT, "key": key, "n_structures": n_structures}
            if any(stored.get(k) != v for k, v in expected.items()):
                raise ValueError(f"{self.folder} holds labels of other frames, another system or another oracle; "
                                 "remove it to start over, or rerun the command that made it to finish that job")
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            stored = {"format": _FORMAT, "key": key, "n_structures": n_structures, "id": uuid.uuid4().hex}
            _atomic_write_text(manifest, json.dumps(stored) + "\n")
        #: Names this job: the append tag that keeps a resumed job from appending its labels twice.
        self.id = str(stored["id"])

    def _path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.npz"

    def pending(self) -> list[int]:
        """Indices of the structures without a saved label."""
        return [i for i in range(self.n_structures) if not self._path(i).exists()]

    def save(self, index: int, labels, seconds: float) -> None:
        """Save the one-structure :class:`~openmm_adv.oracles.Labels` of structure ``index``."""
        from .run_files import atomic_savez as _atomic_savez

        _atomic_savez(self._path(index), dict(
            energy=np.asarray(labels.energies[0], float), forces=np.asarray(labels.forces[0], float),
            ok=np.asarray(bool(labels.ok[0])), error=np.array(labels.errors[0] or ""),
            seconds=np.asarray(seconds, float), oracle=np.array(labels.oracle)))

    def labels(self, n_atoms: int, oracle: str):
        """Every saved label as one :class:`~openmm_adv.oracles.Labels`, in structure order.

        Raises
        ------
        ValueError
            If a structure has no saved label yet.
        """
        from .run_files import read_label as _load_npz
        from .oracles import Labels

        missing = self.pending()
        if missing:
            raise ValueError(f"{self.folder}: {len(missing)} structures have no label yet (first: {missing[0]})")
        out = Labels.failed(self.n_structures, n_atoms, None, oracle)
        for i in range(self.n_structures):
            saved = _load_npz(self._path(i))
            out.energies[i], out.forces[i], out.ok[i] = float(saved["energy"]), saved["forces"], bool(saved["ok"])
            out.errors[i] = None if out.ok[i] else str(saved["error"])
            out.wall_seconds += float(saved["seconds"])
        return out

    def remove(self) -> None:
        """Delete the journal (after its labels reached the dataset)."""
        shutil.rmtree(self.folder, ignore_errors=True)
