"""OpenMM forces built from a committee reproduce the committee, on every platform and backend."""

import numpy as np
import pytest
import torch

from openmm_adv.forces import adversarial_force, mean_energy_force, objective_normalisation, uncertainty_force
from openmm_adv.models import uncertainty

from conftest import energy_forces, replica_context

PLATFORMS = ["Reference", "CPU"]


def model_mean(committee, x):
    e, f = committee.energies_and_forces(x)
    return e.mean(1).sum(), f.mean(1)


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("backend", ["torch", "python"])
def test_mean_energy_force_matches_model(small_committee, perturbed, platform, backend):
    x = perturbed(3)
    ctx = replica_context(mean_energy_force(small_committee, n_replicas=3, backend=backend), 66, platform)
    energy, forces = energy_forces(ctx, x)
    e_ref, f_ref = model_mean(small_committee, x)
    assert energy == pytest.approx(e_ref, rel=1e-5, abs=1e-4)
    np.testing.assert_allclose(forces.reshape(3, 22, 3), f_ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_uncertainty_force_energy_is_the_metric(small_committee, perturbed, platform):
    x = perturbed(2)
    for metric in ("force_variance", "max_force_deviation", "energy_std"):
        ctx = replica_context(uncertainty_force(small_committee, metric, n_replicas=2, scale=2.0), 44, platform)
        energy, _ = energy_forces(ctx, x)
        assert energy == pytest.approx(2.0 * small_committee.uncertainty(x, metric).sum(), rel=1e-5)


def test_platforms_agree_for_adversarial_force(small_committee, perturbed):
    x = perturbed(2)
    results = []
    for platform in PLATFORMS:
        force, _ = adversarial_force(small_committee, 2.5, n_replicas=2, training_energies=[0.0, 1.0])
        results.append(energy_forces(replica_context(force, 44, platform), x))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-4)


def test_adversarial_energy_is_minus_kT_log_objective(small_committee, perturbed):
    x = perturbed(2)
    kT, train = 2.5, np.array([-3.0, 0.0, 4.0])
    e_ref, log_z = objective_normalisation(train, kT)
    e, f = small_committee.energies_and_forces(x)
    u = uncertainty(torch.from_numpy(e), torch.from_numpy(f), "force_variance").numpy()
    log_l = np.log(u) - (e.mean(1) - e_ref) / kT - log_z
    for objective, expected in (("log", -kT * log_l.sum()), ("linear", -np.exp(log_l).sum())):
        force, _ = adversarial_force(small_committee, kT, objective=objective, training_energies=train, n_replicas=2)
        energy, _ = energy_forces(replica_context(force, 44), x)
        assert energy == pytest.approx(expected, rel=1e-6)
    assert log_z == pytest.approx(np.log(np.mean(np.exp(-(train - train.min()) / kT))))


def test_batched_replicas_equal_single_replicas(small_committee, perturbed):
    x = perturbed(3, seed=1)
    force, _ = adversarial_force(small_committee, 2.5, n_replicas=3, training_energies=[0.0])
    e_all, f_all = energy_forces(replica_context(force, 66), x)
    single = []
    force1, _ = adversarial_force(small_committee, 2.5, n_replicas=1, training_energies=[0.0])
    ctx1 = replica_context(force1, 22)
    for b in range(3):
        single.append(energy_forces(ctx1, x[b]))
    assert e_all == pytest.approx(sum(s[0] for s in single), rel=1e-9)
    np.testing.assert_allclose(f_all.reshape(3, 22, 3), np.stack([s[1] for s in single]), rtol=1e-8, atol=1e-8)


def test_force_group_is_set(small_committee):
    assert mean_energy_force(small_committee, force_group=5).getForceGroup() == 5
    with pytest.raises(ValueError, match="force_group"):
        mean_energy_force(small_committee, force_group=40)


def test_wrong_particle_count_is_a_clear_error(small_committee, ala2):
    import openmm

    ctx = replica_context(mean_energy_force(small_committee, n_replicas=2), 22)
    ctx.setPositions(ala2.positions)
    with pytest.raises(openmm.OpenMMException, match="44 particles"):
        ctx.getState(getEnergy=True)


def test_unknown_backend(small_committee):
    with pytest.raises(ValueError, match="backend"):
        mean_energy_force(small_committee, backend="jax")


@pytest.mark.cuda
def test_cuda_matches_reference(small_committee, perturbed):
    import openmm

    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if "CUDA" not in names or not torch.cuda.is_available():
        pytest.skip("no CUDA platform/device here")
    x = perturbed(4)
    ref = energy_forces(replica_context(mean_energy_force(small_committee, n_replicas=4), 88, "Reference"), x)
    for graphs in (False, True):
        force = mean_energy_force(small_committee, n_replicas=4, use_cuda_graphs=graphs)
        got = energy_forces(replica_context(force, 88, "CUDA"), x)
        assert got[0] == pytest.approx(ref[0], rel=1e-5)
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-4, atol=1e-3)
