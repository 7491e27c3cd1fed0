"""How well an uncertainty ranks and flags the errors it is meant to predict.

Plain functions over per-structure arrays: an uncertainty ``u [S]`` (any metric, any unit) and
the actual error ``err [S]`` of the model on the same structures (for example the RMS force
error of the committee mean against the reference). An attack climbs ``u``; it can only find
the model's mistakes if large ``u`` means large ``err``.

- :func:`spearman`: rank correlation of ``u`` with ``err`` (1: same order).
- :func:`roc_auc`: how well ``u`` separates the structures whose error is above a threshold
  from the rest (0.5: chance; 1: perfect).
- :func:`top_fraction_error`: mean error of the most uncertain fraction against the rest.
- :func:`group_ratios`: median uncertainty of each group (basin) over a reference group's.
- :func:`miscalibration_area`: how far the error distribution is from the Gaussian the
  uncertainty predicts, over all confidence levels (0: calibrated).
- :func:`calibrated_nll`: Gaussian negative log-likelihood of the errors after one fitted scalar
  rescaling of the predicted spread (Tan et al., npj Comput. Mater. 2023).
- :func:`calibration_report`: all of them, as a dict.

The last two need a predicted spread in force units, ``sigma [S]`` or ``[S, N]`` (kJ/mol/nm),
and the force residuals ``[S, N, 3]``: for every method of the project ``sigma`` is the square
root of its ``force_variance`` (the predicted variance of a force component).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["calibrated_nll", "calibration_report", "group_ratios", "miscalibration_area", "per_frame_force_rmse",
           "roc_auc", "spearman", "top_fraction_error"]


def _pair(u, err) -> tuple[np.ndarray, np.ndarray]:
    u, err = np.asarray(u, dtype=np.float64).ravel(), np.asarray(err, dtype=np.float64).ravel()
    if u.shape != err.shape:
        raise ValueError(f"uncertainty and error need one value per structure, got {u.shape} and {err.shape}")
    if len(u) < 3:
        raise ValueError(f"need at least 3 structures to rank, got {len(u)}")
    if not (np.isfinite(u).all() and np.isfinite(err).all()):
        raise ValueError("uncertainty and error must be finite")
    return u, err


def per_frame_force_rmse(predicted_forces, reference_forces) -> np.ndarray:
    """RMS over atoms and components of the force error, one value per structure ``[S]``."""
    d = np.asarray(predicted_forces, dtype=np.float64) - np.asarray(reference_forces, dtype=np.float64)
    return np.sqrt(np.mean(d.reshape(len(d), -1) ** 2, axis=1))


def spearman(u, err) -> float:
    """Spearman rank correlation between uncertainty and error."""
    u, err = _pair(u, err)
    return float(stats.spearmanr(u, err).statistic)


def roc_auc(u, err, threshold: float) -> float:
    """Area under the ROC curve of ``u`` as a detector of ``err > threshold``.

    The probability that a random structure above the threshold has a larger uncertainty than
    a random one below it (ties count one half): the Mann-Whitney U statistic, normalised.
    NaN when one of the two classes is empty.
    """
    u, err = _pair(u, err)
    positive = err > threshold
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(u)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def top_fraction_error(u, err, fraction: float = 0.1) -> dict:
    """Mean error of the ``fraction`` most uncertain structures, of the rest, and their ratio."""
    u, err = _pair(u, err)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    k = max(1, int(round(fraction * len(u))))
    order = np.argsort(-u, kind="stable")
    top, rest = err[order[:k]], err[order[k:]]
    return {"top": float(top.mean()), "rest": float(rest.mean()), "ratio": float(top.mean() / max(rest.mean(), 1e-300))}


def group_ratios(u, groups, reference: str) -> dict:
    """Median uncertainty of every named group divided by the reference group's median.

    ``groups`` holds one name per structure; empty names are skipped.
    """
    u = np.asarray(u, dtype=np.float64).ravel()
    groups = np.asarray(groups)
    if reference not in set(groups.tolist()):
        raise ValueError(f"no structure belongs to the reference group {reference!r}")
    base = float(np.median(u[groups == reference]))
    return {str(g): float(np.median(u[groups == g]) / base) for g in sorted(set(groups.tolist())) if g}


def _spread(sigma, residuals) -> tuple[np.ndarray, np.ndarray]:
    """``(|r| / sigma, r / sigma)`` per force component, ``sigma`` broadcast over atoms and x/y/z."""
    r = np.asarray(residuals, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if r.ndim != 3 or r.shape[-1] != 3:
        raise ValueError(f"residuals must be force errors [S, N, 3], got shape {r.shape}")
    if sigma.shape not in (r.shape[:1], r.shape[:2]):
        raise ValueError(f"sigma must be one spread per structure {r.shape[:1]} or per atom {r.shape[:2]}, "
                         f"got {sigma.shape}")
    if not (np.isfinite(sigma).all() and (sigma > 0).all()):
        raise ValueError("sigma must be finite and positive (the square root of a force variance in kJ/mol/nm)")
    if not np.isfinite(r).all():
        raise ValueError("residuals must be finite")
    z = r / sigma.reshape(sigma.shape + (1,) * (3 - sigma.ndim))
    return np.abs(z).ravel(), z.ravel()


def miscalibration_area(sigma, residuals, levels: int = 100) -> float:
    """Area between the observed and the expected coverage of Gaussian intervals.

    For each confidence level ``p`` the interval ``|r| <= sigma * z_p`` (``z_p`` the two-sided
    normal quantile) should hold a fraction ``p`` of the force components; the area is the mean
    over ``levels`` evenly spaced ``p`` in (0, 1) of ``|observed - p|``: 0 when the errors are
    Gaussian with the predicted spread, up to 0.5 for a spread wrong by orders of magnitude
    either way. It judges the spread's size, which rank metrics (:func:`spearman`) ignore.
    """
    abs_z, _ = _spread(sigma, residuals)
    p = (np.arange(levels) + 0.5) / levels
    bounds = stats.norm.ppf(0.5 + p / 2.0)
    observed = np.searchsorted(np.sort(abs_z), bounds, side="right") / abs_z.size
    return float(np.mean(np.abs(observed - p)))


def calibrated_nll(sigma, residuals) -> dict:
    """Gaussian NLL per force component after the best single rescaling ``sigma -> s sigma``.

    ``s^2 = mean((r / sigma)^2)`` minimises the NLL in closed form, so a spread right up to one
    constant factor (a conformal or unit scale) is not penalised; what is left measures whether
    the spread varies where the errors do. Returns ``{"nll": ..., "scale": s}`` (nll in
    log(kJ/mol/nm) units, lower is better).
    """
    _, z = _spread(sigma, residuals)
    r = np.asarray(residuals, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    log_sigma = np.broadcast_to(np.log(sigma).reshape(sigma.shape + (1,) * (3 - sigma.ndim)), r.shape).ravel()
    scale2 = float(np.mean(z**2))
    nll = 0.5 * np.log(2 * np.pi * scale2) + log_sigma + z**2 / (2 * scale2)
    return {"nll": float(np.mean(nll)), "scale": float(np.sqrt(scale2))}


def calibration_report(u, err, groups=None, reference: str | None = None, threshold: float | None = None,
                       fraction: float = 0.1, sigma=None, residuals=None) -> dict:
    """Every calibration figure of this module for one model on one labelled set.

    Parameters
    ----------
    u, err : array_like
        Uncertainty and actual error per structure.
    groups, reference : optional
        Group names per structure (e.g. phi/psi basins) and the group the model was trained in.
    threshold : float, optional
        Error above which a structure counts as "wrong" for the ROC-AUC (default: the 90th
        percentile of ``err``).
    fraction : float
        The most-uncertain fraction of :func:`top_fraction_error`.
    sigma, residuals : array_like, optional
        Predicted force spread (``[S]`` or ``[S, N]``, kJ/mol/nm) and force residuals
        ``[S, N, 3]``: add :func:`miscalibration_area` and :func:`calibrated_nll`.
    """
    u, err = _pair(u, err)
    threshold = float(np.percentile(err, 90)) if threshold is None else float(threshold)
    out = {
        "n": int(len(u)),
        "spearman": spearman(u, err),
        "roc_auc": roc_auc(u, err, threshold),
        "roc_threshold": threshold,
        "top_fraction": fraction,
        "top_fraction_error": top_fraction_error(u, err, fraction),
    }
    if groups is not None and reference is not None:
        out["median_uncertainty_ratio"] = group_ratios(u, groups, reference)
    if sigma is not None and residuals is not None:
        out["miscalibration_area"] = miscalibration_area(sigma, residuals)
        out["calibrated_nll"] = calibrated_nll(sigma, residuals)
    return out
