"""Finding geometries within an RMSD of each other without comparing every pair.

The answers are exact, the same as those of the all-pairs RMSD matrix (a pair whose RMSD equals
the threshold to the last bit may fall either side, as the two compute it in different orders);
the work and the memory are not all-pairs. Three filters, each a rigorous lower bound of the RMSD, leave few pairs for
the exact RMSD (one SVD per pair, as :func:`openmm_adv.selection.aligned_rmsd` takes):

1. **Descriptor.** Each geometry gets a vector whose Euclidean distance to another's, divided by
   ``sqrt(N)``, is at most their RMSD. Aligned RMSD: the distances of the atoms from their
   centroid; the optimal superposition centres both geometries and rotates about the centroid,
   which keeps each of these distances, so ``|x_i - R y_i| >= | |x_i| - |y_i| |`` atom by atom
   and ``N RMSD**2 >= sum_i (r_i(x) - r_i(y))**2`` (for mirror images too). Plain RMSD: the
   flattened coordinates (the bound is the RMSD itself).
2. **Projection.** Projecting descriptors onto a few orthonormal (principal) directions never
   lengthens their differences. Distances between projections, one matrix product per block of
   pairs (``PROJECTED_DIMS`` multiply-adds a pair), shortlist every pair that can be within the
   threshold; the full descriptor then prunes the shortlist.
3. **Overlap bound.** For the aligned RMSD, ``N RMSD**2 = |x|**2 + |y|**2 - 2 lambda`` where
   ``lambda`` is the largest root of a quartic built from the 3x3 cross-covariance (the
   quaternion characteristic polynomial of Theobald's QCP method; ``lambda`` is the sum of the
   singular values with the smallest one signed by ``det``). Newton's method started above the
   largest root of a polynomial with only real roots comes down to it monotonically, so every
   iterate bounds the RMSD from below and a few vectorised iterations settle most pairs.

Frames are read in chunks (``frames`` may be an ``h5py`` dataset): memory grows with the number
of frames only through the index, ``8 (PROJECTED_DIMS + 3) + 4 N`` bytes per frame (240 for
alanine dipeptide, under half of its positions), and the working arrays stay within about
``memory_mb``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["pair_rmsd", "within_rmsd_of_any", "rmsd_clusters", "DEFAULT_MEMORY_MB", "PROJECTED_DIMS"]

DEFAULT_MEMORY_MB = 32.0  # larger blocks were no faster here (100,000 frames: 0.27 s CPU at 32 MB, 1.5 s at 512)
PROJECTED_DIMS = 16  # the matrix products of filter 2 cost this many multiply-adds per pair
_BASIS_SAMPLE = 4096  # geometries the projection is fitted on; any orthonormal basis is valid
_FLOAT32_ROUNDING = 2.0 ** -23  # relative rounding of the stored full descriptors
_NEWTON_ITERATIONS = 40
_FIRST_PAIRS_PER_GEOMETRY = 16  # the first exact batch of a block: its likeliest pairs
_ROWS_PER_BLOCK = 256


@lru_cache(maxsize=8)
def _averager(n_atoms: int) -> np.ndarray:
    return np.tile(np.eye(3), (n_atoms, 1)) / n_atoms


# numpy reduces over the small middle and last axes of [P, N, 3] slowly; products go through BLAS.
def _centred(x: np.ndarray) -> np.ndarray:
    return x - (x.reshape(len(x), 3 * x.shape[1]) @ _averager(x.shape[1]))[:, None, :]


def _squared_norms(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), int(np.prod(x.shape[1:])))
    return np.einsum("pi,pi->p", flat, flat)


def _cross_covariance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a.transpose(0, 2, 1) @ b


def pair_rmsd(a: np.ndarray, b: np.ndarray, align: bool) -> np.ndarray:
    """RMSD between ``a[p]`` and ``b[p]`` for each pair ``p`` (``[P, N, 3]`` each) -> ``[P]``.

    With ``align`` the geometries are superposed first (Kabsch, proper rotations only), as
    :func:`openmm_adv.selection.aligned_rmsd` does for all pairs.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = a.shape[1]
    if not align:
        return np.sqrt(_squared_norms(a - b) / n)
    a, b = _centred(a), _centred(b)
    h = _cross_covariance(a, b)
    s = np.linalg.svd(h, compute_uv=False)
    # det(U V^T) has the sign of det(H): where the best fit is a reflection, the smallest
    # singular value counts against the overlap (a proper rotation cannot reach it).
    s[:, -1] *= np.sign(np.linalg.det(h))
    sq = _squared_norms(a) + _squared_norms(b) - 2.0 * s.sum(axis=-1)
    return np.sqrt(np.clip(sq, 0.0, None) / n)


