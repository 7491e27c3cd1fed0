"""Attack step in OpenMM against a plain-PyTorch Adam loop, at B = 1, 8 and 64 replicas.

Both sides climb the same objective with the same committee: the energy of
:class:`openmm_adv.forces.AdversarialModule` (minus ``kT log L``; committee forward, per-member
forces with ``create_graph=True``, gradient of the uncertainty: a double backward).

- OpenMM: B replicas in one ``Context``, the module inside an openmm-torch ``TorchForce``, the
  Adam ``CustomIntegrator`` of :func:`openmm_adv.samplers.attack_integrator` (what
  :class:`openmm_adv.samplers.Attack` runs).
- PyTorch: the same TorchScript module called from Python, ``energy.backward()`` and
  ``torch.optim.Adam`` on the positions with the integrator's learning rate, betas and epsilon,
  followed by the integrator's per-step and total displacement clamps.

The two sides run in alternation (``--repeats`` rounds of ``--steps`` steps each) and the best
round of each is kept, so load from other processes hits both alike; the script prints
replica-steps per second for both and the ratio OpenMM / PyTorch per B (above 1: OpenMM is
faster). Starting from the same positions, both trajectories should agree; the largest
coordinate difference at the end is printed as a check that they computed the same thing.

This file also holds the helpers the other benchmarks share (host line, committee options).

Run: ``python benchmarks/attack_step.py [--committee FILE | --architecture painn]
[--platform CPU|CUDA] [--cuda-graphs] [--threads 1] [--steps 5] [--repeats 2] [--replicas 1 8 64]``
"""

from __future__ import annotations

import argparse
import io
import os
import platform as host
import time
from pathlib import Path

import numpy as np

from openmm_adv._torch import configure_threads  # imports torch before openmm(-torch)

import openmm
import torch

from openmm_adv.forces import adversarial_force
from openmm_adv.models import Committee
from openmm_adv.resources import default_committee_path
from openmm_adv.samplers import attack_integrator
from openmm_adv.systems import alanine_dipeptide

ARCHITECTURES = ("painn", "schnet")

# The attack's settings; the demo's kT (20.9 kJ/mol = 5 kcal/mol) and Attack's step limits.
KT = 20.9
STEP_SIZE = 0.002
MAX_STEP = 0.02
MAX_DISPLACEMENT = 0.3
BETAS = (0.9, 0.999)
EPSILON = 1e-8


# ---------------------------------------------------------------------- shared helpers
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return host.processor() or host.machine()


