"""A bonded prior: harmonic bond and angle terms fitted to the training forces.

Stiff covalent terms dominate the forces of any molecule (an alanine dipeptide bond stretch
carries forces of thousands of kJ/mol/nm, the conformational forces tens), and a network that
must learn them spends its capacity and its training steps there. Fitting them once, by linear
least squares, and letting the members learn the rest is the "prior" of TorchMD-Net and of
coarse-grained NN potentials, and the reason machine-learned force fields are often trained as
corrections to a physical baseline:

    E_prior = sum_bonds k_b / 2 (r_b - r0_b)^2 + sum_angles k_a / 2 (theta_a - theta0_a)^2

Every member shares the prior, so it adds nothing to the committee's disagreement: the
uncertainty is the members' alone. It also keeps bonds from being stretched into regions where
the network alone could invent a deep hole, because its restoring force is always there.

Only bonds and angles are fitted. Torsions decide which conformational basin is favoured and
the training data usually cover one basin, so a torsion prior fitted there would extrapolate
badly; they stay with the network, whose errors the committee can see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["BondedPrior", "BondedTerms", "angles_from_bonds", "atom_types", "find_bonds", "fit_bonded_prior", "load_terms",
           "prior_size"]

MAX_ANGLE_DEGREES = 170.0  # near-linear angles have a singular gradient in theta; left to the network


@dataclass
class BondedTerms:
    """Fitted harmonic terms (nm, rad, kJ/mol)."""

    bonds: np.ndarray  # [n_b, 2]
    bond_k: np.ndarray  # kJ/mol/nm^2
    bond_r0: np.ndarray  # nm
    angles: np.ndarray  # [n_a, 3], vertex in the middle
    angle_k: np.ndarray  # kJ/mol/rad^2
    angle_theta0: np.ndarray  # rad
    force_rms_before: float = float("nan")
    force_rms_after: float = float("nan")

    def summary(self) -> dict:
        return {
            "n_bonds": int(len(self.bonds)), "n_angles": int(len(self.angles)),
            "training_force_rms_kj_mol_nm": self.force_rms_before,
            "residual_force_rms_kj_mol_nm": self.force_rms_after,
        }


def find_bonds(atomic_numbers, positions) -> np.ndarray:
    """Covalent bonds ``[n_b, 2]`` from interatomic distances (nm) of one or more frames:
    bonded below 1.25 times the sum of the covalent radii, at the median distance over up to 20
    frames (:func:`openmm_adv.systems.covalent.bonds_from_distances`)."""
    from ..systems.covalent import bonds_from_distances

    try:
        pairs = bonds_from_distances(atomic_numbers, positions)
    except ValueError as exc:
        raise ValueError(f"{exc}, or use prior: none") from exc
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def angles_from_bonds(bonds: np.ndarray, n_atoms: int) -> np.ndarray:
    """Every angle ``[n_a, 3]`` (i, vertex, k) between two bonds that share an atom."""
    neighbours: list[list[int]] = [[] for _ in range(n_atoms)]
    for a, b in np.asarray(bonds, dtype=np.int64).reshape(-1, 2):
        neighbours[a].append(int(b))
        neighbours[b].append(int(a))
    angles = [(i, j, k) for j in range(n_atoms) for x, i in enumerate(sorted(neighbours[j]))
              for k in sorted(neighbours[j])[x + 1:]]
    return np.asarray(angles, dtype=np.int64).reshape(-1, 3)


def _bond_geometry(xyz: np.ndarray, bonds: np.ndarray):
    """Lengths ``[F, n_b]`` and their gradients with respect to both atoms ``[F, n_b, 3]``."""
    d = xyz[:, bonds[:, 0]] - xyz[:, bonds[:, 1]]
    r = np.linalg.norm(d, axis=-1)
    return r, d / r[..., None]


def _angle_geometry(xyz: np.ndarray, angles: np.ndarray):
    """Angles ``[F, n_a]`` and the gradients with respect to the end atoms ``[F, n_a, 3]`` x2."""
    a = xyz[:, angles[:, 0]] - xyz[:, angles[:, 1]]
    c = xyz[:, angles[:, 2]] - xyz[:, angles[:, 1]]
    ra, rc = np.linalg.norm(a, axis=-1), np.linalg.norm(c, axis=-1)
    ua, uc = a / ra[..., None], c / rc[..., None]
    cos = np.clip(np.sum(ua * uc, axis=-1), -1.0, 1.0)
    sin = np.sqrt(np.clip(1.0 - cos**2, 1e-12, None))
    d_i = -(uc - cos[..., None] * ua) / (ra * sin)[..., None]
    d_k = -(ua - cos[..., None] * uc) / (rc * sin)[..., None]
    return np.arccos(cos), d_i, d_k


def atom_types(atomic_numbers, bonds: np.ndarray) -> list[tuple]:
    """A chemical type per atom from its bonded neighbourhood, two bonds deep.

    The first level is the element, the number of bonds and the neighbours' elements (it tells
    an sp3 carbon from a carbonyl carbon); the second adds the neighbours' first-level types (it
    tells a methyl C-H from an alpha C-H). Atoms that are equivalent by symmetry (the hydrogens
    of a methyl group) always share a type, so the fitted prior keeps the molecule's symmetry.
    """
    z = [int(a) for a in atomic_numbers]
    neighbours: list[list[int]] = [[] for _ in z]
    for a, b in np.asarray(bonds, dtype=np.int64).reshape(-1, 2):
        neighbours[int(a)].append(int(b))
        neighbours[int(b)].append(int(a))
    first = [(z[i], len(neighbours[i]), tuple(sorted(z[j] for j in neighbours[i]))) for i in range(len(z))]
    return [(first[i], tuple(sorted(first[j] for j in neighbours[i]))) for i in range(len(z))]


def _term_groups(types: list[tuple], terms: np.ndarray) -> tuple[np.ndarray, int]:
    """The index of each term's type (ends ordered, so i-j and j-i are one type) and the count."""
    keys = []
    for term in np.asarray(terms).reshape(len(terms), -1):
        key = tuple(types[int(a)] for a in term)
        keys.append(min(key, key[::-1]))
    unique = {key: g for g, key in enumerate(dict.fromkeys(keys))}
    return np.asarray([unique[k] for k in keys], dtype=np.int64), len(unique)