def _surely_apart(a: np.ndarray, b: np.ndarray, threshold: float) -> np.ndarray:
    """Pairs of centred geometries whose aligned RMSD is certainly not below ``threshold``
    (QCP's quartic, filter 3)."""
    n = a.shape[1]
    g = _squared_norms(a) + _squared_norms(b)
    h00, h01, h02, h10, h11, h12, h20, h21, h22 = _cross_covariance(a, b).reshape(len(a), 9).T.copy()
    # cofactors of H: det(H) and the second invariant of H^T H (sum of squared 2x2 minors)
    c00, c01, c02 = h11 * h22 - h12 * h21, h12 * h20 - h10 * h22, h10 * h21 - h11 * h20
    c10, c11, c12 = h21 * h02 - h22 * h01, h22 * h00 - h20 * h02, h20 * h01 - h21 * h00
    c20, c21, c22 = h01 * h12 - h02 * h11, h02 * h10 - h00 * h12, h00 * h11 - h01 * h10
    p1 = h00**2 + h01**2 + h02**2 + h10**2 + h11**2 + h12**2 + h20**2 + h21**2 + h22**2
    det = h00 * c00 + h01 * c01 + h02 * c02
    p2 = c00**2 + c01**2 + c02**2 + c10**2 + c11**2 + c12**2 + c20**2 + c21**2 + c22**2
    # P(l) = l^4 - 2 p1 l^2 - 8 det l + p1^2 - 4 p2, whose roots are s1 +- s2 +- s3 with an
    # even number of minus signs after s3 takes the sign of det(H)
    c2, c1, c0 = -2.0 * p1, -8.0 * det, p1**2 - 4.0 * p2
    # Both starts lie above the largest root: sum(s) <= sqrt(3) |H|_F and sum(s) <= |x| |y| <= g / 2.
    lam = np.minimum(0.5 * g, np.sqrt(3.0 * p1))
    # Rounding of the quartic near its root moves lambda by far less than this.
    target = n * threshold**2 + 1e-6 * g
    apart = np.zeros(len(a), dtype=bool)
    active = np.arange(len(a))  # the pairs still undecided; the arrays below hold only theirs
    for _ in range(_NEWTON_ITERATIONS):
        settled = g - 2.0 * lam > target
        apart[active[settled]] = True
        lam2 = lam * lam
        value = (lam2 + c2) * lam2 + c1 * lam + c0
        slope = (4.0 * lam2 + 2.0 * c2) * lam + c1
        step = value / np.where(slope > 0, slope, 1.0)
        # Converged (or lost to rounding) without clearing the target: the SVD decides.
        going = ~settled & (slope > 0) & (step > 1e-13 * np.abs(lam))
        active, lam, step = active[going], lam[going], step[going]
        c2, c1, c0, g, target = c2[going], c1[going], c0[going], g[going], target[going]
        if not len(active):
            break
        lam = lam - step
    return apart


def _prepared(positions: np.ndarray, align: bool) -> np.ndarray:
    """What :func:`_below` compares: centred geometries for the aligned RMSD."""
    return _centred(positions) if align else positions


def _below(a: np.ndarray, b: np.ndarray, threshold: float, align: bool) -> np.ndarray:
    """``pair_rmsd(a, b, align) < threshold`` for :func:`_prepared` pairs, with the SVD only
    where filter 3 cannot decide."""
    if not align:
        return pair_rmsd(a, b, False) < threshold
    below = np.zeros(len(a), dtype=bool)
    unsure = np.flatnonzero(~_surely_apart(a, b, threshold))
    below[unsure] = pair_rmsd(a[unsure], b[unsure], True) < threshold
    return below


