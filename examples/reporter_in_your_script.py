"""An ordinary OpenMM script that collects data with MD, plus one reporter from openmm-adv.

Alanine dipeptide in vacuum with Amber ff14SB at 300 K; every 100 steps the shipped committee
is evaluated on the frame, its uncertainty logged, and the frames above the 99th percentile of
its training set's uncertainties written to to_label.extxyz for labelling. The run stops where
10 reports in a row are above it (the model has left its domain).

Run: ``python examples/reporter_in_your_script.py [--steps 20000] [--output reporter_output]``
"""

import argparse
from pathlib import Path

import openmm
from openmm import app, unit

from openmm_adv.reporter import UncertaintyLimitExceeded, UncertaintyReporter
from openmm_adv.resources import default_committee_path, default_dataset_path
from openmm_adv.systems import alanine_dipeptide


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--output", default="reporter_output")
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    # --- the script you already have ---------------------------------------------------
    pdb = app.PDBFile(alanine_dipeptide().source["structure"])
    forcefield = app.ForceField("amber14-all.xml")
    system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    simulation = app.Simulation(pdb.topology, system, integrator, openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(pdb.positions)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    simulation.reporters.append(app.StateDataReporter(str(out / "state.csv"), 1000, step=True, temperature=True))

    # --- what openmm-adv adds: one reporter, last ----------------------------------------
    reporter = UncertaintyReporter(default_committee_path(), 100, str(out / "uncertainty.csv"),
                                   percentile=99, training_data=default_dataset_path(),
                                   frames=str(out / "to_label.extxyz"), stop_after=10)
    simulation.reporters.append(reporter)
    try:
        simulation.step(args.steps)
    except UncertaintyLimitExceeded as stop:
        print(f"stopped: {stop}")
    reporter.close()
    print(f"{simulation.currentStep} steps; {reporter.n_flagged} of {len(reporter.values)} frames above the "
          f"99th percentile ({reporter.threshold:.1f}) written to {out / 'to_label.extxyz'}")


if __name__ == "__main__":
    main()
