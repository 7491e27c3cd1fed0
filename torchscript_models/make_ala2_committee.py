"""Regenerate the shipped default committee for alanine dipeptide, reproducibly.

1. Unconstrained Langevin MD with Amber ff14SB (the reference potential) at 300 K from the
   shipped C7eq structure: 20 ps equilibration, then 1000 frames every 50 fs (seed 0).
2. Labels: the Amber energies and forces of those frames (``ala2_c7eq_300K.h5``).
3. A 5-member committee trained on energies and forces with the ``painn`` recipe of
   :mod:`openmm_adv.recipes` (equivariant StackedPaiNN members, a fixed 10 % validation split,
   bootstrap resampling per member, forces weighted 100:1, cosine learning-rate decay, weight
   averaging): ``ala2_committee.pt``, metadata inside the file and copied to
   ``ala2_committee.json``.

Run from the repository root: ``python torchscript_models/make_ala2_committee.py``
(see README.md, "Shipped committee", for the time it takes on 2 CPU cores; the Amber MD is
rerun only with ``--regenerate-data``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from openmm_adv._torch import configure_threads
from openmm_adv.data import Dataset
from openmm_adv.models import Committee
from openmm_adv.recipes import recipe
from openmm_adv.samplers.reference_md import reference_md_frames
from openmm_adv.systems import alanine_dipeptide

HERE = Path(__file__).resolve().parent
RECIPE = "painn"
MD = dict(n_frames=1000, interval=100, temperature=300.0, timestep=0.0005, equilibration=40000, seed=0)


def main() -> None:
    configure_threads(2)
    system = alanine_dipeptide()
    data_path = HERE / "ala2_c7eq_300K.h5"
    if data_path.exists() and "--regenerate-data" not in sys.argv:
        data = Dataset.load(data_path)
        positions, energies, forces = data.positions, data.energies, data.forces
        print(f"reusing {data_path} (pass --regenerate-data to rerun the Amber MD)")
    else:
        positions, energies, forces = reference_md_frames(system, **MD)
        data = Dataset(system.atomic_numbers)
        data.append(positions, energies, forces, generation=0, sampler="reference_md_300K", oracle="amber14")
        data.save(data_path)
    cvs = system.compute_cvs(positions)
    print(f"{len(data)} frames; phi in [{np.degrees(cvs['phi']).min():.0f}, {np.degrees(cvs['phi']).max():.0f}] deg")

    committee, report = recipe(RECIPE).trainer().train(data, seed=0)
    print(json.dumps(report.summary(), indent=1))
    committee.save(
        HERE / "ala2_committee.pt",
        system="alanine_dipeptide",
        reference="amber14-all.xml (ff14SB), vacuum, no cutoff, no constraints",
        training_data="ala2_c7eq_300K.h5",
        training_md=MD,
        recipe=RECIPE,
        command="python torchscript_models/make_ala2_committee.py",
    )
    loaded = Committee.load(HERE / "ala2_committee.pt", system=system)
    meta = dict(loaded.metadata)
    meta["training_energies"] = f"{len(meta['training_energies'])} values (stored in the .pt file)"
    (HERE / "ala2_committee.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("wrote", HERE / "ala2_committee.pt")


if __name__ == "__main__":
    sys.exit(main())
