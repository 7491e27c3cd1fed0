"""A member-stacked, E(3)-equivariant message-passing potential (PaiNN-like).

Each atom carries scalar features ``s [F]`` and vector features ``v [3, F]``. Messages along a
pair i <- j mix the neighbour's features with a radial filter of ``r_ij`` and with the unit
vector ``u_ij``, so one layer already sees bond angles (through the norms and dot products of
the vector features) and torsions follow from the next; an invariant SchNet sees angles only
through many-body sums of distances, which is what limited the project's first members
(Schuett, Unke & Gastegger, ICML 2021, "Equivariant message passing for the prediction of
tensorial properties and molecular spectra").

All M committee members live in one module: every weight has a leading member axis, one forward
pass over positions ``[B, M, N, 3]`` returns energies ``[B, M]``, and since each member reads
its own copy of the positions one backward pass gives every member's forces.

Filters are linear in a Bessel basis, ``W_f(r_ij) = sum_k g_k(r_ij) w_kf`` (as in PaiNN), so a
message sum factorises: ``sum_j W_f(r_ij) y_jf = sum_(j,k) g_k(r_ij) (w_kf y_jf)``, one batched
matrix product with inner size N*K over a pair tensor built once per call. Pairs come in two
forms that give the same energies:

- ``neighbor_list="all_pairs"``: that dense pair tensor over every pair of atoms (pairs beyond
  the cutoff get a zero envelope). Fast for small molecules, memory ``B*M*N^2*K``, static shapes
  (what CUDA graphs need).
- ``neighbor_list="cutoff"``: an explicit list of the pairs closer than the cutoff, rebuilt on
  every call, messages gathered and summed per pair. Memory grows with the number of
  neighbours, not with N^2: for molecules of hundreds of atoms.
- ``"auto"`` (default): ``all_pairs`` up to ``max_all_pairs_atoms`` atoms, else ``cutoff``.

Activations are SiLU, vector norms carry a small epsilon and the cutoff envelope has zero value,
slope and curvature at the cutoff, so energies are smooth to second order (attacks
differentiate forces).
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor, nn

from ._layers import register_molecule, smooth_cutoff, stacked_linear, stacked_weight

__all__ = ["StackedPaiNN"]

NEIGHBOR_LISTS = ("auto", "all_pairs", "cutoff")


def _linear_nobias(x: Tensor, weight: Tensor) -> Tensor:
    return torch.matmul(x, weight.unsqueeze(0))


class _Block(nn.Module):
    """One PaiNN message + update block with member-stacked weights."""

    def __init__(self, generator: torch.Generator, m: int, n_rbf: int, f: int, aggregation_scale: float):
        super().__init__()
        self.aggregation_scale = aggregation_scale
        self.n_features = f
        # message: phi(s_j) [3F] times a radial filter [3F] -> (scalar, vector-gate, direction)
        self.phi_w1 = stacked_weight(generator, m, f, f)
        self.phi_b1 = nn.Parameter(torch.zeros(m, f))
        self.phi_w2 = stacked_weight(generator, m, f, 3 * f)
        self.phi_b2 = nn.Parameter(torch.zeros(m, 3 * f))
        self.filter_w = stacked_weight(generator, m, n_rbf, 3 * f)
        # update: channel mixing of the vectors, gated by an MLP of (s, |V v|)
        self.u_w = stacked_weight(generator, m, f, f)
        self.v_w = stacked_weight(generator, m, f, f)
        self.mlp_w1 = stacked_weight(generator, m, 2 * f, f)
        self.mlp_b1 = nn.Parameter(torch.zeros(m, f))
        self.mlp_w2 = stacked_weight(generator, m, f, 3 * f, gain=0.5)
        self.mlp_b2 = nn.Parameter(torch.zeros(m, 3 * f))

    def phi(self, s: Tensor) -> Tensor:
        return stacked_linear(nn.functional.silu(stacked_linear(s, self.phi_w1, self.phi_b1)), self.phi_w2, self.phi_b2)

    def dense_message(self, s: Tensor, v: Tensor, basis: Tensor, unit_basis: Tensor, first: bool) -> Tuple[Tensor, Tensor]:
        """Messages over all pairs: ``basis [B*M, N, N*K]``, ``unit_basis [B*M, 3N, N*K]``."""
        b, m, n, f = s.shape
        k = self.filter_w.shape[1]
        phi = self.phi(s)  # [B, M, N, 3F]
        w = self.filter_w[None, :, None, :, :]  # [1, M, 1, K, 3F]
        w_s, w_vv, w_vs = w[..., :f], w[..., f : 2 * f], w[..., 2 * f :]
        # (j, k) rows of y: w_kf * phi_jf (* v_jaf); summed against g_k(r_ij) by one bmm.
        y_s = (phi[..., :f].unsqueeze(3) * w_s).reshape(b * m, n * k, f)
        y_vs = (phi[..., 2 * f :].unsqueeze(3) * w_vs).reshape(b * m, n * k, f)
        ds = torch.bmm(basis, y_s).reshape(b, m, n, f)
        dv = torch.bmm(unit_basis, y_vs).reshape(b, m, 3, n, f).transpose(2, 3)  # [B, M, N, 3, F]
        if not first:  # the vector features start at zero: the first layer has no v_j term
            gated = phi[..., f : 2 * f].unsqueeze(3) * v  # [B, M, N, 3, F]
            y_vv = (gated.unsqueeze(3) * w_vv.unsqueeze(4)).reshape(b * m, n * k, 3 * f)
            dv = dv + torch.bmm(basis, y_vv).reshape(b, m, n, 3, f)
        return s + ds * self.aggregation_scale, v + dv * self.aggregation_scale

    def edge_message(self, s: Tensor, v: Tensor, rbf: Tensor, unit: Tensor, src: Tensor, dst: Tensor,
                     first: bool) -> Tuple[Tensor, Tensor]:
        """Messages along an explicit pair list over the flattened ``[M, B*N]`` atoms."""
        b, m, n, f = s.shape
        phi = self.phi(s).transpose(0, 1).reshape(m, b * n, 3 * f)
        filt = torch.bmm(rbf, self.filter_w)  # [M, E, 3F]
        x = phi.index_select(1, src) * filt
        ds_e = x[..., :f]
        dv_e = unit.unsqueeze(-1) * x[..., 2 * f :].unsqueeze(2)  # [M, E, 3, F]
        if not first:
            v_flat = v.transpose(0, 1).reshape(m, b * n, 3, f)
            dv_e = dv_e + v_flat.index_select(1, src) * x[..., f : 2 * f].unsqueeze(2)
        ds = torch.zeros(m, b * n, f, dtype=s.dtype, device=s.device).index_add(1, dst, ds_e)
        dv = torch.zeros(m, b * n, 3, f, dtype=s.dtype, device=s.device).index_add(1, dst, dv_e)
        ds = ds.reshape(m, b, n, f).transpose(0, 1)
        dv = dv.reshape(m, b, n, 3, f).transpose(0, 1)
        return s + ds * self.aggregation_scale, v + dv * self.aggregation_scale

    def update(self, s: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
        b, m, n, f = s.shape
        flat = v.reshape(b, m, n * 3, f)
        uv = _linear_nobias(flat, self.u_w).reshape(b, m, n, 3, f)
        vv = _linear_nobias(flat, self.v_w).reshape(b, m, n, 3, f)
        # The epsilon keeps the norm twice differentiable where a vector channel is zero.
        vv_norm = (vv.pow(2).sum(3) + 1e-8).sqrt()
        hidden = nn.functional.silu(stacked_linear(torch.cat([s, vv_norm], -1), self.mlp_w1, self.mlp_b1))
        a = stacked_linear(hidden, self.mlp_w2, self.mlp_b2)
        a_vv, a_sv, a_ss = a[..., :f], a[..., f : 2 * f], a[..., 2 * f :]
        return s + (uv * vv).sum(3) * a_sv + a_ss, v + uv * a_vv.unsqueeze(3)


class StackedPaiNN(nn.Module):
    """M PaiNN-like equivariant energy models evaluated in one pass.

    Parameters
    ----------
    atomic_numbers : sequence of int
        The molecule's atoms, in order. The model is tied to this atom list.
    n_members : int
        Committee size M.
    n_features : int
        Scalar and vector channels per atom.
    n_rbf : int
        Number of radial (Bessel) basis functions of the filters.
    n_interactions : int
        Message + update blocks.
    cutoff : float
        Interaction cutoff in nm.
    neighbor_list : {"auto", "all_pairs", "cutoff"}
        How pairs are found (module docstring).
    max_all_pairs_atoms : int
        Largest molecule for which ``"auto"`` uses the dense all-pairs path.
    avg_neighbors : float
        Typical number of neighbours inside the cutoff; sums over neighbours are divided by its
        square root.
    seed : int
        Seed of the weight initialisation (members differ because they draw different numbers).
    """

    def __init__(
        self,
        atomic_numbers,
        n_members: int = 5,
        n_features: int = 32,
        n_rbf: int = 8,
        n_interactions: int = 2,
        cutoff: float = 0.5,
        neighbor_list: str = "auto",
        max_all_pairs_atoms: int = 64,
        avg_neighbors: float = 16.0,
        seed: int = 0,
    ):
        super().__init__()
        if neighbor_list not in NEIGHBOR_LISTS:
            raise ValueError(f"neighbor_list must be one of {NEIGHBOR_LISTS}, got {neighbor_list!r}")
        n = len(list(atomic_numbers))
        if n < 2:
            raise ValueError("StackedPaiNN needs at least two atoms; use StackedMLP for one-particle toys")
        if not cutoff > 0:
            raise ValueError(f"cutoff must be a positive length in nm, got {cutoff}")
        self.n_members = int(n_members)
        self.n_atoms = n
        self.cutoff = float(cutoff)
        self.hyperparameters = dict(
            n_members=int(n_members), n_features=int(n_features), n_rbf=int(n_rbf),
            n_interactions=int(n_interactions), cutoff=float(cutoff), neighbor_list=str(neighbor_list),
            max_all_pairs_atoms=int(max_all_pairs_atoms), avg_neighbors=float(avg_neighbors), seed=int(seed),
        )
        self.use_all_pairs = neighbor_list == "all_pairs" or (neighbor_list == "auto" and n <= max_all_pairs_atoms)
        n_species = register_molecule(self, atomic_numbers)
        self.register_buffer("bessel_freq", torch.arange(1, n_rbf + 1, dtype=torch.float32) * math.pi / cutoff)

        g = torch.Generator().manual_seed(int(seed))
        m, f = self.n_members, int(n_features)
        self.embedding = nn.Parameter(torch.randn(m, n_species, f, generator=g))
        # Sums over neighbours are divided by sqrt(typical neighbour count) so that features
        # keep unit scale through the layers at initialisation (the update is quadratic in the
        # vector features: unscaled sums grow without bound layer after layer).
        scale = 1.0 / math.sqrt(float(avg_neighbors))
        self.blocks = nn.ModuleList([_Block(g, m, int(n_rbf), f, scale) for _ in range(n_interactions)])
        self.readout_w1 = stacked_weight(g, m, f, f // 2)
        self.readout_b1 = nn.Parameter(torch.zeros(m, f // 2))
        self.readout_w2 = stacked_weight(g, m, f // 2, 1)
        self.readout_b2 = nn.Parameter(torch.zeros(m, 1))

    def _radial(self, r: Tensor, inside: Tensor) -> Tensor:
        """Bessel basis ``sin(n pi x) / (pi x)``, x = r / cutoff, times the smooth envelope.

        Bounded by about 1 / (pi x): O(1) at bond lengths whatever the length unit.
        """
        x = r / self.cutoff
        envelope = smooth_cutoff(x, inside)
        freq = self.bessel_freq.to(r.dtype)
        return torch.sin(r.unsqueeze(-1) * freq) / (math.pi * x).unsqueeze(-1) * envelope.unsqueeze(-1)

    def _cutoff_pairs(self, pos: Tensor, b: int) -> Tuple[Tensor, Tensor]:
        """(dst, src) of the pairs closer than the cutoff, over the B*N atoms of ``pos [M, B*N, 3]``."""
        n = self.n_atoms
        # A pair is kept if it is inside the cutoff for any member (members normally share
        # positions; the union keeps every member's energy exact if they do not). Pairs are
        # selected, not differentiated: the envelope makes the energy smooth at the cutoff.
        per_molecule = pos.detach().reshape(pos.shape[0], b, n, 3)
        d2 = (per_molecule.unsqueeze(2) - per_molecule.unsqueeze(3)).pow(2).sum(-1)  # [M, B, N, N]
        close = (d2 < self.cutoff * self.cutoff).any(0)
        close = close & ~torch.eye(n, dtype=torch.bool, device=pos.device).unsqueeze(0)
        idx = close.nonzero()
        return idx[:, 0] * n + idx[:, 1], idx[:, 0] * n + idx[:, 2]

    def forward(self, positions: Tensor) -> Tensor:
        """Energies ``[B, M]`` in kJ/mol for per-member positions ``[B, M, N, 3]`` in nm."""
        return self.energies_from_features(self.atom_features(positions))

    @torch.jit.export
    def energies_from_features(self, s: Tensor) -> Tensor:
        """Energies ``[B, M]`` (kJ/mol) from the last layer's scalar features ``[B, M, N, F]``."""
        atomic = stacked_linear(nn.functional.silu(stacked_linear(s, self.readout_w1, self.readout_b1)), self.readout_w2, self.readout_b2)
        return self.energy_scale * atomic.sum(dim=(2, 3)) + self.energy_shift

    @torch.jit.export
    def atom_features(self, positions: Tensor) -> Tensor:
        """The learned per-atom scalar features ``[B, M, N, F]`` after the last interaction block.

        Invariant under rotations and translations; what the energy readout and the Gaussian
        mixture uncertainty (:mod:`openmm_adv.models.gmm`) read.
        """
        b, m, n = positions.shape[0], positions.shape[1], positions.shape[2]
        f = self.embedding.shape[-1]
        s = self.embedding.index_select(1, self.species_index).to(positions.dtype).unsqueeze(0).expand(b, -1, -1, -1)
        v = torch.zeros(b, m, n, 3, f, dtype=positions.dtype, device=positions.device)
        if self.use_all_pairs:
            vectors = positions.unsqueeze(2) - positions.unsqueeze(3)  # [B, M, N(i), N(j), 3]: r_j - r_i
            # The identity keeps sqrt and the division away from 0 on the diagonal.
            r = (vectors.pow(2).sum(-1) + self.identity).sqrt()
            inside = (r < self.cutoff) & (self.identity == 0)
            basis = self._radial(r, inside)  # [B, M, N, N, K]
            k = basis.shape[-1]
            unit = vectors / r.unsqueeze(-1)
            unit_basis = (unit.permute(0, 1, 4, 2, 3).unsqueeze(-1) * basis.unsqueeze(2)).reshape(b * m, 3 * n, n * k)
            basis = basis.reshape(b * m, n, n * k)
            for i, block in enumerate(self.blocks):
                s, v = block.dense_message(s, v, basis, unit_basis, i == 0)
                s, v = block.update(s, v)
        else:
            pos = positions.transpose(0, 1).reshape(m, b * n, 3)
            dst, src = self._cutoff_pairs(pos, b)
            vectors = pos.index_select(1, src) - pos.index_select(1, dst)  # [M, E, 3]: r_j - r_i
            r = vectors.pow(2).sum(-1).sqrt()  # no self pairs: r > 0
            rbf = self._radial(r, r < self.cutoff)  # [M, E, K]
            unit = vectors / r.unsqueeze(-1)
            for i, block in enumerate(self.blocks):
                s, v = block.edge_message(s, v, rbf, unit, src, dst, i == 0)
                s, v = block.update(s, v)
        return s
