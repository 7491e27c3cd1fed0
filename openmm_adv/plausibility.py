"""What labels and geometries may enter a dataset: energies in range, sane forces, nm positions."""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_ATOMIC_FORCE", "MAX_ENERGY_PER_ATOM", "SAMPLING_KT", "default_max_label_energy", "label_problems",
           "units_problem"]

#: kJ/mol: the attack's default sampling temperature (5 kcal/mol, about 2500 K).
SAMPLING_KT = 20.9


def default_max_label_energy(n_atoms: int, kT: float = SAMPLING_KT) -> float | None:
    """The default cap on a label's energy above the lowest label (kJ/mol), or None for
    systems with no vibrations (one- and two-particle toys).

    A molecule of N atoms in the harmonic approximation holds a potential energy above its
    minimum that follows a Gamma distribution of shape ``k = (3N - 6) / 2`` and scale kT. The
    cap is its mean plus three standard deviations at the attack's default sampling
    temperature, ``kT (k + 3 sqrt(k))``: geometries above it are out of reach of the default
    samplers unless bonds break or atoms collide, and a label there spends the fit on what
    no simulation visits. It scales with the molecule: ammonia 171, ethanol 422, alanine
    dipeptide 970 kJ/mol.
    """
    k = (3 * int(n_atoms) - 6) / 2
    if k <= 0:
        return None
    return float(kT * (k + 3 * np.sqrt(k)))


#: kJ/mol/nm (about 240 kcal/mol/Angstrom): no atom of a geometry worth labelling feels more.
#: Larger forces come from overlapping atoms, bonds stretched to several times their length
#: (positions in Angstrom read as nm), or forces in other units. The default data's largest
#: atomic force is 5.6e3; an Amber C-H bond stretched by a third of its length pulls with 1e4,
#: and one of 1000 kJ/mol strain energy (the compare protocols' cap) with 2.4e4.
MAX_ATOMIC_FORCE = 1e5

#: kJ/mol per atom (about 100 eV): no label of a bound molecule lies this far above zero. A
#: quantum total energy is negative and a force field's a few kJ/mol per atom either side; the
#: Amber labels of alanine dipeptide with positions in Angstrom read as nm lie near 2e5.
MAX_ENERGY_PER_ATOM = 1e4

#: Geometry units: the median over atoms of the distance to the nearest atom, divided by the
#: two covalent radii's sum, is about 1 in any molecule (1.0-1.3 in thermal geometries). Above
#: ``UNITS_TOO_LONG`` the frames look like Angstrom read as nm (10); below ``UNITS_TOO_SHORT``
#: like nm read as Angstrom (0.1).
UNITS_TOO_LONG, UNITS_TOO_SHORT = 3.0, 0.35


def label_problems(energies, forces, n_atoms: int, lowest: float | None = None,
                   max_label_energy: float | None = None) -> list[str | None]:
    """Why each label may not enter a dataset, or None where it may.

    Parameters
    ----------
    energies : array_like
        ``[B]`` kJ/mol.
    forces : array_like
        ``[B, N, 3]`` kJ/mol/nm.
    n_atoms : int
    lowest : float, optional
        The lowest energy of the labels already in the dataset (kJ/mol); None for an empty one.
    max_label_energy : float, optional
        A label more than this above ``lowest`` (the loop's cap, see
        :func:`default_max_label_energy`) or more than this below it (another oracle's energy
        zero) is refused; None: no range check.

    Returns
    -------
    list of (str or None)
        Per label: non-finite values, an atomic force above :data:`MAX_ATOMIC_FORCE`, an energy
        above :data:`MAX_ENERGY_PER_ATOM` per atom, or an energy out of range, with the fix.
    """
    energies = np.asarray(energies, dtype=np.float64).reshape(-1)
    forces = np.asarray(forces, dtype=np.float64).reshape(len(energies), -1, 3)
    problems: list[str | None] = []
    for energy, f in zip(energies, forces):
        if not (np.isfinite(energy) and np.isfinite(f).all()):
            problems.append("non-finite energy or forces")
            continue
        largest = float(np.sqrt((f * f).sum(axis=1)).max()) if f.size else 0.0
        if largest > MAX_ATOMIC_FORCE:
            problems.append(f"rejected: an atomic force of {largest:.3g} kJ/mol/nm, over {MAX_ATOMIC_FORCE:.0e}: "
                            "overlapping atoms, positions in Angstrom read as nm, or forces in other units than "
                            "kJ/mol/nm")
            continue
        if energy > MAX_ENERGY_PER_ATOM * n_atoms:
            problems.append(f"rejected: energy {energy:.4g} kJ/mol is {energy / n_atoms:.3g} per atom, over "
                            f"{MAX_ENERGY_PER_ATOM:.0e}: positions in Angstrom read as nm, or energies in other units "
                            "than kJ/mol")
            continue
        if lowest is not None and max_label_energy is not None and energy - lowest > max_label_energy:
            problems.append(f"rejected: reference energy {energy - lowest:.0f} kJ/mol above the dataset's lowest, "
                            f"over max_label_energy = {max_label_energy:g}")
            continue
        if lowest is not None and max_label_energy is not None and lowest - energy > max_label_energy:
            problems.append(f"rejected: reference energy {lowest - energy:.0f} kJ/mol below the dataset's lowest, more "
                            f"than max_label_energy = {max_label_energy:g}: another oracle's energy zero (xTB total "
                            "energies lie about 1e5 kJ/mol below a force field's) or other units")
            continue
        problems.append(None)
    return problems


def units_problem(atomic_numbers, positions, max_frames: int = 10) -> str | None:
    """Why frames' geometry says their positions are in other units than nm, or None.

    Compares each atom's distance to its nearest neighbour with the sum of their covalent
    radii (:data:`openmm_adv.systems.covalent.COVALENT_RADIUS_NM`; 0.15 nm for elements
    without one), median over atoms and up to ``max_frames`` evenly spaced frames. Molecules of
    one atom pass.
    """
    from scipy.spatial import cKDTree

    from .systems.covalent import COVALENT_RADIUS_NM

    numbers = np.asarray(atomic_numbers, dtype=np.int64)
    xyz = np.asarray(positions, dtype=np.float64).reshape(-1, len(numbers), 3)
    if len(numbers) < 2 or len(xyz) == 0:
        return None
    radii = np.array([COVALENT_RADIUS_NM.get(int(z), 0.15) for z in numbers])
    ratios = []
    for frame in xyz[np.unique(np.linspace(0, len(xyz) - 1, min(len(xyz), max_frames)).astype(int))]:
        if not np.isfinite(frame).all():
            continue
        distance, index = cKDTree(frame).query(frame, k=2)
        ratios.append(distance[:, 1] / (radii + radii[index[:, 1]]))
    if not ratios:
        return None
    ratio = float(np.median(np.concatenate(ratios)))
    if ratio > UNITS_TOO_LONG:
        return (f"atoms lie {ratio:.1f} times farther from their nearest neighbour than a covalent bond: the "
                "positions look like Angstrom read as nm; convert them to nm (divide by 10)")
    if ratio < UNITS_TOO_SHORT:
        return (f"atoms lie {ratio:.2f} times a covalent bond from their nearest neighbour: the positions look "
                "10 times too small (nm written where Angstrom belong, as in an extxyz file?); convert them")
    return None
