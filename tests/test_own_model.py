"""Your own architecture: trained, saved, run in OpenMM and kept by the loop across generations."""

import json

import numpy as np
import pytest
import torch

from conftest import energy_forces, replica_context
from openmm_adv.data import Dataset
from openmm_adv.models import Committee, CommitteeError
from openmm_adv.models.own import reinitialise
from openmm_adv.resources import default_dataset_path
from openmm_adv.train import FROM_COMMITTEE, CommitteeTrainer, TrainingConfig, train_committee


class PairModel(torch.nn.Module):
    """A user's model: pairwise distances over all atom pairs, standardised with statistics of
    reference frames, into per-pair quadratic terms plus an MLP (positions [B, N, 3] nm ->
    energies [B], in units of order one: the committee's shift and scale make them kJ/mol)."""

    def __init__(self, reference: np.ndarray, hidden: int = 64):
        super().__init__()
        i, j = np.triu_indices(reference.shape[1], 1)
        d = np.linalg.norm(reference[:, i] - reference[:, j], axis=-1)
        self.register_buffer("i", torch.as_tensor(i))
        self.register_buffer("j", torch.as_tensor(j))
        self.register_buffer("mean", torch.as_tensor(d.mean(0), dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(d.std(0), dtype=torch.float32))
        self.linear = torch.nn.Parameter(torch.zeros(len(i)))
        self.quadratic = torch.nn.Parameter(torch.zeros(len(i)))
        self.mlp = torch.nn.Sequential(torch.nn.Linear(len(i), hidden), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, 1))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        d = (positions[:, self.i] - positions[:, self.j]).pow(2).sum(-1).sqrt()
        z = (d - self.mean) / self.std
        return (self.linear * z + self.quadratic * z * z).sum(-1) + self.mlp(z).squeeze(-1)


