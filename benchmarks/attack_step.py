"""Attack step cost per replica at B = 1 and B = 64 replicas in one OpenMM Context.

Measures, side by side in one run, the wall time of one optimiser step of the attack
integrator (adversarial TorchForce: committee forward, forces, and the gradient of the
uncertainty) on the OpenMM platform given, with the shipped alanine dipeptide committee.

Run: ``python benchmarks/attack_step.py [--platform CPU] [--threads 1] [--steps 20]``
"""

from __future__ import annotations

import argparse
import os
import platform as host
import time

import numpy as np
import openmm

from openmm_adv._torch import configure_threads
from openmm_adv.forces import adversarial_force
from openmm_adv.models import Committee
from openmm_adv.resources import default_committee_path
from openmm_adv.samplers import attack_integrator
from openmm_adv.systems import alanine_dipeptide


def time_steps(committee, system, n_replicas, platform, steps, properties, cuda_graphs=False):
    force, _ = adversarial_force(committee, 20.9, n_replicas=n_replicas, use_cuda_graphs=cuda_graphs)
    omm = openmm.System()
    for _ in range(n_replicas * system.n_atoms):
        omm.addParticle(12.0)
    omm.addForce(force)
    integrator = attack_integrator(0.002)
    context = openmm.Context(omm, integrator, openmm.Platform.getPlatformByName(platform), properties)
    rng = np.random.default_rng(0)
    context.setPositions((system.positions[None] + 0.005 * rng.normal(size=(n_replicas, system.n_atoms, 3))).reshape(-1, 3))
    integrator.step(3)  # warm-up: TorchScript profiling runs, CUDA graph capture
    context.getState(getPositions=True)
    start = time.perf_counter()
    integrator.step(steps)
    context.getState(getPositions=True)  # waits for asynchronous platforms
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", default="CPU")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--cuda-graphs", action="store_true")
    args = parser.parse_args()
    configure_threads(args.threads)
    system = alanine_dipeptide()
    committee = Committee.load(default_committee_path(), system=system)
    properties = {"Precision": "mixed"} if args.platform == "CUDA" else {}
    print(f"host: {host.processor() or host.machine()}, {os.cpu_count()} cores; torch threads {args.threads}; "
          f"OpenMM platform {args.platform}; committee {committee}")
    results = {}
    for b in args.replicas:
        seconds = time_steps(committee, system, b, args.platform, args.steps, properties, args.cuda_graphs)
        results[b] = seconds
        print(f"B = {b:3d}: {seconds * 1e3:8.2f} ms per step, {seconds / b * 1e3:7.3f} ms per replica-step")
    lo, hi = min(results), max(results)
    print(f"per-replica speed-up of B = {hi} over B = {lo}: {results[lo] / (results[hi] / hi):.2f}x")


if __name__ == "__main__":
    main()
