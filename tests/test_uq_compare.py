"""The uq_compare study at CI size, through the CLI: every method on both datasets, resumable."""

import json
from pathlib import Path

import pytest
import yaml

from openmm_adv.cli import main
from openmm_adv.uq_compare import load_uq_protocol

PROTOCOLS = Path(__file__).resolve().parents[1] / "protocols"


def test_shipped_protocol_validates():
    protocol = load_uq_protocol(PROTOCOLS / "uq_compare" / "protocol.yaml")
    assert protocol.methods == ["ensemble", "gmm", "mve", "evidential"]
    assert {d.kind for d in protocol.datasets.values()} == {"ala2", "ammonia_xtb"}


def test_uq_compare_ci_size(tmp_path):
    pytest.importorskip("tblite")
    data = yaml.safe_load((PROTOCOLS / "uq_compare" / "protocol.yaml").read_text())
    data.update(ensemble_members=2, gmm_components=3, head_epochs=3,
                model={**data["model"], "n_features": 8}, training={"epochs": 3, "batch_size": 8},
                robustness={"n_runs": 2, "n_steps": 40, "timestep_fs": 1.0, "temperatures": [300.0, 900.0]},
                datasets={"ala2": {"kind": "ala2", "train_frames": 24, "test_frames": 20},
                          "ammonia_xtb": {"kind": "ammonia_xtb", "train_frames": 24, "test_frames": 20}})
    path = tmp_path / "uq.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "report"
    assert main(["uq-compare", str(path), "--output", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    for name in ("ala2", "ammonia_xtb"):
        block = results[name]
        assert block["n_train"] == 24 and block["n_in-domain"] == 20 and block["n_out-of-domain"] <= 20
        assert set(block["methods"]) == {"ensemble", "gmm", "mve", "evidential"}
        for method, row in block["methods"].items():
            for split in ("in-domain", "out-of-domain", "all"):
                m = row[split]
                assert -1 <= m["spearman"] <= 1 and 0 <= m["miscalibration_area"] <= 0.5, (name, method, split)
                assert m["force_rmse"] > 0 and m["calibrated_nll"]["scale"] > 0
            assert row["training_seconds"] > 0 and row["eval_ms_per_structure"] > 0
            assert set(row["robustness"]) == {"300", "900"}
            assert all(0 <= run["fraction_stable"] <= 1 for run in row["robustness"].values())
        # single-model methods pay for the single model too
        costs = json.loads((out / name / "training_seconds.json").read_text())
        assert block["methods"]["gmm"]["training_seconds"] == pytest.approx(costs["single"] + costs["gmm"])
        assert (out / f"error_vs_uncertainty_{name}.png").stat().st_size > 5000
    report = (out / "REPORT.md").read_text()
    assert "### out-of-domain" in report and "| evidential |" in report and "stable at 900 K" in report
    # a rerun trains and labels nothing again
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")} | {p: p.stat().st_mtime_ns for p in out.rglob("labels.h5")}
    assert main(["uq-compare", str(path), "--output", str(out), "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