class XYModel(torch.nn.Module):
    """A user's model for the one-particle 2D toys: an MLP of x and y (nm)."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden),
                                       torch.nn.SiLU(), torch.nn.Linear(hidden, 1))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.mlp(positions[:, 0, :2]).squeeze(-1)


def _force_rmse(committee, data):
    forces = committee.evaluate_in_batches(data.positions)[1]
    return float(np.sqrt(np.mean((forces - data.forces) ** 2)))


@pytest.fixture(scope="module")
def alanine_split():
    data = Dataset.load(default_dataset_path())
    return data.subset(np.arange(400)), data.subset(np.arange(800, 1000))


@pytest.fixture(scope="module")
def trained(alanine_split):
    train, test = alanine_split
    torch.manual_seed(0)
    committee = Committee.from_models([PairModel(train.positions) for _ in range(3)], train.atomic_numbers)
    before = _force_rmse(committee, test)
    config = TrainingConfig(epochs=15, batch_size=16, learning_rate=1e-2, force_weight=100.0, lr_schedule="cosine",
                            patience=1000)
    report = train_committee(committee, train.positions, train.energies, train.forces, config, progress=False)
    return committee, before, _force_rmse(committee, test), report


def test_training_your_own_model_lowers_its_held_out_force_error(trained, alanine_split):
    committee, before, after, report = trained
    # Untrained: the members' forces are near zero, so the error is the RMS Amber force (~850).
    assert before > 700
    assert after < before / 3, (before, after)
    assert committee.metadata["metrics"]["epochs_run"] == 15
    # the members learned on a normalised target: the shift and scale sit in the committee
    ensemble = committee.potential.members
    assert abs(float(ensemble.energy_scale) - np.std(committee.metadata["training_energies"], ddof=1)) < 0.01
    # bootstrap and initialisation keep the members apart
    assert committee.uncertainty(alanine_split[1].positions[:4]).min() > 0


def test_trained_own_committee_saves_loads_and_runs_as_an_openmm_force(trained, alanine_split, tmp_path):
    from openmm_adv.forces import mean_energy_force

    committee = trained[0]
    x = alanine_split[1].positions[:3]
    loaded = Committee.load(committee.save(tmp_path / "own.pt"), system=alanine_split[0].atomic_numbers)
    assert loaded.is_scripted and loaded.metadata["hyperparameters"]["member_types"] == ["PairModel"] * 3
    np.testing.assert_allclose(loaded.energies(x), committee.energies(x), rtol=1e-6, atol=1e-4)
    eager_e, eager_f = committee.energies_and_forces(x)
    context = replica_context(mean_energy_force(loaded), committee.n_atoms)
    for k in range(len(x)):
        energy, forces = energy_forces(context, x[k])
        assert energy == pytest.approx(eager_e[k].mean(), abs=1e-3)
        np.testing.assert_allclose(forces, eager_f[k].mean(0), rtol=1e-4, atol=1e-2)


# ---------------------------------------------------------------------------- models that cannot work
class _PerAtom(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, positions):
        return self.w * positions.pow(2).sum(-1)  # [B, N]: per-atom energies


class _BatchTotal(_PerAtom):
    def forward(self, positions):
        return self.w * positions.pow(2).sum()  # one number for the whole batch


class _TwoColumns(_PerAtom):
    def forward(self, positions):
        return self.w * positions[:, :2, 0]


class _Detached(_PerAtom):
    def forward(self, positions):
        return self.w * positions.detach().pow(2).sum((1, 2))


class _Constant(_PerAtom):
    def forward(self, positions):
        return self.w * torch.ones(positions.shape[0])


class _NaN(_PerAtom):
    def forward(self, positions):
        return self.w * positions.pow(2).sum((1, 2)) * float("nan")


class _Fixed(torch.nn.Module):
    def forward(self, positions):
        return positions.pow(2).sum((1, 2))


class _Column(_PerAtom):
    def forward(self, positions):
        return self.w * positions.pow(2).sum((1, 2))[:, None]  # [B, 1]: accepted


@pytest.mark.parametrize("members,message", [
    ([_PerAtom(), _PerAtom()], r"member 0 \(_PerAtom\) returned energies of shape \[4, 22\].*per-atom"),
    ([_BatchTotal(), _BatchTotal()], r"shape \[1\] for 4 geometries \(a batch total"),
    ([_TwoColumns(), _TwoColumns()], r"shape \[4, 2\]"),
    ([_Detached(), _Detached()], r"member 0 \(_Detached\): its energy does not depend on the positions"),
    ([_Column(), _Constant()], r"member 1 \(_Constant\): its energy does not depend on the positions"),
    ([_NaN(), _NaN()], r"non-finite energies"),
    ([_Fixed(), _Fixed()], r"has no trainable parameters"),
    ("same", r"member 1 \(_Column\) shares its parameters with member 0"),
])
def test_models_that_cannot_be_trained_get_a_clear_error_before_training(alanine_split, members, message):
    train = alanine_split[0].subset(np.arange(8))
    if members == "same":
        model = _Column()
        members = [model, model]
    committee = Committee.from_models(members, train.atomic_numbers)
    with pytest.raises(CommitteeError, match=message):
        train_committee(committee, train.positions, train.energies, train.forces, TrainingConfig(epochs=1),
                        progress=False)
    assert "metrics" not in committee.metadata  # refused before any step


def test_wrong_output_shape_is_named_at_evaluation_too(alanine_split):
    x = alanine_split[1].positions[:2]
    with pytest.raises(ValueError, match=r"member 0 returned energies of shape \[2, 22\].*sum per-atom"):
        Committee.from_models([_PerAtom(), _PerAtom()], alanine_split[0].atomic_numbers).energies(x)
    column = Committee.from_models([_Column(), _Column()], alanine_split[0].atomic_numbers)
    assert column.energies(x).shape == (2, 2)


class _EnsembleWithoutScale(torch.nn.Module):
    """A ModelEnsemble as saved before it had an energy shift and scale."""

    def __init__(self, members, atomic_numbers):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.n_members, self.n_atoms = len(members), len(atomic_numbers)
        self.register_buffer("atomic_numbers", torch.as_tensor(atomic_numbers))

    def forward(self, positions):
        return torch.stack([member(positions[:, m]) for m, member in enumerate(self.members)], dim=1)


def test_a_committee_without_shift_and_scale_trains_on_raw_energies(alanine_split):
    from openmm_adv.models import CommitteePotential

    train = alanine_split[0].subset(np.arange(40))
    torch.manual_seed(0)
    members = _EnsembleWithoutScale([PairModel(train.positions, 8) for _ in range(2)], train.atomic_numbers.tolist())
    committee = Committee(CommitteePotential(members), {"architecture": "ModelEnsemble"})
    before = _force_rmse(committee, train)
    train_committee(committee, train.positions, train.energies, train.forces,
                    TrainingConfig(epochs=3, batch_size=8, learning_rate=1e-2, force_weight=100.0), progress=False)
    assert _force_rmse(committee, train) < before


class _NormModel(torch.nn.Module):
    """Runs eagerly, but TorchScript rejects ``Tensor.norm(dim=...)`` without ``p``."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, positions):
        return self.w * (positions[:, 0] - positions[:, 1]).norm(dim=-1)


