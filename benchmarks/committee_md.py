"""Committee MD in OpenMM against a plain-PyTorch velocity-Verlet loop, at B = 1, 8 and 64 replicas.

Both sides integrate the same committee-mean energy (:class:`openmm_adv.forces.MeanEnergyModule`,
forces by one backward pass) for B non-interacting replicas of alanine dipeptide:

- OpenMM: B replicas in one ``Context`` with :func:`openmm_adv.forces.mean_energy_force` (an
  openmm-torch ``TorchForce``) and a ``LangevinMiddleIntegrator`` (what
  :class:`openmm_adv.samplers.CommitteeMDSampler` runs) or, with ``--integrator verlet``,
  OpenMM's ``VerletIntegrator``;
- PyTorch: the same module, compiled and frozen as openmm-torch does, in a Python
  velocity-Verlet loop (one force evaluation per step, like both OpenMM integrators).

The integrator arithmetic is negligible next to the committee, so the steps cost the same work;
the two sides run in alternation (best of ``--repeats`` rounds) and the script prints steps and
replica-steps per second for both and the ratio OpenMM / PyTorch per B (above 1: OpenMM faster).
As a check that both evaluate the same model, the forces at the start geometry are compared.

Run: ``python benchmarks/committee_md.py [--committee FILE | --architecture painn]
[--platform CPU|CUDA] [--threads 1] [--steps 10] [--replicas 1 8 64]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers in attack_step.py

from attack_step import (  # noqa: E402  (after the path set-up)
    PlainLoop,
    benchmark_setup,
    add_timing_options,
    time_steps,
    RATIO_HEADER,
    RATIO_NOTE,
    Clock,
    add_committee_options,
    best_of,
    host_lines,
    plain_module,
    print_table,
    ratio_row,
    seed_positions,
)


import openmm  # noqa: E402
import torch  # noqa: E402

from openmm_adv.forces import MeanEnergyModule, mean_energy_force  # noqa: E402
from openmm_adv.samplers._replicas import masses_for  # noqa: E402

TEMPERATURE = 300.0  # K
TIMESTEP = 0.0005  # ps: CommitteeMDSampler's default (no constraints, hydrogens move)
FRICTION = 1.0  # 1/ps
SEED = 1


class OpenMMMD:
    """B replicas in one Context with the committee-mean TorchForce."""

    def __init__(self, committee, masses, start, integrator, platform_name, properties, cuda_graphs=False):
        n_replicas = len(start)
        system = openmm.System()
        for _ in range(n_replicas):
            for mass in masses:
                system.addParticle(float(mass))
        system.addForce(mean_energy_force(committee, n_replicas=n_replicas, use_cuda_graphs=cuda_graphs))
        if integrator == "langevin":
            self.integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE, FRICTION, TIMESTEP)
            self.integrator.setRandomNumberSeed(SEED)
        else:
            self.integrator = openmm.VerletIntegrator(TIMESTEP)
        platform = openmm.Platform.getPlatformByName(platform_name)
        self.context = openmm.Context(system, self.integrator, platform, properties)
        self.context.setPositions(start.reshape(-1, 3))
        self.context.setVelocitiesToTemperature(TEMPERATURE, SEED)
        self.system = system  # the Context needs its System alive

    def velocities(self) -> np.ndarray:
        state = self.context.getState(getVelocities=True)
        return np.asarray(state.getVelocities(asNumpy=True).value_in_unit(openmm.unit.nanometer / openmm.unit.picosecond))

    def forces(self) -> np.ndarray:
        state = self.context.getState(getForces=True)
        return np.asarray(state.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer))

    def run(self, steps: int) -> Clock:
        return time_steps(self.context, self.integrator, steps)


class TorchMD(PlainLoop):
    """Velocity Verlet on the committee-mean energy from Python; OpenMM's units (nm, ps, dalton)."""

    def __init__(self, module, masses, start, velocities, device):
        self.module = module
        self.device = device
        # As in attack_step: float64 positions on CPU (what OpenMM's CPU platform hands the
        # TorchForce), float32 on a GPU; the model casts to its own dtype.
        dtype = torch.float32 if device.type == "cuda" else torch.float64
        n_replicas = len(start)
        self.x = torch.tensor(start.reshape(-1, 3), dtype=dtype, device=device)
        self.v = torch.tensor(velocities.reshape(-1, 3), dtype=dtype, device=device)
        self.inv_m = torch.tensor(np.tile(1.0 / np.asarray(masses), n_replicas)[:, None], dtype=dtype, device=device)
        self.f = self.forces()

    def forces(self) -> torch.Tensor:
        x = self.x.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(self.module(x), [x])
        return -gradient

    def step(self) -> None:
        with torch.no_grad():
            self.v += (0.5 * TIMESTEP) * self.f * self.inv_m
            self.x += TIMESTEP * self.v
        self.f = self.forces()
        with torch.no_grad():
            self.v += (0.5 * TIMESTEP) * self.f * self.inv_m


