"""Choosing which candidates to label: trust window, de-duplication, clustering, cap, physics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometry import GeometryCheck
from .rmsd_search import DEFAULT_MEMORY_MB, rmsd_clusters, within_rmsd_of_any
from .samplers.candidates import Candidates

__all__ = ["Selector", "aligned_rmsd", "plain_rmsd"]


def aligned_rmsd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMSD after optimal superposition (Kabsch) between every geometry of ``a`` ``[A, N, 3]`` and
    of ``b`` ``[B, N, 3]``; returns ``[A, B]`` in the input's length unit.

    All pairs at once (about 300 bytes of temporaries per pair): for near neighbours among many
    geometries use :mod:`openmm_adv.rmsd_search`, as :class:`Selector` does."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    h = np.einsum("anj,bnk->abjk", a, b)  # cross-covariance per pair
    u, s, vt = np.linalg.svd(h)
    # Proper rotations only: flip the smallest singular value where the best fit is a reflection.
    sign = np.sign(np.linalg.det(u @ vt))
    s[..., -1] *= sign
    n = a.shape[1]
    sq = (a**2).sum(axis=(1, 2))[:, None] + (b**2).sum(axis=(1, 2))[None, :] - 2.0 * s.sum(-1)
    return np.sqrt(np.clip(sq, 0.0, None) / n)


def plain_rmsd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMSD without superposition, ``[A, B]``: for potentials that are not rotation invariant
    (external fields, the one-particle toys)."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    n = np.asarray(a).shape[1] // 3
    sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(sq, 0.0, None) / n)


@dataclass
class Selector:
    """Filters :class:`Candidates` down to the ones worth a ground-truth call.

    Steps, in order (each candidate dropped is counted under its reason):

    0. ``out_of_domain`` (counted, not dropped): geometries outside the committee's domain (the
       ``out_of_domain`` mask given to :meth:`select`, e.g. from :meth:`Committee.domain_check`,
       or an uncertainty of ``inf``, which :meth:`Committee.uncertainty` reports there). The
       members' agreement says nothing there, so their uncertainty is ``inf``: never "confident"
       (an upper trust window drops them), first in the ranking otherwise. Torn or crushed
       geometries among them are the geometry check's to drop.
    1. ``geometry_check``: broken bonds, clashes, non-finite coordinates.
    2. ``energy_cap``: committee energy more than this (kJ/mol) above the lowest reference
       energy given to :meth:`select`.
    3. trust window on the uncertainty: ``[lower, upper)`` in the metric's units, and/or
       ``[percentile_lower, percentile_upper)`` percentiles of the reference (training-set)
       uncertainties (the paper keeps candidates above the 80th percentile).
    4. ``min_rmsd`` (nm): drop candidates this close to any dataset geometry. The RMSD is taken
       after optimal superposition when ``align`` is true; ``align=None`` aligns molecules of
       three or more atoms and compares one- and two-particle systems (the toys, whose
       potentials are not rotation invariant) as they are.
    5. single-linkage clustering at ``min_rmsd``: one representative per cluster, the most
       uncertain.
    6. ``max_selected``: the most uncertain survivors (``rank_by="uncertainty"``), or survivors
       evenly spaced in the sampler's order (``rank_by="spread"``: the classic way of keeping
       MD frames, for baselines that should not use the committee's uncertainty).

    Steps 4 and 5 give the answers of comparing all pairs without doing so
    (:mod:`openmm_adv.rmsd_search`): their working arrays stay within ``memory_mb`` megabytes
    whatever the number of candidates and dataset frames, and the dataset positions may be an
    ``h5py`` dataset, read in chunks.
    """

    lower: float | None = None
    upper: float | None = None
    percentile_lower: float | None = None
    percentile_upper: float | None = None
    min_rmsd: float = 0.01
    align: bool | None = None
    max_selected: int | None = 20
    energy_cap: float | None = None
    rank_by: str = "uncertainty"
    geometry_check: GeometryCheck | None = None
    memory_mb: float = DEFAULT_MEMORY_MB
    last_report: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        for name in ("percentile_lower", "percentile_upper"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 100:
                raise ValueError(f"{name} must be a percentile in [0, 100], got {value}")
        if self.rank_by not in ("uncertainty", "spread"):
            raise ValueError(f"rank_by must be 'uncertainty' or 'spread', got {self.rank_by!r}")
        if not self.min_rmsd >= 0:  # NaN too: it would count every candidate as near the data
            raise ValueError(f"min_rmsd must be >= 0 nm, got {self.min_rmsd}")
        if self.max_selected is not None and self.max_selected < 0:
            raise ValueError(f"max_selected must be >= 0, got {self.max_selected}")
        if not self.memory_mb > 0:
            raise ValueError(f"memory_mb must be a positive number of megabytes, got {self.memory_mb}")

    def window(self, reference_uncertainty=None) -> tuple[float, float]:
        """The absolute uncertainty window ``[lo, hi)`` this selector applies."""
        lo, hi = -np.inf, np.inf
        if self.lower is not None:
            lo = self.lower
        if self.upper is not None:
            hi = self.upper
        if self.percentile_lower is not None or self.percentile_upper is not None:
            if reference_uncertainty is None or len(reference_uncertainty) == 0:
                raise ValueError("percentile trust windows need the training set's uncertainties (reference_uncertainty)")
            ref = np.asarray(reference_uncertainty, dtype=np.float64)
            ref = ref[np.isfinite(ref)]  # out-of-domain reference frames (inf) have no rank
            if len(ref) == 0:
                raise ValueError("percentile trust windows need finite training-set uncertainties; every "
                                 "reference geometry is out of the committee's domain (positions in Angstrom?)")
            if self.percentile_lower is not None:
                lo = max(lo, float(np.percentile(ref, self.percentile_lower)))
            if self.percentile_upper is not None:
                hi = min(hi, float(np.percentile(ref, self.percentile_upper)))
        return lo, hi

    def select(self, candidates: Candidates, dataset_positions=None, reference_uncertainty=None,
               reference_energies=None, out_of_domain=None) -> Candidates:
        """The selected subset (most uncertain first); counts per reason in ``last_report``.

        ``out_of_domain`` is an optional ``[K]`` bool mask of candidates outside the committee's
        domain (:meth:`Committee.domain_check`): their uncertainty is taken as ``inf`` (and
        returned so).
        """
        keep = np.arange(len(candidates))
        report = {"candidates": len(candidates)}

        def drop(mask: np.ndarray, reason: str):
            nonlocal keep
            report[reason] = int((~mask).sum())
            keep = keep[mask]

        u = np.asarray(candidates.uncertainty, dtype=np.float64)
        if out_of_domain is not None:
            out_of_domain = np.asarray(out_of_domain, dtype=bool).reshape(-1)
            if len(out_of_domain) != len(candidates):
                raise ValueError(f"out_of_domain has {len(out_of_domain)} flags for {len(candidates)} candidates")
            u = np.where(out_of_domain, np.inf, u)
        report["out_of_domain"] = int(np.count_nonzero(np.isposinf(u)))
        if self.geometry_check is not None and len(keep):
            ok, _ = self.geometry_check(candidates.positions[keep])
            drop(ok, "unphysical")
        if self.energy_cap is not None and len(keep):
            if reference_energies is None:
                raise ValueError("energy_cap needs reference_energies (e.g. the dataset's energies)")
            drop(candidates.energies[keep] <= np.min(reference_energies) + self.energy_cap, "above_energy_cap")
        lo, hi = self.window(reference_uncertainty)
        # [lo, hi): an open window (hi = inf) keeps the out-of-domain candidates (u = inf)
        drop((u[keep] >= lo) & ((u[keep] < hi) | (hi == np.inf)), "outside_trust_window")
        align = self.align if self.align is not None else candidates.positions.shape[1] >= 3
        if dataset_positions is not None and len(dataset_positions) and len(keep) and self.min_rmsd > 0:
            near = within_rmsd_of_any(candidates.positions[keep], dataset_positions, self.min_rmsd, align,
                                      memory_mb=self.memory_mb)
            drop(~near, "near_dataset")
        if len(keep) > 1 and self.min_rmsd > 0:
            labels = rmsd_clusters(candidates.positions[keep], self.min_rmsd, align, memory_mb=self.memory_mb)
            # Per cluster the most uncertain member, the earliest among equals.
            order = np.lexsort((np.arange(len(keep)), -u[keep], labels))
            first = np.r_[True, labels[order][1:] != labels[order][:-1]]
            representative = np.zeros(len(keep), dtype=bool)
            representative[order[first]] = True
            drop(representative, "same_cluster")
        if self.rank_by == "uncertainty":
            keep = keep[np.argsort(-u[keep], kind="stable")]
        if self.max_selected is not None and len(keep) > self.max_selected:
            report["over_cap"] = int(len(keep) - self.max_selected)
            if self.rank_by == "uncertainty":
                keep = keep[: self.max_selected]
            else:  # evenly spaced in the sampler's own order, as classic MD data collection keeps frames
                keep = keep[np.unique(np.linspace(0, len(keep) - 1, self.max_selected).round().astype(int))]
        report["selected"] = int(len(keep))
        report["window"] = [lo, hi]
        self.last_report = report
        return Candidates(
            positions=candidates.positions[keep], energies=candidates.energies[keep],
            uncertainty=u[keep], metric=candidates.metric, sampler=candidates.sampler,
            seed_index=candidates.seed_index[keep], n_force_evaluations=candidates.n_force_evaluations,
            oracle_calls=candidates.oracle_calls, wall_seconds=candidates.wall_seconds,
            info={k: (v[keep] if isinstance(v, np.ndarray) and len(v) == len(candidates) else v)
                  for k, v in candidates.info.items()},
        )
