"""The batch interface every ground-truth oracle shares.

An oracle maps positions ``[B, N, 3]`` (nm) to energies ``[B]`` (kJ/mol) and forces
``[B, N, 3]`` (kJ/mol/nm). Labelling is the expensive, failure-prone step of active learning
(SCF that does not converge, geometries that blow up a force field), so a failing structure is
recorded with its reason and never stops the batch.
"""

from __future__ import annotations

import abc
import math
import os
import threading
import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np

from .._errors import first_line

__all__ = ["Labels", "Oracle"]


@dataclass
class Labels:
    """Energies and forces for a batch, with a record of which structures failed.

    Attributes
    ----------
    energies : numpy.ndarray
        ``[B]`` in kJ/mol; NaN where the structure failed.
    forces : numpy.ndarray
        ``[B, N, 3]`` in kJ/mol/nm; NaN where the structure failed.
    ok : numpy.ndarray
        ``[B]`` bool, True where the structure was labelled.
    errors : list of (str or None)
        Per structure, the reason it failed (``"TBLiteRuntimeError: SCF not converged ..."``),
        or None where it was labelled.
    oracle : str
        Name of the oracle that produced the labels (for provenance).
    wall_seconds : float
        Wall-clock time the batch took.
    """

    energies: np.ndarray
    forces: np.ndarray
    ok: np.ndarray
    errors: list
    oracle: str
    wall_seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.energies)

    @property
    def n_failed(self) -> int:
        """Number of structures that could not be labelled."""
        return int(len(self.ok) - np.count_nonzero(self.ok))

    def failures(self) -> list[tuple[int, str]]:
        """``(index, reason)`` for every structure that failed, in batch order."""
        return [(i, self.errors[i]) for i in np.flatnonzero(~np.asarray(self.ok, dtype=bool)).tolist()]

    @classmethod
    def failed(cls, n_structures: int, n_atoms: int, reason: str | None, oracle: str) -> "Labels":
        """Labels in which every one of ``n_structures`` failed for ``reason``."""
        return cls(
            energies=np.full(n_structures, np.nan),
            forces=np.full((n_structures, n_atoms, 3), np.nan),
            ok=np.zeros(n_structures, dtype=bool),
            errors=[reason] * n_structures,
            oracle=oracle,
        )


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}"


