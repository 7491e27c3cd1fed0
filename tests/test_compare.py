"""CI-sized versions of the comparison protocols, run end to end through the CLI."""

import csv
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import yaml

from openmm_adv.analysis import coverage, ramachandran_bins
from openmm_adv.cli import main
from openmm_adv.compare import load_protocol
from openmm_adv.config import ConfigError

PROTOCOLS = Path(__file__).resolve().parents[1] / "protocols"


def _small(name: str, tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load((PROTOCOLS / name / "protocol.yaml").read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "samplers":
            data[key].update(value)
        else:
            data[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name, file", [("ala2_compare", "protocol.yaml"), ("ala2_compare", "protocol_v2.yaml"),
                                        ("double_well", "protocol.yaml")])
def test_shipped_protocols_validate(name, file):
    protocol = load_protocol(PROTOCOLS / name / file)
    assert protocol.repeats >= 3 and protocol.generations >= 5
    assert (PROTOCOLS / name / "README.md").exists()


def test_protocol_errors_name_the_key(tmp_path):
    path = _small("double_well", tmp_path, samplers={"attack": {"kind": "attack", "options": {"kT": 0}}})
    with pytest.raises(ConfigError, match=r"samplers\.attack\.options\.kT: must be greater than 0"):
        load_protocol(path)
    path = _small("double_well", tmp_path, samplers={"x": {"kind": "dft"}})
    with pytest.raises(ConfigError, match=r"samplers\.x\.kind: unknown sampler 'dft'"):
        load_protocol(path)


def test_coverage_counts_only_accessible_bins():
    accessible = np.zeros((36, 36), dtype=bool)
    accessible[10:12, 20] = True  # two bins: phi in [-80, -60), psi [20, 30)
    assert coverage([-75.0], [25.0], accessible) == 0.5
    assert coverage([-75.0, -65.0, 100.0], [25.0, 25.0, 100.0], accessible) == 1.0
    assert ramachandran_bins([179.9, -180.0], [0.0, 0.0]).sum() == 2  # both edges map inside the grid


def test_double_well_protocol_ci_size(tmp_path):
    path = _small("double_well", tmp_path, repeats=2, generations=2, training={"epochs": 60, "patience": 60})
    out = tmp_path / "report"
    assert main(["compare", str(path), "--output", str(out), "--quiet"]) == 0
    report = (out / "REPORT.md").read_text()
    assert "random / attack" in report and "random_narrow / attack" in report
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert {r["sampler"] for r in rows} == {"attack", "random", "random_narrow"}
    assert len(rows) == 3 * 2 * 3  # samplers x repeats x generations 0..2
    for r in rows:  # removing the mean offset can only lower the RMSE
        assert float(r["energy_rmse_shifted"]) <= float(r["energy_rmse"]) + 1e-9
    assert (out / "double_well.png").stat().st_size > 1000
    # generation 0 is the shared initial committee: identical for both samplers of a repeat
    g0 = {(r["sampler"], r["repeat"]): float(r["energy_rmse"]) for r in rows if r["generation"] == "0"}
    assert g0[("attack", "0")] == g0[("random", "0")]
    # resuming a finished comparison recomputes nothing and writes the same numbers
    before = (out / "metrics.json").read_text()
    assert main(["compare", str(path), "--output", str(out), "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text()) == json.loads(before)
    # loops in parallel worker processes give the same numbers as the serial run
    parallel = tmp_path / "parallel"
    assert main(["compare", str(path), "--output", str(parallel), "--quiet", "--workers", "2"]) == 0
    timeless = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]  # noqa: E731
    assert timeless(json.loads((parallel / "metrics.json").read_text())) == timeless(json.loads(before))


def test_ala2_protocol_ci_size(tmp_path):
    pytest.importorskip("openmm_adv.reference_data")
    samplers = yaml.safe_load((PROTOCOLS / "ala2_compare" / "protocol.yaml").read_text())["samplers"]
    small = {
        "attack": {"kind": "attack", "options": {**samplers["attack"]["options"], "n_steps": 10}},
        "reference_md": {**samplers["reference_md"], "options": {"n_steps": 200, "report_interval": 20}, "seeds": 6,
                         "selection": {**samplers["reference_md"]["selection"], "max_selected": 4}},
        "random_displacement": {**samplers["random_displacement"],
                                "selection": {**samplers["random_displacement"]["selection"], "max_selected": 4}},
    }
    path = _small("ala2_compare", tmp_path, repeats=1, generations=1, seeds=4, samplers=small,
                  initial_data={"max_frames": 24}, model={"n_members": 2, "n_features": 8, "n_rbf": 8},
                  # percentile_lower 0: a 2-epoch committee's uncertainty ranks nothing, and whether
                  # its few attacked picks clear the 80th percentile is chance; the pipeline and
                  # its report are what this test is about.
                  training={"epochs": 2, "batch_size": 8}, selection={"max_selected": 4, "percentile_lower": 0},
                  metrics={"stability_steps": 100, "stability_seeds": 2, "stability_timestep_fs": 2.0},
                  max_label_energy=1.0e6)  # a 2-epoch committee's picks lie thousands of kJ/mol up
    out = tmp_path / "report"
    assert main(["compare", str(path), "--output", str(out), "--quiet"]) == 0
    rows = json.loads((out / "metrics.json").read_text())
    assert len(rows) == 3 * 2
    final = [r for r in rows if r["generation"] == 1]
    for row in final:
        assert 0 < row["coverage"] <= 1 and row["force_rmse"] > 0 and row["label_calls"] <= 4, row
        # reference MD's own MD steps are reference evaluations too: on the oracle-call axis
        expected = row["label_calls"] + (6 * 200 if row["sampler"] == "reference_md" else 0)
        assert row["oracle_calls"] == expected, row
        assert 0 <= row["stable_fraction"] <= 1
        assert row["fes_rmse"] > 0 and row["fes_bins"] > 300 and "fes_error_C7ax" in row
    # reference_md's own seed count (6, the protocol's 4): more proposals, the same label budget
    first = json.loads((out / "runs" / "reference_md" / "rep00" / "log.jsonl").read_text().splitlines()[0])
    assert first["samplers"]["reference_md"]["candidates"] == 6 * 200 // 20 and first["oracle_calls"] == 4, first
    for name in ("REPORT.md", "force_rmse_vs_oracle_calls.png", "coverage_vs_oracle_calls.png", "ramachandran.png",
                 "fes_final_committees.png"):
        assert (out / name).exists(), name
    assert "Free-energy fidelity of the final committee" in (out / "REPORT.md").read_text()
    assert "Reaching reference MD's final test force RMSE" in (out / "REPORT.md").read_text()
    # coverage per generation is that of the data labelled up to that generation, no more
    from openmm_adv.data import Dataset
    from openmm_adv.reference_data import load_reference_fes
    from openmm_adv.systems import alanine_dipeptide

    ala2 = alanine_dipeptide()
    data = Dataset.load(out / "runs" / "attack" / "rep00" / "dataset.h5")
    cvs = ala2.compute_cvs(data.positions)
    phi, psi = np.degrees(cvs["phi"]), np.degrees(cvs["psi"])
    accessible = load_reference_fes().accessible_bins(25.0)
    for g in (0, 1):
        (row,) = [r for r in rows if r["sampler"] == "attack" and r["generation"] == g]
        upto = data.provenance["generation"] <= g
        assert row["coverage"] == pytest.approx(coverage(phi[upto], psi[upto], accessible))
        assert row["dataset_size"] == int(upto.sum())
    report = (out / "REPORT.md").read_text()
    assert "4 seeds per generation (reference_md 6)" in report
    label_rows = [line for line in report.splitlines() if line.startswith("| attack |")]
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| sampler | E_ref - E_min"))
    labelled_row = next(line for line in lines[start:] if line.startswith("| attack |"))
    assert "n/a" not in labelled_row, labelled_row  # what it labelled
    # the per-generation tables have a column per generation, g0 and g1
    start = next(i for i, line in enumerate(lines) if line.startswith("Test force RMSE (kJ/mol/nm):"))
    assert lines[start + 2] == "| sampler | g0 | g1 |"
    survival = float(label_rows[0].rstrip(" |").rsplit("|", 1)[1].split()[0])  # the first table's last column
    assert 0 < survival <= 100 * 0.002, label_rows[0]  # 100 stability steps of 2 fs
    assert "0.2 ps (100 steps of 2 fs)" in report
    # the stability run uses the protocol's time step: some committee outlives 100 steps of 0.5 fs
    assert max(r["median_survival_ps"] for r in final) > 100 * 0.0005
    # the diagnostics script reads the same folders: one row per sampler, every labelled pick counted
    diagnose = runpy.run_path(str(PROTOCOLS / "ala2_compare" / "diagnose.py"))
    text = diagnose["diagnose"](out)
    for name in small:
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        picks = int(row.split("|")[2])
        labelled = sum(len(list(g.glob("labels/*.npz"))) for g in (out / "runs" / name).glob("rep*/gen_*"))
        assert picks == labelled > 0, (name, row)


def test_reach_counts_the_first_generation_at_or_below_the_target():
    from openmm_adv.compare.report import reach_of

    def row(sampler, repeat, g, rmse, calls):
        return {"sampler": sampler, "repeat": repeat, "generation": g, "force_rmse": rmse, "oracle_calls": calls}

    rows = [row("reference_md", 0, 0, 300, 0), row("reference_md", 0, 1, 250, 1000), row("reference_md", 0, 2, 200, 2000),
            row("attack", 0, 0, 300, 0), row("attack", 0, 1, 210, 16), row("attack", 0, 2, 199, 32),
            row("attack", 0, 3, 150, 48),
            row("reference_md", 1, 0, 300, 0), row("reference_md", 1, 1, 100, 1000),
            row("attack", 1, 0, 300, 0), row("attack", 1, 1, 150, 16)]
    reach = reach_of(rows, "attack")
    assert reach[0] == {"repeat": 0, "target": 200, "target_calls": 2000, "calls": 32, "generation": 2}
    assert reach[1]["calls"] is None and reach[1]["target"] == 100  # never reached in repeat 1


def test_new_bins_per_label_is_the_coverage_gain_in_bins_over_the_labels_spent():
    from openmm_adv.compare.report import new_bins_per_label

    before = {"coverage": 58 / 410, "label_calls": 0}
    after = {"coverage": 66 / 410, "label_calls": 16}
    assert new_bins_per_label(after, before, 410) == pytest.approx(0.5)
    assert new_bins_per_label(before, None, 410) is None
    assert new_bins_per_label({"coverage": 0.2, "label_calls": 16}, after, 410) is None  # no labels spent


def test_gmm_cv_sampler_runs_on_its_own_single_model(tmp_path):
    """A sampler with its own model (one PaiNN with a Gaussian mixture) beside the shared
    committee: GMM-CV metadynamics with walkers at two temperatures, through the CLI."""
    pytest.importorskip("openmm_adv.reference_data")
    shipped = yaml.safe_load((PROTOCOLS / "ala2_compare" / "protocol_v2.yaml").read_text())["samplers"]
    gmm = shipped["gmm_cv"]
    small = {
        "gmm_cv": {**gmm, "model": {**gmm["model"], "n_features": 8, "gmm_components": 3},
                   "options": {**gmm["options"], "n_steps": 100, "report_interval": 20, "frequency": 20}},
        "random_displacement": {**shipped["random_displacement"],
                                "selection": {**shipped["random_displacement"]["selection"], "max_selected": 4}},
    }
    path = _small("ala2_compare", tmp_path, repeats=1, generations=1, seeds=4, samplers=small,
                  initial_data={"max_frames": 24}, model={"n_members": 2, "n_features": 8, "n_rbf": 8},
                  training={"epochs": 2, "batch_size": 8}, selection={"max_selected": 4, "percentile_lower": 0},
                  metrics={"stability_steps": 50, "stability_seeds": 2, "stability_timestep_fs": 1.0},
                  max_label_energy=1.0e6)
    out = tmp_path / "report"
    assert main(["compare", str(path), "--output", str(out), "--quiet"]) == 0
    from openmm_adv.models import Committee

    own = Committee.load(out / "runs" / "_initial_gmm_cv" / "rep00" / "committee.pt")
    shared = Committee.load(out / "runs" / "_initial" / "rep00" / "committee.pt")
    assert (own.uncertainty_method, own.n_members, shared.uncertainty_method, shared.n_members) == ("gmm", 1, "ensemble", 2)
    final = Committee.load(out / "runs" / "gmm_cv" / "rep00" / "final" / "committee.pt")
    log = [json.loads(line) for line in (out / "runs" / "gmm_cv" / "rep00" / "log.jsonl").read_text().splitlines()]
    generation = next(entry for entry in log if "samplers" in entry)
    assert generation["samplers"]["uncertainty_metadynamics"]["candidates"] == 2 * 100 // 20, generation
    rows = json.loads((out / "metrics.json").read_text())
    assert {r["sampler"] for r in rows} == {"gmm_cv", "random_displacement"}
    for row in rows:
        assert row["force_rmse"] > 0 and row["label_calls"] <= 4
    # the final model was trained again as a single model with its mixture refitted
    assert (final.uncertainty_method, final.n_members) == ("gmm", 1)
    assert final.metadata["uncertainty"]["n_components"] == 3