def compare(committee, system, masses, n_replicas, args, properties, device) -> dict:
    """Per-step time of both loops at one B (best of ``args.repeats`` alternating rounds)."""
    start = seed_positions(system, n_replicas)
    omm = OpenMMMD(committee, masses, start, args.integrator, args.platform, properties, args.cuda_graphs)
    module = plain_module(MeanEnergyModule(committee.scripted(), n_replicas), device)
    plain = TorchMD(module, masses, start, omm.velocities(), device)
    f_omm, f_torch = omm.forces(), plain.f.detach().double().cpu().numpy()
    force_error = float(np.abs(f_omm - f_torch).max() / max(np.abs(f_torch).max(), 1e-30))
    # Warm-up: TorchScript's profiling runs (and CUDA-graph capture) happen in the first calls.
    omm.run(args.warmup)
    plain.run(args.warmup)
    t_omm, t_torch = [], []
    for _ in range(args.repeats):
        t_omm.append(omm.run(args.steps).per(args.steps))
        t_torch.append(plain.run(args.steps).per(args.steps))
    return dict(openmm=best_of(t_omm), torch=best_of(t_torch), force_error=force_error)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", default="CPU", help="OpenMM platform: Reference, CPU or CUDA (default CPU)")
    parser.add_argument("--cuda-graphs", action="store_true", help="capture the TorchForce in CUDA graphs")
    parser.add_argument("--integrator", choices=("langevin", "verlet"), default="langevin",
                        help="OpenMM side: LangevinMiddleIntegrator (as CommitteeMDSampler) or VerletIntegrator")
    add_timing_options(parser, steps=10)
    add_committee_options(parser)
    args = parser.parse_args(argv)
    device, properties, system, committee, described = benchmark_setup(args)
    masses = masses_for(committee, system)
    print(host_lines(args.threads, args.platform, properties))
    print(f"committee: {described}")
    openmm_side = "LangevinMiddleIntegrator" if args.integrator == "langevin" else "VerletIntegrator"
    print(f"MD: {TIMESTEP * 1e3:g} fs steps, {TEMPERATURE:g} K start velocities; OpenMM {openmm_side}"
          + (" with CUDA graphs" if args.cuda_graphs else "")
          + f" vs PyTorch velocity Verlet (frozen weights, forces by autograd); {args.warmup} warm-up steps, "
          f"best of {args.repeats} x {args.steps} steps")
    rows = []
    for b in args.replicas:
        r = compare(committee, system, masses, b, args, properties, device)
        rows.append(ratio_row(b, r["openmm"], r["torch"]) + [f"{r['force_error']:.1e}"])
    print()
    print_table(RATIO_HEADER + ["start forces: max rel. diff"], rows)
    print(RATIO_NOTE)


if __name__ == "__main__":
    main()