def _design(xyz: np.ndarray, bonds: np.ndarray, angles: np.ndarray, group: np.ndarray, n_groups: int,
            q_ref: np.ndarray):
    """The sparse matrix A with forces = A @ (a, b) for E = sum_g sum_(t in g) a_g dq_t^2 + b_g dq_t.

    ``group`` gives each term's parameter group (bonds first, then angles); dq = q - q_ref[group].
    """
    from scipy import sparse

    n_frames, n_atoms = xyz.shape[:2]
    n_b = len(bonds)
    rows, cols, vals = [], [], []
    frame_row = (np.arange(n_frames) * 3 * n_atoms)[:, None, None]
    dims = np.arange(3)[None, None, :]

    def add(term_group, atom, gradient, dq):
        # column a_g: -2 dq grad q ; column b_g: -grad q
        row = frame_row + 3 * atom[None, :, None] + dims
        for column, scale in ((term_group, -2.0 * dq[..., None]), (term_group + n_groups, -1.0)):
            rows.append(np.broadcast_to(row, gradient.shape).ravel())
            cols.append(np.broadcast_to(column[None, :, None], gradient.shape).ravel())
            vals.append((scale * gradient).ravel())

    if n_b:
        r, u = _bond_geometry(xyz, bonds)
        g = group[:n_b]
        add(g, bonds[:, 0], u, r - q_ref[g])
        add(g, bonds[:, 1], -u, r - q_ref[g])
    if len(angles):
        theta, d_i, d_k = _angle_geometry(xyz, angles)
        g = group[n_b:]
        add(g, angles[:, 0], d_i, theta - q_ref[g])
        add(g, angles[:, 2], d_k, theta - q_ref[g])
        add(g, angles[:, 1], -(d_i + d_k), theta - q_ref[g])
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(n_frames * 3 * n_atoms, 2 * n_groups))