def host_lines(threads: int, platform_name: str, properties: dict, engine: str = "OpenMM platform") -> str:
    """What the absolute times below were measured on: machine, cores, threads, versions."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        omm_torch = version("openmmtorch")
    except PackageNotFoundError:  # a conda or source install without pip metadata
        omm_torch = "(version unknown)"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    try:  # other processes' load stretches wall-clock times (not CPU times)
        load = "load average %.1f %.1f %.1f" % os.getloadavg()
    except (AttributeError, OSError):
        load = "load average unknown"
    lines = [
        f"host: {host.platform()}; CPU {cpu_model()} ({host.machine()}), {os.cpu_count()} cores "
        f"({usable} usable by this process); {load} at start",
        f"torch {torch.__version__} with {threads} intra-op thread(s) (torch.get_num_threads() = "
        f"{torch.get_num_threads()}); OpenMM {openmm.__version__}; openmm-torch {omm_torch}",
        f"{engine} {platform_name}" + (f", properties {properties}" if properties else ""),
    ]
    if platform_name == "CUDA" and torch.cuda.is_available():
        lines.append(f"GPU {torch.cuda.get_device_name(0)}; torch CUDA {torch.version.cuda}")
    return "\n".join(lines)


def platform_properties(platform_name: str, threads: int) -> dict:
    """Context properties: mixed precision on CUDA; on CPU OpenMM's own threads = torch's.

    OpenMM's CPU platform otherwise starts a thread per core for its own (here trivial) work,
    which competes with torch on a small shared machine.
    """
    if platform_name == "CUDA":
        return {"Precision": "mixed"}
    if platform_name == "CPU":
        return {"Threads": str(threads)}
    return {}


def torch_device(platform_name: str) -> torch.device:
    """Where the plain-PyTorch side runs: the GPU when OpenMM does."""
    if platform_name in ("CUDA", "OpenCL"):
        if not torch.cuda.is_available():
            raise SystemExit(f"--platform {platform_name} needs a CUDA device for the PyTorch side; none is visible")
        return torch.device("cuda")
    return torch.device("cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def add_committee_options(parser: argparse.ArgumentParser, allow_file: bool = True) -> None:
    """``--committee FILE`` or ``--architecture NAME`` with its size options.

    Size options left unset keep the architecture's own defaults, so the benchmark follows them
    if they change.
    """
    group = parser.add_argument_group("committee")
    if allow_file:
        group.add_argument("--committee", default=None,
                           help="committee .pt file (default: the shipped one); excludes --architecture")
    group.add_argument("--architecture", choices=ARCHITECTURES, default=None,
                       help="build an UNTRAINED committee of this architecture instead (timing does not "
                            "depend on training)")
    group.add_argument("--members", type=int, default=None, help="committee size M (architecture default)")
    group.add_argument("--features", type=int, default=None, help="n_features (architecture default)")
    group.add_argument("--rbf", type=int, default=None, help="n_rbf (architecture default)")
    group.add_argument("--interactions", type=int, default=None, help="n_interactions (architecture default)")
    group.add_argument("--cutoff", type=float, default=None, help="cutoff in nm (architecture default)")
    group.add_argument("--neighbor-list", choices=("auto", "all_pairs", "cutoff"), default=None,
                       help="PaiNN pair handling (architecture default)")


def architecture_options(args: argparse.Namespace) -> dict:
    """The size options given on the command line, as keyword arguments of ``Committee.painn``/``schnet``."""
    names = {"members": "n_members", "features": "n_features", "rbf": "n_rbf",
             "interactions": "n_interactions", "cutoff": "cutoff", "neighbor_list": "neighbor_list"}
    options = {key: getattr(args, name) for name, key in names.items() if getattr(args, name, None) is not None}
    if "neighbor_list" in options and args.architecture != "painn":
        raise SystemExit("--neighbor-list applies to --architecture painn only")
    return options


def build_committee(architecture: str, atomic_numbers, options: dict) -> Committee:
    """An untrained float32 committee; ``options`` are ``Committee.painn``/``schnet`` keywords."""
    options = dict(options)
    n_members = options.pop("n_members", 5)
    if architecture == "painn":
        return Committee.painn(atomic_numbers, n_members=n_members, **options)
    if architecture == "schnet":
        return Committee.schnet(atomic_numbers, n_members=n_members, **options)
    raise ValueError(f"unknown architecture {architecture!r}; use one of {ARCHITECTURES}")


def committee_from_args(args: argparse.Namespace, system) -> tuple[Committee, str]:
    """The committee the options ask for, for ``system``, and a line describing it."""
    options = architecture_options(args)
    if args.architecture is not None:
        if getattr(args, "committee", None) is not None:
            raise SystemExit("give either --committee FILE or --architecture, not both")
        committee = build_committee(args.architecture, system.atomic_numbers, options)
        described = f"untrained {committee.metadata['architecture']} {committee.metadata['hyperparameters']}"
        return committee, described
    if options:
        raise SystemExit("size options (--members, --features, ...) need --architecture")
    path = Path(args.committee) if getattr(args, "committee", None) else default_committee_path()
    committee = Committee.load(path, system=system)
    described = f"{path.name}: {committee.metadata.get('architecture')} {committee.metadata.get('hyperparameters')}"
    return committee, described


class Clock:
    """Wall time and this process's CPU time (all threads) of one timed stretch, in seconds.

    On a shared machine other processes stretch the wall time but not the CPU time, so with
    single-threaded torch and OpenMM the CPU time estimates the cost on an idle machine; on a
    GPU the CPU time means little and the wall time is the one to read.
    """

    def __init__(self):
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def stop(self) -> "Clock":
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        return self

    def per(self, n: int) -> "Clock":
        out = Clock.__new__(Clock)
        out.wall, out.cpu = self.wall / n, self.cpu / n
        return out


def best_of(rounds: list) -> Clock:
    """The fastest round, per clock: load from other processes only ever slows a round down."""
    out = Clock.__new__(Clock)
    out.wall = min(r.wall for r in rounds)
    out.cpu = min(r.cpu for r in rounds)
    return out


def print_table(header: list, rows: list) -> None:
    """A Markdown table (pastes into benchmarks/README.md as is)."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")


def time_steps(context, integrator, steps: int) -> Clock:
    """Time of ``steps`` integrator steps (reading the positions back waits for asynchronous platforms)."""
    context.getState(getPositions=True)
    clock = Clock()
    integrator.step(steps)
    context.getState(getPositions=True)
    return clock.stop()


