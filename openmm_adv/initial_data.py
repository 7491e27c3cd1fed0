"""The first labelled data for a new molecule: thermal geometries around its minimum.

Three ways, all labelled by the chosen oracle:

- ``md``: Langevin MD with the system's reference force field (it must have one), one frame
  every ``interval`` steps after equilibration;
- ``displacements``: classical harmonic sampling in the normal modes of the minimum at the
  given temperature: each mode ``k`` (mass-weighted Hessian eigenvalue ``lambda_k``) gets a
  Gaussian amplitude of variance ``kT / lambda_k``, so that every frame carries about
  ``(3N - 6) kT / 2`` of harmonic potential energy whatever the molecule's size or stiffness
  (a fixed Cartesian displacement is either too small for a heavy torsion or far too large
  for an X-H bond). The Hessian comes from the reference force field where there is one, else
  from the oracle by finite differences of its forces (``6N`` oracle calls);
- ``import``: frames of an existing trajectory (any format mdtraj reads, an extxyz file or an
  openmm-adv dataset), kept with their labels when the file has them.
"""

from __future__ import annotations

import numpy as np
import openmm
from openmm import unit

__all__ = ["numerical_hessian", "normal_modes", "thermal_displacements", "reference_md_frames",
           "minimise_with_reference", "minimise_with_oracle"]

BOLTZMANN_KJ_MOL_K = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
#: Softest vibration the sampling trusts (cm^-1). Below it are torsions and hindered rotors,
#: whose thermal motion is neither harmonic nor linear in Cartesians: a straight-line
#: displacement of kT/lambda along them stretches bonds. Alanine dipeptide at 300 K, 200
#: frames, Amber energy above the minimum (harmonic expectation 75 kJ/mol): floor 50 cm^-1,
#: median 300, 95th percentile 3189 kJ/mol; 100: 140 / 848; 200: 81 / 161; 400: 67 / 92 (the
#: soft modes then sampled too narrowly). Exploring torsions is what MD and the torsion
#: attack are for.
MIN_WAVENUMBER = 200.0
_LENGTH_SCALE = 0.01  # nm
_WAVENUMBER_PER_SQRT_LAMBDA = 1.0 / (2 * np.pi * 2.99792458e-2)  # sqrt(kJ/mol/nm^2/amu) = 1/ps -> cm^-1


