"""Free-energy fidelity of a committee on alanine dipeptide's phi/psi surface, by reweighting.

Running metadynamics with every committee until two walkers agree within 1 kJ/mol costs hours
per committee on 2 CPU cores (a committee step costs milliseconds). The reference frames
already sample the reference ensemble bin by bin, so the committee's free energy follows from
free-energy perturbation within each 10-degree (phi, psi) bin::

    F_nn(b) = F_ref(b) - kT log < exp(-(E_nn - E_ref) / kT) >_(frames in b)

with F_ref the shipped reference surface (5 ns of well-tempered metadynamics with Amber) and the
average over the reference frames that fall in bin b (the shipped all-basin test set: Amber
frames from metadynamics and MD, a few per bin). This assumes the frames of a bin are
distributed as the reference ensemble restricted to that bin, which holds where the bias was
nearly flat across a bin; the effective sample size of each bin's weights is reported, and an
estimate from one or two effective frames is a rough one. Only differences of free energies
mean anything: surfaces are compared after removing their mean offset, basins relative to
C7eq.
"""

from __future__ import annotations

import numpy as np

from .reference_data import BASINS_DEG, ReferenceFES, _bin_index, assign_basin

__all__ = ["fes_by_reweighting"]

KB_KJ_MOL_K = 0.0083144626


def fes_by_reweighting(committee_energies, reference_energies, phi_deg, psi_deg, fes: ReferenceFES,
                       temperature: float = 300.0, cutoff_kj_mol: float = 25.0) -> dict:
    """The committee's phi/psi free-energy surface from reference frames, against the reference.

    Parameters
    ----------
    committee_energies, reference_energies : array ``[F]``
        Committee-mean and reference energies of the reference frames (kJ/mol).
    phi_deg, psi_deg : array ``[F]``
        The frames' dihedrals in degrees.
    fes : ReferenceFES
        The reference surface (coarse-grained to 10-degree bins).
    temperature : float
        Kelvin.
    cutoff_kj_mol : float
        Bins of the reference surface below this free energy are compared.

    Returns
    -------
    dict
        ``rmse_kj_mol`` and ``rmse_kT`` over the compared bins (offset removed),
        ``max_abs_error_kj_mol``, ``n_bins`` compared and ``n_accessible`` (bins below the cutoff),
        ``median_ess`` and ``min_ess`` (effective frames per bin), ``basins``: per basin the
        reference and committee free energy relative to C7eq and their difference, and the
        arrays ``free_energy`` (committee, ``[36, 36]``, NaN where not estimated),
        ``reference`` and ``ess``.
    """
    e_nn = np.asarray(committee_energies, dtype=np.float64)
    e_ref = np.asarray(reference_energies, dtype=np.float64)
    if e_nn.shape != e_ref.shape or e_nn.ndim != 1 or len(e_nn) != len(np.atleast_1d(phi_deg)):
        raise ValueError("committee energies, reference energies and angles need one value per frame")
    if not (np.isfinite(e_nn).all() and np.isfinite(e_ref).all()):
        raise ValueError("energies must be finite")
    kt = KB_KJ_MOL_K * temperature
    reference = fes.on_10_degree_grid()
    accessible = np.isfinite(reference) & (reference < cutoff_kj_mol)
    edges = np.linspace(-180.0, 180.0, 37)
    i, j = _bin_index(phi_deg, edges), _bin_index(psi_deg, edges)
    # Only energy differences matter; centring keeps the exponentials in range.
    delta = (e_nn - e_ref) - np.median(e_nn - e_ref)
    shift = np.full(reference.shape, np.nan)
    ess = np.zeros(reference.shape)
    flat = i * 36 + j
    for b in np.unique(flat):
        frames = flat == b
        x = -delta[frames] / kt
        top = x.max()
        w = np.exp(x - top)
        shift.flat[b] = -kt * (top + np.log(w.mean()))
        ess.flat[b] = w.sum() ** 2 / np.sum(w**2)
    estimated = accessible & np.isfinite(shift)
    if not estimated.any():
        raise ValueError("no reference frame falls in a bin below the cutoff")
    committee = np.where(estimated, reference + shift, np.nan)
    difference = committee[estimated] - reference[estimated]
    centred = difference - difference.mean()

    centres = edges[:-1] + 5.0
    phi_c, psi_c = np.meshgrid(centres, centres, indexing="ij")
    labels = assign_basin(phi_c, psi_c)

    def basin_free_energy(surface: np.ndarray, name: str) -> float:
        values = surface[(labels == name) & estimated]
        if values.size == 0:
            return float("nan")
        low = values.min()
        return float(low - kt * np.log(np.exp(-(values - low) / kt).sum()))

    basins = {}
    ref_c7eq, nn_c7eq = basin_free_energy(reference, "C7eq"), basin_free_energy(committee, "C7eq")
    for name in BASINS_DEG:
        ref = basin_free_energy(reference, name) - ref_c7eq
        nn = basin_free_energy(committee, name) - nn_c7eq
        basins[name] = {"reference_kj_mol": ref, "committee_kj_mol": nn, "error_kj_mol": nn - ref}
    return {
        "rmse_kj_mol": float(np.sqrt(np.mean(centred**2))),
        "rmse_kT": float(np.sqrt(np.mean(centred**2)) / kt),
        "max_abs_error_kj_mol": float(np.abs(centred).max()),
        "n_bins": int(estimated.sum()),
        "n_accessible": int(accessible.sum()),
        "median_ess": float(np.median(ess[estimated])),
        "min_ess": float(ess[estimated].min()),
        "basins": basins,
        "free_energy": committee,
        "reference": reference,
        "ess": np.where(estimated, ess, 0.0),
        "method": "free-energy perturbation of the reference frames within 10-degree bins",
    }
