"""Langevin MD with the reference potential: the classic data collection."""

from __future__ import annotations

import numpy as np
import openmm
from openmm import unit
from tqdm.auto import tqdm

__all__ = ["reference_md_frames"]


def reference_md_frames(
    system,
    n_frames: int,
    interval: int = 100,
    temperature=300.0,
    timestep=0.0005,
    friction=1.0,
    equilibration: int = 20000,
    start_positions=None,
    seed: int = 0,
    platform: str = "CPU",
    progress: bool = True,
):
    """Frames, energies and forces from unconstrained Langevin MD on ``system``'s reference potential.

    Parameters
    ----------
    system : MolecularSystem
    n_frames : int
    interval : int
        Steps between saved frames.
    temperature : float or Quantity
        Kelvin.
    timestep : float or Quantity
        ps (0.5 fs by default: no constraints, hydrogens move).
    friction : float
        1/ps.

    Returns
    -------
    positions ``[F, N, 3]`` nm, energies ``[F]`` kJ/mol, forces ``[F, N, 3]`` kJ/mol/nm.
    """
    temperature = temperature.value_in_unit(unit.kelvin) if unit.is_quantity(temperature) else float(temperature)
    timestep = timestep.value_in_unit(unit.picosecond) if unit.is_quantity(timestep) else float(timestep)
    omm_system = system.create_reference_system()
    integrator = openmm.LangevinMiddleIntegrator(temperature, friction, timestep)
    integrator.setRandomNumberSeed(seed + 1)  # 0 would mean "pick a random seed"
    context = openmm.Context(omm_system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(system.positions if start_positions is None else start_positions)
    context.setVelocitiesToTemperature(temperature, seed + 1)
    integrator.step(equilibration)
    positions, energies, forces = [], [], []
    for _ in tqdm(range(n_frames), desc="reference MD", disable=not progress, leave=False):
        integrator.step(interval)
        state = context.getState(getPositions=True, getEnergy=True, getForces=True)
        positions.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        forces.append(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    return np.asarray(positions), np.asarray(energies), np.asarray(forces)
