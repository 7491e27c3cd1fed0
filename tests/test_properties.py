"""Property-based tests (hypothesis) over configs, command-line arguments and positions.

Two rules hold for any input, however hostile: the command line never ends in a bare traceback
(it exits 0, or 2 with a one-line message), and a refused input never changes a dataset (the
file's bytes, or the arrays in memory, are those from before).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import math
import os
import types
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from openmm_adv import config as cfg  # noqa: E402
from openmm_adv.cli import main  # noqa: E402
from openmm_adv.data import Dataset, read_extxyz, write_extxyz  # noqa: E402

# Errors the command line turns into a one-line message (see openmm_adv/cli.py).
HANDLED = (ValueError, FileNotFoundError)
FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                      HealthCheck.too_slow])
SLOW_FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])


# ------------------------------------------------------------------------------ configs
hostile_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**9, 10**9),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([".nan", "inf", "1e-3", "-0", ""]),
    st.text(max_size=8), st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)

# Non-numbers and extremes often, anything else sometimes.
hostile_values = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, 1e300, -1e300]), hostile_scalars)


def _leaves(tree, prefix=()):
    """Key paths of every setting in a nested mapping."""
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, prefix + (key,))
        else:
            yield prefix + (key,)


def _floats_in(obj, where="config"):
    """Every float reachable through the dataclass fields of ``obj``, with its key path."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _floats_in(getattr(obj, f.name), f"{where}.{f.name}")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _floats_in(value, f"{where}.{key}")
    elif isinstance(obj, float):
        yield where, obj


RUN_CONFIGS = {"label": cfg.LabelRunConfig, "train": cfg.TrainRunConfig, "attack": cfg.AttackRunConfig,
               "loop": cfg.LoopRunConfig, "init": cfg.InitRunConfig, "md": cfg.MDRunConfig}


@functools.lru_cache(maxsize=None)
def _example(kind: str) -> str:
    from openmm_adv.commands import example_config

    return example_config(kind)


@pytest.mark.parametrize("kind", sorted(RUN_CONFIGS))
@given(data=st.data())
@settings(max_examples=80, deadline=None)
def test_config_is_parsed_or_refused_with_a_named_error(kind, data):
    """Start from the command's valid example config and make one to three of its settings
    hostile: the result is a config or a refusal that names a key, and an accepted config holds
    no NaN."""
    tree = yaml.safe_load(_example(kind))
    paths = sorted(_leaves(tree))
    for path in data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3, unique=True)):
        node = tree
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = data.draw(hostile_values)
    try:
        parsed = cfg.parse_section(RUN_CONFIGS[kind], tree)
    except HANDLED as exc:
        assert str(exc).strip(), "a refusal must say what is wrong"
        return
    for where, value in _floats_in(parsed):
        assert not math.isnan(value), f"{where} = NaN was accepted"


@given(key=st.sampled_from(["output", "oracle", "system", "generation"]))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_duplicate_yaml_keys_are_refused(key, tmp_path):
    path = tmp_path / "dup.yaml"
    value = {"output": "a.h5", "oracle": "{kind: openmm}", "system": "{name: alanine_dipeptide}", "generation": "1"}[key]
    path.write_text(f"input: frames.extxyz\noutput: out.h5\n{key}: {value}\n{key}: {value}\n")
    with pytest.raises(cfg.ConfigError, match=key):
        cfg.load_yaml(path)


# ------------------------------------------------------------------------------ datasets in memory
def _frames(n_atoms: int):
    elements = st.one_of(st.floats(-2.0, 2.0), st.sampled_from([np.nan, np.inf, -np.inf, 1e30]))
    return st.integers(0, 3).flatmap(lambda k: st.tuples(
        st.just(k),
        st.lists(elements, min_size=k * n_atoms * 3, max_size=k * n_atoms * 3),
        st.lists(st.one_of(st.floats(-1e4, 1e4), st.sampled_from([np.nan, np.inf])), min_size=k, max_size=k + 1),
        st.lists(elements, min_size=k * n_atoms * 3, max_size=k * n_atoms * 3),
    ))


def _arrays(dataset: Dataset):
    return ([dataset.positions.copy(), dataset.energies.copy(), dataset.forces.copy()]
            + [v.copy() for v in dataset.provenance.values()])


