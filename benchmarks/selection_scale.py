"""Selection at scale: RMSD de-duplication against the dataset and single-linkage clustering of
the candidates, the all-pairs algorithm the selector used before against
:mod:`openmm_adv.rmsd_search`, time and peak memory side by side, and whether they agree.

The old algorithm is kept here verbatim: the full matrix of Kabsch-aligned RMSDs
(``openmm_adv.selection.aligned_rmsd``, one 3x3 SVD per pair and about 300 bytes of temporaries
per pair), its row minima against ``min_rmsd``, and connected components of ``rmsd < min_rmsd``
by a breadth-first search over the matrix.

Frames are synthetic, from the shipped alanine dipeptide data: the 1000 Amber 300 K frames in
C7eq and the 2456-frame all-basin test set, drawn with replacement and moved by Gaussian noise
(``--noise`` nm per coordinate). Candidates: three quarters drawn the same way, one quarter
near-copies of dataset frames (``--near-noise``), so both outcomes of the de-duplication occur.
Clustering candidates come in small groups of near-copies.

Peak memory is ``tracemalloc``'s (numpy reports its allocations to it), measured in a run of its
own after the timed runs, so its overhead does not touch the times. Where the old algorithm
would need more than ``--old-max-gb``, it runs on slices of the candidates (the same arithmetic
per pair); its time is then measured and its peak memory extrapolated from the bytes per pair
of the slices, and the table says so.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openmm_adv.data import Dataset  # noqa: E402
from openmm_adv.resources import default_dataset_path  # noqa: E402
from openmm_adv.rmsd_search import DEFAULT_MEMORY_MB, rmsd_clusters, within_rmsd_of_any  # noqa: E402
from openmm_adv.selection import aligned_rmsd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_step import cpu_model  # noqa: E402  (the benchmarks' shared host description)


# ------------------------------------------------------------------ the old algorithm, verbatim
def _connected_components(adjacent: np.ndarray) -> np.ndarray:
    labels = -np.ones(len(adjacent), dtype=np.int64)
    for start in range(len(adjacent)):
        if labels[start] >= 0:
            continue
        stack, labels[start] = [start], start
        while stack:
            i = stack.pop()
            for j in np.flatnonzero(adjacent[i] & (labels < 0)):
                labels[j] = start
                stack.append(j)
    return labels


def old_near(candidates, frames, min_rmsd):
    return ~(aligned_rmsd(candidates, frames).min(axis=1) >= min_rmsd)


def old_clusters(candidates, min_rmsd):
    return _connected_components(aligned_rmsd(candidates, candidates) < min_rmsd)


def old_near_in_slices(candidates, frames, min_rmsd, rows):
    return np.concatenate([old_near(candidates[k:k + rows], frames, min_rmsd) for k in range(0, len(candidates), rows)])


# ---------------------------------------------------------------------------- measurements
def host_line() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = "load average %.1f %.1f %.1f" % os.getloadavg()
    except (AttributeError, OSError):
        load = "load average unknown"
    blas = ", ".join(f"{k}={os.environ[k]}" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS") if k in os.environ)
    return (f"host: {platform.platform()}; CPU {cpu_model()}, {os.cpu_count()} cores ({usable} usable); {load} "
            f"at start; numpy {np.__version__} ({blas or 'BLAS threads: its default'})")


def timed(call, repeats: int):
    """Best wall-clock and CPU times (this process, all threads) of ``repeats`` calls, and the
    last result. Other processes stretch the wall clock of a busy machine; far less its CPU time."""
    best, result = (np.inf, np.inf), None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = call()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        best = min(best, (wall, cpu))
    return best, result


def peak_mb(call) -> float:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def synthetic(base, count, noise, rng):
    return base[rng.integers(0, len(base), count)] + noise * rng.normal(size=(count, base.shape[1], 3))


def same_partition(a, b) -> bool:
    # compare the pairs-in-one-cluster relation without a K x K matrix
    _, first_a = np.unique(a, return_inverse=True)
    _, first_b = np.unique(b, return_inverse=True)
    pairs = np.unique(np.stack([first_a.ravel(), first_b.ravel()], axis=1), axis=0)
    return len(pairs) == len(np.unique(first_a)) == len(np.unique(first_b))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[4000, 100000], help="dataset sizes")
    parser.add_argument("--candidates", type=int, default=320, help="candidates de-duplicated against the data")
    parser.add_argument("--cluster", type=int, default=2000, help="candidates clustered (0: skip)")
    parser.add_argument("--min-rmsd", type=float, default=0.01, help="nm, the selector's default")
    parser.add_argument("--noise", type=float, default=0.01, help="nm per coordinate on the synthetic frames")
    parser.add_argument("--near-noise", type=float, default=0.002, help="nm on the near-copies")
    parser.add_argument("--memory-mb", type=float, default=DEFAULT_MEMORY_MB, help="the new code's working budget")
    parser.add_argument("--old-max-gb", type=float, default=4.0,
                        help="run the old algorithm whole only below this estimated peak; in slices above")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per side (best kept)")
    parser.add_argument("--no-old", action="store_true", help="time the new code only (memory-budget sweeps)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    shipped = Dataset.load(default_dataset_path()).positions
    test_set = default_dataset_path().with_name("ala2_test_set.h5")
    base = np.concatenate([shipped, Dataset.load(test_set).positions]) if test_set.exists() else shipped
    print(host_line())
    print(f"frames: {len(base)} shipped alanine dipeptide geometries + N(0, {args.noise} nm); candidates "
          f"{args.candidates} (a quarter within N(0, {args.near_noise} nm) of dataset frames); "
          f"min_rmsd {args.min_rmsd} nm; new code's budget {args.memory_mb:g} MB; best of {args.repeats} timed run(s)")

    rows, bytes_per_pair = [], 320.0  # refined by the first whole old run
    for n_frames in args.frames:
        frames = synthetic(base, n_frames, args.noise, rng)
        n_near = args.candidates // 4
        candidates = np.concatenate([synthetic(base, args.candidates - n_near, args.noise, rng),
                                     synthetic(frames, n_near, args.near_noise, rng)])
        pairs = len(candidates) * n_frames
        new_s, new_answer = timed(lambda: within_rmsd_of_any(candidates, frames, args.min_rmsd, True, args.memory_mb),
                                  args.repeats)
        new_mb = peak_mb(lambda: within_rmsd_of_any(candidates, frames, args.min_rmsd, True, args.memory_mb))
        label = f"de-duplicate {len(candidates)} x {n_frames} frames"
        if args.no_old:
            rows.append((label, None, None, None, new_s, new_mb, None, f"{int(new_answer.sum())} near"))
            continue
        if pairs * bytes_per_pair / 2**30 <= args.old_max_gb:
            old_s, old_answer = timed(lambda: old_near(candidates, frames, args.min_rmsd), args.repeats)
            old_mb = peak_mb(lambda: old_near(candidates, frames, args.min_rmsd))
            bytes_per_pair = old_mb * 2**20 / pairs
            old_memory = f"{old_mb:.0f}"
        else:
            slice_rows = max(1, int(args.old_max_gb * 2**30 / (bytes_per_pair * n_frames)) // 4)
            old_s, old_answer = timed(lambda: old_near_in_slices(candidates, frames, args.min_rmsd, slice_rows),
                                      args.repeats)
            old_mb = pairs * bytes_per_pair / 2**20
            old_memory = f"~{old_mb:.0f} (extrapolated)"
            label += f" (old run in slices of {slice_rows})"
        rows.append((label, old_s, old_memory, old_mb, new_s, new_mb, bool(np.array_equal(old_answer, new_answer)),
                     f"{int(new_answer.sum())} near"))

    if args.cluster:
        groups = synthetic(base, max(1, args.cluster // 4), args.noise, rng)
        candidates = synthetic(groups, args.cluster, args.near_noise, rng)
        new_s, new_labels = timed(lambda: rmsd_clusters(candidates, args.min_rmsd, True, args.memory_mb), args.repeats)
        new_mb = peak_mb(lambda: rmsd_clusters(candidates, args.min_rmsd, True, args.memory_mb))
        result = f"{len(np.unique(new_labels))} clusters"
        if args.no_old:
            rows.append((f"cluster {args.cluster} candidates", None, None, None, new_s, new_mb, None, result))
        else:
            old_s, old_labels = timed(lambda: old_clusters(candidates, args.min_rmsd), args.repeats)
            old_mb = peak_mb(lambda: old_clusters(candidates, args.min_rmsd))
            rows.append((f"cluster {args.cluster} candidates", old_s, f"{old_mb:.0f}", old_mb, new_s, new_mb,
                         same_partition(old_labels, new_labels), result))

    print()
    print("| case | old wall s | old CPU s | old peak MB | new wall s | new CPU s | new peak MB | CPU time old/new "
          "| memory old/new | same answer | result |")
    print("| ---- | ---------- | --------- | ----------- | ---------- | --------- | ----------- | ---------------- "
          "| -------------- | ----------- | ------ |")
    for label, old_s, old_memory, old_mb, new_s, new_mb, same, result in rows:
        if old_s is None:
            old = "| - | - | - "
            ratios = "| - | - | - "
        else:
            old = f"| {old_s[0]:.3g} | {old_s[1]:.3g} | {old_memory} "
            ratios = f"| {old_s[1] / new_s[1]:.0f}x | {old_mb / new_mb:.0f}x | {'yes' if same else 'NO'} "
        print(f"| {label} {old}| {new_s[0]:.3g} | {new_s[1]:.3g} | {new_mb:.3g} {ratios}| {result} |")

if __name__ == "__main__":
    main()
