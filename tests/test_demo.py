"""The main job and the shipped default committee."""

import json

import numpy as np
import pytest

from openmm_adv.cli import main
from openmm_adv.data import Dataset, read_extxyz
from openmm_adv.demo import run_demo
from openmm_adv.models import Committee
from openmm_adv.resources import default_committee_path, default_dataset_path


def test_shipped_committee_matches_its_metadata(ala2):
    committee = Committee.load(default_committee_path(), system=ala2)
    meta = committee.metadata
    assert meta["n_members"] == 5 and meta["architecture"] == "StackedPaiNN"
    data = Dataset.load(default_dataset_path())
    assert len(data) == 1000
    # the committee reproduces the validation error it reports, on its own training data
    e, f, u = committee.evaluate_in_batches(data.positions[:200])
    assert np.abs(e - data.energies[:200]).mean() < 3 * meta["metrics"]["val_energy_mae_kj_mol"] + 1.0
    assert np.abs(f - data.forces[:200]).mean() < 3 * meta["metrics"]["val_committee_force_mae_kj_mol_nm"]
    assert meta["metrics"]["val_committee_force_mae_kj_mol_nm"] < meta["metrics"]["val_force_mae_kj_mol_nm"]
    # C7eq training data: phi stays negative
    assert np.all(ala2.compute_cvs(data.positions)["phi"] < 0)
    # the training distance ranges are stored with it (Committee.domain_check), and are the data's
    assert set(committee.domain.rules) == {"isolated", "bond", "nearest"} and committee.domain.n_frames == 1000
    assert committee.domain_check(data.positions).n_out == 0
    assert committee.domain_check(data.positions[:5] * 0.6).out_of_domain.all()


def test_demo_end_to_end(tmp_path):
    lines = []
    summary = run_demo(tmp_path, n_seeds=4, n_steps=20, progress=False, echo=lines.append)
    assert (tmp_path / "ramachandran.png").stat().st_size > 10_000
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["n_seeds"] == 4 and len(on_disk["per_replica"]) == 4
    assert summary["valid"] >= 1
    for replica in on_disk["per_replica"]:
        if replica["valid"]:
            assert replica["uncertainty_after"] > replica["uncertainty_before"]
    z, x, e, f = read_extxyz(tmp_path / "attacked.extxyz")
    assert len(x) == summary["valid"] and e is not None and f is not None
    assert (tmp_path / "attacked.pdb").read_text().count("MODEL") == summary["valid"]
    assert any("valid attacks" in line for line in lines)


def test_cli_reports_bad_input(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path), "--committee", str(tmp_path / "none.pt"), "--quiet"]) == 2
    assert "no committee file" in capsys.readouterr().err


def test_shipped_committee_on_the_all_basin_test_set(ala2):
    """Accuracy and calibration of the shipped committee where it was not trained (README table:
    force MAE 18.6 kJ/mol/nm, Spearman 0.90, uncertainty 8.9-12.8x higher in alpha_L / C7ax)."""
    from openmm_adv.analysis import accuracy_and_calibration
    from openmm_adv.reference_data import assign_basin, load_test_set

    test = load_test_set()
    pick = np.arange(0, len(test), 4)  # every 4th frame: all basins, a quarter of the cost
    x = test.positions[pick]
    cvs = ala2.compute_cvs(x)
    basins = assign_basin(np.degrees(cvs["phi"]), np.degrees(cvs["psi"]))
    committee = Committee.load(default_committee_path(), system=ala2)
    result = accuracy_and_calibration(committee, x, test.energies[pick], test.forces[pick], basins, "C7eq")
    assert result["errors"]["force_mae"] < 25.0
    assert result["calibration"]["spearman"] > 0.85
    ratios = result["calibration"]["median_uncertainty_ratio"]
    assert ratios["alpha_L"] > 4.0 and ratios["C7ax"] > 4.0
    per_group = result["errors"]["per_group"]
    assert per_group["C7ax"]["force_mae"] > per_group["C7eq"]["force_mae"]  # worse where it never trained