def fit_bonded_prior(atomic_numbers, positions, forces, bonds=None, max_frames: int = 1000,
                     ridge: float = 1e-10) -> BondedTerms:
    """Fit harmonic bond and angle terms to reference forces by linear least squares.

    Terms of the same chemical type (:func:`atom_types` of their atoms) share parameters, which
    keeps the molecule's symmetry and leaves two parameters per type to fit. Each type's energy
    is written ``a (q - q_mean)^2 + b (q - q_mean)`` (``q`` a bond length or an angle), linear in
    ``(a, b)``; all terms' forces are fitted to the reference forces (frames in nm and
    kJ/mol/nm), then ``k = 2a`` and ``q0 = q_mean - b / 2a``. Types whose fitted force constant
    is not positive (no restoring force: the data do not determine them) are dropped and the rest
    refitted, so the prior is bounded below.

    Parameters
    ----------
    atomic_numbers : sequence of int
    positions, forces : array ``[F, N, 3]``
    bonds : array ``[n_b, 2]``, optional
        Covalent bonds (e.g. from an OpenMM topology); found from distances when omitted.
    max_frames : int
        Frames used for the fit (evenly spaced), bounding its memory for large molecules.
    """
    xyz = np.asarray(positions, dtype=np.float64)
    f = np.asarray(forces, dtype=np.float64)
    n_atoms = xyz.shape[1]
    if len(xyz) > max_frames:
        keep = np.linspace(0, len(xyz) - 1, max_frames).astype(int)
        xyz, f = xyz[keep], f[keep]
    bonds = find_bonds(atomic_numbers, xyz) if bonds is None else np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    types = atom_types(atomic_numbers, bonds)
    angles = angles_from_bonds(bonds, n_atoms)
    if len(angles):
        theta = _angle_geometry(xyz, angles)[0]
        angles = angles[np.degrees(theta.mean(0)) < MAX_ANGLE_DEGREES]
    target = f.reshape(-1)
    force_rms = float(np.sqrt(np.mean(target**2)))
    while len(bonds) + len(angles):
        bond_group, n_bond_groups = _term_groups(types, bonds)
        angle_group, n_angle_groups = _term_groups(types, angles)
        group = np.concatenate([bond_group, n_bond_groups + angle_group])
        n_groups = n_bond_groups + n_angle_groups
        q = np.concatenate([_bond_geometry(xyz, bonds)[0] if len(bonds) else np.zeros((len(xyz), 0)),
                            _angle_geometry(xyz, angles)[0] if len(angles) else np.zeros((len(xyz), 0))], axis=1)
        q_mean = np.bincount(group, weights=q.mean(0), minlength=n_groups) / np.bincount(group, minlength=n_groups)
        a_matrix = _design(xyz, bonds, angles, group, n_groups, q_mean)
        # Normal equations with unit-scaled columns (lengths and angles differ by orders of
        # magnitude); the small ridge settles the near-redundant angles around planar centres.
        gram = (a_matrix.T @ a_matrix).toarray()
        scale = np.sqrt(np.clip(np.diag(gram), 1e-300, None))
        gram = gram / np.outer(scale, scale) + ridge * np.eye(len(gram))
        coef = np.linalg.solve(gram, (a_matrix.T @ target) / scale) / scale
        k = 2.0 * coef[:n_groups]
        if (k > 0).all():
            q0 = q_mean - coef[n_groups:] / k
            residual = target - a_matrix @ coef
            n_b = len(bonds)
            return BondedTerms(bonds, k[group[:n_b]], q0[group[:n_b]], angles, k[group[n_b:]], q0[group[n_b:]],
                               force_rms, float(np.sqrt(np.mean(residual**2))))
        # Drop the types without a restoring force and refit the others.
        keep = k[group] > 0
        bonds, angles = bonds[keep[: len(bonds)]], angles[keep[len(bonds):]]
    return BondedTerms(np.zeros((0, 2), np.int64), np.zeros(0), np.zeros(0), np.zeros((0, 3), np.int64),
                       np.zeros(0), np.zeros(0), force_rms, force_rms)


