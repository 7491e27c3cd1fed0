"""The non-attack samplers: committee MD, UDD, metadynamics (phi/psi and uncertainty CV),
random displacement and reference MD."""

import numpy as np
import openmm
import pytest

from openmm_adv.data import Dataset
from openmm_adv.geometry import GeometryCheck
from openmm_adv.models import Committee
from openmm_adv.resources import default_committee_path, default_dataset_path
from openmm_adv.samplers.candidates import Candidates
from openmm_adv.samplers.md import CommitteeMDSampler
from openmm_adv.samplers.metadynamics import (
    MetadynamicsSampler,
    UncertaintyMetadynamicsSampler,
    uncertainty_cv_force,
)
from openmm_adv.samplers.random_displacement import RandomDisplacementSampler
from openmm_adv.samplers.reference import ReferenceMDSampler
from openmm_adv.samplers.udd import UDDSampler
from openmm_adv.udd_force import udd_bias_energy, udd_bias_force

from conftest import energy_forces, replica_context


@pytest.fixture(scope="module")
def trained(ala2):
    """The shipped committee: stable MD (the untrained fixture collapses molecules in a few steps)."""
    return Committee.load(default_committee_path(), system=ala2)


@pytest.fixture(scope="module")
def seeds():
    return Dataset.load(default_dataset_path()).positions[::97][:3].astype(np.float64)


def rng(seed=0):
    return np.random.default_rng(seed)


def check_candidates(c: Candidates, sampler: str, n_seeds: int):
    k = len(c)
    assert k > 0
    assert c.sampler == sampler
    assert c.positions.shape == (k, 22, 3)
    assert c.energies.shape == (k,) and c.uncertainty.shape == (k,) and c.seed_index.shape == (k,)
    assert np.isfinite(c.positions).all() and np.isfinite(c.energies).all() and np.isfinite(c.uncertainty).all()
    assert ((c.seed_index >= 0) & (c.seed_index < n_seeds)).all()
    assert c.n_force_evaluations > 0 and c.wall_seconds > 0


# ---------------------------------------------------------------------- committee MD
def test_committee_md_candidates_cost_and_reproducibility(trained, seeds, ala2):
    sampler = CommitteeMDSampler(n_steps=30, report_interval=10, geometry_check=ala2, system=ala2, progress=False)
    a = sampler.sample(trained, seeds, rng(0))
    check_candidates(a, "committee_md", 3)
    assert a.metric == "max_force_deviation" and a.oracle_calls == 0
    assert len(a) == a.info["n_frames"] == 9 and a.info["n_exploded"] == 0
    assert sorted(set(a.info["step"].tolist())) == [10, 20, 30]
    assert a.n_force_evaluations == 3 * 30 + 9
    # float32 committee: batch composition changes the last digits
    np.testing.assert_allclose(a.uncertainty, trained.uncertainty(a.positions, "max_force_deviation"), rtol=1e-4)
    np.testing.assert_allclose(a.energies, trained.energies(a.positions).mean(1), rtol=1e-5)
    b = sampler.sample(trained, seeds, rng(0))
    np.testing.assert_array_equal(a.positions, b.positions)
    c = sampler.sample(trained, seeds, rng(1))
    assert np.abs(a.positions - c.positions).max() > 1e-4


def test_replicas_do_not_interact(small_committee, perturbed):
    # T = 0: no noise, no initial velocities; the damped dynamics of a batch of 2 must be that
    # of 2 separate runs.
    x = perturbed(2, scale=0.002, seed=5)
    kwargs = dict(temperature=0.0, n_steps=6, report_interval=2, platform="Reference", progress=False)
    batched = CommitteeMDSampler(**kwargs).sample(small_committee, x, rng(0))
    assert len(batched) == 6
    for s in range(2):
        single = CommitteeMDSampler(**kwargs).sample(small_committee, x[s : s + 1], rng(3))
        np.testing.assert_allclose(batched.positions[batched.seed_index == s], single.positions, atol=1e-10)
    # and batch_size chunks give the same frames
    chunked = CommitteeMDSampler(batch_size=1, **kwargs).sample(small_committee, x, rng(0))
    np.testing.assert_allclose(np.sort(chunked.positions.ravel()), np.sort(batched.positions.ravel()), atol=1e-10)


