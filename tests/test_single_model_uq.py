"""Single-model uncertainties (Gaussian mixture, mean-variance, evidential): their values,
their gradients through OpenMM, invariances, persistence and the likelihoods they train on."""

import numpy as np
import pytest
import torch
from scipy import stats

from openmm_adv.forces import adversarial_force, uncertainty_force
from openmm_adv.models import Committee
from openmm_adv.models.gmm import GaussianMixtureDensity, conformal_scale, fit_gaussian_mixture
from openmm_adv.models.heads import VarianceHeadPotential
from openmm_adv.train_heads import HeadTrainingConfig, evidential_nll, gaussian_nll, train_with_head

from conftest import assert_force_is_minus_gradient, energy_forces, replica_context
from test_physics import random_rotation

pytestmark = pytest.mark.filterwarnings("ignore::openmm_adv.forces.UncertaintyForceWarning")


def single_model(ala2, seed=3):
    return Committee.painn(ala2.atomic_numbers, n_members=1, n_features=8, n_rbf=8, n_interactions=2,
                           dtype=torch.float64, seed=seed)


@pytest.fixture(scope="module")
def frames(ala2):
    rng = np.random.default_rng(5)
    return ala2.positions[None] + 0.004 * rng.normal(size=(60, ala2.n_atoms, 3))


@pytest.fixture(scope="module")
def gmm_model(ala2, frames):
    model = single_model(ala2)
    # "reference" forces: the model's own plus noise, so its calibration errors are known
    _, f = model.energies_and_forces(frames[40:])
    noisy = f[:, 0] + np.random.default_rng(1).normal(scale=30.0, size=f[:, 0].shape)
    return fit_gaussian_mixture(model, frames[:40], frames[40:], noisy, n_components=3, seed=0)


def head_model(ala2, method):
    model = single_model(ala2)
    return Committee(VarianceHeadPotential(model.potential, method, force_scale=250.0, seed=1),
                     {**model.metadata, "uncertainty": {"method": method}})


@pytest.fixture(scope="module", params=["gmm", "mve", "evidential"])
def uq_model(request, ala2, gmm_model):
    return gmm_model if request.param == "gmm" else head_model(ala2, request.param)


def test_mixture_density_equals_scikit_learn(ala2, frames):
    from sklearn.mixture import GaussianMixture

    x = np.random.default_rng(0).normal(size=(300, 4)) @ np.diag([1.0, 2.0, 0.5, 3.0]) + 1.0
    mixture = GaussianMixture(3, covariance_type="full", random_state=0).fit(x)
    density = GaussianMixtureDensity(mixture.means_, mixture.precisions_cholesky_, mixture.weights_,
                                     np.zeros(4), np.ones(4), torch.float64)
    probe = np.random.default_rng(1).normal(size=(50, 4)) * 3
    np.testing.assert_allclose(-density(torch.from_numpy(probe)).numpy(), mixture.score_samples(probe), rtol=1e-10)
    # standardisation is applied before the mixture
    shifted = GaussianMixtureDensity(mixture.means_, mixture.precisions_cholesky_, mixture.weights_,
                                     np.full(4, 2.0), np.full(4, 0.5), torch.float64)
    np.testing.assert_allclose(shifted(torch.from_numpy(2.0 + 0.5 * probe)).numpy(), density(torch.from_numpy(probe)).numpy())


def test_conformal_scale_is_the_smallest_bound_with_the_coverage():
    errors = np.arange(1.0, 101.0)
    scores = np.full(100, 50.0)  # softplus(50) = 50 to double precision
    c = conformal_scale(errors, scores, alpha=0.1)
    covered = errors <= c * np.logaddexp(0.0, scores)
    assert covered.mean() >= 0.9
    assert (errors <= 0.999 * c * 50.0).mean() < 0.9 + 1.0 / 101  # no smaller scale covers as much
    assert c == pytest.approx(91 / 50.0)  # ceil(101 * 0.9) = 91st of 100 ratios
    with pytest.raises(ValueError, match="alpha"):
        conformal_scale(errors, scores, alpha=1.5)


def test_gmm_calibration_is_recorded_and_covers_the_calibration_set(gmm_model, frames):
    meta = gmm_model.metadata["uncertainty"]
    assert meta["method"] == "gmm" and meta["n_components"] == 3
    assert gmm_model.uncertainty(frames[40:], "gmm_nll", domain=False).min() == pytest.approx(0.0, abs=1e-9)
    # the bound holds on at least 1 - alpha of the calibration structures (noise of 30 per component)
    bound = gmm_model.uncertainty(frames[40:], "gmm_error", domain=False)
    assert np.mean(bound >= 30.0 * 0.8) >= 0.9
    np.testing.assert_allclose(gmm_model.uncertainty(frames[:5], "force_variance", domain=False),
                               gmm_model.uncertainty(frames[:5], "gmm_error", domain=False) ** 2, rtol=1e-12)


