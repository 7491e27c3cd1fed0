"""A committee's domain: the geometries on which its uncertainty means something.

The committee's uncertainty is the disagreement of its members, and members agree wherever
they all see nothing. A member sees an atom's neighbours inside its cutoff only, so positions in
Angstrom handed over as nm (every distance ten times too long) leave every atom alone: each
member returns its constant isolated-atom energy, every force is zero and the uncertainty is
exactly 0, the most confident value there is. Geometries far from any training distance
(compressed or torn bonds) are no better: the members extrapolate, and nothing guarantees that
they extrapolate apart.

A geometry is out of the domain when any of these rules fires:

``isolated``
    An atom has no neighbour inside the model's cutoff (PaiNN and SchNet ``cutoff``, MACE
    ``r_max``). Needs only the cutoff, so it applies to committee files written before training
    ranges were stored.
``bond``
    A bond of the training data is shorter than ``(1 - margin)`` times its shortest length in the
    training data, or longer than ``(1 + margin)`` times its longest.
``nearest``
    An atom's nearest neighbour is closer than ``(1 - margin)`` times the closest one it had in
    the training data, or farther than ``(1 + margin)`` times the farthest.

``bond`` and ``nearest`` use the ranges that :func:`training_ranges` measures when a committee
is trained (:func:`openmm_adv.train.train_committee` and
:func:`openmm_adv.models.mace.train_mace_committee` store them in the committee's metadata under
``"domain"``). Every rule uses interatomic distances only, so it is invariant under rotation and
translation. One- and zero-atom models (the 2D toys) have no domain rule.

Lengths are in nm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["DEFAULT_MARGIN", "Domain", "DomainCheck", "nearest_neighbour_distances", "training_ranges"]

#: Relative margin around the training ranges. Held-out 300 K alanine dipeptide frames from every
#: basin stay within 3 % of the ranges of 1000 C7eq frames, a compression to 0.6 of the size
#: leaves them by 40 %, Angstrom read as nm by a factor of ten.
DEFAULT_MARGIN = 0.25

#: How many offending atoms or bonds a reason names before it says "and K more".
_NAMED = 3


def nearest_neighbour_distances(positions) -> np.ndarray:
    """Distance from every atom to its nearest other atom, ``[B, N]`` for positions ``[B, N, 3]``.

    A k-d tree per frame: memory grows with N, not N^2, so large molecules fit.
    """
    from scipy.spatial import cKDTree

    xyz = np.asarray(positions, dtype=np.float64)
    if xyz.shape[1] < 2:
        return np.full(xyz.shape[:2], np.inf)
    out = np.empty(xyz.shape[:2])
    for b, frame in enumerate(xyz):
        out[b] = cKDTree(frame).query(frame, k=2)[0][:, 1]
    return out


def bond_lengths(positions, bonds: np.ndarray) -> np.ndarray:
    """Lengths ``[B, n_b]`` of the bonds ``[n_b, 2]``."""
    xyz = np.asarray(positions, dtype=np.float64)
    return np.linalg.norm(xyz[:, bonds[:, 0]] - xyz[:, bonds[:, 1]], axis=-1)


@dataclass
class DomainCheck:
    """Which geometries are out of a committee's domain, and why.

    Attributes
    ----------
    out_of_domain : numpy.ndarray
        ``[B]`` bool, True where a rule fired.
    reasons : list of str
        ``[B]``: what fired for each geometry ("" where it is in the domain).
    rules : tuple of str
        The rules this committee can apply (``isolated``, ``bond``, ``nearest``; empty where it
        has none, e.g. a committee of your own models saved without training ranges).
    """

    out_of_domain: np.ndarray
    reasons: list
    rules: tuple = ()

    def __len__(self) -> int:
        return int(len(self.out_of_domain))

    @property
    def n_out(self) -> int:
        """How many geometries are out of the domain."""
        return int(np.count_nonzero(self.out_of_domain))


@dataclass
class Domain:
    """The distances a committee can be trusted on (see the module docstring for the rules).

    Parameters
    ----------
    atomic_numbers : array_like of int
    cutoff_nm : float or None
        The model's interaction cutoff (None: unknown, no ``isolated`` rule).
    bonds : numpy.ndarray, optional
        ``[n_b, 2]`` atom pairs, with ``bond_min_nm``/``bond_max_nm`` ``[n_b]``: their range in
        the training data.
    nearest_min_nm, nearest_max_nm : numpy.ndarray, optional
        ``[N]``: each atom's nearest-neighbour distance range in the training data.
    margin : float
        Relative margin around the training ranges.
    n_frames : int
        Training frames the ranges were measured on (0: no ranges).
    """

    atomic_numbers: np.ndarray
    cutoff_nm: float | None = None
    bonds: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    bond_min_nm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bond_max_nm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    nearest_min_nm: np.ndarray | None = None
    nearest_max_nm: np.ndarray | None = None
    margin: float = DEFAULT_MARGIN
    n_frames: int = 0

    def __post_init__(self):
        self.atomic_numbers = np.asarray(self.atomic_numbers, dtype=np.int64).reshape(-1)
        n = len(self.atomic_numbers)
        if self.cutoff_nm is not None and not (np.isfinite(self.cutoff_nm) and self.cutoff_nm > 0):
            raise ValueError(f"the domain's cutoff must be a positive length in nm, got {self.cutoff_nm}")
        if not (np.isfinite(self.margin) and 0 <= self.margin < 1):
            raise ValueError(f"the domain margin must be a fraction in [0, 1), got {self.margin}")
        self.bonds = np.asarray(self.bonds, dtype=np.int64).reshape(-1, 2)
        self.bond_min_nm = np.asarray(self.bond_min_nm, dtype=np.float64).reshape(-1)
        self.bond_max_nm = np.asarray(self.bond_max_nm, dtype=np.float64).reshape(-1)
        if not len(self.bonds) == len(self.bond_min_nm) == len(self.bond_max_nm):
            raise ValueError(f"the domain has {len(self.bonds)} bonds but {len(self.bond_min_nm)} minimum and "
                             f"{len(self.bond_max_nm)} maximum lengths")
        if len(self.bonds) and (self.bonds.min() < 0 or self.bonds.max() >= n):
            raise ValueError(f"the domain's bonds name atoms outside 0..{n - 1}")
        for name in ("nearest_min_nm", "nearest_max_nm"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.float64).reshape(-1)
                if len(value) != n:
                    raise ValueError(f"the domain's {name} has {len(value)} values for {n} atoms")
                setattr(self, name, value)
        if (self.nearest_min_nm is None) != (self.nearest_max_nm is None):
            raise ValueError("the domain needs both nearest_min_nm and nearest_max_nm, or neither")

    # ------------------------------------------------------------------ rules
    @property
    def rules(self) -> tuple:
        """The rules that apply (see the module docstring)."""
        if len(self.atomic_numbers) < 2:
            return ()
        rules = []
        if self.cutoff_nm is not None:
            rules.append("isolated")
        if len(self.bonds):
            rules.append("bond")
        if self.nearest_min_nm is not None:
            rules.append("nearest")
        return tuple(rules)

    def check(self, positions, margin: float | None = None) -> DomainCheck:
        """Flag the geometries ``[B, N, 3]`` (nm) that are out of the domain.

        Parameters
        ----------
        positions : array_like
            ``[B, N, 3]`` or ``[N, 3]`` in nm.
        margin : float, optional
            Relative margin around the training ranges (default: this domain's ``margin``).
        """
        xyz = np.asarray(positions, dtype=np.float64)
        if xyz.ndim == 2:
            xyz = xyz[None]
        n = len(self.atomic_numbers)
        if xyz.ndim != 3 or xyz.shape[1:] != (n, 3):
            raise ValueError(f"positions of shape {xyz.shape} do not fit a domain of {n} atoms "
                             f"(expected [B, {n}, 3] in nm)")
        margin = self.margin if margin is None else float(margin)
        if not (np.isfinite(margin) and 0 <= margin < 1):
            raise ValueError(f"margin must be a fraction in [0, 1), got {margin}")
        rules = self.rules
        out = np.zeros(len(xyz), dtype=bool)
        reasons = [""] * len(xyz)
        if not rules or not len(xyz):
            return DomainCheck(out, reasons, rules)
        nearest = nearest_neighbour_distances(xyz) if ("isolated" in rules or "nearest" in rules) else None
        found: list[list[str]] = [[] for _ in range(len(xyz))]
        if "isolated" in rules:
            isolated = nearest > self.cutoff_nm
            for b in np.flatnonzero(isolated.any(1)):
                atoms = np.flatnonzero(isolated[b])
                verb = "has" if len(atoms) == 1 else "have"
                what = "every atom has" if len(atoms) == n else f"{self._atoms(atoms)} {verb}"
                found[b].append(f"{what} no neighbour within the model's {self.cutoff_nm:g} nm cutoff")
        if "bond" in rules:
            length = bond_lengths(xyz, self.bonds)
            short = length < (1 - margin) * self.bond_min_nm
            long = length > (1 + margin) * self.bond_max_nm
            for b in np.flatnonzero(short.any(1) | long.any(1)):
                for mask, word, limit in ((short[b], "shorter", self.bond_min_nm),
                                          (long[b], "longer", self.bond_max_nm)):
                    if mask.any():
                        k = np.flatnonzero(mask)
                        first = k[np.argmax(np.abs(np.log(length[b, k] / limit[k])))]
                        found[b].append(
                            f"{self._count(len(k), 'bond')} {'is' if len(k) == 1 else 'are'} {word} than the training "
                            f"range allows (bond {self._bond(first)}: {length[b, first]:.3g} nm, trained on "
                            f"{self.bond_min_nm[first]:.3g}-{self.bond_max_nm[first]:.3g} nm, margin {margin:g})")
        if "nearest" in rules:
            close = nearest < (1 - margin) * self.nearest_min_nm
            far = nearest > (1 + margin) * self.nearest_max_nm
            for b in np.flatnonzero(close.any(1) | far.any(1)):
                for mask, word in ((close[b], "closer to"), (far[b], "farther from")):
                    if mask.any():
                        atoms = np.flatnonzero(mask)
                        first = atoms[0]
                        found[b].append(
                            f"{self._atoms(atoms)} {'is' if len(atoms) == 1 else 'are'} {word} "
                            f"{'its' if len(atoms) == 1 else 'their'} nearest neighbour "
                            f"than in training (atom {first}: {nearest[b, first]:.3g} nm, trained on "
                            f"{self.nearest_min_nm[first]:.3g}-{self.nearest_max_nm[first]:.3g} nm, margin {margin:g})")
        for b, items in enumerate(found):
            if items:
                out[b] = True
                reasons[b] = "; ".join(items) + self._unit_hint(xyz[b], nearest[b] if nearest is not None else None)
        return DomainCheck(out, reasons, rules)

    # ------------------------------------------------------------------ persistence
    def to_metadata(self) -> dict:
        """A JSON-ready dict (what the committee's metadata stores under ``"domain"``)."""
        out = {"cutoff_nm": self.cutoff_nm, "margin": self.margin, "n_frames": int(self.n_frames),
               "bonds": self.bonds.tolist(), "bond_min_nm": self.bond_min_nm.tolist(),
               "bond_max_nm": self.bond_max_nm.tolist()}
        if self.nearest_min_nm is not None:
            out.update(nearest_min_nm=self.nearest_min_nm.tolist(), nearest_max_nm=self.nearest_max_nm.tolist())
        return out

    @classmethod
    def from_metadata(cls, atomic_numbers, stored: dict | None, cutoff_nm: float | None = None) -> "Domain":
        """The domain stored in a committee's metadata, or, where none is (files written before
        training ranges were stored), the ``isolated`` rule on ``cutoff_nm`` alone.

        Raises
        ------
        ValueError
            Stored values that do not fit the molecule (the field is named).
        """
        if not stored:
            return cls(atomic_numbers, cutoff_nm=cutoff_nm)
        if not isinstance(stored, dict):
            raise ValueError(f"the 'domain' metadata is a {type(stored).__name__}, not a dict")
        known = {"cutoff_nm", "margin", "n_frames", "bonds", "bond_min_nm", "bond_max_nm", "nearest_min_nm",
                 "nearest_max_nm"}
        unknown = sorted(set(stored) - known)
        if unknown:
            raise ValueError(f"the 'domain' metadata has unknown keys {unknown}; known: {sorted(known)}")
        values = dict(stored)
        if values.get("cutoff_nm") is None:
            values["cutoff_nm"] = cutoff_nm
        return cls(atomic_numbers, **values)

    # ------------------------------------------------------------------ wording
    def _symbol(self, i: int) -> str:
        from openmm.app import element

        z = int(self.atomic_numbers[i])
        try:
            return element.Element.getByAtomicNumber(z).symbol
        except KeyError:
            return f"Z={z}"

    def _atoms(self, atoms: np.ndarray) -> str:
        named = ", ".join(f"{int(i)} ({self._symbol(i)})" for i in atoms[:_NAMED])
        more = f" and {len(atoms) - _NAMED} more" if len(atoms) > _NAMED else ""
        return f"atom{'s' if len(atoms) > 1 else ''} {named}{more}"

    def _bond(self, k: int) -> str:
        i, j = (int(v) for v in self.bonds[k])
        return f"{i}-{j} ({self._symbol(i)}-{self._symbol(j)})"

    @staticmethod
    def _count(k: int, what: str) -> str:
        return f"{k} {what}{'s' if k > 1 else ''}"

    def _unit_hint(self, frame: np.ndarray, nearest: np.ndarray | None) -> str:
        """A hint when the whole molecule is about ten times too large: Angstrom given as nm."""
        if nearest is not None and self.nearest_max_nm is not None:
            typical = float(np.median(nearest / np.maximum(self.nearest_max_nm, 1e-9)))
        elif len(self.bonds):
            typical = float(np.median(bond_lengths(frame[None], self.bonds)[0] / self.bond_max_nm))
        elif nearest is not None and self.cutoff_nm is not None:
            typical = 10.0 if bool((nearest > self.cutoff_nm).all()) else 1.0
        else:
            return ""
        if 5.0 < typical < 20.0:
            return ("; every distance is about ten times what the committee was trained on: are the positions in "
                    "Angstrom? The committee takes nm (divide by 10, or read the file with units)")
        return ""


def training_ranges(atomic_numbers, positions, cutoff_nm: float | None = None, bonds=None,
                    margin: float = DEFAULT_MARGIN) -> Domain:
    """The domain of a committee trained on ``positions`` ``[F, N, 3]`` (nm).

    Parameters
    ----------
    atomic_numbers : array_like of int
    positions : array_like
        The training geometries.
    cutoff_nm : float, optional
        The model's cutoff (the ``isolated`` rule).
    bonds : array_like, optional
        ``[n_b, 2]`` bonded pairs (e.g. from the topology). Default: found from the distances
        (:func:`openmm_adv.systems.covalent.bonds_from_distances`); none where an element has
        no tabulated covalent radius (the ``nearest`` rule still applies).
    margin : float
    """
    from ..systems.covalent import bonds_from_distances

    z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    xyz = np.asarray(positions, dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[1:] != (len(z), 3) or len(xyz) == 0:
        raise ValueError(f"training positions must have shape [F, {len(z)}, 3] with F >= 1, got {xyz.shape}")
    if not np.isfinite(xyz).all():
        raise ValueError("training positions contain NaN or infinite coordinates")
    if len(z) < 2:
        return Domain(z, cutoff_nm=cutoff_nm, margin=margin, n_frames=len(xyz))
    if bonds is None:
        try:
            bonds = bonds_from_distances(z, xyz)
        except ValueError:  # an element without a covalent radius: the nearest-neighbour rule stays
            bonds = []
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    lengths = bond_lengths(xyz, bonds)
    nearest = nearest_neighbour_distances(xyz)
    return Domain(z, cutoff_nm=cutoff_nm, bonds=bonds, bond_min_nm=lengths.min(0) if len(bonds) else [],
                  bond_max_nm=lengths.max(0) if len(bonds) else [], nearest_min_nm=nearest.min(0),
                  nearest_max_nm=nearest.max(0), margin=margin, n_frames=len(xyz))