def test_trust_window_keeps_only_frames_inside(trained, seeds, ala2):
    kwargs = dict(n_steps=40, report_interval=5, geometry_check=ala2, progress=False)
    everything = CommitteeMDSampler(**kwargs).sample(trained, seeds, rng(2))
    lo, hi = np.percentile(everything.uncertainty, [25, 75])
    windowed = CommitteeMDSampler(lower=lo, upper=hi, **kwargs).sample(trained, seeds, rng(2))
    inside = (everything.uncertainty >= lo) & (everything.uncertainty < hi)
    assert 0 < len(windowed) == inside.sum() < len(everything)
    assert ((windowed.uncertainty >= lo) & (windowed.uncertainty < hi)).all()
    np.testing.assert_array_equal(windowed.positions, everything.positions[inside])
    assert windowed.info["n_below"] == (everything.uncertainty < lo).sum()
    assert windowed.info["n_above"] == (everything.uncertainty >= hi).sum()
    with pytest.raises(ValueError, match="lower < upper"):
        CommitteeMDSampler(lower=2.0, upper=1.0)


@pytest.mark.filterwarnings("ignore:divide by zero")  # GeometryCheck on a zero-length bond
@pytest.mark.parametrize("platform", ["CPU", "Reference"])
def test_exploding_replica_stops_contributing(trained, seeds, ala2, platform):
    bad = seeds.copy()
    bad[1, 1] = bad[1, 0]  # two atoms on top of each other: NaN forces for replica 1 only
    sampler = CommitteeMDSampler(n_steps=20, report_interval=5, geometry_check=ala2, platform=platform, progress=False)
    out = sampler.sample(trained, bad, rng(0))
    assert out.info["n_exploded"] == 1
    assert len(out.info["explosions"]) == 1 and "replica 1" in out.info["explosions"][0]
    assert 1 not in out.seed_index.tolist()
    assert len(out) == 2 * 4  # the two healthy replicas report at every step
    ok, _ = GeometryCheck.for_system(ala2)(out.positions)
    assert ok.all()


