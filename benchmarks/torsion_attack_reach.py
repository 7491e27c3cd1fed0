"""How far attacks move in (phi, psi), and at what Amber energy, side by side in one run.

From the same C7eq seeds (evenly spaced frames of the shipped 300 K data) and with the shipped
committee, runs the Cartesian attack and the torsion attack (without and with CV novelty, and
with novelty plus a short Cartesian refinement at kT = 2.5 kJ/mol), and prints per variant:
valid attacks, the basins the results lie in, the median change of phi and psi, the Amber
energy of the results above the lowest training-frame energy (median and maximum: rigid
rotations that push groups into each other show up here), the committee's energy error there,
the time, and the host-side cost per step of the torsion moves (the part that does not run in
OpenMM).

Run: ``python benchmarks/torsion_attack_reach.py [--seeds 16] [--steps 150] [--threads 1]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from openmm_adv._torch import configure_threads
from openmm_adv.data import Dataset
from openmm_adv.models import Committee
from openmm_adv.reference_data import assign_basin
from openmm_adv.resources import default_committee_path, default_dataset_path
from openmm_adv.samplers import Attack, TorsionAttack
from openmm_adv.systems import alanine_dipeptide


def describe(name, system, data, seeds, positions, seed_index, energies, seconds, host=None) -> str:
    cvs, start = system.compute_cvs(positions), system.compute_cvs(seeds[seed_index])
    basins = assign_basin(np.degrees(cvs["phi"]), np.degrees(cvs["psi"]))
    counts = ", ".join(f"{b or 'none'} {n}" for b, n in zip(*np.unique(basins, return_counts=True)))
    turn = {k: np.degrees(np.abs(np.angle(np.exp(1j * (cvs[k] - start[k]))))) for k in ("phi", "psi")}
    e_ref, _ = system.reference_energies_forces(positions)
    above = e_ref - data.energies.min()
    host_text = "-" if host is None else f"{1000 * host:.2f}"
    return (f"| {name} | {len(positions)}/{len(seeds)} | {counts} | {np.median(turn['phi']):.0f} / {np.median(turn['psi']):.0f} | "
            f"{np.median(above):.0f} / {above.max():.0f} | {np.median(np.abs(energies - e_ref)):.1f} | {seconds:.0f} | {host_text} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--novelty-weights", type=float, nargs="*", default=[1.0],
                        help="novelty weights of the torsion + novelty variants")
    parser.add_argument("--no-cartesian", action="store_true", help="skip the Cartesian attack")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    system = alanine_dipeptide()
    data = Dataset.load(default_dataset_path())
    committee = Committee.load(default_committee_path(), system=system)
    seeds = data.positions[np.linspace(0, len(data) - 1, args.seeds).astype(int)]
    print("| attack | valid | basins of the results | median abs. change phi / psi (deg) | Amber energy above the "
          "training minimum, median / max (kJ/mol) | median abs. committee energy error (kJ/mol) | wall s | host ms per step |")
    print("|---|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    cartesian = None if args.no_cartesian else Attack(committee, kT=20.9, n_steps=args.steps, step_size=0.004, batch_size=args.seeds,
                       geometry_check=system, progress=False).run(seeds)
    if cartesian is not None:
        found = cartesian.candidates()
        print(describe("Cartesian (kT 20.9, 0.004 nm)", system, data, seeds, found.positions, found.seed_index,
                       found.energies, time.perf_counter() - start))
    variants = {"torsion": {}}
    for w in args.novelty_weights:
        variants[f"torsion + novelty (w = {w:g})"] = {"novelty_weight": w}
        variants[f"torsion + novelty (w = {w:g}) + 40 Cartesian steps at kT 2.5"] = {"novelty_weight": w,
                                                                                    "refine_steps": 40}
    for name, options in variants.items():
        start = time.perf_counter()
        found = TorsionAttack(committee, system, kT=20.9, n_steps=args.steps, batch_size=args.seeds,
                              labelled=data.positions, progress=False, **options).run(seeds)
        print(describe(name, system, data, seeds, found.positions, found.seed_index, found.energies,
                       time.perf_counter() - start, found.info["host_seconds_per_step"]))


if __name__ == "__main__":
    main()