def test_unscriptable_member_is_named_at_save_and_by_the_trainer(tmp_path):
    from openmm_adv.forces import mean_energy_force

    committee = Committee.from_models([_Column(), _NormModel()], [1, 1])
    assert committee.energies(np.array([[[0.0, 0, 0], [0.3, 0, 0]]])).shape == (1, 2)  # eager: fine
    expected = r"member 1 \(_NormModel\) cannot be compiled to TorchScript.*norm\(dim=-1\).*backend='python'"
    with pytest.raises(CommitteeError, match=expected):
        committee.save(tmp_path / "c.pt")
    with pytest.raises(CommitteeError, match=expected):
        mean_energy_force(committee)
    with pytest.raises(CommitteeError, match=expected):
        CommitteeTrainer.from_committee(committee)
    assert not (tmp_path / "c.pt").exists()


def test_reinitialise_uses_reset_parameters_and_only_when_it_covers_every_weight(alanine_split):
    torch.manual_seed(0)
    toy = Committee.from_models([XYModel(), XYModel()], [6])
    first = [p.detach().clone() for p in toy.potential.parameters()]
    assert reinitialise(toy, seed=3)
    second = [p.detach().clone() for p in toy.potential.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(first, second))
    assert reinitialise(toy, seed=3)  # seeded: the same fresh weights again
    assert all(torch.equal(a, p) for a, p in zip(second, toy.potential.parameters()))
    # PairModel's own nn.Parameter terms lie outside any reset_parameters: left as they are
    pair = Committee.from_models([PairModel(alanine_split[0].positions[:10], 4) for _ in range(2)],
                                 alanine_split[0].atomic_numbers)
    state = {k: v.clone() for k, v in pair.potential.state_dict().items()}
    assert not reinitialise(pair, seed=3)
    assert all(torch.equal(state[k], v) for k, v in pair.potential.state_dict().items())


# ---------------------------------------------------------------------------- the loop
def _toy_loop(run_dir, trainer, initial_committee, n_generations=2):
    from openmm_adv.loop import ActiveLearningLoop
    from openmm_adv.oracles import AnalyticOracle
    from openmm_adv.samplers import AttackSampler
    from openmm_adv.selection import Selector
    from openmm_adv.systems import double_well
    from test_loop import _initial_data

    toy = double_well()
    return ActiveLearningLoop(
        system=toy, oracle=AnalyticOracle.for_toy(toy),
        samplers=[AttackSampler(kT=5.0, n_steps=15, step_size=0.05, max_step=0.1, max_displacement=1.0,
                                batch_size=8, report_interval=5, platform="Reference", progress=False)],
        selector=Selector(min_rmsd=0.02, max_selected=4), trainer=trainer, initial_data=_initial_data(toy),
        run_dir=run_dir, n_generations=n_generations, seeds_per_generation=8, initial_committee=initial_committee,
        progress=False, echo=None)


def _member_classes(path):
    loaded = Committee.load(path)
    members = loaded.potential.members.members
    return [getattr(members, str(k)).original_name for k in range(loaded.n_members)]


def test_loop_from_your_committee_keeps_its_architecture(tmp_path):
    from test_loop import _initial_data
    from openmm_adv.systems import double_well

    config = TrainingConfig(epochs=10, batch_size=8, learning_rate=1e-2, patience=10)
    torch.manual_seed(0)
    initial = Committee.from_models([XYModel() for _ in range(3)], [6])
    data = _initial_data(double_well())
    train_committee(initial, data.positions, data.energies, data.forces, config, progress=False)
    loop = _toy_loop(tmp_path / "run", CommitteeTrainer(FROM_COMMITTEE, config=config, progress=False), initial)
    assert loop.trainer.template is initial
    records = loop.run()
    assert [r["committee"] for r in records[:2]] == ["initial committee", "trained"]
    for path in (loop.generation_dir(2) / "committee.pt", tmp_path / "run" / "final" / "committee.pt"):
        assert _member_classes(path) == ["XYModel"] * 3
        assert Committee.load(path).metadata["initial_weights"] == "reinitialised"
    assert json.loads((loop.generation_dir(2) / "training.json").read_text())["initial_weights"] == "reinitialised"
    stored = json.loads((tmp_path / "run" / "loop.json").read_text())["settings"]["trainer"]
    assert stored["architecture"] == FROM_COMMITTEE and stored["template"]["member_classes"] == ["XYModel"] * 3
    # a resume with another architecture is refused, not silently mixed in
    other = Committee.from_models([XYModel(hidden=8) for _ in range(3)], [6])
    with pytest.raises(ValueError, match="different settings.*template"):
        _toy_loop(tmp_path / "run", CommitteeTrainer.from_committee(other, config, progress=False), initial).run()