def _descriptor(positions: np.ndarray, align: bool) -> np.ndarray:
    """``[B, D]`` whose row distances over ``sqrt(N)`` bound the RMSD from below (filter 1)."""
    if align:
        centred = _centred(positions)
        return np.sqrt(np.einsum("pnj,pnj->pn", centred, centred))
    return positions.reshape(len(positions), 3 * positions.shape[1])


def _frames_per_chunk(n_atoms: int, memory_mb: float) -> int:
    # a chunk of positions and its few same-sized temporaries
    return max(1, int(memory_mb * 2**20 / (n_atoms * 3 * 8 * 4)))


def _pairs_per_batch(n_atoms: int, memory_mb: float) -> int:
    # two gathered geometries, their centred copies and the per-pair scalars of filter 3
    return max(1, int(memory_mb * 2**20 / (n_atoms * 3 * 8 * 6 + 800)))


def _growing_slices(total: int, first: int, largest: int):
    """Consecutive slices of ``range(total)``, doubling from ``first`` up to ``largest``: the
    likeliest pairs come first, and a small first batch lets what they settle skip the rest."""
    start, size = 0, max(1, min(first, largest))
    while start < total:
        yield slice(start, start + size)
        start, size = start + size, min(2 * size, largest)


def _chunks(frames, size: int):
    for start in range(0, len(frames), size):
        yield start, np.asarray(frames[start:start + size], dtype=np.float64)


def _gather(frames, index: np.ndarray) -> np.ndarray:
    if isinstance(frames, np.ndarray):
        return np.asarray(frames[index], dtype=np.float64)
    # h5py and other array-likes: increasing unique indices, one read
    unique, inverse = np.unique(index, return_inverse=True)
    return np.asarray(frames[unique.tolist()], dtype=np.float64)[inverse]


def _finite_rows(positions: np.ndarray) -> np.ndarray:
    return np.isfinite(positions).all(axis=(1, 2))


