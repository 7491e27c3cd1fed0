"""The description of a molecular system that every part of openmm-adv works from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import openmm
from openmm import app, unit

__all__ = ["CollectiveVariable", "MolecularSystem"]


@dataclass(frozen=True)
class CollectiveVariable:
    """A collective variable of a system.

    Parameters
    ----------
    name : str
        Short name (``"phi"``, ``"x"``).
    kind : {"dihedral", "distance", "coordinate"}
        A dihedral over four atoms (radians, in (-pi, pi]), the distance between two atoms
        (nm), or one Cartesian coordinate of one atom (nm).
    atoms : tuple of int
        0-based atom indices: four for a dihedral, two for a distance, one for a coordinate.
    axis : int
        For ``kind="coordinate"``: 0, 1 or 2 for x, y, z.
    """

    name: str
    kind: str
    atoms: tuple[int, ...]
    axis: int = 0

    def __post_init__(self):
        if self.kind not in _N_ATOMS:
            raise ValueError(f"unknown CV kind {self.kind!r}: use one of {', '.join(map(repr, _N_ATOMS))}")
        if len(self.atoms) != _N_ATOMS[self.kind]:
            raise ValueError(f"{self.kind} CV {self.name!r} needs {_N_ATOMS[self.kind]} atoms, got {self.atoms}")
        if len(set(self.atoms)) != len(self.atoms):
            raise ValueError(f"{self.kind} CV {self.name!r} repeats an atom: {self.atoms}")
        if self.kind == "coordinate" and self.axis not in (0, 1, 2):
            raise ValueError(f"coordinate CV {self.name!r}: axis must be 0, 1 or 2 (x, y, z), got {self.axis}")

    @property
    def periodic(self) -> bool:
        return self.kind == "dihedral"

    @property
    def unit(self) -> str:
        return "rad" if self.kind == "dihedral" else "nm"

    def compute(self, positions: np.ndarray) -> np.ndarray:
        """Values for positions ``[B, N, 3]`` (or ``[N, 3]``) in nm; returns ``[B]``."""
        xyz = np.asarray(positions, dtype=np.float64)
        if xyz.ndim == 2:
            xyz = xyz[None]
        if self.kind == "coordinate":
            return xyz[:, self.atoms[0], self.axis].copy()
        if self.kind == "distance":
            return np.linalg.norm(xyz[:, self.atoms[0]] - xyz[:, self.atoms[1]], axis=-1)
        import mdtraj

        # mdtraj's dihedral kernel only needs coordinates and the atom quadruplet.
        traj = mdtraj.Trajectory(xyz.astype(np.float32), _bare_topology(xyz.shape[1]))
        return mdtraj.compute_dihedrals(traj, np.array([self.atoms]), periodic=False)[:, 0].astype(
            np.float64
        )

    def value_and_gradient(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values ``[B]`` and their gradients ``[B, len(atoms), 3]`` with respect to the CV's
        atoms, for positions ``[B, N, 3]`` in nm."""
        xyz = np.asarray(positions, dtype=np.float64)
        if self.kind == "dihedral":
            from ..torsions import dihedral_gradient

            return dihedral_gradient(xyz, self.atoms)
        if self.kind == "distance":
            d = xyz[:, self.atoms[0]] - xyz[:, self.atoms[1]]
            r = np.linalg.norm(d, axis=-1)
            unit_vector = d / np.maximum(r, 1e-12)[:, None]
            return r, np.stack([unit_vector, -unit_vector], axis=1)
        gradient = np.zeros((len(xyz), 1, 3))
        gradient[:, 0, self.axis] = 1.0
        return xyz[:, self.atoms[0], self.axis].copy(), gradient

    def openmm_force(self) -> openmm.Force:
        """An OpenMM force whose energy is this CV, for ``openmm.app.BiasVariable``."""
        if self.kind == "dihedral":
            force = openmm.CustomTorsionForce("theta")
            force.addTorsion(*self.atoms, [])
            return force
        if self.kind == "distance":
            force = openmm.CustomBondForce("r")
            force.addBond(*self.atoms, [])
            return force
        force = openmm.CustomExternalForce("xyz"[self.axis])
        force.addParticle(self.atoms[0], [])
        return force


_N_ATOMS = {"dihedral": 4, "distance": 2, "coordinate": 1}
_BARE_TOPOLOGIES: dict[int, object] = {}


def _bare_topology(n_atoms: int):
    import mdtraj

    if n_atoms not in _BARE_TOPOLOGIES:
        top = mdtraj.Topology()
        chain = top.add_chain()
        residue = top.add_residue("UNK", chain)
        for _ in range(n_atoms):
            top.add_atom("X", mdtraj.element.carbon, residue)
        _BARE_TOPOLOGIES[n_atoms] = top
    return _BARE_TOPOLOGIES[n_atoms]