def add_timing_options(parser: argparse.ArgumentParser, steps: int = 5) -> None:
    """--threads, --steps, --repeats, --warmup and --replicas, shared by the side-by-side benchmarks."""
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--steps", type=int, default=steps, help=f"timed steps per round (default {steps})")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds; the best is kept (default 2)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed steps first (default 5: TorchScript's profiling executor needs about 4)")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 8, 64], help="B values (default 1 8 64)")


def plain_module(module, device, trainable_weights: bool = False) -> torch.jit.ScriptModule:
    """``module`` as the plain-PyTorch side runs it: TorchScript, saved and loaded, frozen.

    openmm-torch 1.5 freezes the module it loads (its kernels call ``torch::jit::freeze``), so the
    weights are constants and the backward pass computes no gradients for them; the plain loop
    does the same to compare like with like (``trainable_weights=True`` keeps the weights as
    parameters that require grad, as a naive loop would; that costs extra backward work).
    The save/load round trip also gives a copy that shares no TorchScript execution plans with
    other users of the same submodules: otherwise a plan optimised for one B in an earlier
    measurement would be reused (or fall back to an unoptimised graph) for the next B.
    """
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer, map_location=device)
    return loaded if trainable_weights else torch.jit.freeze(loaded.eval())


RATIO_HEADER = ["B", "OpenMM ms/step", "PyTorch ms/step", "OpenMM replica-steps/s", "PyTorch replica-steps/s",
                "ratio OpenMM/PyTorch (wall)", "CPU ms/step OpenMM / PyTorch", "ratio (CPU time)"]
RATIO_NOTE = ("ms/step and replica-steps/s are wall-clock, best round; ratio = OpenMM replica-steps/s over PyTorch "
              "replica-steps/s (above 1: OpenMM faster), from wall-clock and from process CPU time (all threads)")


def ratio_row(b: int, omm: Clock, plain: Clock) -> list:
    """One table row: both sides' cost and speed at B replicas, and the ratios."""
    return [b, f"{omm.wall * 1e3:.2f}", f"{plain.wall * 1e3:.2f}", f"{b / omm.wall:.1f}", f"{b / plain.wall:.1f}",
            f"{plain.wall / omm.wall:.2f}", f"{omm.cpu * 1e3:.1f} / {plain.cpu * 1e3:.1f}",
            f"{plain.cpu / omm.cpu:.2f}"]


# ---------------------------------------------------------------------- the two attack loops
class OpenMMAttack:
    """B replicas in one Context with the adversarial TorchForce and the Adam integrator."""

    def __init__(self, committee, start, platform_name, properties, cuda_graphs=False):
        n_replicas = len(start)
        force, self.module = adversarial_force(committee, KT, n_replicas=n_replicas, use_cuda_graphs=cuda_graphs)
        system = openmm.System()
        for _ in range(n_replicas * start.shape[1]):
            system.addParticle(12.0)  # masses do not enter the optimiser
        system.addForce(force)
        self.integrator = attack_integrator(STEP_SIZE, max_step=MAX_STEP, max_displacement=MAX_DISPLACEMENT,
                                            beta1=BETAS[0], beta2=BETAS[1], epsilon=EPSILON)
        platform = openmm.Platform.getPlatformByName(platform_name)
        self.context = openmm.Context(system, self.integrator, platform, properties)
        self.context.setPositions(start.reshape(-1, 3))
        self.system = system  # the Context needs its System alive

    def run(self, steps: int) -> Clock:
        return time_steps(self.context, self.integrator, steps)

    def positions(self) -> np.ndarray:
        state = self.context.getState(getPositions=True)
        return np.asarray(state.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer))


class PlainLoop:
    """A plain-PyTorch loop timed like an OpenMM Context: subclasses define ``step()``."""

    device: torch.device

    def step(self) -> None:
        raise NotImplementedError

    def run(self, steps: int) -> Clock:
        synchronize(self.device)
        clock = Clock()
        for _ in range(steps):
            self.step()
        synchronize(self.device)
        return clock.stop()


def benchmark_setup(args: argparse.Namespace):
    """Threads, device, platform properties, alanine dipeptide and the committee of the arguments."""
    configure_threads(args.threads)
    device = torch_device(args.platform)
    properties = platform_properties(args.platform, args.threads)
    system = alanine_dipeptide()
    committee, described = committee_from_args(args, system)
    return device, properties, system, committee, described


