"""The committee's domain: geometries its uncertainty cannot judge are flagged, not scored 0."""

import json

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

from openmm_adv.data import Dataset, read_extxyz
from openmm_adv.models import Committee, CommitteeError
from openmm_adv.models.domain import Domain, training_ranges
from openmm_adv.reference_data import load_test_set
from openmm_adv.reporter import UncertaintyLimitExceeded, UncertaintyReporter
from openmm_adv.resources import default_committee_path, default_dataset_path
from openmm_adv.samplers import Candidates
from openmm_adv.selection import Selector
from openmm_adv.train import TrainingConfig, train_committee


@pytest.fixture(scope="module")
def training():
    return Dataset.load(default_dataset_path())


@pytest.fixture(scope="module")
def shipped(training):
    """The shipped committee with the ranges of the 300 K C7eq frames it was trained on (what
    training stores; measured here again so the tests do not depend on the file's version)."""
    committee = Committee.load(default_committee_path())
    committee.record_domain(training.positions)
    return committee


@pytest.fixture(scope="module")
def old_file(shipped, tmp_path_factory):
    """The shipped committee as a file written before training ranges were stored."""
    old = shipped.copy()
    old.metadata.pop("domain")
    return Committee.load(old.save(tmp_path_factory.mktemp("old") / "old.pt"))