class Oracle(abc.ABC):
    """Base class of ground-truth oracles.

    Subclasses set ``name`` and ``n_atoms`` (through ``Oracle.__init__``) and implement
    :meth:`_energy_forces` for one structure. Anything that cannot be pickled (OpenMM
    Contexts, tblite calculators) must be built lazily and named in ``_transient``, so that
    oracles travel to worker processes and rebuild those there.

    Attributes
    ----------
    name : str
        Recorded as the provenance of the labels.
    n_atoms : int
        Number of atoms every structure must have.
    threads : int
        Threads one evaluation uses; a process pool started by :meth:`label` limits OpenMP in
        its workers to this many, so ``n_workers * threads`` should not exceed the cores.
    """

    #: Attributes rebuilt lazily in each process and never pickled.
    _transient: tuple[str, ...] = ()
    threads: int = 1

    def __init__(self, name: str, n_atoms: int):
        n_atoms = int(n_atoms)
        if n_atoms < 1:
            raise ValueError(f"an oracle needs at least one atom, got n_atoms={n_atoms}")
        self.name = str(name)
        self.n_atoms = n_atoms
        # The lazily built engines (an OpenMM Context, a tblite calculator) hold state per
        # evaluation, so a thread-pool executor must not run two structures on them at once.
        self._lock = threading.RLock()
        for attr in self._transient:
            setattr(self, attr, None)

    @abc.abstractmethod
    def _energy_forces(self, positions_nm: np.ndarray) -> tuple[float, np.ndarray]:
        """Energy (kJ/mol) and forces ``[N, 3]`` (kJ/mol/nm) of one structure ``[N, 3]`` in nm.

        May raise: :meth:`compute` records the exception as this structure's failure.
        """

    # -- pickling ------------------------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_lock", None)
        for attr in self._transient:
            state[attr] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n_atoms={self.n_atoms})"

    def descriptor(self) -> dict:
        """What identifies this oracle's labels: a JSON-able dict with ``kind`` and the settings
        that change energies or forces (not threads, platform or the provenance ``name``).

        A dataset records it (:mod:`openmm_adv.oracle_record`) and refuses labels whose
        descriptor differs. Subclasses override it; this fallback names the class.
        """
        return {"kind": f"{type(self).__module__}.{type(self).__qualname__}", "name": self.name}

    # -- evaluation ----------------------------------------------------------------------
    def _check_positions(self, positions) -> np.ndarray:
        from ..units import to_nm

        xyz = np.asarray(to_nm(positions), dtype=np.float64)
        if xyz.ndim == 2:
            xyz = xyz[None]
        if xyz.ndim != 3 or xyz.shape[-1] != 3 or xyz.shape[1] != self.n_atoms:
            raise ValueError(
                f"oracle {self.name!r} expects positions of {self.n_atoms} atoms, shape "
                f"[B, {self.n_atoms}, 3] or [{self.n_atoms}, 3] in nm, got shape {xyz.shape}; "
                f"pass coordinates of the system the oracle was built for"
            )
        return xyz

    def compute(self, positions) -> Labels:
        """Label a batch in this process, one structure after another.

        Parameters
        ----------
        positions : array_like or openmm.unit.Quantity
            ``[B, N, 3]`` or ``[N, 3]``; plain numbers are nm.

        Returns
        -------
        Labels
            A structure whose coordinates are not finite, whose evaluation raised, or whose
            energy or forces are not finite is marked failed (NaN labels, reason in
            ``errors``); the others are labelled.

        Raises
        ------
        ValueError
            If the positions do not have the oracle's atom count (nothing can be labelled).
        """
        xyz = self._check_positions(positions)
        n_structures = len(xyz)
        labels = Labels.failed(n_structures, self.n_atoms, None, self.name)
        start = time.perf_counter()
        with self._lock:
            for k, x in enumerate(xyz):
                labels.errors[k] = self._label_one(x, labels, k)
                labels.ok[k] = labels.errors[k] is None
        labels.wall_seconds = time.perf_counter() - start
        return labels

    def _label_one(self, x: np.ndarray, labels: Labels, k: int) -> str | None:
        if not np.isfinite(x).all():
            return "non-finite coordinates"
        try:
            energy, forces = self._energy_forces(x.copy())
            energy = float(energy)
            forces = np.asarray(forces, dtype=np.float64)
        except Exception as exc:  # any failure of one structure is data, not a crash
            return _reason(exc)
        if forces.shape != (self.n_atoms, 3):
            return f"ValueError: oracle returned forces of shape {forces.shape}, expected ({self.n_atoms}, 3)"
        if not (math.isfinite(energy) and np.isfinite(forces).all()):
            return "non-finite energy or forces"
        labels.energies[k] = energy
        labels.forces[k] = forces
        return None

    def label(self, positions, executor=None, n_workers: int = 1, chunk_size: int | None = None,
              timeout: float | None = None, on_label=None) -> Labels:
        """Label a batch, in parallel where asked.

        Parameters
        ----------
        positions : array_like or openmm.unit.Quantity
            ``[B, N, 3]`` or ``[N, 3]``; plain numbers are nm.
        executor : openmm_adv.executors.Labeller or concurrent.futures.Executor, optional
            Where the structures are labelled; the caller owns it (it is not closed here).
            A :class:`~openmm_adv.executors.Labeller` (a process pool with a timeout, a Dask
            cluster) runs one task per structure. A plain ``concurrent.futures`` executor runs
            chunks of ``chunk_size`` structures; a process pool must be able to pickle this
            oracle. Without one: in this process when ``n_workers == 1`` and there is no
            ``timeout``, else in a :class:`~openmm_adv.executors.ProcessLabeller` of
            ``n_workers`` spawned processes made and closed here.
        n_workers : int
            Worker processes when no executor is given.
        chunk_size : int, optional
            Structures per task of a ``concurrent.futures`` executor. Default: about four
            chunks per worker, which balances load without pickling the oracle per structure.
        timeout : float, optional
            Seconds one structure may take when no executor is given; one that runs over is
            recorded as failed (``"timeout after N s"``) and its worker process killed.
        on_label : callable, optional
            ``on_label(i, labels, seconds)`` for each structure as it completes (a
            :class:`Labels` of that one structure), so a caller can save labels as they come;
            not with a ``concurrent.futures`` executor.

        Returns
        -------
        Labels
            In input order. A structure whose task itself failed (its worker died too often,
            it ran over the timeout, the oracle could not be pickled for a plain executor) is
            marked failed with that reason; the rest of the batch is still returned.
        """
        from ..executors import Labeller, make_labeller

        xyz = self._check_positions(positions)
        n_workers = int(n_workers)
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        if chunk_size is not None and int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        start = time.perf_counter()
        if executor is not None and not isinstance(executor, Labeller):
            if on_label is not None:
                raise ValueError("on_label needs labels as they complete: give a Labeller (openmm_adv.executors), "
                                 "not a concurrent.futures executor")
            # The standard pools expose their size only privately; it only tunes chunking.
            labels = self._label_chunks(xyz, executor, getattr(executor, "_max_workers", n_workers), chunk_size)
        else:
            labeller = executor or make_labeller(workers=min(n_workers, max(1, len(xyz))), timeout=timeout)
            labels = Labels.failed(len(xyz), self.n_atoms, None, self.name)

            def collect(k: int, one: Labels, seconds: float) -> None:
                labels.energies[k], labels.forces[k] = one.energies[0], one.forces[0]
                labels.ok[k], labels.errors[k] = one.ok[0], one.errors[0]
                if on_label is not None:
                    on_label(k, one, seconds)

            try:
                labeller.run(self, xyz, collect)
            finally:
                if executor is None:
                    labeller.close()
        labels.wall_seconds = time.perf_counter() - start
        return labels

    def _label_chunks(self, xyz: np.ndarray, executor: Executor, n_workers: int,
                      chunk_size: int | None) -> Labels:
        n_structures = len(xyz)
        if chunk_size is None:
            chunk_size = max(1, math.ceil(n_structures / (4 * max(1, int(n_workers)))))
        bounds = [(lo, min(lo + int(chunk_size), n_structures)) for lo in range(0, n_structures, int(chunk_size))]
        futures: list[Future | BaseException] = []
        for lo, hi in bounds:
            try:
                futures.append(executor.submit(_compute_chunk, self, xyz[lo:hi]))
            except Exception as exc:  # e.g. a pool already broken by an earlier crash
                futures.append(exc)

        labels = Labels.failed(n_structures, self.n_atoms, None, self.name)
        for (lo, hi), future in zip(bounds, futures):
            try:
                if isinstance(future, BaseException):
                    raise future
                chunk = future.result()
                if not isinstance(chunk, Labels) or len(chunk) != hi - lo:
                    raise TypeError(f"a chunk of {hi - lo} structures came back as {type(chunk).__name__}")
            except Exception as exc:
                chunk = Labels.failed(hi - lo, self.n_atoms, f"executor: {_reason(exc)}", self.name)
            labels.energies[lo:hi] = chunk.energies
            labels.forces[lo:hi] = chunk.forces
            labels.ok[lo:hi] = chunk.ok
            labels.errors[lo:hi] = list(chunk.errors)
        return labels


def _compute_chunk(oracle: Oracle, positions: np.ndarray) -> Labels:
    """Task run by an executor (module level so a process pool can pickle it by name)."""
    return oracle.compute(positions)


def _init_worker(threads: int) -> None:
    """Start-up of a labelling worker process.

    OpenMP runtimes read these variables once, when they are loaded; the oracles load theirs
    (tblite's) lazily, after this runs, and OpenMM's CPU platform reads its own when a Context
    is made. Without them every worker would start one thread per core, and ``n_workers``
    workers would oversubscribe the machine.
    """
    threads = str(max(1, int(threads)))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENMM_CPU_THREADS"):
        os.environ[var] = threads
    # tblite's OpenMP threads keep large arrays on their stacks; the default few MB overflow.
    os.environ.setdefault("OMP_STACKSIZE", "256M")
