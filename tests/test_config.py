"""YAML config validation and the label / train / attack / export commands."""

import numpy as np
import pytest
import yaml

from openmm_adv.cli import main
from openmm_adv.commands import example_config
from openmm_adv.config import (
    AttackRunConfig,
    ConfigError,
    InitRunConfig,
    LabelRunConfig,
    LoopRunConfig,
    MDRunConfig,
    TrainRunConfig,
    parse_section,
)
from openmm_adv.data import Dataset, read_extxyz, write_extxyz


@pytest.mark.parametrize("kind,cls", [("init", InitRunConfig), ("md", MDRunConfig), ("label", LabelRunConfig), ("train", TrainRunConfig),
                                      ("attack", AttackRunConfig), ("loop", LoopRunConfig)])
def test_example_configs_parse_back(kind, cls):
    parsed = parse_section(cls, yaml.safe_load(example_config(kind)))
    assert isinstance(parsed, cls)


@pytest.mark.parametrize("data,message", [
    ({"samplers": {"attack": {"kT": -1}}}, r"samplers\.attack\.kT: must be greater than 0"),
    ({"samplers": {"attack": {"kt": 5}}}, r"samplers\.attack\.kt: unknown key; did you mean 'kT'\?"),
    ({"samplers": {"attack": {"n_steps": 1.5}}}, r"samplers\.attack\.n_steps: expected an integer"),
    ({"samplers": {"attack": {"n_steps": True}}}, r"samplers\.attack\.n_steps: expected an integer"),
    ({"samplers": {"attack": {"optimizer": "sgd"}}}, r"samplers\.attack\.optimizer: 'sgd' is not allowed"),
    ({"samplers": {"aimd": {}}}, r"samplers\.aimd: unknown sampler"),
    ({"samplers": {"udd": {"A": -1}}}, r"samplers\.udd\.A: must be greater than 0"),
    ({"samplers": {"metadynamics": {"cvs": "phi"}}}, r"samplers\.metadynamics\.cvs: expected a list"),
    ({"samplers": {}}, r"samplers: give at least one sampler"),
    ({"selection": {"percentile_lower": 120}}, r"selection\.percentile_lower: must be at most 100"),
    ({"selection": {"lower": 5, "upper": 1}}, r"selection\.lower: must be below upper"),
    ({"loop": {"generations": 0}}, r"loop\.generations: must be at least 1"),
    ({"loop": "three"}, r"loop: expected a mapping"),
    ({"oracle": {"kind": "dft"}}, r"oracle\.kind: 'dft' is not allowed"),
    ({"training": {"validation_fraction": 1.0}}, r"training\.validation_fraction: must be less than 1"),
    ({"sytem": {}}, r"sytem: unknown key; did you mean 'system'\?"),
])
def test_bad_configs_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_section(LoopRunConfig, data)


def test_numbers_in_yaml_exponent_form_are_accepted():
    config = parse_section(LoopRunConfig, yaml.safe_load("training: {learning_rate: 3e-3}"))
    assert config.training.learning_rate == pytest.approx(3e-3)


def test_every_config_key_has_a_help_line():
    """`openmm-adv config KIND` prints a comment on every key, sampler sections included."""
    import dataclasses

    from openmm_adv.config import SAMPLER_CONFIGS
    from openmm_adv.config_docs import help_for

    missing, seen = [], set()

    def walk(cls):
        if cls in seen:
            return
        seen.add(cls)
        for f in dataclasses.fields(cls):
            if help_for(cls, f.name) is None:
                missing.append(f"{cls.__name__}.{f.name}")
            for inner in (f.type, *getattr(f.type, "__args__", ())):
                if isinstance(inner, type) and dataclasses.is_dataclass(inner):
                    walk(inner)

    import typing

    for cls in (InitRunConfig, MDRunConfig, LabelRunConfig, TrainRunConfig, AttackRunConfig, LoopRunConfig, *SAMPLER_CONFIGS.values()):
        walk(cls)
        for name, hint in typing.get_type_hints(cls).items():
            for inner in (hint, *typing.get_args(hint)):
                if isinstance(inner, type) and dataclasses.is_dataclass(inner):
                    walk(inner)
    assert not missing
    text = example_config("loop")
    assert "  kT: 20.9  # sampling temperature of the Boltzmann factor" in text
    assert all("#" in line for line in text.splitlines()[1:] if line.strip()), "a key without its comment"