def rotated(x, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return x @ (q * np.sign(np.linalg.det(q))).T + np.random.default_rng(seed + 1).normal(size=3)


def test_positions_in_angstrom_are_out_of_domain_not_confident(training):
    """The review's row: Angstrom given as nm put every atom beyond the cutoff and the committee
    reported an uncertainty of exactly 0."""
    shipped = Committee.load(default_committee_path())
    angstrom = training.positions[:4] * 10.0
    assert np.all(shipped.uncertainty(angstrom) == np.inf)
    assert np.all(shipped.evaluate_in_batches(angstrom, batch_size=3)[2] == np.inf)
    # What the members say there: all atoms alone, all forces zero.
    assert np.all(shipped.uncertainty(angstrom, domain=False) < 1e-6)


def test_angstrom_as_nm_is_named_with_its_fix(old_file, shipped, training):
    angstrom = training.positions[:4] * 10.0
    for committee in (old_file, shipped):
        assert np.all(committee.uncertainty(angstrom) == np.inf)
        check = committee.domain_check(angstrom)
        assert check.out_of_domain.all()
        assert all("no neighbour within the model's 0.5 nm cutoff" in r for r in check.reasons)
        assert all("are the positions in Angstrom? The committee takes nm" in r for r in check.reasons)
    # The same frames given with their unit are converted and are fine.
    assert not shipped.domain_check(unit.Quantity(angstrom[0], unit.angstrom)).out_of_domain.any()


def test_an_isolated_atom_is_out_of_domain(old_file, shipped, training):
    x = training.positions[:3].copy()
    x[1, 7] += np.array([1.0, 0.0, 0.0])  # atom 7, an H, 1 nm away from its molecule
    for committee in (old_file, shipped):
        check = committee.domain_check(x)
        assert check.out_of_domain.tolist() == [False, True, False]
        assert "atom 7 (H) has no neighbour within the model's 0.5 nm cutoff" in check.reasons[1]
        assert "Angstrom" not in check.reasons[1]
        u = committee.uncertainty(x)
        assert np.isfinite(u[[0, 2]]).all() and u[1] == np.inf


def test_a_compressed_geometry_is_out_of_the_training_range(old_file, shipped, training):
    squeezed = training.positions[:2] * 0.6
    check = shipped.domain_check(squeezed)
    assert check.out_of_domain.all()
    assert "bonds are shorter than the training range allows" in check.reasons[0]
    assert "closer to their nearest neighbour than in training" in check.reasons[0]
    assert not old_file.domain_check(squeezed).out_of_domain.any()  # the cutoff rule cannot see it
    # Within the margin (a 10 % squeeze) is still inside.
    assert not shipped.domain_check(training.positions[:2] * 0.9).out_of_domain.any()
    # A single stretched bond is named.
    torn = training.positions[:1].copy()
    torn[0, 0] = torn[0, 1] + 1.6 * (torn[0, 0] - torn[0, 1])  # the H0-C1 bond, 1.6 times as long
    reason = shipped.domain_check(torn).reasons[0]
    assert "1 bond is longer than the training range allows (bond 0-1 (H-C)" in reason


def test_held_out_thermal_frames_are_in_the_domain(old_file, shipped, training):
    """No false positives on the shipped 300 K frames of every basin (the committee was
    trained on C7eq only), nor on its own training frames."""
    test = load_test_set()
    for committee in (old_file, shipped):
        assert committee.domain_check(test.positions).n_out == 0
        assert committee.domain_check(training.positions).n_out == 0
    assert np.isfinite(shipped.uncertainty(test.positions[:50])).all()


def test_the_flags_do_not_depend_on_rotation_or_translation(shipped, training):
    x = training.positions[:4].copy()
    x[1] *= 0.6
    x[2, 5] += 0.8
    x[3] *= 10
    expected = shipped.domain_check(x)
    assert expected.out_of_domain.tolist() == [False, True, True, True]
    for seed in (0, 1, 2):
        moved = shipped.domain_check(rotated(x, seed))
        assert moved.out_of_domain.tolist() == expected.out_of_domain.tolist()
        # the same bonds and atoms named (the distances may differ in the last digit)
        assert [r.split(":")[0] for r in moved.reasons] == [r.split(":")[0] for r in expected.reasons]


def test_old_committee_files_load_with_the_cutoff_rule(old_file, shipped, tmp_path):
    assert "domain" not in old_file.metadata
    assert old_file.domain.rules == ("isolated",)  # the cutoff from the hyperparameters
    assert old_file.domain.cutoff_nm == old_file.metadata["hyperparameters"]["cutoff"] == 0.5
    assert set(shipped.domain.rules) == {"isolated", "bond", "nearest"}
    assert shipped.domain.n_frames == 1000 and len(shipped.domain.bonds) == 21
    # Ranges survive a save/load.
    back = Committee.load(shipped.save(tmp_path / "shipped.pt"))
    assert back.metadata["domain"] == json.loads(json.dumps(shipped.metadata["domain"]))
    assert back.domain.rules == shipped.domain.rules


def test_corrupt_domain_metadata_is_named_at_load(shipped, tmp_path):
    bad = shipped.copy()
    bad.metadata["domain"] = {**bad.metadata["domain"], "nearest_min_nm": [0.1, 0.1]}
    path = bad.save(tmp_path / "bad.pt")
    with pytest.raises(CommitteeError, match=r"bad\.pt.*nearest_min_nm has 2 values for 22 atoms"):
        Committee.load(path)


def test_training_stores_the_ranges(ala2, perturbed):
    from conftest import make_small_committee

    committee = make_small_committee(ala2.atomic_numbers)
    assert "domain" not in committee.metadata
    x = perturbed(12, scale=0.004)
    e, f = committee.energies_and_forces(x)
    train_committee(committee, x, e.mean(1), f.mean(1), TrainingConfig(epochs=1), progress=False,
                    bonds=ala2.bonds)
    stored = committee.metadata["domain"]
    assert stored["n_frames"] == 12 and stored["cutoff_nm"] == 0.5
    bonds = np.asarray(ala2.bonds)
    assert stored["bonds"] == bonds.tolist()  # the topology's bonds, as given
    lengths = np.linalg.norm(x[:, bonds[:, 0]] - x[:, bonds[:, 1]], axis=-1)
    np.testing.assert_allclose(stored["bond_max_nm"], lengths.max(0))
    np.testing.assert_allclose(stored["bond_min_nm"], lengths.min(0))
    assert committee.domain_check(x).n_out == 0
    assert committee.domain_check(x * 0.6).out_of_domain.all()


def test_models_without_a_cutoff_use_the_training_ranges(ala2, perturbed):
    class Pairwise(torch.nn.Module):
        def __init__(self, seed):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(1.0 + seed))

        def forward(self, positions):
            d = (positions[:, :, None] - positions[:, None]).pow(2).sum(-1)
            return self.scale * torch.exp(-d).sum((1, 2))

    committee = Committee.from_models([Pairwise(0), Pairwise(1)], ala2.atomic_numbers)
    assert committee.domain.rules == ()  # nothing known: nothing flagged
    assert committee.domain_check(ala2.positions * 10).n_out == 0
    committee.record_domain(perturbed(8, scale=0.004))
    assert committee.domain.rules == ("bond", "nearest")
    check = committee.domain_check(ala2.positions * 10)
    assert check.out_of_domain.all() and "Angstrom" in check.reasons[0]


