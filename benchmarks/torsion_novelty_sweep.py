"""Which CV-novelty settings make the torsion attack label new (phi, psi) bins, side by side.

One generation of the loop, without the labelling: from the same 16 seeds (the shipped 300 K
C7eq data, which the shipped committee was trained on, as the labelled set), each torsion-attack
variant proposes 16 candidates and the loop's selection (the paper's: uncertainty above the
training set's 80th percentile, RMSD de-duplication, cluster representatives) keeps some. Per
variant it prints, for the candidates and for the selected: how many, the basins they lie in,
the new 10-degree bins below 25 kJ/mol of reference free energy they add to the labelled set
(per selected label: the coverage target's unit), and their Amber energies above the labelled
minimum (a rigid rotation that pushes groups into each other shows up here).

Run: ``python benchmarks/torsion_novelty_sweep.py [--seeds 16] [--steps 150] [--weights 0.5 1 2]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from openmm_adv import config as cfg
from openmm_adv._torch import configure_threads
from openmm_adv.builders import build_selector
from openmm_adv.analysis import ramachandran_bins
from openmm_adv.data import Dataset
from openmm_adv.models import Committee
from openmm_adv.reference_data import assign_basin, load_reference_fes
from openmm_adv.resources import default_committee_path, default_dataset_path
from openmm_adv.samplers import TorsionAttackSampler
from openmm_adv.systems import alanine_dipeptide

LOCAL = {"kT": 5.0, "novelty_bandwidth": 0.1, "novelty_cap": 4.0, "spread": True, "max_turn": 1.05}


def variants(weights) -> dict:
    out = {"plain (kT 20.9)": {},
           "unbounded novelty w 1, bandwidth 0.35, frontier seeds (kT 20.9)": {"novelty_weight": 1.0, "seeds": "frontier"}}
    for w in weights:
        out[f"local novelty w {w:g} (bandwidth 0.1, cap 4, spread, max_turn 60 deg, kT 5)"] = {**LOCAL, "novelty_weight": w}
    out["local novelty w 1 without spread"] = {**LOCAL, "novelty_weight": 1.0, "spread": False}
    return out


def describe(system, data, positions, accessible, have) -> str:
    if len(positions) == 0:
        return "0 | - | 0 | - |"
    cvs = system.compute_cvs(positions)
    phi, psi = np.degrees(cvs["phi"]), np.degrees(cvs["psi"])
    basins = assign_basin(phi, psi)
    counts = ", ".join(f"{b or 'none'} {n}" for b, n in zip(*np.unique(basins, return_counts=True)))
    new = int((ramachandran_bins(phi, psi, 10.0) & accessible & ~have).sum())
    energies, _ = system.reference_energies_forces(positions)
    above = energies - data.energies.min()
    return f"{len(positions)} | {counts} | {new} | {np.median(above):.0f} / {above.max():.0f} |"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--refine-steps", type=int, default=40)
    parser.add_argument("--weights", type=float, nargs="*", default=[0.5, 1.0, 2.0],
                        help="novelty weights of the local-novelty variants")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    system = alanine_dipeptide()
    data = Dataset.load(default_dataset_path())
    committee = Committee.load(default_committee_path(), system=system)
    accessible = load_reference_fes().accessible_bins(25.0)
    cvs = system.compute_cvs(data.positions)
    have = ramachandran_bins(np.degrees(cvs["phi"]), np.degrees(cvs["psi"]), 10.0)
    reference_u = committee.evaluate_in_batches(data.positions)[2]
    selector = build_selector(cfg.SelectionConfig(percentile_lower=80, min_rmsd=0.01, max_selected=16), system)
    seeds = data.positions[np.random.default_rng(0).choice(len(data), args.seeds, replace=False)]
    print(f"labelled: {len(data)} frames in {int((have & accessible).sum())} of {int(accessible.sum())} bins below 25 kJ/mol")
    print("| variant | candidates | their basins | new bins | Amber E above labelled min, median / max (kJ/mol) | "
          "selected | their basins | new bins | Amber E, median / max | new bins per label | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, options in variants(args.weights).items():
        start = time.perf_counter()
        sampler = TorsionAttackSampler(system, **{"n_steps": args.steps, "batch_size": args.seeds,
                                                  "refine_steps": args.refine_steps, "progress": False, **options})
        sampler.observe_dataset(data.positions)
        found = sampler.sample(committee, seeds, np.random.default_rng(0))
        chosen = selector.select(found, dataset_positions=data.positions, reference_uncertainty=reference_u,
                                 reference_energies=data.energies)
        seconds = time.perf_counter() - start
        chosen_cvs = system.compute_cvs(chosen.positions) if len(chosen) else None
        per_label = 0.0
        if chosen_cvs is not None:
            bins = ramachandran_bins(np.degrees(chosen_cvs["phi"]), np.degrees(chosen_cvs["psi"]), 10.0)
            per_label = (bins & accessible & ~have).sum() / len(chosen)
        print(f"| {name} | {describe(system, data, found.positions, accessible, have)} "
              f"{describe(system, data, chosen.positions, accessible, have)} {per_label:.2f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
