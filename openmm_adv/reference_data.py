"""Reference data for the alanine dipeptide benchmark: the ground-truth free-energy surface and
an Amber-labelled test set covering every basin.

Both files are shipped in :mod:`openmm_adv.torchscript_models` and regenerated, reproducibly,
by ``python scripts/make_ala2_reference.py`` (well-tempered metadynamics on phi/psi with the
reference potential, Amber ff14SB in vacuum; see the ``metadata`` of the loaded surface for the
settings, the simulated time and the convergence figures).

- ``ala2_reference_fes.npz``: the phi/psi free energy on 36 x 36 bins of 10 degrees (and on the
  5-degree metadynamics grid), global minimum at 0 kJ/mol.
- ``ala2_test_set.h5``: an :class:`~openmm_adv.data.Dataset` of 300 K geometries saved along the
  metadynamics trajectory, stratified over the 10-degree bins whose free energy is below
  25 kJ/mol, labelled with the Amber energies and forces.

Angles here are in degrees, wrapped to [-180, 180).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .resources import _shipped
from .systems import BASINS_DEG

__all__ = [
    "BASINS_DEG",
    "FES_FILE",
    "TEST_SET_FILE",
    "ReferenceFES",
    "accessible_bins",
    "assign_basin",
    "load_reference_fes",
    "load_test_set",
    "periodic_distance_deg",
    "wrap_deg",
]

FES_FILE = "ala2_reference_fes.npz"
TEST_SET_FILE = "ala2_test_set.h5"
_REGENERATE = "python scripts/make_ala2_reference.py"


def wrap_deg(angle) -> np.ndarray:
    """Angles in degrees wrapped to [-180, 180)."""
    return (np.asarray(angle, dtype=np.float64) + 180.0) % 360.0 - 180.0


def periodic_distance_deg(phi1, psi1, phi2, psi2) -> np.ndarray:
    """Euclidean distance on the phi/psi torus, in degrees (each difference wrapped)."""
    dphi = wrap_deg(np.asarray(phi1, dtype=np.float64) - phi2)
    dpsi = wrap_deg(np.asarray(psi1, dtype=np.float64) - psi2)
    return np.hypot(dphi, dpsi)


def assign_basin(phi_deg, psi_deg, radius_deg: float = 40.0) -> np.ndarray:
    """Name of the nearest basin centre of :data:`BASINS_DEG` within ``radius_deg``.

    Parameters
    ----------
    phi_deg, psi_deg : array_like
        Dihedrals in degrees (any range; periodic distances are used), same shape.
    radius_deg : float
        Points farther than this from every basin centre (Euclidean distance on the torus) get
        the empty string.

    Returns
    -------
    numpy.ndarray
        Basin names (str), the shape of ``phi_deg``; ``""`` outside every basin.
    """
    phi, psi = np.broadcast_arrays(np.asarray(phi_deg, dtype=np.float64), np.asarray(psi_deg, dtype=np.float64))
    shape = phi.shape
    phi, psi = phi.ravel(), psi.ravel()
    names = list(BASINS_DEG)
    dist = np.stack([periodic_distance_deg(phi, psi, c[0], c[1]) for c in BASINS_DEG.values()])
    nearest = np.argmin(dist, axis=0)
    out = np.asarray(names, dtype=f"<U{max(len(n) for n in names)}")[nearest]
    out[dist[nearest, np.arange(len(nearest))] > radius_deg] = ""
    return out.reshape(shape)


def _bin_index(angle_deg, edges: np.ndarray) -> np.ndarray:
    """Periodic bin index of angles on a regular grid of edges spanning 360 degrees."""
    width = (edges[-1] - edges[0]) / (len(edges) - 1)
    n = len(edges) - 1
    return np.floor(((np.asarray(angle_deg, dtype=np.float64) - edges[0]) % 360.0) / width).astype(np.int64) % n


def accessible_bins(free_energy: np.ndarray, cutoff_kj_mol: float = 25.0) -> np.ndarray:
    """Bins of a free-energy array below a cutoff (non-finite entries are never accessible)."""
    f = np.asarray(free_energy, dtype=np.float64)
    return np.isfinite(f) & (f < cutoff_kj_mol)


@dataclass
class ReferenceFES:
    """The reference phi/psi free-energy surface of alanine dipeptide on a periodic grid.

    Attributes
    ----------
    phi_edges, psi_edges : numpy.ndarray
        Bin edges in degrees, ``[n_phi + 1]`` and ``[n_psi + 1]``, from -180 to 180.
    free_energy : numpy.ndarray
        ``[n_phi, n_psi]`` in kJ/mol, global minimum 0. Values far above the 25 kJ/mol cutoff
        are less certain (metadynamics fills them last).
    metadata : dict
        Settings, simulated time, seed, versions, timestamp and convergence figures of the run.
    extra : dict
        Other arrays of the file (the metadynamics grid, the reweighted estimate).
    """

    phi_edges: np.ndarray
    psi_edges: np.ndarray
    free_energy: np.ndarray
    metadata: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.phi_edges = np.asarray(self.phi_edges, dtype=np.float64)
        self.psi_edges = np.asarray(self.psi_edges, dtype=np.float64)
        self.free_energy = np.asarray(self.free_energy, dtype=np.float64)
        expected = (len(self.phi_edges) - 1, len(self.psi_edges) - 1)
        if self.free_energy.shape != expected:
            raise ValueError(f"free_energy has shape {self.free_energy.shape}, the edges give {expected}")
        for name, edges in (("phi", self.phi_edges), ("psi", self.psi_edges)):
            if not np.isclose(edges[-1] - edges[0], 360.0) or not np.allclose(np.diff(edges), np.diff(edges)[0]):
                raise ValueError(f"{name}_edges must be a regular grid spanning 360 degrees")

    @property
    def phi_centres(self) -> np.ndarray:
        """Bin centres along phi, degrees."""
        return 0.5 * (self.phi_edges[1:] + self.phi_edges[:-1])

    @property
    def psi_centres(self) -> np.ndarray:
        """Bin centres along psi, degrees."""
        return 0.5 * (self.psi_edges[1:] + self.psi_edges[:-1])

    def free_energy_at(self, phi_deg, psi_deg) -> np.ndarray:
        """Free energy (kJ/mol) of the bins holding the given angles (periodic lookup)."""
        i = _bin_index(phi_deg, self.phi_edges)
        j = _bin_index(psi_deg, self.psi_edges)
        return self.free_energy[i, j]

    def on_10_degree_grid(self) -> np.ndarray:
        """The free energy on 36 x 36 bins of 10 degrees, ``[36, 36]`` kJ/mol.

        A finer grid whose bins nest in the 10-degree ones is coarse-grained by Boltzmann
        averaging at the temperature in ``metadata`` (300 K by default).
        """
        n_phi, n_psi = self.free_energy.shape
        if (n_phi, n_psi) == (36, 36) and np.isclose(self.phi_edges[0], -180) and np.isclose(self.psi_edges[0], -180):
            return self.free_energy.copy()
        if n_phi % 36 or n_psi % 36 or not (np.isclose(self.phi_edges[0], -180) and np.isclose(self.psi_edges[0], -180)):
            raise ValueError(f"a {n_phi} x {n_psi} grid does not nest in 10-degree bins from -180")
        kt = 0.0083144626 * float(self.metadata.get("settings", {}).get("temperature_K", 300.0))
        a, b = n_phi // 36, n_psi // 36
        p = np.exp(-(self.free_energy - np.nanmin(self.free_energy)) / kt).reshape(36, a, 36, b).mean(axis=(1, 3))
        with np.errstate(divide="ignore"):
            f = -kt * np.log(p)
        return f - f.min()

    def accessible_bins(self, cutoff_kj_mol: float = 25.0) -> np.ndarray:
        """Boolean ``[36, 36]`` mask of the 10-degree bins (phi, psi from -180) below the cutoff."""
        return accessible_bins(self.on_10_degree_grid(), cutoff_kj_mol)

    def basin_free_energies(self, radius_deg: float = 40.0) -> dict[str, float]:
        """Free energy of each basin of :data:`BASINS_DEG`, relative to the global minimum.

        The basin free energy is the lowest bin value among the bins whose centres
        :func:`assign_basin` gives to that basin (nearest centre within ``radius_deg``): the
        bottom of the basin on this grid, in kJ/mol.
        """
        phi, psi = np.meshgrid(self.phi_centres, self.psi_centres, indexing="ij")
        labels = assign_basin(phi, psi, radius_deg)
        out = {}
        for name in BASINS_DEG:
            values = self.free_energy[labels == name]
            values = values[np.isfinite(values)]
            out[name] = float(values.min()) if values.size else float("nan")
        return out


def load_reference_fes(path: str | Path | None = None) -> ReferenceFES:
    """Load the reference phi/psi free-energy surface of alanine dipeptide.

    Parameters
    ----------
    path : str or Path, optional
        An ``.npz`` written by ``scripts/make_ala2_reference.py``; default: the shipped
        ``ala2_reference_fes.npz``.

    Returns
    -------
    ReferenceFES
    """
    path = Path(path) if path is not None else _shipped_or_hint(FES_FILE)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    missing = {"phi_edges_deg", "psi_edges_deg", "free_energy_kj_mol"} - set(arrays)
    if missing:
        raise ValueError(f"{path} is not a reference FES file (missing {sorted(missing)})")
    metadata = json.loads(str(arrays.pop("metadata"))) if "metadata" in arrays else {}
    return ReferenceFES(
        phi_edges=arrays.pop("phi_edges_deg"),
        psi_edges=arrays.pop("psi_edges_deg"),
        free_energy=arrays.pop("free_energy_kj_mol"),
        metadata=metadata,
        extra=arrays,
    )


def load_test_set(path: str | Path | None = None):
    """Load the Amber-labelled alanine dipeptide test set (an :class:`~openmm_adv.data.Dataset`).

    Parameters
    ----------
    path : str or Path, optional
        Default: the shipped ``ala2_test_set.h5``.
    """
    from .data import Dataset

    return Dataset.load(Path(path) if path is not None else _shipped_or_hint(TEST_SET_FILE))


def _shipped_or_hint(name: str) -> Path:
    try:
        return _shipped(name)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the shipped reference file {name} is missing from openmm_adv.torchscript_models; "
            f"regenerate it with '{_REGENERATE}' (about 15-20 minutes on 2 CPU cores)"
        ) from None