def test_bad_seeds_are_clear_errors(trained):
    sampler = CommitteeMDSampler(n_steps=2, progress=False)
    with pytest.raises(ValueError, match=r"\[S, 22, 3\]"):
        sampler.sample(trained, np.zeros((2, 20, 3)), rng())
    x = np.zeros((1, 22, 3))
    x[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sampler.sample(trained, x, rng())


def test_units_at_the_boundary():
    from openmm import unit

    s = CommitteeMDSampler(temperature=300 * unit.kelvin, timestep=1 * unit.femtosecond,
                           friction=2 / unit.picosecond, progress=False)
    assert s.temperature == pytest.approx(300.0) and s.timestep == pytest.approx(0.001) and s.friction == pytest.approx(2.0)
    with pytest.raises(ValueError, match="cannot be converted"):
        CommitteeMDSampler(timestep=1 * unit.nanometer)
    r = RandomDisplacementSampler(sigma=0.2 * unit.angstrom)
    assert r.sigma == pytest.approx(0.02)


# ---------------------------------------------------------------------- UDD
@pytest.mark.parametrize("include_mean, backend", [(True, "torch"), (False, "torch"), (True, "python")])
def test_udd_force_energy_and_forces(small_committee, perturbed, include_mean, backend):
    x = perturbed(2, scale=0.01, seed=1)
    A, B = 5.0, 2.0  # the members' energy variance is ~95 (kJ/mol)^2 here
    force = udd_bias_force(small_committee, A, B, n_replicas=2, include_mean=include_mean, backend=backend)
    ctx = replica_context(force, 44)
    energy, forces = energy_forces(ctx, x)
    e = small_committee.energies(x)
    bias = A * (np.exp(-e.var(axis=1) / (22 * B**2)) - 1.0)
    assert (bias < -0.1).all() and (bias > -A).all()  # the test probes the curved part of the bias
    np.testing.assert_allclose(bias, udd_bias_energy(e, A, B, 22), rtol=1e-12)
    expected = (e.mean(axis=1) + bias).sum() if include_mean else bias.sum()
    assert energy == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # forces = - finite-difference gradient of the OpenMM energy
    h = 1e-5
    for particle, axis in [(0, 0), (5, 1), (22 + 8, 2), (22 + 21, 0)]:
        plus, minus = x.reshape(-1, 3).copy(), x.reshape(-1, 3).copy()
        plus[particle, axis] += h
        minus[particle, axis] -= h
        derivative = (energy_forces(ctx, plus)[0] - energy_forces(ctx, minus)[0]) / (2 * h)
        assert forces[particle, axis] == pytest.approx(-derivative, rel=1e-5, abs=1e-6)


def test_udd_members_in_denominator(small_committee, perturbed):
    x = perturbed(1, scale=0.01, seed=1)
    ctx = replica_context(udd_bias_force(small_committee, 5.0, 2.0, include_mean=False, n_members_in_denominator=True), 22)
    energy, _ = energy_forces(ctx, x)
    expected = udd_bias_energy(small_committee.energies(x), 5.0, 2.0 * np.sqrt(3), 22)[0]
    assert energy == pytest.approx(expected, rel=1e-9) and -5.0 < expected < -0.1


def test_udd_sampler(trained, seeds, ala2):
    sampler = UDDSampler(A=8.0, n_steps=20, report_interval=10, geometry_check=ala2, progress=False)
    a = sampler.sample(trained, seeds, rng(0))
    check_candidates(a, "udd", 3)
    assert len(a) == 6 and a.metric == "force_variance"
    B = a.info["B"]
    rms = np.sqrt(trained.energies(seeds).var(axis=1).mean())
    assert B == pytest.approx(3.0 * rms / np.sqrt(22), rel=1e-6)
    expected = udd_bias_energy(trained.energies(a.positions), 8.0, B, 22)
    np.testing.assert_allclose(a.info["bias"], expected, rtol=1e-4, atol=1e-6)
    assert ((a.info["bias"] <= 0) & (a.info["bias"] >= -8.0)).all()
    assert a.n_force_evaluations == 3 + 3 * 20 + 6
    b = sampler.sample(trained, seeds, rng(0))
    np.testing.assert_array_equal(a.positions, b.positions)
    fixed = UDDSampler(A=8.0, B=0.5, n_steps=20, report_interval=10, progress=False).sample(trained, seeds, rng(0))
    assert fixed.info["B"] == 0.5 and fixed.n_force_evaluations == 3 * 20 + len(fixed)


# ---------------------------------------------------------------------- random displacement
def test_random_displacement(trained, seeds, ala2):
    sampler = RandomDisplacementSampler(sigma=0.005, n_per_seed=4, geometry_check=ala2)
    a = sampler.sample(trained, seeds, rng(0))
    check_candidates(a, "random_displacement", 3)
    assert len(a) + a.info["n_unphysical"] == 12 and a.n_force_evaluations == len(a)
    np.testing.assert_allclose(a.info["displacement_rms"], 0.005, rtol=0.3)
    assert np.sqrt(((a.positions - seeds[a.seed_index]) ** 2).mean()) == pytest.approx(0.005, rel=0.2)
    np.testing.assert_allclose(a.uncertainty, trained.uncertainty(a.positions), rtol=1e-4)
    np.testing.assert_array_equal(a.positions, sampler.sample(trained, seeds, rng(0)).positions)
    assert np.abs(a.positions - sampler.sample(trained, seeds, rng(1)).positions).max() > 1e-4
    # a huge displacement breaks bonds: those samples are dropped and counted
    broken = RandomDisplacementSampler(sigma=0.05, n_per_seed=4, geometry_check=ala2).sample(trained, seeds, rng(0))
    assert broken.info["n_unphysical"] > 0 and len(broken) + broken.info["n_unphysical"] == 12


# ---------------------------------------------------------------------- reference MD
def test_reference_md_frames_are_labelled(trained, seeds, ala2):
    sampler = ReferenceMDSampler(ala2, n_steps=200, report_interval=50, progress=False)
    a = sampler.sample(trained, seeds, rng(0))
    check_candidates(a, "reference_md", 3)
    assert len(a) == 12 and a.oracle_calls == a.info["reference_force_evaluations"] == 600
    e, f = ala2.reference_energies_forces(a.positions)
    np.testing.assert_allclose(a.info["reference_energies"], e, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(a.info["reference_forces"], f, rtol=1e-4, atol=1e-2)
    np.testing.assert_array_equal(a.positions, sampler.sample(trained, seeds, rng(0)).positions)
    assert np.abs(a.positions - sampler.sample(trained, seeds, rng(1)).positions).max() > 1e-4


# ---------------------------------------------------------------------- metadynamics
def test_metadynamics_on_phi_psi(trained, seeds, ala2):
    sampler = MetadynamicsSampler(ala2, n_steps=40, report_interval=10, frequency=10, geometry_check=ala2,
                                  progress=False)
    a = sampler.sample(trained, seeds[:2], rng(0))
    check_candidates(a, "metadynamics", 2)
    assert len(a) == 8 and a.info["n_md_steps"] == 80 and a.info["n_depositions"] == 8
    assert a.n_force_evaluations == 80 + 8
    free_energy = a.info["free_energy"]
    assert free_energy.shape == (90, 90) and np.abs(free_energy).max() > 0.5
    cvs = ala2.compute_cvs(a.positions)
    np.testing.assert_allclose(a.info["phi"], cvs["phi"], atol=1e-4)
    np.testing.assert_allclose(a.info["psi"], cvs["psi"], atol=1e-4)
    np.testing.assert_array_equal(a.positions, sampler.sample(trained, seeds[:2], rng(0)).positions)
    # independent walkers: one bias each
    separate = MetadynamicsSampler(ala2, n_steps=20, report_interval=10, frequency=10, share_bias=False,
                                   n_walkers=2, progress=False).sample(trained, seeds, rng(0))
    assert len(separate.info["free_energy"]) == 2 and len(set(separate.seed_index.tolist())) == 2
    # a walker that blows up (NaN forces; the Reference platform does not stop) is dropped and
    # does not poison the shared bias
    bad = seeds[:2].copy()
    bad[0, 1] = bad[0, 0]
    survived = MetadynamicsSampler(ala2, n_steps=20, report_interval=10, frequency=5, platform="Reference",
                                   geometry_check=ala2, progress=False).sample(trained, bad, rng(0))
    assert survived.info["n_exploded"] == 1 and survived.seed_index.tolist() == [1, 1]
    assert np.isfinite(survived.info["free_energy"]).all()
    with pytest.raises(ValueError, match="unknown CVs"):
        MetadynamicsSampler(ala2, cvs=("chi",))
    with pytest.raises(ValueError, match="bias_factor"):
        MetadynamicsSampler(ala2, bias_factor=1.0)


def test_uncertainty_cv_force_reports_the_committee_uncertainty(small_committee, perturbed):
    x = perturbed(1, scale=0.01, seed=2)[0]
    for log in (True, False):
        for metric in ("force_variance", "energy_std"):
            force = uncertainty_cv_force(small_committee, metric, log=log)
            system = openmm.System()
            for _ in range(22):
                system.addParticle(12.0)
            cv = openmm.CustomCVForce("s")
            cv.addCollectiveVariable("s", force)
            system.addForce(cv)
            ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
            ctx.setPositions(x)
            u = small_committee.uncertainty(x, metric)[0]
            assert cv.getCollectiveVariableValues(ctx)[0] == pytest.approx(np.log(u) if log else u, rel=1e-9)


def test_uncertainty_metadynamics(trained, seeds, ala2):
    sampler = UncertaintyMetadynamicsSampler(n_steps=20, report_interval=5, frequency=5, system=ala2,
                                             geometry_check=ala2, progress=False)
    a = sampler.sample(trained, seeds[:2], rng(0))
    check_candidates(a, "uncertainty_metadynamics", 2)
    assert len(a) == 8
    # the CV the bias acts on is log(force variance) of the same geometry
    np.testing.assert_allclose(a.info["log_force_variance"], np.log(trained.uncertainty(a.positions)), atol=1e-4)
    np.testing.assert_allclose(np.exp(a.info["cv"][:, 0]), a.uncertainty, rtol=1e-4)
    u_seeds = trained.uncertainty(seeds[:2])
    lo, hi = a.info["cv_range"]
    assert lo == pytest.approx(np.log(u_seeds.min()) - 2) and hi == pytest.approx(np.log(u_seeds.max()) + 8)
    assert np.abs(a.info["free_energy"]).max() > 0.5 and a.info["n_depositions"] == 8
    # cost: 2 per MD step (mean + CV), CV at deposits (x2) and frames, seeds for the range, scoring
    assert a.n_force_evaluations == 2 * 40 + 2 * 8 + 8 + 2 + 8
    linear = UncertaintyMetadynamicsSampler(log_cv=False, n_steps=10, report_interval=5, frequency=5,
                                            n_walkers=1, progress=False).sample(trained, seeds, rng(0))
    assert len(linear) == 2 and linear.info["cv_range"][0] == 0.0
    np.testing.assert_allclose(linear.info["force_variance"], linear.uncertainty, rtol=1e-4)


def test_metadynamics_walkers_alternate_temperatures(trained, seeds, ala2):
    sampler = UncertaintyMetadynamicsSampler(n_steps=10, report_interval=5, frequency=5, walker_temperatures=[300.0, 500.0],
                                             geometry_check=ala2, progress=False)
    a = sampler.sample(trained, seeds[:3], rng(0))
    np.testing.assert_allclose(a.info["walker_temperatures"], [300.0, 500.0, 300.0])
    assert sampler.options["walker_temperatures"] == [300.0, 500.0]
    with pytest.raises(ValueError, match="temperature must be"):
        UncertaintyMetadynamicsSampler(walker_temperatures=[300.0, -5.0])
    with pytest.raises(ValueError, match="walker_temperatures"):
        UncertaintyMetadynamicsSampler(walker_temperatures=[])