class TorchAttack(PlainLoop):
    """The same objective climbed by ``torch.optim.Adam`` from Python.

    ``module`` is the AdversarialModule the TorchForce runs, compiled and frozen the same way
    (:func:`plain_module`), so the difference measured is what OpenMM adds or saves around the
    model.
    """

    def __init__(self, module, start, device, trainable_weights=False):
        self.module = plain_module(module, device, trainable_weights)
        self.device = device
        # OpenMM's CPU platform hands float64 positions to the TorchForce, its mixed-precision CUDA
        # platform float32; the model casts to its own dtype in either case.
        dtype = torch.float32 if device.type == "cuda" else torch.float64
        self.x = torch.tensor(start.reshape(-1, 3), dtype=dtype, device=device, requires_grad=True)
        self.x0 = self.x.detach().clone()
        self.optimizer = torch.optim.Adam([self.x], lr=STEP_SIZE, betas=BETAS, eps=EPSILON)

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        energy = self.module(self.x)  # minus the objective: Adam descends it
        energy.backward()
        with torch.no_grad():
            before = self.x.detach().clone()
            self.optimizer.step()
            # The integrator's guards, so both sides follow the same trajectory.
            self.x.copy_(before + (self.x - before).clamp(-MAX_STEP, MAX_STEP))
            self.x.copy_(self.x0 + (self.x - self.x0).clamp(-MAX_DISPLACEMENT, MAX_DISPLACEMENT))

    def positions(self) -> np.ndarray:
        return self.x.detach().double().cpu().numpy()


def seed_positions(system, n_replicas: int, seed: int = 0) -> np.ndarray:
    """``[B, N, 3]`` nm: the reference geometry with 0.005 nm of noise per replica."""
    rng = np.random.default_rng(seed)
    return system.positions[None] + 0.005 * rng.normal(size=(n_replicas, system.n_atoms, 3))


def compare(committee, system, n_replicas, args, properties, device) -> dict:
    """Per-step seconds of both loops at one B (best of ``args.repeats`` alternating rounds)."""
    start = seed_positions(system, n_replicas)
    omm = OpenMMAttack(committee, start, args.platform, properties, args.cuda_graphs)
    plain = TorchAttack(omm.module, start, device, args.trainable_weights)
    # Warm-up: TorchScript's profiling runs (and CUDA-graph capture) happen in the first calls.
    omm.run(args.warmup)
    plain.run(args.warmup)
    t_omm, t_torch = [], []
    for _ in range(args.repeats):
        t_omm.append(omm.run(args.steps).per(args.steps))
        t_torch.append(plain.run(args.steps).per(args.steps))
    drift = float(np.abs(omm.positions() - plain.positions()).max())
    return dict(openmm=best_of(t_omm), torch=best_of(t_torch), drift=drift,
                n_steps=args.warmup + args.repeats * args.steps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", default="CPU", help="OpenMM platform: Reference, CPU or CUDA (default CPU)")
    parser.add_argument("--cuda-graphs", action="store_true", help="capture the TorchForce in CUDA graphs")
    add_timing_options(parser, steps=5)
    parser.add_argument("--trainable-weights", action="store_true",
                        help="plain loop: leave the weights as parameters requiring grad instead of freezing them "
                             "as openmm-torch does (a naive loop; slower)")
    add_committee_options(parser)
    args = parser.parse_args(argv)
    device, properties, system, committee, described = benchmark_setup(args)
    print(host_lines(args.threads, args.platform, properties))
    print(f"committee: {described}")
    print(f"attack: Adam lr {STEP_SIZE} nm, betas {BETAS}, eps {EPSILON}, kT {KT} kJ/mol, log objective, "
          f"force_variance; {args.warmup} warm-up steps, best of {args.repeats} x {args.steps} steps"
          + (", CUDA graphs" if args.cuda_graphs else "")
          + ("; plain loop with trainable (unfrozen) weights" if args.trainable_weights else "; both with frozen weights"))
    rows = []
    for b in args.replicas:
        r = compare(committee, system, b, args, properties, device)
        rows.append(ratio_row(b, r["openmm"], r["torch"]) + [f"{r['drift']:.1e}"])
    print()
    print_table(RATIO_HEADER + [f"max abs dx (nm) after {r['n_steps']} steps"], rows)
    print(RATIO_NOTE)


if __name__ == "__main__":
    main()
