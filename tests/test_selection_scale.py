"""RMSD de-duplication and clustering at scale: the same answers as all pairs, in bounded memory.

The reference is the all-pairs algorithm the selector used before (the full RMSD matrix, then
connected components of ``rmsd < min_rmsd``), kept here verbatim in ``all_pairs_selection``.
"""

import tracemalloc

import h5py
import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from openmm_adv.data import Dataset
from openmm_adv.resources import default_dataset_path
from openmm_adv.rmsd_search import _surely_apart, pair_rmsd, rmsd_clusters, within_rmsd_of_any
from openmm_adv.samplers import Candidates
from openmm_adv.selection import Selector, aligned_rmsd, plain_rmsd


def rotation(rng, proper=True):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    return q if proper else -q


def make(positions, uncertainty):
    k = len(positions)
    return Candidates(np.asarray(positions, float), np.zeros(k), np.asarray(uncertainty, float), "force_variance",
                      "test", np.arange(k))


def all_pairs_selection(positions, uncertainty, dataset, min_rmsd, align):
    """Steps 4 and 5 of the selector as they were: indices kept, most uncertain first."""
    rmsd = aligned_rmsd if align else plain_rmsd
    keep = np.arange(len(positions))
    if dataset is not None and len(dataset) and len(keep) and min_rmsd > 0:
        keep = keep[rmsd(positions[keep], dataset).min(axis=1) >= min_rmsd]
    if len(keep) > 1 and min_rmsd > 0:
        _, labels = connected_components(rmsd(positions[keep], positions[keep]) < min_rmsd, directed=False)
        representative = np.zeros(len(keep), dtype=bool)
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            representative[members[np.argmax(uncertainty[keep][members])]] = True
        keep = keep[representative]
    return keep[np.argsort(-uncertainty[keep], kind="stable")]


def selected(positions, uncertainty, dataset, min_rmsd, align=None, **options):
    out = Selector(min_rmsd=min_rmsd, max_selected=None, align=align, **options).select(
        make(positions, uncertainty), dataset_positions=dataset)
    return out.seed_index


def same_partition(a, b):
    return np.array_equal(a[:, None] == a[None], b[:, None] == b[None])


@pytest.fixture(scope="module")
def shipped_frames():
    return Dataset.load(default_dataset_path()).positions