class BondedPrior(nn.Module):
    """Harmonic bond and angle energy for positions ``[..., N, 3]`` (nm) -> ``[...]`` (kJ/mol).

    Empty (zero energy) until :meth:`set_terms` is called with fitted terms.
    """

    def __init__(self, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.register_buffer("bonds", torch.zeros(0, 2, dtype=torch.long))
        self.register_buffer("bond_k", torch.zeros(0, dtype=dtype))
        self.register_buffer("bond_r0", torch.zeros(0, dtype=dtype))
        self.register_buffer("angles", torch.zeros(0, 3, dtype=torch.long))
        self.register_buffer("angle_k", torch.zeros(0, dtype=dtype))
        self.register_buffer("angle_theta0", torch.zeros(0, dtype=dtype))

    @torch.jit.unused
    def set_terms(self, terms: BondedTerms) -> None:
        """Load fitted terms (replaces the buffers, whatever their size)."""
        load_terms(self, terms)

    @torch.jit.unused
    def resize_like(self, state: dict, prefix: str) -> None:
        """Give the buffers the shapes stored in ``state`` (so ``load_state_dict`` can fill them)."""
        for name, buffer in self.named_buffers():
            key = prefix + name
            if key in state and state[key].shape != buffer.shape:
                setattr(self, name, torch.zeros(state[key].shape, dtype=buffer.dtype))

    @property
    def n_terms(self) -> int:
        return int(self.bond_k.numel() + self.angle_k.numel())

    def forward(self, positions: Tensor) -> Tensor:
        energy = torch.zeros(positions.shape[:-2], dtype=positions.dtype, device=positions.device)
        if self.bond_k.numel() > 0:
            d = positions.index_select(-2, self.bonds[:, 0]) - positions.index_select(-2, self.bonds[:, 1])
            r = torch.sqrt((d * d).sum(-1))
            energy = energy + (0.5 * self.bond_k * (r - self.bond_r0).pow(2)).sum(-1)
        if self.angle_k.numel() > 0:
            centre = positions.index_select(-2, self.angles[:, 1])
            a = positions.index_select(-2, self.angles[:, 0]) - centre
            c = positions.index_select(-2, self.angles[:, 2]) - centre
            cos = (a * c).sum(-1) / torch.sqrt((a * a).sum(-1) * (c * c).sum(-1))
            theta = torch.acos(cos.clamp(-1.0 + 1e-7, 1.0 - 1e-7))
            energy = energy + (0.5 * self.angle_k * (theta - self.angle_theta0).pow(2)).sum(-1)
        return energy


def load_terms(prior: nn.Module, terms: BondedTerms) -> None:
    """Load fitted terms into a :class:`BondedPrior`, eager or TorchScript (a loaded committee's),
    replacing its buffers whatever their size."""
    dtype = prior.bond_k.dtype
    prior.bonds = torch.as_tensor(terms.bonds, dtype=torch.long).reshape(-1, 2)
    prior.bond_k = torch.as_tensor(terms.bond_k, dtype=dtype)
    prior.bond_r0 = torch.as_tensor(terms.bond_r0, dtype=dtype)
    prior.angles = torch.as_tensor(terms.angles, dtype=torch.long).reshape(-1, 3)
    prior.angle_k = torch.as_tensor(terms.angle_k, dtype=dtype)
    prior.angle_theta0 = torch.as_tensor(terms.angle_theta0, dtype=dtype)


def prior_size(prior: nn.Module) -> int:
    """The number of bond and angle terms of a :class:`BondedPrior`, eager or TorchScript."""
    return int(prior.bond_k.numel() + prior.angle_k.numel())