@given(frames=_frames(3))
@FEW
def test_dataset_append_refuses_without_changing_anything(frames):
    k, positions, energies, forces = frames
    data = Dataset([8, 1, 1])
    data.append(np.zeros((1, 3, 3)) + np.arange(9).reshape(1, 3, 3) * 0.05, [1.0], np.zeros((1, 3, 3)), oracle="o")
    before = _arrays(data)
    try:
        data.append(np.reshape(positions, (k, 3, 3)), energies, np.reshape(forces, (k, 3, 3)), oracle="o")
    except ValueError as exc:
        assert str(exc).strip()
        after = _arrays(data)
        assert all(np.array_equal(a, b, equal_nan=a.dtype.kind == "f") for a, b in zip(before, after))
        return
    assert len(data) == 1 + k
    assert np.isfinite(data.positions).all() and np.isfinite(data.energies).all() and np.isfinite(data.forces).all()


# ------------------------------------------------------------------------------ files and the CLI
@functools.lru_cache(maxsize=1)
def _ala2():
    from openmm_adv.systems import alanine_dipeptide

    return alanine_dipeptide()


@functools.lru_cache(maxsize=1)
def _amber_frames():
    """Four thermal alanine dipeptide frames with their Amber labels."""
    data = Dataset.load(Path(__file__).parents[1] / "torchscript_models" / "ala2_test_set.h5")
    return data.subset(np.arange(4))


