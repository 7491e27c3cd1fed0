"""Committee cost against system size: 22 to 616 atoms, time and peak memory.

Molecule-like point sets are built by placing copies of alanine dipeptide (22 atoms) on a cubic
grid, ``--gap`` nm (0.6) between the copies' bounding boxes, so every atom keeps the
neighbourhood it has in the molecule; the table gives the mean number of neighbours inside
the cutoff. For each size and model, at B = 1, the script times

- E+F: ``CommitteePotential.energies_and_forces`` (all M members' energies and forces, one
  backward pass) on the TorchScript committee, what monitoring and scoring run;
- attack step: forward + backward of the frozen :class:`openmm_adv.forces.AdversarialModule`
  (committee forces with ``create_graph=True``, gradient of the uncertainty: a double
  backward), what the adversarial ``TorchForce`` computes per step.

Models: untrained committees, by default the PaiNN with its default hyperparameters, once with
``neighbor_list="auto"`` (dense all-pairs up to 64 atoms, cutoff neighbour list above) and once
forced to ``"all_pairs"`` (dense; omitted where auto already is dense), and the StackedSchNet
(dense only). ``--committee FILE`` takes the architecture and hyperparameters of a committee file
instead (its weights are tied to its own atoms, so untrained copies are built for each size).

Memory: every (model, size) runs in its own child process, which reports its own peak resident
set size (the kernel's high-water mark of its RSS, ``VmHWM`` in ``/proc/self/status``) after the
imports and model build, after E+F and after the attack step; the table shows the peaks and their
increase over the post-build baseline (torch's and OpenMM's libraries alone take a few hundred
MB). Separate processes are needed because the high-water mark never goes down; tracemalloc does
not see torch's allocations; ``ru_maxrss`` is not used because Linux carries the parent's
high-water mark across fork and exec into the child's (and ``RUSAGE_CHILDREN`` in the parent is
the maximum over all children so far). Large tensors are mapped and unmapped one by one by the
C allocator, so the peak RSS follows the peak of live tensors plus the allocator's slack. On
CUDA the peak is
``torch.cuda.max_memory_allocated`` instead. On CPU each child's address space is capped at
``--max-memory-gb`` above its baseline (``RLIMIT_AS``) so that a too-large dense model fails with
"out of memory" instead of pushing a shared machine into swap or the OOM killer; each child also
gets ``--budget`` seconds of timed calls and is killed after ``--timeout`` seconds ("too slow"); a
model whose best call took longer than ``--too-slow`` seconds is not run at the larger sizes.

Run: ``python benchmarks/system_size.py [--copies 1 3 7 14 28] [--architecture painn schnet |
--committee FILE] [--platform CPU|CUDA]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the shared helpers in attack_step.py


# ---------------------------------------------------------------------- geometry
def replicated_alanine(n_copies: int, gap: float = 0.6):
    """Atomic numbers ``[22 n]`` and positions ``[22 n, 3]`` nm of alanine-dipeptide copies on a grid.

    Copies sit on a cubic grid with ``gap`` nm between their bounding boxes (centre spacing =
    largest box edge + gap), filled row by row, all in the same orientation.
    """
    from openmm_adv.systems import alanine_dipeptide

    system = alanine_dipeptide()
    x = system.positions - system.positions.mean(axis=0)
    spacing = float((x.max(axis=0) - x.min(axis=0)).max()) + gap
    k = max(1, math.ceil(round(n_copies ** (1.0 / 3.0), 9)))
    cells = [(i, j, l) for i in range(k) for j in range(k) for l in range(k)][:n_copies]
    positions = np.concatenate([x + spacing * np.asarray(c, dtype=np.float64) for c in cells])
    atomic_numbers = np.tile(np.asarray(system.atomic_numbers), n_copies)
    return atomic_numbers, positions


def mean_neighbours(positions: np.ndarray, cutoff: float) -> float:
    """Mean number of other atoms closer than ``cutoff`` nm."""
    d2 = ((positions[:, None] - positions[None]) ** 2).sum(-1)
    return float(((d2 < cutoff * cutoff).sum(axis=1) - 1).mean())


# ---------------------------------------------------------------------- child: one measurement
def peak_rss_mb() -> float:
    """This process's own peak resident set size in MB.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this process's memory
    map. Not ``ru_maxrss``: Linux carries the high-water mark of the memory map a process had
    before ``exec`` into it, so a child started by a parent holding 600 MB reports at least
    600 MB. Elsewhere ``ru_maxrss`` (macOS reports bytes).
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 / (1024.0 if sys.platform == "darwin" else 1.0)