def test_toy_committees_have_no_domain():
    toy = Committee.mlp(n_atoms=1, n_members=2, hidden=4)
    toy.record_domain(np.random.default_rng(0).normal(size=(5, 1, 3)))
    assert toy.domain.rules == () and "domain" not in toy.metadata
    assert np.isfinite(toy.uncertainty(np.full((1, 1, 3), 40.0))).all()


def test_domain_refuses_inconsistent_ranges(ala2):
    with pytest.raises(ValueError, match="margin"):
        Domain(ala2.atomic_numbers, margin=1.5)
    with pytest.raises(ValueError, match="outside 0..21"):
        Domain(ala2.atomic_numbers, bonds=[[0, 30]], bond_min_nm=[0.1], bond_max_nm=[0.1])
    with pytest.raises(ValueError, match="unknown keys"):
        Domain.from_metadata(ala2.atomic_numbers, {"cutof_nm": 0.5})
    with pytest.raises(ValueError, match="shape"):
        training_ranges(ala2.atomic_numbers, np.zeros((3, 5, 3)))


# ---------------------------------------------------------------------- consumers
def candidates(positions, uncertainty):
    k = len(positions)
    return Candidates(np.asarray(positions), np.zeros(k), np.asarray(uncertainty, float), "force_variance", "test",
                      np.arange(k))


def test_selection_never_takes_an_out_of_domain_candidate_as_confident(shipped, training):
    x = training.positions[[0, 100, 200, 300]].copy()
    x[1] *= 10.0  # Angstrom as nm: the members say 0
    x[3] *= 0.6
    raw = shipped.uncertainty(x, domain=False)
    assert raw[1] < 1e-6 and raw[1] < raw[0] and raw[1] < raw[2]
    # Mask given (raw scores, as an attack reports them): counted and ranked as most uncertain.
    selector = Selector(min_rmsd=0, max_selected=None)
    out = selector.select(candidates(x, raw), out_of_domain=shipped.domain_check(x).out_of_domain)
    assert set(out.seed_index[:2].tolist()) == {1, 3} and np.all(out.uncertainty[:2] == np.inf)
    assert selector.last_report["out_of_domain"] == 2
    # Scored by the committee (as the loop does): inf, first in the ranking.
    scored = shipped.evaluate_in_batches(x)[2]
    out = Selector(min_rmsd=0, max_selected=2).select(candidates(x, scored))
    assert sorted(out.seed_index.tolist()) == [1, 3]
    # A trust window for "confident" candidates does not take them.
    confident = Selector(upper=float(np.max(scored[np.isfinite(scored)])) + 1, min_rmsd=0, max_selected=None)
    assert sorted(confident.select(candidates(x, scored)).seed_index.tolist()) == [0, 2]
    assert confident.last_report["out_of_domain"] == 2 and confident.last_report["outside_trust_window"] == 2
    # The physical filter drops the torn and crushed ones.
    from openmm_adv.geometry import GeometryCheck
    from openmm_adv.systems import alanine_dipeptide

    physical = Selector(min_rmsd=0, max_selected=None, geometry_check=GeometryCheck.for_system(alanine_dipeptide()))
    assert sorted(physical.select(candidates(x, scored)).seed_index.tolist()) == [0, 2]