def test_gmm_score_grows_away_from_the_training_data(gmm_model, ala2):
    rng = np.random.default_rng(9)
    near = ala2.positions[None] + 0.004 * rng.normal(size=(20, ala2.n_atoms, 3))
    far = ala2.positions[None] + 0.03 * rng.normal(size=(20, ala2.n_atoms, 3))
    assert np.median(gmm_model.uncertainty(far, "gmm_nll", domain=False)) > \
        np.median(gmm_model.uncertainty(near, "gmm_nll", domain=False)) + 5.0


def test_every_metric_is_invariant_under_rotation_and_translation(uq_model, perturbed):
    x = perturbed(2)
    moved = x @ random_rotation(4).T + np.array([1.1, -0.4, 0.3])
    for metric in uq_model.metrics:
        np.testing.assert_allclose(uq_model.uncertainty(moved, metric, domain=False),
                                   uq_model.uncertainty(x, metric, domain=False), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_openmm_uncertainty_force_equals_the_model(uq_model, perturbed, platform):
    x = perturbed(2)
    for metric in uq_model.metrics:
        ctx = replica_context(uncertainty_force(uq_model, metric, n_replicas=2, scale=2.0), 44, platform)
        energy, _ = energy_forces(ctx, x)
        assert energy == pytest.approx(2.0 * uq_model.uncertainty(x, metric, domain=False).sum(), rel=1e-6)


def test_uncertainty_force_is_minus_finite_difference_gradient(uq_model, perturbed):
    x = perturbed(1)[0]
    ctx = replica_context(uncertainty_force(uq_model, "force_variance"), 22)
    assert_force_is_minus_gradient(ctx, x, ((0, 0), (8, 1), (15, 2), (21, 0)), abs_tol=1e-6)


def test_adversarial_force_is_minus_finite_difference_gradient(uq_model, perturbed):
    x = perturbed(1, seed=3)[0]
    force, module = adversarial_force(uq_model, 2.5, training_energies=[0.0, 1.0])
    ctx = replica_context(force, 22)
    energy, _ = energy_forces(ctx, x)
    log_l, u, e = module.replica_values(torch.from_numpy(x[None]), False)
    assert energy == pytest.approx(-2.5 * float(log_l.sum()), rel=1e-8)
    assert_force_is_minus_gradient(ctx, x, ((2, 2), (9, 0), (19, 1)))


def test_gmm_metric_works_as_a_metadynamics_cv(gmm_model, ala2, frames):
    """The CV of the paper (gmm_nll) biases MD through openmm.app.Metadynamics."""
    import openmm
    from openmm import app, unit

    system = openmm.System()
    for mass in ala2.masses:
        system.addParticle(float(mass))
    from openmm_adv.forces import mean_energy_force

    system.addForce(mean_energy_force(gmm_model))
    cv = uncertainty_force(gmm_model, "gmm_nll")
    bias = app.BiasVariable(cv, -5.0, 60.0, 2.0)
    meta = app.Metadynamics(system, [bias], 300 * unit.kelvin, 5.0, 1.0, 5)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 10 / unit.picosecond, 0.0005 * unit.picoseconds)
    sim = app.Simulation(app.Topology(), system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(frames[0])
    meta.step(sim, 20)
    values = meta.getCollectiveVariables(sim)
    assert values[0] == pytest.approx(gmm_model.uncertainty(sim.context.getState(getPositions=True).getPositions(asNumpy=True)
                                                            .value_in_unit(unit.nanometer), "gmm_nll", domain=False)[0], rel=1e-6)
    free = np.asarray(meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert free.max() - free.min() > 0  # hills were deposited


def test_save_load_round_trip_keeps_method_and_values(uq_model, perturbed, tmp_path):
    path = uq_model.save(tmp_path / "model.pt")
    loaded = Committee.load(path)
    assert loaded.uncertainty_method == uq_model.uncertainty_method
    x = perturbed(2, seed=2)
    for metric in uq_model.metrics:
        np.testing.assert_allclose(loaded.uncertainty(x, metric, domain=False), uq_model.uncertainty(x, metric, domain=False),
                                   rtol=1e-10)


def test_metrics_a_method_lacks_are_refused(gmm_model, small_committee, ala2):
    with pytest.raises(ValueError, match="gmm_nll"):
        small_committee.uncertainty(ala2.positions, "gmm_nll")
    with pytest.raises(ValueError, match="no metric 'energy_std'"):
        gmm_model.uncertainty(ala2.positions, "energy_std")
    with pytest.raises(ValueError, match="no metric"):
        uncertainty_force(head_model(ala2, "mve"), "aleatoric_variance")


def test_single_model_methods_need_one_member_with_features(small_committee, ala2, frames):
    with pytest.raises(ValueError, match="3 members"):
        fit_gaussian_mixture(small_committee, frames[:10], frames[10:12], np.zeros_like(frames[10:12]))
    schnet = Committee.schnet(ala2.atomic_numbers, n_members=1, n_features=8)
    with pytest.raises(ValueError, match="atom_features"):
        VarianceHeadPotential(schnet.potential, "mve", 100.0)


def test_gaussian_likelihood_equals_scipy():
    rng = np.random.default_rng(0)
    residual = rng.normal(size=(4, 5, 3))
    variance = rng.uniform(0.2, 3.0, size=(4, 5))
    expected = -stats.norm.logpdf(residual, scale=np.sqrt(variance)[..., None]).mean() - 0.5 * np.log(2 * np.pi)
    assert float(gaussian_nll(torch.from_numpy(residual), torch.from_numpy(variance))) == pytest.approx(expected, rel=1e-12)


def test_evidential_likelihood_is_the_student_t_marginal():
    """The normal-inverse-gamma marginal of y is a Student t with 2 alpha degrees of freedom and
    scale^2 = beta (1 + nu) / (nu alpha) (Amini et al. 2020): a known answer for the loss."""
    rng = np.random.default_rng(1)
    residual = rng.normal(size=(3, 4, 3))
    nu, alpha, beta = rng.uniform(0.1, 2, (3, 4)), rng.uniform(1.1, 4, (3, 4)), rng.uniform(0.1, 2, (3, 4))
    params = torch.from_numpy(np.stack([nu, alpha, beta], -1))
    scale = np.sqrt(beta * (1 + nu) / (nu * alpha))[..., None]
    expected = -stats.t.logpdf(residual, df=2 * alpha[..., None], scale=scale).mean()
    assert float(evidential_nll(torch.from_numpy(residual), params, 0.0)) == pytest.approx(expected, rel=1e-10)
    with_reg = float(evidential_nll(torch.from_numpy(residual), params, 0.5))
    reg = (np.abs(residual) * (2 * nu + alpha)[..., None]).mean()
    assert with_reg == pytest.approx(expected + 0.5 * reg, rel=1e-10)


@pytest.mark.parametrize("method", ["mve", "evidential"])
def test_likelihood_training_learns_where_the_labels_are_noisy(ala2, method):
    """Forces with noise on the oxygens only: the trained head must give those atoms the larger
    variance (the oxygens are the one element the features tell apart from every other atom),
    and the caller's model must stay untouched."""
    rng = np.random.default_rng(2)
    x = ala2.positions[None] + 0.003 * rng.normal(size=(40, ala2.n_atoms, 3))
    base = single_model(ala2)
    e, f = base.energies_and_forces(x)
    forces = f[:, 0].copy()
    noisy_atoms = np.flatnonzero(np.asarray(ala2.atomic_numbers) == 8)
    forces[:, noisy_atoms] += rng.normal(scale=400.0, size=(40, len(noisy_atoms), 3))
    before = {k: v.clone() for k, v in base.potential.state_dict().items()}
    config = HeadTrainingConfig(epochs=40, learning_rate=3e-3, patience=40, batch_size=8)
    model = train_with_head(base, x, e[:, 0], forces, method, config, progress=False)
    for k, v in base.potential.state_dict().items():
        assert torch.equal(v, before[k]), k
    _, _, params = model.potential.energies_forces_head(torch.from_numpy(x[:8]), False)
    if method == "mve":
        per_atom = params[..., 0]
    else:
        per_atom = params[..., 2] / (params[..., 1] - 1.0)  # aleatoric: what label noise shows up in
    per_atom = per_atom.detach().mean(0).numpy()
    quiet = np.setdiff1d(np.arange(ala2.n_atoms), noisy_atoms)
    assert per_atom[noisy_atoms].min() > 3.0 * np.median(per_atom[quiet])
    assert model.uncertainty_method == method


@pytest.mark.parametrize("method", ["mve", "evidential"])
def test_head_metrics_are_the_predicted_variances(ala2, perturbed, method):
    """force_variance is the head's epistemic variance (MVE: sigma^2; evidential:
    beta / (nu (alpha - 1))), aleatoric_variance beta / (alpha - 1), in force_scale^2 units."""
    model = head_model(ala2, method)
    x = perturbed(3, seed=4)
    _, _, params = model.potential.energies_forces_head(torch.from_numpy(x), False)
    p = params.detach().numpy()
    unit = 250.0**2
    if method == "mve":
        expected = {"force_variance": unit * p[..., 0].mean(-1)}
    else:
        nu, alpha, beta = p[..., 0], p[..., 1], p[..., 2]
        expected = {"force_variance": unit * (beta / (nu * (alpha - 1))).mean(-1),
                    "aleatoric_variance": unit * (beta / (alpha - 1)).mean(-1)}
    for metric, value in expected.items():
        np.testing.assert_allclose(model.uncertainty(x, metric, domain=False), value, rtol=1e-10)