def cap_address_space(extra_gb: float) -> None:
    """Let this process map at most ``extra_gb`` GB beyond what it maps now (Linux).

    The cap is relative: torch's libraries reserve several GB of address space they never
    touch, so an absolute limit would say little about the memory actually used.
    """
    try:
        with open("/proc/self/status") as handle:
            vm_kb = next(int(line.split()[1]) for line in handle if line.startswith("VmSize:"))
    except (OSError, StopIteration):
        return
    limit = int(vm_kb * 1024 + extra_gb * 1024**3)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def timed_calls(call, warmup: int, repeats: int, budget: float, synchronize) -> tuple[float, bool]:
    """Best time of ``repeats`` calls after ``warmup`` untimed ones, within ``budget`` seconds.

    Returns ``(seconds, warmed)``; when the budget ran out before the warm-up was over, the
    best call so far is returned with ``warmed=False`` (an upper bound: TorchScript's first
    calls profile and optimise the graph).
    """
    times = []
    spent = 0.0
    while len(times) < warmup + repeats:
        start = time.perf_counter()
        call()
        synchronize()
        times.append(time.perf_counter() - start)
        spent += times[-1]
        if spent > budget:
            break
    if len(times) > warmup:
        return min(times[warmup:]), True
    return min(times), False


def child(spec: dict) -> dict:
    """Build the model of ``spec`` for its size, time E+F and the attack step, read the peaks."""
    from openmm_adv._torch import configure_threads

    import torch

    from attack_step import KT, build_committee, plain_module
    from openmm_adv.forces import AdversarialModule

    configure_threads(spec["threads"])
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    atomic_numbers, positions = replicated_alanine(spec["copies"], spec["gap"])
    committee = build_committee(spec["architecture"], atomic_numbers, spec["options"])
    potential = committee.scripted().to(device)
    hyper = committee.metadata["hyperparameters"]
    out = dict(atoms=len(atomic_numbers), neighbours=mean_neighbours(positions, hyper["cutoff"]),
               dense=bool(getattr(committee.potential.members, "use_all_pairs", True)))
    # The objective's module as adversarial_force builds it (E_ref = 0, log Z = 0: no data).
    module = AdversarialModule(potential, 1, "force_variance", KT, 0.0, 0.0, "log")
    attack = plain_module(module, device)
    x = torch.tensor(positions[None], dtype=torch.float32 if cuda else torch.float64, device=device)
    flat = x.reshape(-1, 3).clone().requires_grad_(True)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def energies_and_forces():
        potential.energies_and_forces(x, False)

    def attack_step():
        flat.grad = None
        attack(flat).backward()

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        out["baseline_mb"] = torch.cuda.memory_allocated(device) / 2**20
    else:
        out["baseline_mb"] = peak_rss_mb()
        cap_address_space(spec["max_memory_gb"])
    for name, call in (("ef", energies_and_forces), ("attack", attack_step)):
        try:
            seconds, warmed = timed_calls(call, spec["warmup"], spec["repeats"], spec["budget"], sync)
        except (RuntimeError, MemoryError) as exc:
            text = str(exc)
            if isinstance(exc, MemoryError) or "alloc" in text.lower() or "out of memory" in text.lower():
                out[name] = "out of memory"
            else:
                out[name] = "error: " + text.splitlines()[0][:80]
            break
        out[name] = seconds
        out[name + "_warmed"] = warmed
        out[name + "_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else peak_rss_mb()
    return out


# ---------------------------------------------------------------------- parent: the table
def model_specs(args) -> list:
    """``(label, architecture, options)`` of every model to measure."""
    if args.committee is not None:
        if args.architecture is not None:
            raise SystemExit("give either --committee FILE or --architecture, not both")
        from openmm_adv.models import Committee

        metadata = Committee.load(args.committee).metadata
        name = {"StackedPaiNN": "painn", "StackedSchNet": "schnet"}.get(metadata.get("architecture"))
        if name is None:
            raise SystemExit(f"{args.committee}: architecture {metadata.get('architecture')!r} is not PaiNN or SchNet")
        pairs = [(name, dict(metadata.get("hyperparameters", {})))]
    else:
        names = {"members": "n_members", "features": "n_features", "rbf": "n_rbf",
                 "interactions": "n_interactions", "cutoff": "cutoff"}
        options = {key: getattr(args, flag) for flag, key in names.items() if getattr(args, flag) is not None}
        pairs = [(name, dict(options)) for name in (args.architecture or ["painn", "schnet"])]
    specs = []
    for name, options in pairs:
        if name == "painn":
            for neighbor_list in [args.neighbor_list] if args.neighbor_list else ["auto", "all_pairs"]:
                specs.append((f"PaiNN {neighbor_list}", name, {**options, "neighbor_list": neighbor_list}))
        else:
            options.pop("neighbor_list", None)
            specs.append(("SchNet (dense)", name, options))
    return specs


def run_child(spec: dict, timeout: float) -> dict:
    """One measurement in a fresh Python process; its JSON result or what went wrong."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"failed": f"too slow (> {timeout:g} s)"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    if done.returncode < 0:
        return {"failed": f"killed by signal {-done.returncode} ({tail[:60]})"}
    return {"failed": f"exit {done.returncode}: {tail[:80]}"}


def cell_time(result: dict, key: str) -> str:
    value = result.get(key)
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value * 1e3:.1f}" + ("" if result.get(key + "_warmed", True) else " (not warmed up)")


def cell_memory(result: dict, key: str) -> str:
    peak = result.get(key + "_peak_mb")
    if peak is None:
        return "-"
    return f"{peak:.0f} (+{peak - result['baseline_mb']:.0f})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 3, 7, 14, 28],
                        help="alanine-dipeptide copies per system (default 1 3 7 14 28 = 22 to 616 atoms)")
    parser.add_argument("--gap", type=float, default=0.6, help="nm between the copies' bounding boxes (default 0.6)")
    parser.add_argument("--platform", default="CPU",
                        help="CPU (torch on the CPU) or CUDA (torch on the GPU); no OpenMM Context is built here")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--warmup", type=int, default=4, help="untimed calls first (default 4)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls; the best is kept (default 2)")
    parser.add_argument("--budget", type=float, default=5.0,
                        help="seconds of calls per quantity before giving up on further calls (default 5)")
    parser.add_argument("--too-slow", type=float, default=5.0,
                        help="a model whose best call takes longer than this (s) is not measured at larger sizes "
                             "(default 5)")
    parser.add_argument("--timeout", type=float, default=60.0, help="kill a measurement after this many s (default 60)")
    parser.add_argument("--max-memory-gb", type=float, default=6.0,
                        help="CPU: address space a measurement may add, in GB (default 6)")
    parser.add_argument("--committee", default=None,
                        help="take the architecture and hyperparameters of this committee file")
    parser.add_argument("--architecture", nargs="+", choices=("painn", "schnet"), default=None,
                        help="untrained committees of these architectures (default: painn schnet)")
    for flag, kind, name in (("--members", int, "committee size M"), ("--features", int, "n_features"),
                             ("--rbf", int, "n_rbf"), ("--interactions", int, "n_interactions"),
                             ("--cutoff", float, "cutoff in nm")):
        parser.add_argument(flag, type=kind, default=None, help=f"{name} (architecture default)")
    parser.add_argument("--neighbor-list", choices=("auto", "all_pairs", "cutoff"), default=None,
                        help="PaiNN: only this neighbour list (default: auto and all_pairs)")
    args = parser.parse_args(argv)

    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return

    from openmm_adv._torch import configure_threads

    import torch

    from attack_step import host_lines, print_table

    configure_threads(args.threads)
    cuda = args.platform.upper() == "CUDA"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--platform CUDA needs a CUDA device; none is visible")
    specs = model_specs(args)
    print(host_lines(args.threads, "CUDA" if cuda else "CPU", {}, engine="torch only (no OpenMM Context), device"))
    print(f"systems: {args.copies} alanine-dipeptide copies, {args.gap} nm apart; B = 1; best of {args.repeats} "
          f"calls after {args.warmup} warm-up calls (within {args.budget:g} s per quantity)")
    print("memory: " + ("torch.cuda.max_memory_allocated (MB)" if cuda else
                        "peak RSS (VmHWM) of the measuring child process (MB), and its increase over the "
                        f"post-build baseline; address space capped at +{args.max_memory_gb:g} GB"))
    rows = []
    for label, architecture, options in specs:
        given_up = None  # a smaller size already ran out of memory or time: larger ones would too
        for copies in sorted(args.copies):
            n_atoms = 22 * copies
            if label == "PaiNN all_pairs" and n_atoms <= options.get("max_all_pairs_atoms", 64) \
                    and any(s[0] == "PaiNN auto" for s in specs):
                continue  # identical to auto (dense) at this size
            if given_up is not None:
                rows.append([label, n_atoms, "-", "-", f"skipped ({given_up})", "", "", ""])
                continue
            spec = dict(architecture=architecture, options=options, copies=copies, gap=args.gap,
                        threads=args.threads, device="cuda" if cuda else "cpu", warmup=args.warmup,
                        repeats=args.repeats, budget=args.budget, max_memory_gb=args.max_memory_gb)
            r = run_child(spec, args.timeout)
            if "failed" in r:
                rows.append([label, n_atoms, "-", "-", r["failed"], "", "", ""])
                given_up = f"{r['failed'].split(' (')[0]} at {n_atoms} atoms"
            else:
                if any(r.get(key) == "out of memory" for key in ("ef", "attack")):
                    given_up = f"out of memory at {n_atoms} atoms"
                elif any(isinstance(r.get(key), float) and r[key] > args.too_slow for key in ("ef", "attack")):
                    given_up = f"too slow: one call > {args.too_slow:g} s at {n_atoms} atoms"
                path = "dense" if r["dense"] else "neighbour list"
                rows.append([label, r["atoms"], f"{r['neighbours']:.1f}", path, cell_time(r, "ef"),
                             cell_time(r, "attack"), cell_memory(r, "ef"), cell_memory(r, "attack")])
            print(f"  measured {label}, {n_atoms} atoms", file=sys.stderr, flush=True)
    print()
    memory = "GPU MB" if cuda else "peak RSS MB (+ over baseline)"
    print_table(["model", "atoms", "neighbours/atom", "pairs", "E+F ms", "attack step ms",
                f"E+F {memory}", f"attack {memory}"], rows)


if __name__ == "__main__":
    if "--child" in sys.argv:
        # The child must not touch CUDA before it knows its device, nor print anything but JSON.
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
