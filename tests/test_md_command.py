"""`openmm-adv md`: MD on a committee's mean energy with its uncertainty logged."""

import json

import numpy as np
import pytest

from openmm_adv.cli import main
from openmm_adv.commands import run_md
from openmm_adv.config import ConfigError, MDRunConfig, parse_section


def test_md_logs_uncertainty_and_stops_on_request(tmp_path):
    config = parse_section(MDRunConfig, {"output": str(tmp_path / "md"), "n_steps": 400, "report_interval": 100,
                                         "threshold": 0.0, "stop_after": 2})
    summary = run_md(config, progress=False, echo=lambda m: None)
    # every report is above a zero threshold: two in a row stop the run at step 200, the molecule whole
    assert summary["steps"] == 200 and summary["stable"] and "consecutive" in summary["stopped"]
    log = np.loadtxt(tmp_path / "md" / "uncertainty.csv", delimiter=",", skiprows=1)
    assert log[:, 0].tolist() == [100, 200] and log[:, 4].tolist() == [1, 1]
    frames = (tmp_path / "md" / "to_label.extxyz").read_text()
    assert frames.count("\n22\n") + frames.startswith("22\n") == 2
    assert json.loads((tmp_path / "md" / "summary.json").read_text())["flagged_frames"] == 2


def test_md_stops_where_the_molecule_breaks(tmp_path, monkeypatch):
    """A committee that pulls two bonded atoms apart is caught by the geometry check."""
    import openmm_adv.commands as commands

    original = commands._BrokenMoleculeStop

    class Breaking:
        def __init__(self, check, interval):
            self.inner = original(check, interval)
            self.failure = None

        def describeNextReport(self, simulation):
            return self.inner.describeNextReport(simulation)

        def report(self, simulation, state):
            from openmm import unit

            x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            x[0] += 0.5  # a C-H bond five times its length
            simulation.context.setPositions(x)
            try:
                self.inner.report(simulation, simulation.context.getState(getPositions=True))
            finally:
                self.failure = self.inner.failure

    monkeypatch.setattr(commands, "_BrokenMoleculeStop", Breaking)
    summary = run_md(parse_section(MDRunConfig, {"output": str(tmp_path / "md"), "n_steps": 300, "report_interval": 100}),
                     progress=False, echo=lambda m: None)
    assert summary["steps"] == 100 and not summary["stable"] and "bond" in summary["broken_at"]["reason"]


def test_md_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="percentile needs the committee's training data"):
        parse_section(MDRunConfig, {"output": "x", "percentile": 99})
    with pytest.raises(ConfigError, match="either threshold or percentile"):
        parse_section(MDRunConfig, {"output": "x", "percentile": 99, "threshold": 1.0, "training_data": "d.h5"})
    config = tmp_path / "md.yaml"
    config.write_text(f"output: {tmp_path / 'o'}\nsystem: {{name: ammonia}}\n")
    assert main(["md", str(config), "--quiet"]) == 2  # the shipped committee is alanine dipeptide's
