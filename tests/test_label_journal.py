"""`openmm-adv label` saves each label as it comes back: a killed run resumes without losing or
repeating a label, and the append happens once."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

from openmm_adv.commands import run_label
from openmm_adv.config import LabelRunConfig, parse_section
from openmm_adv.data import Dataset
from openmm_adv.label_journal import LabelJournal, journal_key
from openmm_adv.oracles import AnalyticOracle
from openmm_adv.systems import double_well

TESTS = os.path.dirname(os.path.abspath(__file__))


def _label_config(tmp_path, output):
    frames = np.random.default_rng(2).normal([-1.0, 0.0, 0.0], 0.2, size=(6, 1, 3))
    unlabelled = Dataset(double_well().atomic_numbers)  # frames to label, in a dataset file
    unlabelled.append(frames, np.zeros(6), np.zeros_like(frames), generation=0, sampler="md", oracle="none")
    unlabelled.save(tmp_path / "frames.h5")
    return frames, {"input": str(tmp_path / "frames.h5"), "output": str(output),
                    "system": {"name": "double_well"}, "oracle": {"kind": "analytic"}}


def _content(path):
    data = Dataset.load(path)
    return data.positions, data.energies, data.forces


def test_a_label_run_killed_midway_resumes_without_losing_or_repeating_a_label(tmp_path):
    frames, config = _label_config(tmp_path, tmp_path / "killed.h5")
    # In-process labelling whose oracle kills the whole process at the 4th frame (once).
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {TESTS!r})
        from oracle_faults import Misbehaves
        from openmm_adv import commands
        from openmm_adv.config import LabelRunConfig, parse_section
        from openmm_adv.oracles import AnalyticOracle
        exact = commands.build_oracle
        def crashing(section, system):
            oracle = exact(section, system)
            return AnalyticOracle(Misbehaves("crash", {float(frames[3, 0, 0])!r}, {str(tmp_path / 'crashed')!r},
                                             oracle.energy_forces_fn), n_atoms=1, name=oracle.name)
        commands.build_oracle = crashing
        commands.run_label(parse_section(LabelRunConfig, {config!r}), echo=lambda m: None)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert not (tmp_path / "killed.h5").exists()  # nothing appended yet ...
    assert len(list((tmp_path / "killed.h5.partial").glob("*.npz"))) == 3  # ... but three labels kept

    messages = []
    summary = run_label(parse_section(LabelRunConfig, config), echo=messages.append)
    assert "labelling 3 frames" in messages[0] and "3 labelled by an earlier run" in messages[0]
    assert summary["labelled"] == 6 and not (tmp_path / "killed.h5.partial").exists()

    _, uninterrupted = _label_config(tmp_path, tmp_path / "whole.h5")
    run_label(parse_section(LabelRunConfig, uninterrupted), echo=lambda m: None)
    for a, b in zip(_content(tmp_path / "killed.h5"), _content(tmp_path / "whole.h5")):
        np.testing.assert_array_equal(a, b)


def test_a_run_killed_after_its_append_does_not_append_twice(tmp_path):
    _, config = _label_config(tmp_path, tmp_path / "data.h5")
    removed = LabelJournal.remove
    LabelJournal.remove = lambda self: None  # as if killed between the append and the clean-up
    try:
        run_label(parse_section(LabelRunConfig, config), echo=lambda m: None)
    finally:
        LabelJournal.remove = removed
    assert (tmp_path / "data.h5.partial").exists()
    summary = run_label(parse_section(LabelRunConfig, config), echo=lambda m: None)
    assert summary["dataset_size"] == len(Dataset.load(tmp_path / "data.h5")) == 6


def test_a_journal_of_other_work_is_refused(tmp_path):
    x = np.zeros((2, 1, 3))
    LabelJournal(tmp_path / "j", journal_key(x, {"oracle": "a"}), 2)
    with pytest.raises(ValueError, match="holds labels of other frames, another system or another oracle; remove it"):
        LabelJournal(tmp_path / "j", journal_key(x + 1e-9, {"oracle": "a"}), 2)
    with pytest.raises(ValueError, match="holds labels of other frames"):
        LabelJournal(tmp_path / "j", journal_key(x, {"oracle": "b"}), 2)
    journal = LabelJournal(tmp_path / "j", journal_key(x, {"oracle": "a"}), 2)
    oracle = AnalyticOracle(lambda p: (1.0, np.zeros_like(p)), n_atoms=1)
    journal.save(1, oracle.compute(x[1]), 0.5)
    assert journal.pending() == [0]
    with pytest.raises(ValueError, match="1 structures have no label yet"):
        journal.labels(1, "analytic")
