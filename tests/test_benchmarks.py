"""Smoke tests of the benchmark scripts: tiny settings, each must print its table.

The scripts are imported from ``benchmarks/`` (not a package) and their ``main`` is called with
an argument list, so no extra Python start-up is paid except by system_size.py, whose every
measurement runs in a child process by design.
"""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# A tiny untrained PaiNN: compiles and runs fast, and covers the --architecture path.
TINY_PAINN = ["--architecture", "painn", "--members", "2", "--features", "8", "--rbf", "4", "--interactions", "1"]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def table_rows(text: str) -> list:
    """The data rows of the Markdown table in ``text``, as lists of cells."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(lines) >= 3, f"no table in the output:\n{text}"
    assert set(lines[1].replace("|", "").split()) == {"-" * len(cell) for cell in lines[1].replace("|", "").split()}
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_attack_step_prints_both_loops_per_b(bench, capsys):
    bench("attack_step").main(["--steps", "1", "--repeats", "1", "--warmup", "1", "--replicas", "1", "2", *TINY_PAINN])
    out = capsys.readouterr().out
    assert "host:" in out and "OpenMM platform CPU" in out and "1 intra-op thread" in out
    assert "untrained StackedPaiNN" in out
    rows = table_rows(out)
    assert [row[0] for row in rows] == ["1", "2"]
    for row in rows:
        assert float(row[1]) > 0 and float(row[2]) > 0  # both loops timed
        assert float(row[5]) > 0
        assert float(row[-1]) < 1e-6  # OpenMM and torch.optim.Adam took the same steps


def test_committee_md_prints_both_loops_per_b(bench, capsys):
    # The shipped committee: the default when neither --committee nor --architecture is given.
    bench("committee_md").main(["--steps", "1", "--repeats", "1", "--warmup", "1", "--replicas", "1", "2"])
    out = capsys.readouterr().out
    assert "ala2_committee.pt" in out
    rows = table_rows(out)
    assert [row[0] for row in rows] == ["1", "2"]
    for row in rows:
        assert float(row[3]) > 0 and float(row[4]) > 0
        assert float(row[-1]) < 1e-4  # the same forces on both sides


def test_committee_options_are_checked(bench):
    attack_step = bench("attack_step")
    with pytest.raises(SystemExit):
        attack_step.main(["--committee", "x.pt", "--architecture", "painn"])
    with pytest.raises(SystemExit):
        attack_step.main(["--features", "8"])  # size options need --architecture


def test_replicated_alanine_keeps_molecular_neighbourhoods(bench, ala2):
    system_size = bench("system_size")
    z, x = system_size.replicated_alanine(7)
    assert z.shape == (154,) and x.shape == (154, 3)
    np.testing.assert_array_equal(z[22:44], ala2.atomic_numbers)
    # 0.6 nm between the copies: nothing new inside a 0.5 nm cutoff
    assert system_size.mean_neighbours(x, 0.5) == pytest.approx(system_size.mean_neighbours(ala2.positions, 0.5))


def test_system_size_prints_its_table(bench, capsys):
    system_size = bench("system_size")
    # 22 atoms: the PaiNN's auto path is the dense one, so all_pairs is not measured twice.
    system_size.main(["--copies", "1", "--warmup", "0", "--repeats", "1", *TINY_PAINN])
    out = capsys.readouterr().out
    assert "VmHWM" in out
    rows = table_rows(out)
    assert len(rows) == 1
    model, atoms, _, pairs, ef, attack, ef_memory, attack_memory = rows[0]
    assert (model, atoms, pairs) == ("PaiNN auto", "22", "dense")
    assert float(ef.split()[0]) > 0 and float(attack.split()[0]) > 0
    assert "(+" in ef_memory and "(+" in attack_memory


def test_architecture_cost_compares_every_variant(bench, capsys):
    bench("architecture_cost").main(["--steps", "1", "--repeats", "1", "--warmup", "1", "--replicas", "1",
                                     "--variants", "schnet (first recipe)", "painn (default recipe)"])
    out = capsys.readouterr().out
    assert "painn (default recipe)" in out and "1.00 / 1.00" in out  # SchNet is its own reference


def test_torsion_attack_reach_prints_its_table(bench, capsys):
    bench("torsion_attack_reach").main(["--seeds", "2", "--steps", "5", "--novelty-weights", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "/2 |" in line]
    assert [r.split(" | ")[0] for r in rows] == ["| Cartesian (kT 20.9, 0.004 nm)", "| torsion",
                                                 "| torsion + novelty (w = 1)",
                                                 "| torsion + novelty (w = 1) + 40 Cartesian steps at kT 2.5"]


def test_torsion_novelty_sweep_prints_its_table(bench, capsys):
    bench("torsion_novelty_sweep").main(["--seeds", "2", "--steps", "3", "--refine-steps", "2", "--weights", "1"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| variant")]
    assert len(rows) == 4 and rows[2].startswith("| local novelty w 1 (bandwidth 0.1"), rows
    assert "of 410 bins below 25 kJ/mol" in out
    for row in rows:  # one label lies in one bin
        assert 0.0 <= float(row.split(" | ")[-2]) <= 1.0, row


def test_selection_scale_compares_old_and_new(bench, capsys):
    # --old-max-gb this small runs the old algorithm in slices for the second size, as at 100,000 frames
    bench("selection_scale").main(["--frames", "100", "400", "--candidates", "16", "--cluster", "60",
                                   "--old-max-gb", "0.001"])
    out = capsys.readouterr().out
    assert "host:" in out and "cores" in out
    rows = table_rows(out)
    assert [row[0].split(" (")[0] for row in rows] == ["de-duplicate 16 x 100 frames", "de-duplicate 16 x 400 frames",
                                                       "cluster 60 candidates"]
    assert rows[1][0].startswith("de-duplicate 16 x 400 frames (old run in slices of ")
    for row in rows:
        assert float(row[1]) > 0 and float(row[4]) > 0 and float(row[6]) >= 0  # old and new timed, new measured
        assert row[9] == "yes"  # the same answers
    assert "extrapolated" in rows[1][3]


def test_label_throughput_prints_pool_and_dask_per_worker_count(bench, capsys):
    pytest.importorskip("tblite", reason="needs the [xtb] extra")
    pytest.importorskip("distributed", reason="needs the [dask] extra")
    bench("label_throughput").main(["--molecule", "ethanol", "--frames", "4", "--workers", "1", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "host:" in out and "GFN2-xTB" in out and "identical" in out
    (row,) = table_rows(out)
    assert row[0] == "1" and all(float(cell) > 0 for cell in row[1:])
