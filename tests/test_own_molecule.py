"""A user's own molecule end to end through the command line only: init, loop, MD with the
final committee, export, and the exported data read back by ASE. Ethanol labelled by GFN2-xTB (an xyz file, no force field) and
a capped tri-alanine from a PDB with Amber ff14SB in vacuum (larger than alanine dipeptide)."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from openmm_adv.cli import main
from openmm_adv.data import Dataset

EXAMPLES = Path(__file__).parents[1] / "examples"
SMALL_MODEL = "model: {architecture: painn, n_members: 3, n_features: 16, n_interactions: 1}\n"
QUICK_TRAINING = "training: {epochs: 10, batch_size: 8, learning_rate: 5.0e-3}\n"


def _cli(*args) -> None:
    quiet = ["--quiet"] if args[0] != "export" else []
    assert main([*args, *quiet]) == 0, f"openmm-adv {' '.join(args)} failed"


@pytest.mark.slow
def test_ethanol_with_xtb_from_the_command_line(tmp_path, monkeypatch):
    pytest.importorskip("tblite")
    ase_io = pytest.importorskip("ase.io")
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLES / "ethanol_xtb" / "ethanol.xyz", "ethanol.xyz")
    system = "system: {structure: ethanol.xyz, cvs: {hoc_c: {dihedral: [3, 2, 1, 0]}, c_o: {distance: [1, 2]}}}\n"
    Path("init.yaml").write_text(system + "oracle: {kind: xtb}\noutput: init.h5\nn_frames: 16\n")
    _cli("init", "init.yaml")
    initial = Dataset.load("init.h5")
    assert len(initial) == 16 and (initial.energies - initial.energies.min()).max() < 422.7  # ethanol's default cap

    Path("loop.yaml").write_text(
        system + "oracle: {kind: xtb}\ninitial_data: {path: init.h5}\n" + SMALL_MODEL + QUICK_TRAINING
        + "samplers:\n  attack: {n_steps: 20, batch_size: 4}\n"
        + "  torsion_attack: {n_steps: 15, batch_size: 4, refine_steps: 5, torsions: cvs, novelty_weight: 1.0,"
          " novelty_bandwidth: 0.1, novelty_cap: 4.0}\n"
        + "selection: {min_rmsd: 0.005, max_selected: 4}\nloop: {generations: 2, seeds: 4}\n")
    _cli("loop", "loop.yaml", "--run-dir", "run")
    dataset = Dataset.load("run/dataset.h5")
    assert len(dataset) > 16 and set(dataset.provenance["generation"].tolist()) == {0, 1, 2}
    assert Path("run/final/committee.pt").exists()

    # 1 ps of MD on the final committee, from the last labelled frame, uncertainty logged
    Path("md.yaml").write_text(system + "committee: run/final/committee.pt\nstart: run/dataset.h5\noutput: md\n"
                               "n_steps: 2000\nreport_interval: 100\npercentile: 90\ntraining_data: run/dataset.h5\n")
    _cli("md", "md.yaml")
    summary = __import__("json").loads(Path("md/summary.json").read_text())
    assert summary["time_ps"] == pytest.approx(1.0) and summary["stable"]
    log = np.loadtxt("md/uncertainty.csv", delimiter=",", skiprows=1)
    assert len(log) == 20 and np.isfinite(log[:, 2]).all()
    flagged = int(log[:, 4].sum())
    assert flagged == summary["flagged_frames"]
    if flagged:
        assert len(ase_io.read("md/to_label.extxyz", index=":")) == flagged

    _cli("export", "run", "--output", "ethanol.extxyz")
    frames = ase_io.read("ethanol.extxyz", index=":")
    assert len(frames) == len(dataset)
    assert frames[0].get_chemical_symbols() == ["C", "C", "O", "H", "H", "H", "H", "H", "H"]
    # units at the boundary: extxyz carries eV and Angstrom, the dataset kJ/mol and nm
    np.testing.assert_allclose(frames[-1].get_potential_energy() * 96.48533212331, dataset.energies[-1], rtol=1e-9)
    np.testing.assert_allclose(frames[-1].get_positions() / 10.0, dataset.positions[-1], atol=1e-6)


@pytest.mark.slow
def test_capped_tri_alanine_pdb_with_amber_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLES / "peptide_amber" / "ace_ala3_nme.pdb", "peptide.pdb")
    system = ("system:\n  structure: peptide.pdb\n  forcefield: [amber14-all.xml]\n  cvs:\n"
              "    phi2: {dihedral: ['resid 1 and name C', 'resid 2 and name N', 'resid 2 and name CA', 'resid 2 and name C']}\n"
              "    psi2: {dihedral: ['resid 2 and name N', 'resid 2 and name CA', 'resid 2 and name C', 'resid 3 and name N']}\n")
    Path("init.yaml").write_text(system + "output: init.h5\nn_frames: 24\nmd: {interval: 100, equilibration_steps: 500}\n")
    _cli("init", "init.yaml")  # reference MD with Amber, labelled by the same force field (oracle openmm)
    assert len(Dataset.load("init.h5")) == 24
    Path("loop.yaml").write_text(
        system + "initial_data: {path: init.h5}\n" + SMALL_MODEL + QUICK_TRAINING
        + "samplers:\n  torsion_attack: {n_steps: 15, batch_size: 4, refine_steps: 5}\n"
        + "  metadynamics: {n_steps: 200, frequency: 50, report_interval: 50, cvs: [phi2, psi2]}\n"
        + "selection: {min_rmsd: 0.005, max_selected: 6}\nloop: {generations: 1, seeds: 4}\n")
    _cli("loop", "loop.yaml", "--run-dir", "run")
    dataset = Dataset.load("run/dataset.h5")
    assert len(dataset) > 24 and dataset.n_atoms == 42
    samplers = {s.decode() for s in dataset.provenance["sampler"]}
    assert samplers & {"torsion_attack", "metadynamics"}, samplers


@pytest.mark.parametrize("folder", ["ethanol_xtb", "peptide_amber"])
def test_shipped_examples_are_valid_configs(folder, monkeypatch):
    """The example configs parse, name files that exist, and describe the same molecule."""
    from openmm_adv.builders import build_system
    from openmm_adv.config import InitRunConfig, LoopRunConfig, MDRunConfig, load_yaml, parse_section

    monkeypatch.chdir(EXAMPLES / folder)
    systems = []
    for name, cls in (("init", InitRunConfig), ("loop", LoopRunConfig), ("md", MDRunConfig)):
        config = parse_section(cls, load_yaml(f"{name}.yaml"))
        systems.append(build_system(config.system))
    assert len({(s.n_atoms, tuple(s.atomic_numbers)) for s in systems}) == 1
    assert systems[0].collective_variables  # CVs for the reports, metadynamics and the torsion attack


def test_reporter_example_script_runs(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("reporter_example", EXAMPLES / "reporter_in_your_script.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--steps", "300", "--output", str(tmp_path)])
    assert "300 steps" in capsys.readouterr().out
    assert len((tmp_path / "uncertainty.csv").read_text().splitlines()) == 1 + 3