@dataclass
class MolecularSystem:
    """A molecule (or toy particle) with its ground-truth potential.

    Attributes
    ----------
    name : str
    topology : openmm.app.Topology
    positions : numpy.ndarray
        A reference geometry ``[N, 3]`` in nm (for molecules, a minimum of the reference
        potential in the basin the project starts from).
    atomic_numbers : numpy.ndarray
        ``[N]`` integers.
    masses : numpy.ndarray
        ``[N]`` in dalton.
    collective_variables : dict
        Name -> :class:`CollectiveVariable`.
    charge, multiplicity : int
        Total charge (e) and spin multiplicity, for quantum-chemistry oracles.
    source : dict
        Where the system came from (the files and settings of :func:`~openmm_adv.systems.load_system`).

    A system without a reference potential (a structure labelled by xTB or an ASE calculator)
    has ``_reference_factory=None``; what needs the reference force field says so.
    """

    name: str
    topology: app.Topology
    positions: np.ndarray
    atomic_numbers: np.ndarray
    masses: np.ndarray
    collective_variables: dict[str, CollectiveVariable]
    _reference_factory: Optional[Callable[[], openmm.System]] = field(default=None, repr=False)
    charge: int = 0
    multiplicity: int = 1
    source: dict = field(default_factory=dict, repr=False, compare=False)
    _contexts: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_atoms(self) -> int:
        return int(len(self.atomic_numbers))

    @property
    def bonds(self) -> list[tuple[int, int]]:
        """Covalent bonds as 0-based index pairs (empty for a toy particle)."""
        return [(b[0].index, b[1].index) for b in self.topology.bonds()]

    @property
    def has_reference_potential(self) -> bool:
        """Whether the system has an OpenMM reference potential (force field or System XML)."""
        return self._reference_factory is not None

    def create_reference_system(self) -> openmm.System:
        """A new OpenMM ``System`` with the ground-truth potential (no constraints).

        Raises
        ------
        ValueError
            For a system given without a force field or a System XML.
        """
        if self._reference_factory is None:
            raise ValueError(
                f"system {self.name!r} has no OpenMM reference potential: give force-field XMLs "
                f"(system.forcefield) or a serialized System (system.system_xml), or label with an "
                f"oracle that needs none (oracle.kind: xtb or ase) and use samplers that do not run "
                f"reference MD")
        return self._reference_factory()

    def compute_cvs(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """All collective variables for positions ``[B, N, 3]`` in nm."""
        return {name: cv.compute(positions) for name, cv in self.collective_variables.items()}

    def check_positions(self, positions, what: str = "positions") -> np.ndarray:
        """Return positions as ``[B, N, 3]`` float64 nm, or raise a ValueError naming the problem."""
        from ..units import to_nm

        xyz = to_nm(positions)
        xyz = np.asarray(xyz, dtype=np.float64)
        if xyz.ndim == 2:
            xyz = xyz[None]
        if xyz.ndim != 3 or xyz.shape[-1] != 3:
            raise ValueError(f"{what} must have shape [B, N, 3] or [N, 3], got {xyz.shape}")
        if xyz.shape[1] != self.n_atoms:
            raise ValueError(
                f"{what} have {xyz.shape[1]} atoms but system {self.name!r} has {self.n_atoms}"
            )
        bad = ~np.isfinite(xyz).all(axis=(1, 2))
        if bad.any():
            raise ValueError(
                f"{what} contain NaN or infinite coordinates (structures {np.flatnonzero(bad)[:10].tolist()})"
            )
        return xyz

    def reference_energies_forces(
        self, positions, platform: str = "CPU"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth energies ``[B]`` (kJ/mol) and forces ``[B, N, 3]`` (kJ/mol/nm)."""
        xyz = self.check_positions(positions)
        if platform not in self._contexts:
            self._contexts[platform] = openmm.Context(
                self.create_reference_system(), openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform)
            )
        context = self._contexts[platform]
        energies = np.empty(len(xyz))
        forces = np.empty_like(xyz)
        for k, x in enumerate(xyz):
            context.setPositions(x)
            state = context.getState(getEnergy=True, getForces=True)
            energies[k] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            forces[k] = state.getForces(asNumpy=True).value_in_unit(
                unit.kilojoule_per_mole / unit.nanometer
            )
        return energies, forces

    def replicated_topology(self, n_replicas: int) -> app.Topology:
        """A topology with ``n_replicas`` copies of this one (chain per replica)."""
        top = app.Topology()
        for _ in range(n_replicas):
            atom_map = {}
            for chain in self.topology.chains():
                new_chain = top.addChain()
                for residue in chain.residues():
                    new_res = top.addResidue(residue.name, new_chain, residue.id)
                    for atom in residue.atoms():
                        atom_map[atom] = top.addAtom(atom.name, atom.element, new_res)
            for a, b in self.topology.bonds():
                top.addBond(atom_map[a], atom_map[b])
        return top


def particle_masses(system: openmm.System) -> np.ndarray:
    return np.array(
        [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())]
    )


def elements_to_numbers(elements: Sequence) -> np.ndarray:
    return np.array([e.atomic_number if e is not None else 0 for e in elements], dtype=np.int64)