def _run_cli(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse refuses its own arguments this way
            code = exc.code
    return code, err.getvalue()


def _assert_clean_exit(code, stderr: str):
    assert code in (0, 2), f"exit code {code}: {stderr[-500:]}"
    assert "Traceback" not in stderr, stderr[-2000:]
    if code == 2:
        assert "error" in stderr


def _source_files(root: Path) -> dict[str, Path]:
    """The inputs a hostile user might hand to a command."""
    root.mkdir(parents=True, exist_ok=True)
    frames = _amber_frames()
    files = {}
    files["dataset"] = frames.save(root / "amber.h5")
    files["empty_dataset"] = Dataset(frames.atomic_numbers).save(root / "empty.h5")
    truncated = root / "truncated.h5"
    truncated.write_bytes(files["dataset"].read_bytes()[:700])
    files["truncated"] = truncated
    files["text"] = root / "notes.txt"
    files["text"].write_text("not a dataset\n")
    files["missing"] = root / "missing.h5"
    files["folder"] = root / "a_folder"
    files["folder"].mkdir(exist_ok=True)
    z = frames.atomic_numbers
    files["frames_nm"] = write_extxyz(root / "frames_nm.extxyz", z, frames.positions[:2])
    files["frames_angstrom"] = write_extxyz(root / "frames_angstrom.extxyz", z, frames.positions[:2] * 10.0)
    nan = frames.positions[:2].copy()
    nan[1, 3, 0] = np.nan
    files["frames_nan"] = write_extxyz(root / "frames_nan.extxyz", z, nan)
    files["frames_water"] = write_extxyz(root / "water.extxyz", [8, 1, 1], np.array([[[0, 0, 0], [0.096, 0, 0], [0, 0.096, 0]]]))
    return files


def _snapshot(files: dict[str, Path]) -> dict[str, bytes]:
    return {k: p.read_bytes() for k, p in files.items() if p.is_file()}


@given(source=st.sampled_from(["dataset", "empty_dataset", "truncated", "text", "missing", "folder", "frames_nm",
                               "frames_nan"]),
       suffix=st.sampled_from([".extxyz", ".h5", ".xyz", ".txt", ""]),
       generation=st.one_of(st.none(), st.integers(-2, 100)),
       read_only=st.booleans())
@FEW
def test_export_exits_cleanly_and_never_touches_its_source(source, suffix, generation, read_only, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    files = _source_files(root / "in")
    before = _snapshot(files)
    out_dir = root / "out"
    out_dir.mkdir()
    if read_only:
        out_dir.chmod(0o555)
    argv = ["export", files[source], "--output", out_dir / f"result{suffix}"]
    if generation is not None:
        argv += ["--generation", generation]
    try:
        code, stderr = _run_cli(argv)
    finally:
        out_dir.chmod(0o755)
    _assert_clean_exit(code, stderr)
    assert _snapshot(files) == before
    if code == 0:  # success means a file that reads back with at least one structure
        written = out_dir / f"result{suffix}"
        back = Dataset.from_extxyz(written) if suffix in (".extxyz", ".xyz") else Dataset.load(written)
        assert len(back) >= 1


@given(frames=st.sampled_from(["frames_nm", "frames_angstrom", "frames_nan", "frames_water", "dataset", "text",
                               "missing"]),
       output=st.sampled_from(["dataset", "new", "truncated", "text", "folder", "read_only"]),
       oracle=st.sampled_from(["openmm", "xtb", "analytic", "nonsense"]),
       extra=st.dictionaries(st.sampled_from(["generation", "sampler"]),
                             st.one_of(st.integers(-1, 3), st.text(max_size=40), st.none()), max_size=1))
@SLOW_FEW
@pytest.mark.slow
def test_label_exits_cleanly_and_refusals_leave_the_dataset_unchanged(frames, output, oracle, extra, tmp_path_factory):
    if oracle == "xtb":
        pytest.importorskip("tblite")
    root = tmp_path_factory.mktemp("label")
    files = _source_files(root / "in")
    read_only = root / "locked"
    read_only.mkdir()
    targets = {"new": root / "new.h5", "read_only": read_only / "out.h5", **files}
    config = {"input": str(files[frames]), "output": str(targets[output]), "system": {"name": "alanine_dipeptide"},
              "oracle": {"kind": oracle, "options": {"platform": "Reference"} if oracle == "openmm" else {}}, **extra}
    path = root / "label.yaml"
    path.write_text(yaml.safe_dump(config))
    before = _snapshot(files)
    read_only.chmod(0o555)
    try:
        code, stderr = _run_cli(["label", path, "--quiet"])
    finally:
        read_only.chmod(0o755)
    _assert_clean_exit(code, stderr)
    after = _snapshot(files)
    changed = {k for k in before if after.get(k) != before[k]}
    if code != 0:
        assert not changed, f"refused ({stderr.strip()}) but changed {changed}"
        return
    assert changed <= {output}
    written = Dataset.load(targets[output])
    assert np.isfinite(written.energies).all() and np.isfinite(written.forces).all()
    assert oracle != "xtb" or output not in ("dataset", "truncated"), "xTB labels mixed into an Amber dataset"


# ------------------------------------------------------------------------------ positions
@functools.lru_cache(maxsize=1)
def _amber_oracle():
    from openmm_adv.oracles import make_oracle

    return make_oracle("openmm", _ala2(), platform="Reference")


def _position_batches(n_atoms: int):
    reference = _ala2().positions
    kinds = st.sampled_from(["thermal", "angstrom", "collapsed", "exploded", "nan", "inf", "random"])

    @st.composite
    def build(draw):
        kind = draw(kinds)
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        x = reference + 0.005 * rng.normal(size=reference.shape)
        if kind == "angstrom":
            x = x * 10.0
        elif kind == "collapsed":
            x = reference.mean(0) + 1e-4 * rng.normal(size=reference.shape)
        elif kind == "exploded":
            x = x * draw(st.floats(3.0, 1e6))
        elif kind == "nan":
            x[rng.integers(n_atoms), rng.integers(3)] = np.nan
        elif kind == "inf":
            x[rng.integers(n_atoms)] = np.inf
        elif kind == "random":
            x = rng.uniform(-1.0, 1.0, size=reference.shape)
        return x

    return st.lists(build(), min_size=1, max_size=3).map(np.stack)


@given(positions=_position_batches(22))
@FEW
def test_oracle_labels_or_records_a_reason_for_any_positions(positions):
    oracle = _amber_oracle()
    labels = oracle.compute(positions)
    assert len(labels) == len(positions)
    for k in range(len(positions)):
        if labels.ok[k]:
            assert np.isfinite(labels.energies[k]) and np.isfinite(labels.forces[k]).all()
            assert labels.errors[k] is None
        else:
            assert labels.errors[k], "a failed structure must carry its reason"
            assert np.isnan(labels.energies[k])


@given(positions=_position_batches(22), tag=st.sampled_from([None, "gen-1"]))
@SLOW_FEW
def test_appending_labels_of_any_positions_keeps_the_file_finite(positions, tag, tmp_path_factory):
    """Whatever the oracle makes of a batch, only finite labels reach the file, and a refused
    append leaves its bytes as they were."""
    root = tmp_path_factory.mktemp("append")
    path = _amber_frames().save(root / "data.h5")
    before = path.read_bytes()
    labels = _amber_oracle().compute(positions)
    records = Dataset(_ala2().atomic_numbers)
    try:
        records.append(positions, labels.energies, labels.forces, oracle=labels.oracle)
        Dataset.append_to_file(path, records, tag=tag)
    except ValueError as exc:
        assert str(exc).strip()
        assert path.read_bytes() == before
        return
    data = Dataset.load(path)
    assert np.isfinite(data.positions).all() and np.isfinite(data.energies).all()

