"""Why a sampler's labels help or not: how far its picks moved from their seeds, and where.

Reads the loop folders of an ``ala2_compare`` report (``runs/<sampler>/repNN/gen_NNN``) and
writes ``DIAGNOSTICS.md`` beside ``REPORT.md``. For every labelled structure it compares the
pick with the seed geometry it was grown from: the phi/psi move (mdtraj dihedrals), the RMS
relative change of the covalent bond lengths, and the reference (Amber) energy above the
seed's; it also gives the committee's energy error on the pick and the pick's uncertainty
relative to the training set's 80th percentile.

    python protocols/ala2_compare/diagnose.py docs/results/ala2_compare
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from openmm_adv.compare.report import spread
from openmm_adv.data import Dataset
from openmm_adv.reference_data import assign_basin, wrap_deg
from openmm_adv.systems import alanine_dipeptide


def _bond_lengths(positions: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    return np.linalg.norm(positions[:, bonds[:, 0]] - positions[:, bonds[:, 1]], axis=-1)


def loop_picks(run_dir: Path, system, bonds: np.ndarray) -> dict[str, np.ndarray]:
    """Per labelled pick of one loop: moves from its seed, energies, errors, uncertainty."""
    data = Dataset.load(run_dir / "dataset.h5")
    columns = {k: [] for k in ("dphi", "dpsi", "bond_change", "de_ref", "e_error", "u_ratio", "generation", "basin")}
    for gdir in sorted(run_dir.glob("gen_*")):
        if not (gdir / "selected.npz").exists():
            continue
        selected = np.load(gdir / "selected.npz")
        candidates = np.load(gdir / "candidates.npz")
        labels = [np.load(p) for p in sorted((gdir / "labels").glob("*.npz"))]
        # seed_index is the dataset frame a pick was grown from (-1: unknown)
        ok = np.array([bool(label["ok"]) for label in labels], dtype=bool) & (selected["seed_index"] >= 0)
        if not ok.any():
            continue
        picks = selected["positions"][ok]
        seeds = data.positions[selected["seed_index"][ok]]
        seed_energy = data.energies[selected["seed_index"][ok]]
        e_ref = np.array([float(label["energy"]) for label in labels])[ok]
        pick_cv, seed_cv = system.compute_cvs(picks), system.compute_cvs(seeds)
        phi, psi = np.degrees(pick_cv["phi"]), np.degrees(pick_cv["psi"])
        columns["dphi"].append(np.abs(wrap_deg(phi - np.degrees(seed_cv["phi"]))))
        columns["dpsi"].append(np.abs(wrap_deg(psi - np.degrees(seed_cv["psi"]))))
        ratio = _bond_lengths(picks, bonds) / _bond_lengths(seeds, bonds) - 1.0
        columns["bond_change"].append(np.sqrt(np.mean(ratio**2, axis=1)))
        columns["de_ref"].append(e_ref - seed_energy)
        columns["e_error"].append(np.abs(selected["energies"][ok] - e_ref))
        p80 = np.percentile(candidates["reference_uncertainty"], 80)
        columns["u_ratio"].append(selected["uncertainty"][ok] / p80)
        columns["generation"].append(np.full(int(ok.sum()), int(gdir.name.split("_")[1])))
        columns["basin"].append(assign_basin(phi, psi))
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in columns.items()}


def _median_iqr(values: np.ndarray, digits: int = 1) -> str:
    if values.size == 0:
        return "n/a"
    median, q1, q3 = spread(values)
    return f"{median:.{digits}f} [{q1:.{digits}f}, {q3:.{digits}f}]"


def diagnose(report_dir: Path) -> str:
    system = alanine_dipeptide()
    bonds = np.asarray(system.bonds, dtype=np.int64)
    protocol = json.loads((report_dir / "protocol.json").read_text())
    lines = [
        "# ala2_compare: where each sampler's labels came from",
        "",
        f"Every labelled pick of every repeat and generation, compared with the seed geometry it was grown "
        f"from (`python protocols/ala2_compare/diagnose.py {report_dir}`). Median [25th, 75th percentile] "
        "over the picks. Bond change: RMS over the 21 covalent bonds of (length / seed's length - 1). "
        "Uncertainty: the pick's, over the 80th percentile of the training set's at the time.",
        "",
        "| sampler | picks | abs. d phi (deg) | abs. d psi (deg) | bond change (%) | E_ref - E_ref(seed) (kJ/mol) | "
        "committee abs. E error (kJ/mol) | uncertainty / training p80 | basins of the picks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in protocol["samplers"]:
        runs = sorted((report_dir / "runs" / name).glob("rep*"))
        picks = [loop_picks(run, system, bonds) for run in runs]
        if not picks:
            continue
        merged = {k: np.concatenate([p[k] for p in picks]) for k in picks[0]}
        basins, counts = np.unique(merged["basin"], return_counts=True)
        spread = ", ".join(f"{b or 'none'} {c}" for b, c in sorted(zip(basins, counts), key=lambda x: -x[1]))
        lines.append(
            f"| {name} | {merged['dphi'].size} | {_median_iqr(merged['dphi'])} | {_median_iqr(merged['dpsi'])} | "
            f"{_median_iqr(100 * merged['bond_change'])} | {_median_iqr(merged['de_ref'])} | "
            f"{_median_iqr(merged['e_error'])} | {_median_iqr(merged['u_ratio'])} | {spread} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report_dir", type=Path, help="the --output folder of an ala2_compare run")
    args = parser.parse_args()
    text = diagnose(args.report_dir)
    (args.report_dir / "DIAGNOSTICS.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