def test_cli_loop_from_a_committee_file_fine_tunes_it(tmp_path):
    """``openmm-adv loop`` with an initial committee of one's own and no model section: every
    generation trains that architecture (here by warm starts, from TorchScript)."""
    from openmm_adv.commands import run_loop
    from openmm_adv.config import LoopRunConfig, parse_section

    torch.manual_seed(1)
    Committee.from_models([XYModel() for _ in range(3)], [6]).save(tmp_path / "mine.pt")
    config = parse_section(LoopRunConfig, {
        "system": {"name": "double_well"}, "initial_data": {"max_frames": 16},
        "initial_committee": str(tmp_path / "mine.pt"), "oracle": {"kind": "analytic"},
        "training": {"epochs": 5, "batch_size": 8, "warm_start_epochs": 3, "learning_rate": 1e-2},
        "samplers": {"attack": {"n_steps": 10, "step_size": 0.05, "batch_size": 4, "platform": "Reference"}},
        "selection": {"max_selected": 3, "min_rmsd": 0.02},
        "loop": {"generations": 2, "seeds": 4, "final_training": False},
    })
    run_loop(config, tmp_path / "run", progress=False, echo=lambda message: None)
    committee = tmp_path / "run" / "gen_002" / "committee.pt"
    assert _member_classes(committee) == ["XYModel"] * 3
    assert Committee.load(committee).metadata["initial_weights"] == "fine-tuned"
    settings = json.loads((tmp_path / "run" / "loop.json").read_text())["settings"]
    assert settings["model"]["architecture"] == FROM_COMMITTEE
    assert settings["model_template"]["member_classes"] == ["XYModel"] * 3


def test_model_section_resolves_the_architecture_and_names_what_is_missing(tmp_path, ala2):
    from openmm_adv.builders import build_trainer
    from openmm_adv.config import ConfigError, ModelConfig, TrainingSection, TrainRunConfig, parse_section
    from openmm_adv.resources import default_committee_path

    training = TrainingSection()
    assert build_trainer(ModelConfig(), training).architecture == "painn"
    # a built-in initial committee leaves a null architecture at painn
    assert build_trainer(ModelConfig(), training, initial_committee=default_committee_path()).architecture == "painn"
    mine = Committee.from_models([_Column(), _Column()], ala2.atomic_numbers)
    mine.save(tmp_path / "mine.pt")
    for model, initial in ((ModelConfig(), tmp_path / "mine.pt"), (ModelConfig(committee=str(tmp_path / "mine.pt")), None),
                           (ModelConfig(architecture=FROM_COMMITTEE), tmp_path / "mine.pt")):
        trainer = build_trainer(model, training, system=ala2, initial_committee=initial)
        assert trainer.architecture == FROM_COMMITTEE and trainer.template.n_members == 2
    # the train command takes a committee file as its architecture too
    config = parse_section(TrainRunConfig, {"output": "x.pt", "model": {"architecture": FROM_COMMITTEE,
                                                                         "committee": str(tmp_path / "mine.pt")}})
    assert build_trainer(config.model, config.training, system=ala2).template is not None
    with pytest.raises(ConfigError, match="model.architecture: from_committee .* give model.committee"):
        build_trainer(ModelConfig(architecture=FROM_COMMITTEE), training)
    with pytest.raises(ConfigError, match="model.committee: only read with architecture from_committee"):
        parse_section(ModelConfig, {"architecture": "painn", "committee": "mine.pt"}, "model")
    with pytest.raises(ConfigError, match="model.committee: .*missing.pt does not exist"):
        build_trainer(ModelConfig(committee=str(tmp_path / "missing.pt")), training)