def test_percentile_window_ignores_out_of_domain_reference_frames():
    selector = Selector(percentile_lower=50, min_rmsd=0, max_selected=None)
    assert selector.window([1.0, 2.0, 3.0, np.inf, np.inf, np.inf])[0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="out of the committee's domain"):
        selector.window([np.inf, np.inf])


def angstrom_simulation(ala2):
    """Amber alanine dipeptide whose coordinates were read as nm from an Angstrom file."""
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 5.0 / unit.picosecond, 0.001 * unit.picosecond)
    integrator.setRandomNumberSeed(1)
    sim = app.Simulation(ala2.topology, ala2.create_reference_system(), integrator,
                         openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(ala2.positions * 10.0)
    return sim


def test_reporter_flags_out_of_domain_frames(ala2, tmp_path):
    shipped = Committee.load(default_committee_path())
    sim = angstrom_simulation(ala2)
    frames = tmp_path / "to_label.extxyz"
    reporter = UncertaintyReporter(shipped, 5, tmp_path / "log.csv", threshold=1e9, frames=frames)
    sim.reporters.append(reporter)
    sim.step(10)
    reporter.close()
    assert reporter.values == [np.inf, np.inf] and reporter.flags == [True, True]
    assert reporter.n_out_of_domain == 2 and "Angstrom" in reporter.domain_reasons[5]
    lines = (tmp_path / "log.csv").read_text().splitlines()
    assert lines[0].endswith(",flagged,out_of_domain") and lines[1].split(",")[2] == "inf"
    assert lines[1].endswith(",1,1")
    numbers, written, _, _ = read_extxyz(frames)  # flagged: offered for labelling, marked
    assert len(written) == 2 and frames.read_text().count("uncertainty=inf") == 2
    assert frames.read_text().count("out_of_domain=1") == 2
    # stop_above stops the run there, saying why.
    sim = angstrom_simulation(ala2)
    sim.reporters.append(UncertaintyReporter(shipped, 5, stop_above=1e9))
    with pytest.raises(UncertaintyLimitExceeded, match="out of the committee's domain.*no neighbour"):
        sim.step(10)


def test_flags_are_invariant_for_any_rigid_motion_and_scale(shipped, training):
    """Property: whatever the rotation, translation and overall scale, moving the molecule
    rigidly changes no flag (hypothesis draws them; ranges and cutoff are distances), and the
    scale alone decides: within the margin in, far outside it out."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    frames = training.positions[::97]
    domain = shipped.domain

    @hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
    @hypothesis.given(matrix=st.lists(st.floats(-1, 1), min_size=9, max_size=9),
                      shift=st.lists(st.floats(-50, 50), min_size=3, max_size=3),
                      scale=st.floats(0.3, 15.0), frame=st.integers(0, len(frames) - 1))
    def check(matrix, shift, scale, frame):
        m = np.asarray(matrix).reshape(3, 3) + 3 * np.eye(3)  # well away from singular
        q, _ = np.linalg.qr(m)
        x = frames[frame] * scale
        moved = x @ (q * np.sign(np.linalg.det(q))).T + np.asarray(shift)
        a, b = domain.check(x), domain.check(moved)
        assert a.out_of_domain.tolist() == b.out_of_domain.tolist()
        # a training frame scaled by less than the 25 % margin stays in; ten times is out
        if 0.8 <= scale <= 1.13:
            assert not a.out_of_domain[0]
        if scale >= 1.5 or scale <= 0.6:
            assert a.out_of_domain[0]

    check()