def test_help_and_config_do_not_import_torch_or_openmm():
    """`openmm-adv --help` answers at once: neither the parser nor the config schema loads torch."""
    import subprocess
    import sys

    code = ("import sys; from openmm_adv.cli import build_parser; import openmm_adv.config; build_parser(); "
            "print('torch' in sys.modules, 'openmm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_required_keys(tmp_path):
    with pytest.raises(ConfigError, match="input: required key is missing"):
        parse_section(LabelRunConfig, {"output": "x.h5"})


def test_cli_reports_config_errors(tmp_path, capsys):
    path = tmp_path / "loop.yaml"
    path.write_text("samplers:\n  attack:\n    n_step: 10\n")
    assert main(["loop", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    assert "samplers.attack.n_step: unknown key; did you mean 'n_steps'?" in capsys.readouterr().err
    assert main(["loop", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_label_train_attack_export_pipeline(tmp_path, ala2, perturbed):
    """The command-line path a user takes by hand: label frames, train, attack, label, export."""
    frames = perturbed(12, scale=0.01, seed=4)
    frames[5, 3] = np.nan  # one broken frame: recorded as a failure, never stops the batch
    write_extxyz(tmp_path / "frames.extxyz", ala2.atomic_numbers, frames)
    (tmp_path / "label.yaml").write_text(yaml.safe_dump({
        "input": str(tmp_path / "frames.extxyz"), "output": str(tmp_path / "data.h5"),
        "oracle": {"kind": "openmm", "options": {"platform": "Reference"}}}))
    assert main(["label", str(tmp_path / "label.yaml"), "--quiet"]) == 0
    data = Dataset.load(tmp_path / "data.h5")
    assert len(data) == 11
    e, f = ala2.reference_energies_forces(np.delete(frames, 5, axis=0))
    np.testing.assert_allclose(data.energies, e, rtol=1e-6)
    assert "non-finite" in (tmp_path / "data.h5.failures.json").read_text()

    (tmp_path / "train.yaml").write_text(yaml.safe_dump({
        "output": str(tmp_path / "committee.pt"), "data": {"path": str(tmp_path / "data.h5")},
        "model": {"n_members": 2, "n_features": 8, "n_rbf": 8},
        "training": {"epochs": 2, "batch_size": 4}}))
    assert main(["train", str(tmp_path / "train.yaml"), "--quiet"]) == 0
    assert (tmp_path / "committee.pt").exists() and (tmp_path / "committee.pt.training.json").exists()

    (tmp_path / "attack.yaml").write_text(yaml.safe_dump({
        "output": str(tmp_path / "cands.extxyz"), "committee": str(tmp_path / "committee.pt"),
        "seeds": {"path": str(tmp_path / "data.h5")}, "n_seeds": 4,
        "attack": {"n_steps": 10, "step_size": 0.0005, "batch_size": 4, "platform": "Reference"},
        "selection": {"min_rmsd": 0.0, "max_selected": 3}}))
    assert main(["attack", str(tmp_path / "attack.yaml"), "--quiet"]) == 0
    numbers, positions, energies, _ = read_extxyz(tmp_path / "cands.extxyz")
    assert 1 <= len(positions) <= 3 and energies is None

    (tmp_path / "label2.yaml").write_text(yaml.safe_dump({
        "input": str(tmp_path / "cands.extxyz"), "output": str(tmp_path / "data.h5"), "sampler": "attack",
        "generation": 1, "oracle": {"kind": "openmm"}}))
    assert main(["label", str(tmp_path / "label2.yaml"), "--quiet"]) == 0
    data = Dataset.load(tmp_path / "data.h5")
    assert len(data) == 11 + len(positions) and data.provenance["generation"][-1] == 1

    assert main(["export", str(tmp_path / "data.h5"), "--output", str(tmp_path / "gen1.extxyz"), "--generation", "1"]) == 0
    ase_io = pytest.importorskip("ase.io")
    atoms = ase_io.read(str(tmp_path / "gen1.extxyz"), index=":")
    assert len(atoms) == len(positions) and atoms[0].info["sampler"] == "attack"
    assert main(["export", str(tmp_path / "gen1.extxyz"), "--output", str(tmp_path / "back.h5")]) == 0
    np.testing.assert_allclose(Dataset.load(tmp_path / "back.h5").forces, data.forces[-len(positions):], rtol=1e-8, atol=1e-7)


def test_atomic_append_with_tag_is_idempotent(tmp_path, ala2, perturbed):
    x = perturbed(3)
    e, f = ala2.reference_energies_forces(x)
    records = Dataset(ala2.atomic_numbers)
    records.append(x, e, f, generation=1)
    path = tmp_path / "d.h5"
    assert Dataset.append_to_file(path, records, tag="a") == 3
    assert Dataset.append_to_file(path, records, tag="b") == 6
    assert Dataset.append_to_file(path, records, tag="b") == 6  # a resumed job repeating its append
    assert Dataset.file_tags(path) == ["a", "b"]
    assert not (tmp_path / "d.h5.tmp").exists()
    other = Dataset([1, 1])
    other.append(np.zeros((1, 2, 3)), [0.0], np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="different molecules"):
        Dataset.append_to_file(path, other)


def test_train_example_is_the_shipped_recipe():
    """examples/train_ala2.yaml trains what torchscript_models/make_ala2_committee.py ships."""
    from dataclasses import asdict
    from pathlib import Path

    from openmm_adv.builders import build_trainer
    from openmm_adv.recipes import recipe

    path = Path(__file__).resolve().parents[1] / "examples" / "train_ala2.yaml"
    parsed = parse_section(TrainRunConfig, yaml.safe_load(path.read_text()))
    trainer = build_trainer(parsed.model, parsed.training, progress=False)
    shipped = recipe("painn")
    assert trainer.architecture == shipped.architecture
    assert {k: v for k, v in trainer.model_options.items() if v is not None and k != "seed"} == shipped.model_options
    assert asdict(trainer.config) == asdict(shipped.training)


@pytest.mark.parametrize("model, message", [
    ({"n_members": 1}, r"model\.n_members: a committee needs at least 2 members"),
    ({"uncertainty": "gmm", "n_members": 5}, r"model\.n_members: uncertainty gmm reads one model's features; set n_members: 1"),
    ({"uncertainty": "mve", "n_members": 1, "architecture": "schnet"}, r"model\.architecture: uncertainty mve needs"),
    ({"uncertainty": "bayes"}, r"model\.uncertainty: 'bayes' is not allowed"),
])
def test_single_model_uncertainty_settings_are_checked(model, message):
    with pytest.raises(ConfigError, match=message):
        parse_section(LoopRunConfig, {"model": model})


def test_single_model_trainer_from_config(ala2):
    from openmm_adv.builders import build_trainer
    from openmm_adv.config import ModelConfig, TrainingSection

    trainer = build_trainer(parse_section(ModelConfig, {"uncertainty": "gmm", "n_members": 1, "gmm_components": 4}),
                            TrainingSection())
    assert trainer.single_model and trainer.uncertainty["n_components"] == 4
    assert trainer.new_committee(ala2.atomic_numbers).n_members == 1
    assert trainer.describe()["uncertainty"]["method"] == "gmm"