def hard_set(base, rng, n, noise=0.004):
    """Geometries around ``base`` with the cases that trip bounds up: exact duplicates, rotated
    and translated copies, mirror images, near-duplicates at several distances."""
    pick = base[rng.integers(0, len(base), n)]
    out = pick + noise * rng.normal(size=pick.shape) * rng.uniform(0.1, 3.0, size=(n, 1, 1))
    out[: n // 8] = out[n // 8: 2 * (n // 8)]  # exact duplicates
    out[2 * (n // 8): 3 * (n // 8)] = (out[3 * (n // 8): 4 * (n // 8)] @ rotation(rng).T) + rng.normal(size=3)
    out[4 * (n // 8): 5 * (n // 8)] = out[5 * (n // 8): 6 * (n // 8)] * np.array([1.0, 1.0, -1.0])  # mirrors
    return out


# ------------------------------------------------------------------------------- exact kernels
def test_pair_rmsd_is_the_all_pairs_kabsch(shipped_frames):
    rng = np.random.default_rng(0)
    a = hard_set(shipped_frames, rng, 40)
    b = np.concatenate([a[1:], a[:1]]) @ rotation(rng, proper=False).T  # reflected: Kabsch may not mirror
    assert np.allclose(pair_rmsd(a, b, True), np.diag(aligned_rmsd(a, b)), rtol=1e-9, atol=1e-9)
    assert np.allclose(pair_rmsd(a, b, False), np.diag(plain_rmsd(a, b)), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n_atoms", [3, 4, 22])
def test_overlap_bound_never_rules_out_a_pair_below_the_threshold(n_atoms):
    """Thresholds a hair above each pair's RMSD: the Newton bound must leave every pair to the SVD."""
    rng = np.random.default_rng(n_atoms)
    a = rng.normal(size=(600, n_atoms, 3)) * 0.2
    b = a + rng.normal(size=a.shape) * rng.uniform(1e-4, 0.3, size=(600, 1, 1))
    b[:100] = a[:100] * np.array([1.0, 1.0, -1.0])  # mirror images: the reflection case
    b[100:150] = a[100:150]  # identical
    a[150:200, :, 2] = 0.0  # planar: degenerate singular values
    b[150:200] = a[150:200] @ rotation(rng).T
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    exact = pair_rmsd(a, b, True)
    for i in range(len(a)):
        assert not _surely_apart(a[i:i + 1], b[i:i + 1], exact[i] * (1 + 1e-9) + 1e-12)[0], i
    apart = _surely_apart(a, b, 0.05)
    assert not (apart & (exact < 0.05)).any()
    assert apart[exact > 0.06].mean() > 0.99  # and it does settle clear pairs


# ------------------------------------------------------------------ searches against all pairs
@pytest.mark.parametrize("n_atoms, align", [(22, True), (3, True), (2, True), (1, True), (2, False), (22, False)])
@pytest.mark.parametrize("memory_mb", [128.0, 0.2])
def test_near_the_data_is_the_all_pairs_answer(n_atoms, align, memory_mb):
    rng = np.random.default_rng(n_atoms)
    base = rng.normal(size=(30, n_atoms, 3)) * 0.15
    frames = hard_set(base, rng, 300, noise=0.01)
    queries = np.concatenate([hard_set(base, rng, 80, noise=0.01), frames[:10], frames[10:20] * [1, 1, -1]])
    matrix = (aligned_rmsd if align else plain_rmsd)(queries, frames)
    nearest = np.unique(matrix.min(axis=1))
    # Thresholds midway between neighbouring nearest distances (about 10 %, 50 % and 90 % of the
    # queries near), in gaps wider than rounding: where two distances agree to 1e-13 (pairs
    # that are copies of each other up to noise) their midpoint is a tie that the last bits of
    # the SVD decide, and those change with the numpy build.
    wide = np.flatnonzero(np.diff(nearest) > 1e-9 * nearest[1:])
    ranks = [wide[np.argmin(np.abs(wide - f * (len(nearest) - 1)))] for f in (0.1, 0.5, 0.9)] if len(wide) else []
    ranks = np.asarray(ranks, dtype=int)
    for threshold in [*(nearest[ranks] + nearest[ranks + 1]) / 2, 1e-3]:
        if not threshold > 0:
            continue
        expected = matrix.min(axis=1) < threshold
        got = within_rmsd_of_any(queries, frames, threshold, align, memory_mb=memory_mb)
        assert np.array_equal(got, expected), (threshold, np.flatnonzero(got != expected))


@pytest.mark.parametrize("n_atoms, align", [(22, True), (3, True), (2, False)])
@pytest.mark.parametrize("memory_mb", [128.0, 0.2])
def test_clusters_are_the_all_pairs_components(n_atoms, align, memory_mb):
    rng = np.random.default_rng(10 + n_atoms)
    base = rng.normal(size=(20, n_atoms, 3)) * 0.15
    positions = hard_set(base, rng, 400, noise=0.01)
    matrix = (aligned_rmsd if align else plain_rmsd)(positions, positions)
    for threshold in [0.005, 0.01, 0.02, np.quantile(matrix, 0.05)]:
        _, expected = connected_components(matrix < threshold, directed=False)
        got = rmsd_clusters(positions, threshold, align, memory_mb=memory_mb)
        assert same_partition(got, expected), threshold
        assert all(got[got == label].min() == label for label in np.unique(got))  # labels: cluster minima


def test_edge_cases_of_the_searches():
    x = np.random.default_rng(0).normal(size=(5, 4, 3))
    empty = np.zeros((0, 4, 3))
    assert within_rmsd_of_any(x, empty, 0.1, True).tolist() == [False] * 5
    assert within_rmsd_of_any(empty, x, 0.1, True).shape == (0,)
    assert within_rmsd_of_any(x, x, 0.0, True).tolist() == [False] * 5  # nothing is below 0
    assert within_rmsd_of_any(x[:1], x, 1e-6, True).tolist() == [True]  # itself
    assert rmsd_clusters(x[:1], 0.1, True).tolist() == [0]
    assert rmsd_clusters(np.repeat(x[:1], 4, axis=0), 1e-6, True).tolist() == [0, 0, 0, 0]  # identical
    # Non-finite geometries: a query cannot be compared (counted near, as the NaN minimum was);
    # a frame is near to nothing; in clusters it stands alone.
    bad = x.copy()
    bad[1, 0, 0] = np.nan
    assert within_rmsd_of_any(bad, x[[2]], 1e-6, True).tolist() == [False, True, True, False, False]
    assert within_rmsd_of_any(x[[1]], bad, 1e-6, True).tolist() == [False]
    assert np.isnan(bad[1, 0, 0]) and np.isfinite(np.delete(bad, 1, axis=0)).all()  # inputs left as they were
    assert rmsd_clusters(np.concatenate([bad, bad]), 1e-6, True).tolist() == [0, 1, 2, 3, 4, 0, 6, 2, 3, 4]


# ------------------------------------------------------------------ the selector, old and new
@pytest.mark.parametrize("min_rmsd", [0.005, 0.01, 0.03])
def test_selector_selects_as_before_on_shipped_ala2_data(shipped_frames, min_rmsd):
    rng = np.random.default_rng(7)
    dataset = shipped_frames[::2]
    candidates = np.concatenate([hard_set(shipped_frames, rng, 160, noise=0.005),
                                 dataset[:5], dataset[5:10] * [1, 1, -1], dataset[10:15] @ rotation(rng).T])
    uncertainty = rng.uniform(size=len(candidates)).round(1)  # ties: the earliest of the most uncertain
    expected = all_pairs_selection(candidates, uncertainty, dataset, min_rmsd, align=True)
    got = selected(candidates, uncertainty, dataset, min_rmsd)
    assert got.tolist() == expected.tolist()
    assert 0 < len(expected) < len(candidates)  # the case is not trivial


def test_selector_edge_cases_as_before(shipped_frames):
    one = shipped_frames[:1] + 0.02
    assert selected(one, [1.0], shipped_frames[:0], 0.01).tolist() == [0]  # empty dataset
    assert selected(one, [1.0], None, 0.01).tolist() == [0]
    assert selected(shipped_frames[:0], [], shipped_frames, 0.01).tolist() == []
    twins = np.repeat(shipped_frames[:1], 3, axis=0)
    assert selected(twins, [0.5, 2.0, 2.0], None, 0.01).tolist() == [1]  # identical: one, the earliest top
    mirror = shipped_frames[:1] * [1, 1, -1]
    assert selected(mirror, [1.0], shipped_frames[:1], 0.01).tolist() == [0]  # a mirror image is new
    assert selected(shipped_frames[:1] @ rotation(np.random.default_rng(1)).T + 3.0, [1.0],
                    shipped_frames[:1], 0.01).tolist() == []  # a rotated copy is not
    toy = np.random.default_rng(2).normal(size=(50, 1, 3)) * 0.02  # one particle: plain RMSD
    u = np.arange(50.0)
    assert selected(toy, u, toy[:5], 0.01).tolist() == all_pairs_selection(toy, u, toy[:5], 0.01, False).tolist()


def test_selector_settings_are_checked():
    with pytest.raises(ValueError, match="min_rmsd"):
        Selector(min_rmsd=float("nan"))
    with pytest.raises(ValueError, match="memory_mb"):
        Selector(memory_mb=0)


def test_dataset_positions_read_from_hdf5_in_chunks(tmp_path, shipped_frames):
    rng = np.random.default_rng(3)
    frames = np.concatenate([shipped_frames] * 2) + 0.003 * rng.normal(size=(2 * len(shipped_frames), 22, 3))
    with h5py.File(tmp_path / "frames.h5", "w") as f:
        f["positions"] = frames

    class Reads:
        """An h5py dataset that remembers how many frames each read asked for."""

        def __init__(self, dataset):
            self.dataset, self.largest = dataset, 0

        def __len__(self):
            return len(self.dataset)

        def __getitem__(self, index):
            out = self.dataset[index]
            self.largest = max(self.largest, len(out))
            return out

    candidates = hard_set(shipped_frames, rng, 80, noise=0.005)
    uncertainty = rng.uniform(size=len(candidates))
    expected = all_pairs_selection(candidates, uncertainty, frames, 0.01, align=True)
    with h5py.File(tmp_path / "frames.h5", "r") as f:
        reads = Reads(f["positions"])
        got = selected(candidates, uncertainty, reads, 0.01, memory_mb=0.5)
    assert got.tolist() == expected.tolist()
    assert reads.largest < len(frames) / 4  # never the whole dataset at once


def test_working_memory_stays_bounded_with_many_frames(shipped_frames):
    """200 candidates against 20,000 frames: the all-pairs code held 4 million 3x3 matrices and
    their SVDs (over 1 GB); the budget here is 64 MB beyond the frames themselves."""
    rng = np.random.default_rng(4)
    frames = shipped_frames[rng.integers(0, len(shipped_frames), 20000)] + 0.01 * rng.normal(size=(20000, 22, 3))
    candidates = np.concatenate([frames[:50] + 0.001 * rng.normal(size=(50, 22, 3)),
                                 shipped_frames[rng.integers(0, len(shipped_frames), 150)] + 0.01 * rng.normal(size=(150, 22, 3))])
    tracemalloc.start()
    try:
        out = selected(candidates, rng.uniform(size=200), frames, 0.01, memory_mb=32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MB"
    assert len(out) > 0 and not np.isin(out, np.arange(50)).any()  # the near-copies are dropped
