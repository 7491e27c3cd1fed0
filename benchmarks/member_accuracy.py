"""Member accuracy against training time, and calibration, per architecture, in one run.

Trains each named recipe (``openmm_adv.recipes``) on the shipped 1000 Amber-labelled 300 K
alanine dipeptide frames (C7eq basin only) and scores it on the shipped all-basin test set
(``openmm_adv.reference_data``): committee-mean force and energy errors overall and per basin,
each member's force MAE, and how well the committee's force-variance uncertainty ranks the
per-frame force error (Spearman), flags the worst 10 % (ROC-AUC), rises in the basins absent
from the training data (median uncertainty relative to C7eq), and separates the error of the
most uncertain 10 % from the rest. Committees already trained (the shipped one, a MACE
committee) are scored with ``--committee FILE``; ``--mace-members M`` trains and scores a
committee of M MACE models with mace's own ``mace_run_train`` (needs the ``[mace]`` extra;
resumable: members already in ``--save-dir`` are not retrained).

Run: ``python benchmarks/member_accuracy.py --recipes painn schnet --threads 2``
     ``python benchmarks/member_accuracy.py --recipes --committee torchscript_models/ala2_committee.pt``
     ``python benchmarks/member_accuracy.py --recipes --mace-members 3 --mace-epochs 15 --save-dir mace``
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import time
from pathlib import Path

import numpy as np

from openmm_adv._torch import configure_threads
from openmm_adv.analysis import accuracy_and_calibration
from openmm_adv.data import Dataset
from openmm_adv.models import Committee
from openmm_adv.recipes import recipe
from openmm_adv.reference_data import assign_basin, load_test_set
from openmm_adv.resources import _shipped
from openmm_adv.systems import alanine_dipeptide

BASINS = ("C7eq", "C5", "alpha_R", "alpha_L", "C7ax")


def score(committee: Committee, system) -> dict:
    test = load_test_set()
    cvs = system.compute_cvs(test.positions)
    basins = assign_basin(np.degrees(cvs["phi"]), np.degrees(cvs["psi"]))
    return accuracy_and_calibration(committee, test.positions, test.energies, test.forces, basins, "C7eq")


def row(name: str, committee: Committee, minutes: float | None, result: dict) -> dict:
    errors, cal = result["errors"], result["calibration"]
    return {
        "name": name,
        "parameters": int(sum(p.numel() for p in committee.potential.parameters())),
        "train_minutes": minutes,
        "force_mae": errors["force_mae"],
        "member_force_mae": float(np.mean(errors["member_force_mae"])),
        "energy_mae_shifted": errors["energy_mae_shifted"],
        "per_basin_force_mae": {b: errors["per_group"][b]["force_mae"] for b in BASINS if b in errors["per_group"]},
        "spearman": cal["spearman"],
        "roc_auc_top10": cal["roc_auc"],
        "uncertainty_ratio": cal.get("median_uncertainty_ratio", {}),
        "top10_error_ratio": cal["top_fraction_error"]["ratio"],
    }


def print_table(rows: list[dict]) -> None:
    print("\n| committee | parameters | train min | force MAE (members) | " + " | ".join(BASINS)
          + " | E MAE | Spearman | ROC-AUC | U ratio alpha_L / C7ax | top-10 % error ratio |")
    print("|" + "---|" * (9 + len(BASINS)))
    for r in rows:
        basin = " | ".join(f"{r['per_basin_force_mae'].get(b, float('nan')):.1f}" for b in BASINS)
        ratio = r["uncertainty_ratio"]
        minutes = "-" if r["train_minutes"] is None else f"{r['train_minutes']:.1f}"
        print(f"| {r['name']} | {r['parameters'] or '-'} | {minutes} | {r['force_mae']:.1f} ({r['member_force_mae']:.1f}) | "
              f"{basin} | {r['energy_mae_shifted']:.1f} | {r['spearman']:.2f} | {r['roc_auc_top10']:.2f} | "
              f"{ratio.get('alpha_L', float('nan')):.2f} / {ratio.get('C7ax', float('nan')):.2f} | "
              f"{r['top10_error_ratio']:.2f} |")


def train_and_score_mace(data: Dataset, system, args) -> dict:
    """A committee of MACE models (the anchor size of ``MACE_DEFAULTS``), one per seed, trained
    by ``mace_run_train`` on the same frames (mace draws its own 10 % validation split)."""
    from openmm_adv.models.mace import train_mace_committee

    work = Path(args.save_dir or "mace_members")
    work.mkdir(parents=True, exist_ok=True)
    extxyz = work / "train.extxyz"
    if not extxyz.exists():
        data.to_extxyz(extxyz)
    start = time.perf_counter()
    committee = train_mace_committee(extxyz, args.mace_members, work, threads=args.threads,
                                     max_num_epochs=args.mace_epochs, progress=None)
    minutes = (time.perf_counter() - start) / 60
    return row(f"MACE x {args.mace_members} ({args.mace_epochs} epochs)", committee, minutes, score(committee, system))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="*", default=["painn", "schnet"], help="recipes to train and score")
    parser.add_argument("--committee", nargs="*", default=[], help="trained committee files to score")
    parser.add_argument("--epochs", type=int, default=None, help="override every recipe's epoch count")
    parser.add_argument("--frames", type=int, default=None, help="train on the first N shipped frames only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save-dir", default=None, help="keep the trained committees here")
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument("--mace-members", type=int, default=0, help="also train a MACE committee of this size")
    parser.add_argument("--mace-epochs", type=int, default=15, help="mace_run_train --max_num_epochs")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    print(f"host: {host.processor() or host.machine()}, {os.cpu_count()} cores; torch threads {args.threads}")
    system = alanine_dipeptide()
    data = Dataset.load(_shipped("ala2_c7eq_300K.h5"))
    if args.frames:
        data = data.subset(np.arange(min(args.frames, len(data))))
    rows = []
    for path in args.committee:
        committee = Committee.load(path, system=system)
        rows.append(row(Path(path).name, committee, None, score(committee, system)))
        print_table(rows[-1:])
    for name in args.recipes:
        overrides = {"epochs": args.epochs} if args.epochs else {}
        trainer = recipe(name).trainer(progress=True, **overrides)
        start = time.perf_counter()
        committee, _ = trainer.train(data, seed=0)
        minutes = (time.perf_counter() - start) / 60
        if args.save_dir:
            committee.save(Path(args.save_dir) / f"{name}.pt")
        rows.append(row(f"{name} ({trainer.config.epochs} epochs)", committee, minutes, score(committee, system)))
        print_table(rows[-1:])
    if args.mace_members:
        rows.append(train_and_score_mace(data, system, args))
        print_table(rows[-1:])
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
