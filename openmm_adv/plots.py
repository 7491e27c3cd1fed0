"""Figures (matplotlib, written to files; no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .systems.alanine import BASINS_DEG  # noqa: E402

__all__ = ["error_vs_uncertainty_plot", "ramachandran_attack_plot"]


def ramachandran_attack_plot(path, seeds_deg, attacked_deg, valid, background_deg=None, title=None) -> Path:
    """Phi/psi of seeds and attacked geometries (degrees), with an arrow per attack.

    ``background_deg`` (the training data) is drawn in grey; flagged attacks are not drawn as
    candidates.
    """
    fig, ax = plt.subplots(figsize=(6.4, 6.0))
    if background_deg is not None:
        ax.scatter(background_deg[:, 0], background_deg[:, 1], s=4, c="0.75", label="training data", zorder=1)
    ax.scatter(seeds_deg[:, 0], seeds_deg[:, 1], s=28, c="tab:blue", label="seeds", zorder=3)
    good = np.asarray(valid, bool)
    ax.scatter(attacked_deg[good, 0], attacked_deg[good, 1], s=40, c="tab:red", marker="*", label="attacked", zorder=4)
    for s, a in zip(seeds_deg[good], attacked_deg[good]):
        # Shortest way around the periodic box, so arrows do not cross the whole plot.
        d = (a - s + 180.0) % 360.0 - 180.0
        ax.annotate("", xy=s + d, xytext=s, arrowprops=dict(arrowstyle="->", color="tab:red", alpha=0.5, lw=0.8), zorder=2)
    for name, (phi, psi) in BASINS_DEG.items():
        ax.text(phi, psi, name, fontsize=8, color="0.3", ha="center", va="center", zorder=5)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-180, 180)
    ax.set_xticks(range(-180, 181, 60))
    ax.set_yticks(range(-180, 181, 60))
    ax.set_xlabel("phi (degrees)")
    ax.set_ylabel("psi (degrees)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def error_vs_uncertainty_plot(path, panels, title=None) -> Path:
    """Per-structure force RMSE against predicted spread, one panel per method.

    Parameters
    ----------
    path : str or Path
    panels : dict
        ``{method: {group: (sigma [S], error [S])}}`` in kJ/mol/nm; each group (e.g. in- and
        out-of-domain test sets) gets its own colour. ``sigma`` is the square root of the
        method's ``force_variance``; a calibrated method's points lie around the diagonal.
    """
    names = list(panels)
    if not names:
        raise ValueError("nothing to plot: panels is empty")
    fig, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names), 3.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes[0], names):
        low, high = np.inf, 0.0
        for k, (group, (sigma, err)) in enumerate(panels[name].items()):
            sigma, err = np.asarray(sigma, float), np.asarray(err, float)
            keep = np.isfinite(sigma) & np.isfinite(err) & (sigma > 0) & (err > 0)
            ax.scatter(sigma[keep], err[keep], s=5, alpha=0.5, color=colours[k % len(colours)], label=group)
            if keep.any():
                low = min(low, sigma[keep].min(), err[keep].min())
                high = max(high, sigma[keep].max(), err[keep].max())
        if np.isfinite(low) and high > 0:
            ax.plot([low, high], [low, high], color="0.4", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("predicted sigma (kJ/mol/nm)", fontsize=8)
        ax.grid(alpha=0.3, which="both", lw=0.3)
    axes[0][0].set_ylabel("force RMSE (kJ/mol/nm)", fontsize=8)
    axes[0][0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
