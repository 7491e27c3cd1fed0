"""GFN-xTB tight binding through tblite as the ground truth (optional: ``pip install 'openmm-adv[xtb]'``)."""

from __future__ import annotations

import contextlib
import ctypes
import os

import numpy as np

from ._units import BOHR_TO_NM, BOLTZMANN_HARTREE_PER_KELVIN, HARTREE_TO_KJ_PER_MOL
from .base import Oracle

__all__ = ["XTBOracle"]

_METHODS = ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB")
_MAX_Z = 86  # the GFN parametrisations cover H to Rn


def _import_tblite():
    try:
        from tblite import interface
    except ImportError as exc:
        raise ImportError("tblite is not installed: pip install 'openmm-adv[xtb]'") from exc
    return interface


_OPENMP = None


@contextlib.contextmanager
def _openmp_threads(threads: int):
    """Run the block with the OpenMP runtime tblite uses limited to ``threads`` threads.

    ``OMP_NUM_THREADS`` is read only when the runtime loads, which in a user's process may be
    long before the oracle exists, so the count is set through the runtime itself. When torch
    was imported first, tblite shares torch's ``libgomp.so.1`` (same soname), so the previous
    count is restored afterwards: otherwise labelling would silently change torch's threads.
    The setting is per calling thread, hence around every singlepoint. Best effort: only GNU
    OpenMP (what the tblite wheels link) is handled; with another runtime, set
    ``OMP_NUM_THREADS`` before starting Python.
    """
    global _OPENMP
    if _OPENMP is None:
        try:
            # RTLD_NOLOAD: use the runtime already in the process, never load a second one.
            _OPENMP = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD)
        except (OSError, AttributeError):
            _OPENMP = False
    if not _OPENMP:
        yield
        return
    previous = _OPENMP.omp_get_max_threads()
    _OPENMP.omp_set_num_threads(ctypes.c_int(int(threads)))
    try:
        yield
    finally:
        _OPENMP.omp_set_num_threads(ctypes.c_int(previous))


class XTBOracle(Oracle):
    """GFN2-xTB (or GFN1-xTB, IPEA1-xTB) energies and forces from tblite.

    Parameters
    ----------
    atomic_numbers : array_like of int
        ``[N]``.
    charge : int
        Total charge (e).
    multiplicity : int
        Spin multiplicity 2S+1 (1 = singlet); tblite takes ``uhf = multiplicity - 1``
        unpaired electrons.
    method : {"GFN2-xTB", "GFN1-xTB", "IPEA1-xTB"}
    accuracy : float
        tblite's SCC accuracy (lower is tighter); 1.0 is tblite's default.
    max_iterations : int
        SCC iterations before the structure is recorded as failed (not converged).
    electronic_temperature : float
        Fermi smearing temperature in K (tblite's default is 300 K).
    threads : int
        OpenMP threads per singlepoint. 1 by default: labelling parallelises better over
        structures (``label(n_workers=...)``) than inside one small-molecule SCF.
    name : str, optional
        Provenance name; default the method in lower case (``"gfn2-xtb"``).

    Notes
    -----
    Each structure starts from tblite's default guess rather than the previous wavefunction,
    so a label does not depend on which structures were computed before it (or in which
    worker). The tblite calculator is built on first use in each process and never pickled.
    """

    _transient = ("_calculator",)

    def __init__(self, atomic_numbers, charge: int = 0, multiplicity: int = 1, method: str = "GFN2-xTB",
                 accuracy: float = 1.0, max_iterations: int = 250, electronic_temperature: float = 300.0,
                 threads: int = 1, name: str | None = None):
        numbers = np.asarray(atomic_numbers)
        if numbers.ndim != 1 or numbers.size == 0 or not np.issubdtype(numbers.dtype, np.integer):
            raise ValueError(f"atomic_numbers must be a non-empty 1D integer array, got {numbers!r}")
        if numbers.min() < 1 or numbers.max() > _MAX_Z:
            raise ValueError(f"atomic numbers must be in 1..{_MAX_Z} for {method}, got {sorted(set(numbers.tolist()))}")
        if method not in _METHODS:
            raise ValueError(f"method {method!r} is not supported; choose one of {list(_METHODS)}")
        if int(charge) != charge:
            raise ValueError(f"charge must be an integer number of elementary charges, got {charge}")
        if int(multiplicity) != multiplicity or multiplicity < 1:
            raise ValueError(f"multiplicity must be an integer >= 1 (1 = singlet, 2 = doublet), got {multiplicity}")
        n_electrons = int(numbers.sum()) - int(charge)
        unpaired = int(multiplicity) - 1
        if n_electrons < 0 or unpaired > n_electrons or (n_electrons - unpaired) % 2:
            raise ValueError(
                f"multiplicity {multiplicity} is impossible with {n_electrons} electrons "
                f"(sum of atomic numbers {int(numbers.sum())}, charge {charge}): an even electron count "
                f"needs an odd multiplicity (1, 3, ...), an odd count an even one (2, 4, ...); "
                f"fix charge or multiplicity"
            )
        if not max_iterations >= 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        if not accuracy > 0:
            raise ValueError(f"accuracy must be > 0, got {accuracy}")
        if not electronic_temperature >= 0:
            raise ValueError(f"electronic_temperature must be >= 0 K, got {electronic_temperature}")
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        _import_tblite()  # fail here, with the install hint, not in every structure's label
        super().__init__(method.lower() if name is None else name, numbers.size)
        self.atomic_numbers = numbers.astype(np.int32)
        self.charge = int(charge)
        self.multiplicity = int(multiplicity)
        self.method = method
        self.accuracy = float(accuracy)
        self.max_iterations = int(max_iterations)
        self.electronic_temperature = float(electronic_temperature)
        self.threads = int(threads)

    def _new_calculator(self, positions_bohr: np.ndarray):
        interface = _import_tblite()
        calc = interface.Calculator(
            self.method, self.atomic_numbers, positions_bohr, charge=float(self.charge),
            uhf=self.multiplicity - 1,
        )
        calc.set("verbosity", 0)
        calc.set("max-iter", self.max_iterations)
        calc.set("accuracy", self.accuracy)
        calc.set("temperature", self.electronic_temperature * BOLTZMANN_HARTREE_PER_KELVIN)
        return calc

    def _energy_forces(self, positions_nm: np.ndarray) -> tuple[float, np.ndarray]:
        positions_bohr = positions_nm / BOHR_TO_NM
        if self._calculator is None:
            self._calculator = self._new_calculator(positions_bohr)
        else:
            self._calculator.update(positions_bohr)
        try:
            with _openmp_threads(self.threads):
                result = self._calculator.singlepoint()
        except Exception:
            # Rebuild after a failure rather than trust whatever state the SCF left behind.
            self._calculator = None
            raise
        energy = result.get("energy") * HARTREE_TO_KJ_PER_MOL
        forces = -np.asarray(result.get("gradient")) * (HARTREE_TO_KJ_PER_MOL / BOHR_TO_NM)
        return energy, forces

    def descriptor(self) -> dict:
        """Method, charge, multiplicity and electronic temperature: what sets an xTB label
        (threads and the SCC accuracy and iteration limit change it by convergence noise only)."""
        return {"kind": "xtb", "method": self.method, "charge": self.charge, "multiplicity": self.multiplicity,
                "electronic_temperature": self.electronic_temperature}

    def __repr__(self) -> str:
        return (f"XTBOracle(name={self.name!r}, n_atoms={self.n_atoms}, method={self.method!r}, "
                f"charge={self.charge}, multiplicity={self.multiplicity}, threads={self.threads})")
