"""xTB labelling throughput against the number of workers: a process pool and a Dask LocalCluster side by side.

Labels frames of alanine dipeptide (the shipped C7eq dataset; ``--molecule ethanol`` or
``peptide`` for the ethanol or Ace-(Ala)3-NMe example's structure, randomly displaced) with GFN2-xTB (tblite, ``--threads`` OpenMP
threads per worker) through each labeller of :mod:`openmm_adv.executors`, one task per
structure as the loop labels:

- ``in process``: :class:`InProcessLabeller`, the baseline (one worker);
- ``process pool``: :class:`ProcessLabeller` of N spawned workers, timed with the start of its
  pool (a pool lives for one labelling stage, so a loop pays that start every generation);
- ``dask``: :class:`DaskLabeller` on a LocalCluster of N one-thread workers, started once (its
  start-up is printed apart: a loop keeps its cluster) and warmed up by one task per worker.

Each cell is the best of ``--repeats`` rounds, in structures per second. The labels of every
labeller are checked to be the in-process ones. Needs the ``[xtb]`` and ``[dask]`` extras.
Run: ``python benchmarks/label_throughput.py [--frames 48] [--workers 1 2 4] [--repeats 2]``.
"""

from __future__ import annotations

import argparse
import os
import platform as host
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_step import cpu_model  # noqa: E402  (the benchmarks' shared host description)

from openmm_adv.executors import DaskLabeller, InProcessLabeller, ProcessLabeller, start_dask
from openmm_adv.oracles import make_oracle


def frames(molecule: str, n: int):
    """The system and ``n`` frames of it (nm)."""
    if molecule == "ala2":
        from openmm_adv.data import Dataset
        from openmm_adv.resources import default_dataset_path
        from openmm_adv.systems import alanine_dipeptide

        system = alanine_dipeptide()
        positions = Dataset.load(default_dataset_path()).positions
        return system, positions[np.linspace(0, len(positions) - 1, n).round().astype(int)]
    from openmm_adv.systems import load_system

    examples = Path(__file__).resolve().parents[1] / "examples"
    structure = {"ethanol": examples / "ethanol_xtb" / "ethanol.xyz",
                 "peptide": examples / "peptide_amber" / "ace_ala3_nme.pdb"}[molecule]
    system = load_system(structure)
    rng = np.random.default_rng(0)
    return system, system.positions[None] + rng.normal(scale=0.005, size=(n, system.n_atoms, 3))


def timed(labeller, oracle, positions) -> tuple[float, np.ndarray]:
    """Seconds ``labeller`` takes for ``positions``, and the energies in input order."""
    energies = np.full(len(positions), np.nan)

    def keep(i, labels, seconds):
        energies[i] = labels.energies[0]

    start = time.perf_counter()
    labeller.run(oracle, positions, keep)
    return time.perf_counter() - start, energies


def host_line() -> str:
    try:
        load = "load average %.1f %.1f %.1f" % os.getloadavg()
    except (AttributeError, OSError):
        load = "load average unknown"
    return f"host: {host.platform()}; CPU {cpu_model()}, {os.cpu_count()} cores; {load} at start"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecule", choices=["ala2", "ethanol", "peptide"], default="ala2",
                        help="ala2 (22 atoms), ethanol (9) or peptide (Ace-(Ala)3-NMe, 42 atoms: slower labels, "
                             "so less overhead per second of work)")
    parser.add_argument("--frames", type=int, default=48, help="structures labelled per round")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to measure")
    parser.add_argument("--repeats", type=int, default=2, help="rounds per cell; the best is kept")
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads of each xTB singlepoint")
    args = parser.parse_args(argv)

    system, positions = frames(args.molecule, args.frames)
    oracle = make_oracle("xtb", system, threads=args.threads)
    print(host_line())
    print(f"GFN2-xTB (tblite, {args.threads} thread(s) per worker) on {len(positions)} frames of {system.name} "
          f"({system.n_atoms} atoms); best of {args.repeats} round(s)")

    def best(labeller):
        rounds = [timed(labeller, oracle, positions) for _ in range(args.repeats)]
        seconds = min(s for s, _ in rounds)
        for _, energies in rounds:  # every labeller must give the in-process labels
            np.testing.assert_array_equal(energies, reference)
        return len(positions) / seconds

    serial_seconds, reference = timed(InProcessLabeller(), oracle, positions)
    in_process = max(len(positions) / serial_seconds, best(InProcessLabeller()))
    rows = []
    for n in args.workers:
        pool = best(ProcessLabeller(n))
        start = time.perf_counter()
        client, cluster = start_dask("local", n, threads_per_worker=1, options={"silence_logs": 40})
        started = time.perf_counter() - start
        try:
            labeller = DaskLabeller(client=client)
            timed(labeller, oracle, positions[:n])  # each worker imports tblite and unpacks the oracle
            dask = best(labeller)
        finally:
            client.close()
            cluster.close()
        rows.append((n, pool, dask, started))

    print("\nstructures per second (in process: one worker, this process)")
    print("| workers | in process | process pool | dask LocalCluster | dask / pool | dask cluster start (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n, pool, dask, started in rows:
        print(f"| {n} | {in_process:.2f} | {pool:.2f} | {dask:.2f} | {dask / pool:.2f} | {started:.1f} |")
    print("labels: identical (bit for bit) in every labeller")


if __name__ == "__main__":
    main()
