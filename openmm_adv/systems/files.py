"""Molecular systems from a user's files: a structure, its reference potential and its CVs.

One mechanism for every system, the shipped ones included (their definitions are YAML files
in ``openmm_adv/systems/data``):

- the structure: a PDB or PDBx/mmCIF file (OpenMM's readers, which give standard residues
  their bonds), an xyz/extxyz file (ASE), or anything else mdtraj reads with its own topology
  (mol2, gro, ...); atoms the file leaves without a bond get bonds from covalent radii;
- the reference potential, optional: OpenMM force-field XMLs (gas phase: no cutoff, no
  constraints), or a serialized OpenMM ``System``; without one, labels come from an oracle
  that needs none (xTB, an ASE calculator);
- collective variables: dihedrals, distances or coordinates over atoms given by 0-based
  index or by an mdtraj selection that picks exactly one atom.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import openmm
from openmm import app, unit

from .base import CollectiveVariable, MolecularSystem, elements_to_numbers, particle_masses
from .covalent import bonds_from_distances

__all__ = ["load_system", "get_system", "builtin_systems", "builtin_definition", "parse_cvs"]

_ASE_FORMATS = (".xyz", ".extxyz")
_AXES = {"x": 0, "y": 1, "z": 2}


def builtin_systems() -> list[str]:
    """Names of the shipped system definitions."""
    folder = resources.files("openmm_adv.systems") / "data"
    return sorted(p.name[:-len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def builtin_definition(name: str) -> tuple[dict, Path]:
    """The shipped definition of ``name`` (a mapping of :func:`load_system` arguments) and the
    folder its file names are relative to."""
    import yaml

    folder = resources.files("openmm_adv.systems") / "data"
    entry = folder / f"{name}.yaml"
    if not entry.is_file():
        raise ValueError(f"unknown system {name!r}: use one of {', '.join(builtin_systems())}, or give your "
                         f"own files (system.structure, with system.forcefield or system.system_xml)")
    return yaml.safe_load(entry.read_text()), Path(str(folder))


def get_system(name: str) -> MolecularSystem:
    """A shipped system by name (see :func:`builtin_systems`), loaded from its files like any other."""
    definition, folder = builtin_definition(name)
    return load_system(**definition, name=name, base_dir=folder)


def load_system(structure: str | Path, *, name: str | None = None, forcefield: Sequence[str] | None = None,
                system_xml: str | Path | None = None, charge: int | None = None, multiplicity: int | None = None,
                cvs: Mapping | None = None, base_dir: str | Path | None = None) -> MolecularSystem:
    """A :class:`MolecularSystem` from files.

    Parameters
    ----------
    structure : str or Path
        Geometry and atoms: ``.pdb``, ``.cif``/``.pdbx`` (OpenMM), ``.xyz``/``.extxyz`` (ASE;
        its ``charge`` and ``multiplicity`` info keys are read), or any format mdtraj loads
        with its own topology. The first frame is the system's reference geometry.
    name : str, optional
        Label of the system (default: the structure's file stem).
    forcefield : list of str, optional
        OpenMM force-field XML files (paths, or names OpenMM ships such as
        ``amber14-all.xml``): the reference potential, built in the gas phase (no cutoff) and
        without constraints, as ML labels need the full potential.
    system_xml : str or Path, optional
        A serialized OpenMM ``System`` (``XmlSerializer.serialize``) with the structure's atoms
        in the same order: the reference potential. Not together with ``forcefield``.
    charge, multiplicity : int, optional
        Total charge and spin multiplicity (default: from an extxyz header, else 0 and 1).
    cvs : mapping, optional
        ``name -> {"dihedral": [a, b, c, d]}``, ``{"distance": [a, b]}`` or
        ``{"coordinate": a, "axis": "x"}``; each atom a 0-based index or an mdtraj selection
        string that selects one atom (see :func:`parse_cvs`).
    base_dir : str or Path, optional
        Folder that relative file names are resolved against (default: the working directory).

    Raises
    ------
    ValueError
        For a missing or unreadable file, a force field that cannot parametrise the structure,
        a System XML with another number of particles or with virtual sites, an atom without
        an element, or a CV whose atoms do not exist; each message names the file and the fix.
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    path = _existing(base, structure, "structure")
    if forcefield and system_xml:
        raise ValueError("give either force-field XMLs (forcefield) or a serialized System (system_xml), not both")
    topology, positions, header = _read_structure(path)
    if any(atom.element is None for atom in topology.atoms()):
        bad = next(atom for atom in topology.atoms() if atom.element is None)
        raise ValueError(f"{path}: atom {bad.index} ({bad.name}) has no element; give element symbols in the file")
    _complete_bonds(topology, positions)
    numbers = elements_to_numbers([atom.element for atom in topology.atoms()])

    factory = None
    if forcefield:
        factory = _forcefield_factory(topology, [_forcefield_file(base, f) for f in forcefield], path)
    elif system_xml:
        factory = _xml_factory(_existing(base, system_xml, "system_xml"), topology.getNumAtoms(), path)
    if factory is not None:
        masses = particle_masses(factory())
    else:
        masses = np.array([atom.element.mass.value_in_unit(unit.dalton) for atom in topology.atoms()])

    charge = int(header.get("charge", 0) if charge is None else charge)
    multiplicity = int(header.get("multiplicity", 1) if multiplicity is None else multiplicity)
    if multiplicity < 1:
        raise ValueError(f"multiplicity must be at least 1 (2S + 1), got {multiplicity}")
    system = MolecularSystem(
        name=name or path.stem,
        topology=topology,
        positions=positions,
        atomic_numbers=numbers,
        masses=masses,
        collective_variables=parse_cvs(cvs or {}, topology),
        _reference_factory=factory,
        charge=charge,
        multiplicity=multiplicity,
        source={"structure": str(path), "forcefield": list(forcefield or []),
                "system_xml": str(system_xml) if system_xml else None, "charge": charge,
                "multiplicity": multiplicity, "cvs": dict(cvs or {})},
    )
    if factory is not None:
        _attach_analytic_expression(system, factory())
    return system


def _existing(base: Path, value, what: str) -> Path:
    path = Path(value)
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ValueError(f"system.{what}: {path} does not exist")
    return path


def _forcefield_file(base: Path, value: str) -> str:
    local = Path(value) if Path(value).is_absolute() else base / value
    # Names such as amber14-all.xml are found in OpenMM's own data folder.
    return str(local) if local.is_file() else str(value)


def _read_structure(path: Path) -> tuple[app.Topology, np.ndarray, dict]:
    suffix = path.suffix.lower()
    try:
        if suffix in (".pdb", ".ent"):
            pdb = app.PDBFile(str(path))
            return pdb.topology, _nm(pdb.getPositions(asNumpy=True)), {}
        if suffix in (".cif", ".pdbx", ".mmcif"):
            pdbx = app.PDBxFile(str(path))
            return pdbx.topology, _nm(pdbx.getPositions(asNumpy=True)), {}
        if suffix in _ASE_FORMATS:
            return _read_with_ase(path)
        import mdtraj

        trajectory = mdtraj.load(str(path))[0]
    except ImportError:
        raise
    except Exception as exc:
        raise ValueError(f"cannot read {path} as a structure: {exc}") from exc
    return trajectory.topology.to_openmm(), trajectory.xyz[0].astype(np.float64), {}


def _nm(quantity) -> np.ndarray:
    return np.asarray(quantity.value_in_unit(unit.nanometer), dtype=np.float64)


def _read_with_ase(path: Path) -> tuple[app.Topology, np.ndarray, dict]:
    try:
        import ase.io
    except ImportError as exc:
        raise ImportError(f"reading {path} needs ASE: pip install 'openmm-adv[ase]'") from exc
    atoms = ase.io.read(str(path), index=0)
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    counts: dict[str, int] = {}
    for symbol in atoms.get_chemical_symbols():
        counts[symbol] = counts.get(symbol, 0) + 1
        topology.addAtom(f"{symbol}{counts[symbol]}", app.element.Element.getBySymbol(symbol), residue)
    header = {key: atoms.info[key] for key in ("charge", "multiplicity") if key in atoms.info}
    return topology, atoms.get_positions() / 10.0, header  # Angstrom -> nm


def _complete_bonds(topology: app.Topology, positions: np.ndarray) -> None:
    """Bonds from covalent radii for the atoms the file gave none (a ligand without CONECT
    records, an xyz file), leaving the file's own bonds as they are."""
    atoms = list(topology.atoms())
    if len(atoms) < 2:
        return
    bonded = {a.index for bond in topology.bonds() for a in bond}
    lonely = [a.index for a in atoms if a.index not in bonded]
    if not lonely:
        return
    numbers = elements_to_numbers([a.element for a in atoms])
    existing = {(min(a.index, b.index), max(a.index, b.index)) for a, b in topology.bonds()}
    for i, j in bonds_from_distances(numbers, positions, only_atoms=lonely):
        if (i, j) not in existing:
            topology.addBond(atoms[i], atoms[j])


def _forcefield_factory(topology: app.Topology, files: list[str], structure: Path):
    try:
        forcefield = app.ForceField(*files)
    except Exception as exc:
        raise ValueError(f"cannot read the force field {files}: {exc}") from exc

    def factory() -> openmm.System:
        # No constraints: ML labels need the full, unconstrained potential.
        return forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None,
                                       rigidWater=False, removeCMMotion=False)

    try:
        factory()
    except Exception as exc:
        raise ValueError(
            f"the force field {files} cannot parametrise {structure}: {exc}. For a small molecule, "
            f"build the System with a template generator (openmmforcefields' GAFF or SMIRNOFF) and "
            f"give it serialized as system.system_xml, or label with xTB (oracle.kind: xtb)") from exc
    return factory


