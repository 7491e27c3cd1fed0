"""What the bonded prior is worth when the reference is not a force field, side by side.

Amber is harmonic in bonds and angles, so a fitted harmonic prior captures its covalent forces
almost exactly; GFN2-xTB's are anharmonic and coupled. This labels every 2nd shipped C7eq frame
(500) and every 6th frame of the all-basin test set with GFN2-xTB (tblite), then
1. fits the prior to half of the training frames, for Amber and for xTB labels, and prints the
   force RMS it leaves on the other half;
2. trains the default recipe with and without the prior on the 500 xTB-labelled frames and
   scores both on the xTB-labelled test frames (force MAE overall and per basin, energy MAE,
   Spearman, median uncertainty per basin over C7eq's).

Needs the ``[xtb]`` extra. Run: ``python benchmarks/prior_xtb.py [--threads 1] [--epochs 30]``
(about 8 minutes on one core: 20 s of xTB, two trainings of 3-4 minutes).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from openmm_adv._torch import configure_threads
from openmm_adv.analysis import accuracy_and_calibration
from openmm_adv.data import Dataset
from openmm_adv.models.prior import BondedPrior, fit_bonded_prior
from openmm_adv.oracles import make_oracle
from openmm_adv.recipes import recipe
from openmm_adv.reference_data import assign_basin, load_test_set
from openmm_adv.resources import default_dataset_path
from openmm_adv.systems import alanine_dipeptide
from openmm_adv.train import CommitteeTrainer


def residual_rms(atomic_numbers, positions, forces) -> tuple[float, float]:
    """Force RMS of the second half of the frames before and after a prior fitted to the first."""
    half = len(positions) // 2
    terms = fit_bonded_prior(atomic_numbers, positions[:half], forces[:half])
    prior = BondedPrior(torch.float64)
    prior.set_terms(terms)
    x = torch.tensor(positions[half:], requires_grad=True)
    prior_forces = -torch.autograd.grad(prior(x).sum(), x)[0].numpy()
    held_out = forces[half:]
    return float(np.sqrt(np.mean(held_out**2))), float(np.sqrt(np.mean((held_out - prior_forces) ** 2)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    system = alanine_dipeptide()
    shipped = Dataset.load(default_dataset_path())
    oracle = make_oracle("xtb", system)
    train_x = shipped.positions[::2]
    train = oracle.compute(train_x)
    test = load_test_set()
    test_x = test.positions[::6]
    tested = oracle.compute(test_x)
    print(f"xTB labels: {int(train.ok.sum())} training, {int(tested.ok.sum())} test frames")

    for name, forces in (("amber", shipped.forces[::2]), ("xtb", train.forces)):
        before, after = residual_rms(shipped.atomic_numbers, train_x[train.ok], forces[train.ok])
        print(f"{name}: held-out force RMS {before:.0f} kJ/mol/nm, {after:.0f} after the prior ({after / before:.2f})")

    data = Dataset(system.atomic_numbers)
    data.append(train_x[train.ok], train.energies[train.ok], train.forces[train.ok], generation=0,
                sampler="reference_md_300K", oracle="xtb")
    tx, te, tf = test_x[tested.ok], tested.energies[tested.ok], tested.forces[tested.ok]
    cvs = system.compute_cvs(tx)
    basins = assign_basin(np.degrees(cvs["phi"]), np.degrees(cvs["psi"]))
    base = recipe("painn")
    overrides = {"epochs": args.epochs} if args.epochs else {}
    for prior in ("bonded", "none"):
        trainer = CommitteeTrainer("painn", {**base.model_options, "prior": prior},
                                   base.trainer(progress=False, **overrides).config, progress=False)
        start = time.perf_counter()
        committee, report = trainer.train(data, bonds=system.bonds)
        minutes = (time.perf_counter() - start) / 60
        result = accuracy_and_calibration(committee, tx, te, tf, basins, "C7eq")
        errors, calibration = result["errors"], result["calibration"]
        print(json.dumps({
            "prior": prior, "train_minutes": round(minutes, 1),
            "val_committee_force_mae": round(report.summary()["val_committee_force_mae_kj_mol_nm"], 1),
            "test_force_mae": round(errors["force_mae"], 1),
            "per_basin_force_mae": {b: round(v["force_mae"], 1) for b, v in errors["per_group"].items()},
            "energy_mae_shifted": round(errors["energy_mae_shifted"], 2), "spearman": round(calibration["spearman"], 3),
            "uncertainty_ratio": {b: round(v, 2) for b, v in calibration.get("median_uncertainty_ratio", {}).items()},
        }))


if __name__ == "__main__":
    main()