def _sample(frames, count: int) -> np.ndarray:
    """At most ``count`` frames evenly spread over ``frames``, the finite ones, in one read."""
    if len(frames) <= count:
        sample = np.asarray(frames[:], dtype=np.float64)
    else:
        sample = np.asarray(frames[:: -(-len(frames) // count)], dtype=np.float64)
    return sample[_finite_rows(sample)]


class _Projection:
    """The principal directions of a sample's descriptors (filter 2) and the search radius."""

    def __init__(self, sample: np.ndarray, align: bool):
        self.align, self.n_atoms = align, sample.shape[1]
        d = _descriptor(sample, align)
        self.size = d.shape[1]
        self.centre = d.mean(axis=0)
        self.basis = np.linalg.svd(d - self.centre, full_matrices=False)[2][:PROJECTED_DIMS]

    def describe(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full and projected descriptors of ``positions``."""
        d = _descriptor(positions, self.align)
        return d, (d - self.centre) @ self.basis.T

    def radius(self, threshold: float, largest_norm: float) -> float:
        """The descriptor distance up to which a pair may be closer than ``threshold``.

        Widened past ``threshold * sqrt(N)`` by more than the rounding of the exact RMSD and
        of the float32 descriptors can reach, so no pair that the exact RMSD puts below the
        threshold is lost. ``largest_norm``: the largest descriptor norm (the norm of the
        centred geometry for the aligned RMSD, of the geometry for the plain one).
        """
        n = self.n_atoms
        rmsd_rounding = np.sqrt(64 * np.finfo(float).eps * 2 * largest_norm**2 / n)
        return float(np.sqrt(n) * (threshold * (1 + 1e-9) + rmsd_rounding) + 4 * _FLOAT32_ROUNDING * largest_norm)


def _index_frames(projection: _Projection, frames, memory_mb: float):
    """Read chunk by chunk: the rows of the finite frames, their full (float32) descriptors, their
    projected ones (:func:`_with_norms`, right side), and the largest descriptor norm."""
    finite = np.ones(len(frames), dtype=bool)
    full = np.empty((len(frames), projection.size), dtype=np.float32)
    projected = np.empty((len(frames), len(projection.basis) + 2))
    largest = 0.0
    for start, chunk in _chunks(frames, _frames_per_chunk(projection.n_atoms, memory_mb)):
        rows = slice(start, start + len(chunk))
        finite[rows] = _finite_rows(chunk)
        if not finite[rows].all():  # described as zeros, then left out; the chunk may be the caller's array
            chunk = np.where(finite[rows, None, None], chunk, 0.0)
        d, p = projection.describe(chunk)
        full[rows], projected[rows] = d, _with_norms(p, left=False)
        if finite[rows].any():
            largest = max(largest, float(np.linalg.norm(d[finite[rows]], axis=1).max()))
    if finite.all():
        return np.arange(len(frames)), full, projected, largest
    return np.flatnonzero(finite), full[finite], projected[finite], largest


def _with_norms(x: np.ndarray, left: bool) -> np.ndarray:
    """``x`` with two columns more, so that ``left @ right.T`` is ``-|a - b|^2 / 2``
    (``a.b - |a|^2 / 2 - |b|^2 / 2``): distances by one matrix product, no further passes."""
    sq = np.einsum("ij,ij->i", x, x)
    if left:
        return np.column_stack([x, sq, np.ones(len(x))])
    return np.column_stack([x, np.full(len(x), -0.5), -0.5 * sq])


def _projected_pairs(a: np.ndarray, b: np.ndarray, radius: float, memory_mb: float, open_rows=None,
                     later_only: bool = False):
    """Pairs ``(i, j)`` with ``|a[i] - b[j]| <= radius``, block by block (filter 2), for ``a``
    and ``b`` from :func:`_with_norms` (left and right).

    Each block is one matrix product of ``ROWS_PER_BLOCK`` rows of ``a`` and as many rows of ``b``
    as ``memory_mb`` allows; its pairs come nearest first. ``open_rows(rows)`` (optional) says
    which rows still need neighbours, checked before each block; ``later_only`` keeps ``j > i``.
    """
    # the product's cancellation error is a few ulps of the largest squared norms
    largest = a[:, -2].max(initial=0.0) - 2.0 * b[:, -1].min(initial=0.0)
    least = -0.5 * radius**2 - 64 * np.finfo(float).eps * largest
    rows_per_block = min(len(a), _ROWS_PER_BLOCK)
    cols_per_block = max(1, int(memory_mb * 2**20 / (8 * 2 * rows_per_block)))
    for r0 in range(0, len(a), rows_per_block):
        for c0 in range(r0 if later_only else 0, len(b), cols_per_block):
            rows = np.arange(r0, min(r0 + rows_per_block, len(a)))
            if open_rows is not None:
                rows = rows[open_rows(rows)]
                if not len(rows):
                    break
            half_d2 = a[rows] @ b[c0:c0 + cols_per_block].T
            close = half_d2 >= least
            if later_only:
                close &= np.arange(c0, c0 + close.shape[1])[None, :] > rows[:, None]
            i, j = np.nonzero(close)
            order = np.argsort(-half_d2[i, j], kind="stable")
            yield rows[i[order]], c0 + j[order]


def within_rmsd_of_any(queries, frames, threshold: float, align: bool,
                       memory_mb: float = DEFAULT_MEMORY_MB) -> np.ndarray:
    """Which queries have some frame at an RMSD below ``threshold``, ``[K]`` bool.

    The same answer as ``rmsd(queries, frames).min(axis=1) < threshold`` from the all-pairs
    matrix, without building it.

    Parameters
    ----------
    queries : array_like
        ``[K, N, 3]`` geometries.
    frames : array_like
        ``[M, N, 3]``; a numpy array or anything sliced like one (an ``h5py`` dataset is read in
        chunks, never whole).
    threshold : float
        In the positions' length unit.
    align : bool
        Superpose before measuring (Kabsch) or compare the coordinates as they are.
    memory_mb : float
        Budget of the working arrays, beyond the index of ``8 (PROJECTED_DIMS + 3) + 4 N``
        bytes per frame.

    Returns
    -------
    numpy.ndarray
        ``[K]``. A query with non-finite coordinates cannot be compared and counts as near, as
        in the all-pairs code (whose minimum was NaN); a frame with non-finite coordinates is
        near to nothing.
    """
    queries = np.asarray(queries, dtype=np.float64)
    near = ~_finite_rows(queries) if len(frames) else np.zeros(len(queries), dtype=bool)
    query_rows = np.flatnonzero(~near)
    if not len(query_rows) or not len(frames) or not threshold > 0:
        return near
    sample = _sample(frames, min(_BASIS_SAMPLE, _frames_per_chunk(queries.shape[1], memory_mb)))
    projection = _Projection(np.concatenate([queries[query_rows], sample]), align)
    frame_rows, frame_full, frame_projected, largest = _index_frames(projection, frames, memory_mb)
    if not len(frame_rows):
        return near
    query_full, query_projected = projection.describe(queries[query_rows])
    radius = projection.radius(threshold, max(largest, float(np.linalg.norm(query_full, axis=1).max())))
    batch = _pairs_per_batch(queries.shape[1], memory_mb)
    prepared = _prepared(queries, align)
    block = _projected_pairs(_with_norms(query_projected, left=True), frame_projected, radius, memory_mb,
                             open_rows=lambda rows: ~near[query_rows[rows]])
    for q, f in block:
        for part in _growing_slices(len(q), _FIRST_PAIRS_PER_GEOMETRY * _ROWS_PER_BLOCK, batch):
            bq, bf = q[part], f[part]
            still_open = ~near[query_rows[bq]]  # found near earlier in this block: no more work
            bq, bf = bq[still_open], bf[still_open]
            maybe = np.linalg.norm(query_full[bq] - frame_full[bf], axis=1) <= radius
            bq, bf = query_rows[bq[maybe]], frame_rows[bf[maybe]]
            if len(bq):
                near[bq[_below(prepared[bq], _prepared(_gather(frames, bf), align), threshold, align)]] = True
    return near


def _roots(parent: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Union-find roots of ``nodes``; their parents then point straight at them."""
    roots = parent[nodes]
    while True:
        up = parent[roots]
        if np.array_equal(up, roots):
            parent[nodes] = roots
            return roots
        roots = up


def rmsd_clusters(positions, threshold: float, align: bool, memory_mb: float = DEFAULT_MEMORY_MB) -> np.ndarray:
    """Single-linkage clusters of geometries at RMSD ``threshold``: ``[K]`` labels, each the
    smallest index in its cluster.

    Two geometries are linked when their RMSD is below ``threshold``; the clusters are the
    connected components, the same as those of the all-pairs matrix ``rmsd < threshold``, found
    without building it. Pairs already known to share a cluster are not measured. Geometries
    with non-finite coordinates are clusters of their own.
    """
    positions = np.asarray(positions, dtype=np.float64)
    parent = np.arange(len(positions))
    good = np.flatnonzero(_finite_rows(positions))
    if len(good) < 2 or not threshold > 0:
        return parent
    projection = _Projection(_sample(positions[good], _BASIS_SAMPLE), align)
    full, projected = projection.describe(positions[good])
    radius = projection.radius(threshold, float(np.linalg.norm(full, axis=1).max()))
    batch = _pairs_per_batch(positions.shape[1], memory_mb)
    prepared = _prepared(positions, align)
    block = _projected_pairs(_with_norms(projected, left=True), _with_norms(projected, left=False), radius,
                             memory_mb, later_only=True)
    for i, j in block:
        maybe = np.linalg.norm(full[i] - full[j], axis=1) <= radius
        i, j = good[i[maybe]], good[j[maybe]]
        for part in _growing_slices(len(i), _FIRST_PAIRS_PER_GEOMETRY * _ROWS_PER_BLOCK, batch):
            bi, bj = i[part], j[part]
            apart = _roots(parent, bi) != _roots(parent, bj)
            bi, bj = bi[apart], bj[apart]
            if not len(bi):
                continue
            hit = _below(prepared[bi], prepared[bj], threshold, align)
            for x, y in zip(bi[hit].tolist(), bj[hit].tolist()):
                rx, ry = _roots(parent, np.array([x, y]))
                if rx != ry:  # the smaller root wins, so every label is its cluster's smallest index
                    parent[max(rx, ry)] = min(rx, ry)
    return _roots(parent, np.arange(len(positions)))