def _xml_factory(path: Path, n_atoms: int, structure: Path):
    text = path.read_text()
    try:
        system = openmm.XmlSerializer.deserialize(text)
    except Exception as exc:
        raise ValueError(f"{path} is not a serialized OpenMM System: {exc}") from exc
    if not isinstance(system, openmm.System):
        raise ValueError(f"{path} holds a {type(system).__name__}, not an OpenMM System")
    if system.getNumParticles() != n_atoms:
        raise ValueError(f"{path} has {system.getNumParticles()} particles but {structure} has {n_atoms} atoms: "
                         f"serialize the System made from this structure")
    virtual = [i for i in range(n_atoms) if system.isVirtualSite(i)]
    if virtual:
        raise ValueError(f"{path} has virtual sites (particles {virtual[:5]}): an ML potential sees only "
                         f"real atoms; use a model without virtual sites")

    def factory() -> openmm.System:
        return openmm.XmlSerializer.deserialize(text)

    return factory


def _attach_analytic_expression(system: MolecularSystem, reference: openmm.System) -> None:
    """A one-particle system whose potential is one CustomExternalForce is an analytic toy: keep
    its expression so that plots and the analytic oracle can evaluate it without OpenMM."""
    if reference.getNumParticles() == 1 and reference.getNumForces() == 1:
        force = reference.getForce(0)
        if isinstance(force, openmm.CustomExternalForce):
            system.expression = force.getEnergyFunction()