def numerical_hessian(forces_of, positions: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """Hessian ``[3N, 3N]`` (kJ/mol/nm^2) by central differences of forces.

    Parameters
    ----------
    forces_of : callable
        Positions ``[B, N, 3]`` nm -> forces ``[B, N, 3]`` kJ/mol/nm (one batch of ``6N``).
    positions : numpy.ndarray
        ``[N, 3]`` nm, normally a minimum.
    step : float
        Displacement in nm.
    """
    x0 = np.asarray(positions, dtype=np.float64)
    n = x0.size
    displaced = np.repeat(x0.reshape(1, -1), 2 * n, axis=0)
    displaced[np.arange(n), np.arange(n)] += step
    displaced[n + np.arange(n), np.arange(n)] -= step
    forces = np.asarray(forces_of(displaced.reshape(2 * n, *x0.shape)), dtype=np.float64).reshape(2 * n, n)
    hessian = -(forces[:n] - forces[n:]) / (2 * step)
    return 0.5 * (hessian + hessian.T)


def normal_modes(hessian: np.ndarray, masses: np.ndarray, n_rigid: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Vibrational eigenvalues ``[M]`` (kJ/mol/nm^2/amu) and mass-weighted eigenvectors
    ``[3N, M]`` of a Hessian, the ``n_rigid`` modes nearest zero (translations and rotations)
    removed."""
    weights = np.repeat(1.0 / np.sqrt(np.asarray(masses, dtype=np.float64)), 3)
    values, vectors = np.linalg.eigh(hessian * weights[:, None] * weights[None, :])
    keep = np.sort(np.argsort(np.abs(values))[n_rigid:])
    return values[keep], vectors[:, keep]


def thermal_displacements(positions: np.ndarray, masses: np.ndarray, hessian: np.ndarray, n_frames: int,
                          temperature: float, rng: np.random.Generator,
                          min_wavenumber: float = MIN_WAVENUMBER) -> tuple[np.ndarray, dict]:
    """Geometries ``[n_frames, N, 3]`` drawn from the harmonic Boltzmann distribution at
    ``temperature`` (K) around ``positions``, and a summary of the modes used.

    Modes softer than ``min_wavenumber`` (and imaginary ones: the structure is not a minimum
    along them) are sampled as if they had that wavenumber.
    """
    x0 = np.asarray(positions, dtype=np.float64)
    n_atoms = len(x0)
    if n_atoms < 2:
        raise ValueError("thermal displacements need a molecule of at least two atoms")
    n_rigid = 5 if n_atoms == 2 else 6  # a linear molecule of three or more atoms loses a bending mode here
    values, vectors = normal_modes(hessian, masses, n_rigid)
    floor = (min_wavenumber / _WAVENUMBER_PER_SQRT_LAMBDA) ** 2
    stiffness = np.maximum(values, floor)
    kT = BOLTZMANN_KJ_MOL_K * temperature
    amplitudes = rng.normal(size=(n_frames, len(values))) * np.sqrt(kT / stiffness)
    weights = np.repeat(1.0 / np.sqrt(np.asarray(masses, dtype=np.float64)), 3)
    displacement = (amplitudes @ vectors.T) * weights
    wavenumbers = np.sign(values) * np.sqrt(np.abs(values)) * _WAVENUMBER_PER_SQRT_LAMBDA
    info = {"n_modes": int(len(values)), "n_soft_or_imaginary": int((values < floor).sum()),
            "lowest_wavenumber_cm": float(wavenumbers.min()), "highest_wavenumber_cm": float(wavenumbers.max()),
            "expected_harmonic_energy_kj_mol": float(0.5 * len(values) * kT)}
    return x0[None] + displacement.reshape(n_frames, n_atoms, 3), info


def minimise_with_reference(system, positions: np.ndarray, tolerance: float = 1.0) -> np.ndarray:
    """A local minimum of the system's reference potential from ``positions`` (nm)."""
    context = openmm.Context(system.create_reference_system(), openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, tolerance * unit.kilojoule_per_mole / unit.nanometer, 0)
    return context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def minimise_with_oracle(oracle, positions: np.ndarray, max_calls: int = 200, force_tolerance: float = 5.0
                         ) -> tuple[np.ndarray, int]:
    """A local minimum of the oracle's energy (L-BFGS), and the number of oracle calls it took.

    Raises
    ------
    ValueError
        When the oracle fails on the way (its reason is given).
    """
    from scipy.optimize import minimize

    shape = np.asarray(positions).shape
    calls = 0

    def energy_and_gradient(scaled):
        nonlocal calls
        calls += 1
        labels = oracle.compute((scaled * _LENGTH_SCALE).reshape(1, *shape))
        if not labels.ok[0]:
            raise ValueError(f"the oracle failed while minimising the structure: {labels.failures()[0][1]}")
        return float(labels.energies[0]), -labels.forces[0].ravel() * _LENGTH_SCALE

    # L-BFGS takes a first step of about one unit of its variables; in nm that is a whole
    # molecule, so it works in units of 0.01 nm. gtol is then in kJ/mol per 0.01 nm.
    result = minimize(energy_and_gradient, np.asarray(positions, dtype=np.float64).ravel() / _LENGTH_SCALE,
                      jac=True, method="L-BFGS-B",
                      options={"maxfun": max_calls, "gtol": force_tolerance * _LENGTH_SCALE})
    return result.x.reshape(shape) * _LENGTH_SCALE, calls


def reference_md_frames(system, positions: np.ndarray, n_frames: int, temperature: float, interval: int,
                        equilibration_steps: int, timestep_fs: float, friction: float, seed: int,
                        progress=None) -> np.ndarray:
    """Frames ``[n_frames, N, 3]`` (nm) of Langevin MD on the reference force field."""
    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, friction / unit.picosecond,
                                                 timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(int(seed) + 1)
    context = openmm.Context(system.create_reference_system(), integrator, openmm.Platform.getPlatformByName("CPU"),
                             {"Threads": "1"})
    context.setPositions(positions)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, int(seed) + 1)
    integrator.step(equilibration_steps)
    frames = np.empty((n_frames, *np.asarray(positions).shape))
    for k in range(n_frames):
        integrator.step(interval)
        frames[k] = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if progress is not None:
            progress(1)
    return frames
