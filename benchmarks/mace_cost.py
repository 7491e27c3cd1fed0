"""Cost of a MACE committee against the shipped stacked committee, in one run.

Times, for alanine dipeptide (22 atoms) at B = 1 and B = 16 geometries per call:

- ``E+F``: one committee evaluation, member energies and forces (``energies_and_forces``,
  one backward pass);
- ``attack``: one attack step's gradient: member forces with ``create_graph=True``, the force
  variance over members, and its gradient with respect to the positions (a double backward),
  what the adversarial ``TorchForce`` computes every step.

Committees: the shipped ``torchscript_models/ala2_committee.pt`` (5 stacked SchNet-like members)
and a 5-member MACE committee of the size of mace_run_train's defaults in
:data:`openmm_adv.models.mace.MACE_DEFAULTS` (32x0e+32x1o, max_ell 3, correlation 3, 2
interactions, r_max 5 A, 8 Bessel functions, radial MLP [64, 64, 64]; untrained weights: the
cost does not depend on them), float64 as mace_run_train writes it by default (``--dtype
float32`` for single precision). Both run as TorchScript, as in a ``TorchForce``, called from
Python (no OpenMM overhead). Each case is warmed up first (TorchScript's profiling executor
optimises a graph after its first calls), then the best of ``--repeats`` timings is kept.

Run: ``OMP_NUM_THREADS=1 python benchmarks/mace_cost.py [--threads 1] [--repeats 3] [--warmup 3]
[--batches 1 16] [--dtype float64|float32]``. Needs ``pip install -e '.[mace]'``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from openmm_adv._torch import configure_threads  # imports torch before openmm(-torch)

import torch

from openmm_adv.models import Committee
from openmm_adv.models.mace import mace_committee, require_mace
from openmm_adv.models.uncertainty import force_variance
from openmm_adv.resources import default_committee_path
from openmm_adv.systems import alanine_dipeptide

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_step import cpu_model  # noqa: E402  (the benchmarks' shared host description)

ANCHOR = dict(hidden_irreps="32x0e+32x1o", max_ell=3, correlation=3, num_interactions=2, r_max=5.0)


def anchor_mace(seed: int, table, dtype: torch.dtype):
    """An untrained ScaleShiftMACE of the anchor size (mace_run_train's model for these options)."""
    require_mace()
    from e3nn import o3
    from mace import modules

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(seed)
        block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
        return modules.ScaleShiftMACE(
            r_max=ANCHOR["r_max"], num_bessel=8, num_polynomial_cutoff=5, max_ell=ANCHOR["max_ell"],
            interaction_cls=block, interaction_cls_first=block, num_interactions=ANCHOR["num_interactions"],
            num_elements=len(table), hidden_irreps=o3.Irreps(ANCHOR["hidden_irreps"]), MLP_irreps=o3.Irreps("16x0e"),
            atomic_energies=np.zeros(len(table)), avg_num_neighbors=10.0, atomic_numbers=list(table),
            correlation=ANCHOR["correlation"], gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64],
            atomic_inter_scale=1.0, atomic_inter_shift=0.0,
        )
    finally:
        torch.set_default_dtype(old)


def energies_forces(potential, x):
    potential.energies_and_forces(x, False)


def attack_gradient(potential, x):
    pos = x.detach().requires_grad_(True)
    _, forces = potential.energies_and_forces(pos, True)
    (grad,) = torch.autograd.grad(force_variance(forces).sum(), [pos])
    return grad


def best_time(fn, potential, x, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn(potential, x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(potential, x)
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3, help="calls before timing (TorchScript optimises after the first ones)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="the MACE models' precision")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    ala2 = alanine_dipeptide()
    shipped = Committee.load(default_committee_path(), system=ala2)
    start = time.perf_counter()
    table = sorted(set(int(z) for z in ala2.atomic_numbers))
    mace = mace_committee([anchor_mace(k, table, dtype) for k in range(args.members)], ala2.atomic_numbers)
    mace_potential = mace.scripted()
    setup = time.perf_counter() - start

    import mace as mace_package

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"host: {platform.platform()}; processor {platform.processor()!r}, {cpu_model()}; "
          f"{os.cpu_count()} cores ({usable} usable); torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"mace-torch {mace_package.__version__}")
    hyper = mace.metadata["hyperparameters"]
    print(f"shipped: {shipped.metadata.get('architecture')} x {shipped.n_members}, "
          f"{sum(p.numel() for p in shipped.potential.parameters())} parameters in all, "
          f"{shipped.potential.dtype_probe.dtype}")
    print(f"MACE:    {args.members} x ScaleShiftMACE {hyper['hidden_irreps']}, max_ell {hyper['max_ell']}, "
          f"correlation {hyper['correlation']}, r_max {hyper['r_max_angstrom']} A, {hyper['n_parameters']} parameters "
          f"per member, {args.dtype}; built, compiled and scripted in {setup:.1f} s")
    rng = np.random.default_rng(0)
    xyz = ala2.positions[None] + 0.005 * rng.normal(size=(max(args.batches), ala2.n_atoms, 3))
    r = np.linalg.norm(xyz[0, :, None] - xyz[0, None], axis=-1)
    print(f"alanine dipeptide: {ala2.n_atoms} atoms, {(r < ANCHOR['r_max'] / 10).sum() - ala2.n_atoms} MACE edges "
          f"(ordered pairs within {ANCHOR['r_max']} A) per geometry")
    print()
    header = f"{'quantity':<8} {'B':>3} {'shipped ms':>11} {'MACE ms':>10} {'MACE/shipped':>13} {'MACE ms/geometry':>17}"
    print(header)
    print("-" * len(header))
    wall = time.perf_counter()
    for name, fn in (("E+F", energies_forces), ("attack", attack_gradient)):
        for b in args.batches:
            x = torch.from_numpy(xyz[:b].copy())
            t_shipped = best_time(fn, shipped.potential, x, args.warmup, args.repeats)
            t_mace = best_time(fn, mace_potential, x, args.warmup, args.repeats)
            print(f"{name:<8} {b:>3} {1e3 * t_shipped:>11.2f} {1e3 * t_mace:>10.1f} {t_mace / t_shipped:>12.0f}x "
                  f"{1e3 * t_mace / b:>17.1f}", flush=True)
    print(f"(timings: {time.perf_counter() - wall:.0f} s; best of {args.repeats} after {args.warmup} warm-up calls per case)")


if __name__ == "__main__":
    main()