def parse_cvs(spec: Mapping, topology: app.Topology) -> dict[str, CollectiveVariable]:
    """Collective variables from their description.

    Parameters
    ----------
    spec : mapping
        ``name -> {"dihedral": [a, b, c, d]}`` (radians), ``{"distance": [a, b]}`` (nm) or
        ``{"coordinate": a, "axis": "x"}`` (nm). Each atom is a 0-based index or an mdtraj
        selection that selects exactly one atom (``"resid 1 and name CA"``); a single
        selection string instead of the list picks all the atoms at once, in index order.
    topology : openmm.app.Topology

    Raises
    ------
    ValueError
        For an unknown kind, a wrong number of atoms, an index out of range, or a selection
        that matches no atom or several; the CV is named.
    """
    n_atoms = topology.getNumAtoms()
    md_topology = None
    out = {}
    for name, entry in spec.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"cvs.{name}: expected e.g. {{dihedral: [4, 6, 8, 14]}}, got {entry!r}")
        kinds = [k for k in ("dihedral", "distance", "coordinate") if k in entry]
        extra = sorted(set(entry) - {"dihedral", "distance", "coordinate", "axis"})
        if len(kinds) != 1 or extra:
            raise ValueError(f"cvs.{name}: give exactly one of dihedral, distance or coordinate"
                             + (f" (unknown keys {extra})" if extra else ""))
        kind = kinds[0]
        atoms_spec = entry[kind]
        if kind == "coordinate" and not isinstance(atoms_spec, list):
            atoms_spec = [atoms_spec]
        if isinstance(atoms_spec, str):
            md_topology = md_topology or _mdtraj_topology(topology)
            atoms = _select(md_topology, atoms_spec, name, exactly=None)
        elif isinstance(atoms_spec, (list, tuple)):
            atoms = []
            for item in atoms_spec:
                if isinstance(item, str):
                    md_topology = md_topology or _mdtraj_topology(topology)
                    atoms.extend(_select(md_topology, item, name, exactly=1))
                elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                    if not 0 <= item < n_atoms:
                        raise ValueError(f"cvs.{name}: atom index {item} is out of range (the system has {n_atoms} atoms, 0-based)")
                    atoms.append(int(item))
                else:
                    raise ValueError(f"cvs.{name}: atoms are 0-based indices or mdtraj selections, got {item!r}")
        else:
            raise ValueError(f"cvs.{name}: atoms are a list of indices/selections or one selection, got {atoms_spec!r}")
        axis = entry.get("axis", "x")
        if kind == "coordinate" and axis not in _AXES:
            raise ValueError(f"cvs.{name}: axis must be x, y or z, got {axis!r}")
        try:
            out[name] = CollectiveVariable(name, kind, tuple(atoms), _AXES[axis] if kind == "coordinate" else 0)
        except ValueError as exc:
            raise ValueError(f"cvs.{name}: {exc}") from exc
    return out


def _mdtraj_topology(topology: app.Topology):
    import mdtraj

    return mdtraj.Topology.from_openmm(topology)


def _select(md_topology, selection: str, name: str, exactly: int | None) -> list[int]:
    try:
        picked = md_topology.select(selection)
    except Exception as exc:
        raise ValueError(f"cvs.{name}: bad mdtraj selection {selection!r}: {exc}") from exc
    if len(picked) == 0 or (exactly is not None and len(picked) != exactly):
        raise ValueError(f"cvs.{name}: selection {selection!r} matches {len(picked)} atoms; each atom of a CV "
                         f"needs a selection that matches exactly one")
    return [int(i) for i in picked]
