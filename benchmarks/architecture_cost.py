"""Attack-step cost per replica of member architectures, side by side in one run.

For each architecture (the first StackedSchNet recipe, the default StackedPaiNN recipe with its
bonded prior, the larger PaiNN that was the default before, and the default without a prior), B replicas of alanine dipeptide in one OpenMM Context run the adversarial
TorchForce with the Adam attack integrator; the architectures alternate round by round and the
best round is kept, so load from other processes hits them alike. Prints ms per replica-step
(wall and CPU time) and the ratio to the SchNet at the same B. Untrained committees: the cost
does not depend on the weights.

Run: ``python benchmarks/architecture_cost.py [--replicas 1 8 64] [--threads 1]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attack_step import OpenMMAttack, best_of, host_lines, platform_properties, print_table, seed_positions  # noqa: E402

from openmm_adv._torch import configure_threads  # noqa: E402
from openmm_adv.data import Dataset  # noqa: E402
from openmm_adv.models import Committee  # noqa: E402
from openmm_adv.models.prior import fit_bonded_prior  # noqa: E402
from openmm_adv.recipes import recipe  # noqa: E402
from openmm_adv.resources import default_dataset_path  # noqa: E402
from openmm_adv.systems import alanine_dipeptide  # noqa: E402

VARIANTS = {
    "schnet (first recipe)": ("schnet", dict(recipe("schnet").model_options)),
    "painn (default recipe)": ("painn", dict(recipe("painn").model_options)),
    "painn large (previous default)": ("painn", dict(recipe("painn_large").model_options)),
    "painn, no prior": ("painn", {**recipe("painn").model_options, "prior": "none"}),
}


def build(architecture: str, options: dict, atomic_numbers) -> Committee:
    """An untrained committee; a ``bonded`` prior is fitted to the shipped frames, as training would."""
    options = dict(options)
    prior = options.pop("prior", "none")
    committee = (Committee.painn(atomic_numbers, **options) if architecture == "painn"
                 else Committee.schnet(atomic_numbers, **options))
    if prior == "bonded":
        data = Dataset.load(default_dataset_path())
        committee.potential.prior.set_terms(fit_bonded_prior(data.atomic_numbers, data.positions, data.forces))
    return committee


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"any of {list(VARIANTS)}")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    properties = platform_properties("CPU", args.threads)
    print(host_lines(args.threads, "CPU", properties))
    system = alanine_dipeptide()
    rows = []
    for b in args.replicas:
        start = seed_positions(system, b)
        runs = {}
        for name in args.variants:
            architecture, options = VARIANTS[name]
            committee = build(architecture, options, system.atomic_numbers)
            runs[name] = (OpenMMAttack(committee, start, "CPU", properties),
                          sum(p.numel() for p in committee.potential.parameters()))
            runs[name][0].run(args.warmup)
        times = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, (attack, _) in runs.items():
                times[name].append(attack.run(args.steps).per(args.steps * b))
        best = {name: best_of(t) for name, t in times.items()}
        base = best.get("schnet (first recipe)")
        for name, clock in best.items():
            ratio = "" if base is None else f"{clock.wall / base.wall:.2f} / {clock.cpu / base.cpu:.2f}"
            rows.append([b, name, runs[name][1], f"{clock.wall * 1e3:.2f}", f"{clock.cpu * 1e3:.2f}", ratio])
    print_table(["B", "architecture", "parameters", "wall ms per replica-step", "CPU ms per replica-step",
                 "ratio to schnet (wall / CPU)"], rows)


if __name__ == "__main__":
    main()
