"""Adversarial attacks inside OpenMM."""

import numpy as np
import pytest

from openmm_adv.forces import adversarial_force
from openmm_adv.geometry import GeometryCheck
from openmm_adv.samplers import Attack, attack_integrator

from conftest import replica_context


def test_gradient_ascent_increases_the_objective_monotonically(small_committee, perturbed, ala2):
    attack = Attack(small_committee, kT=5.0, n_steps=12, optimizer="gradient", step_size=1e-7, batch_size=2,
                    report_interval=1, geometry_check=ala2, platform="Reference", progress=False,
                    training_energies=[0.0])
    result = attack.run(perturbed(2))
    traj = np.column_stack([result.log_objective_initial, result.log_objective_trajectory])
    assert np.all(np.diff(traj, axis=1) > 0)
    assert np.all(result.valid)
    assert np.all(result.uncertainty_best > result.uncertainty_initial)


def test_adam_attack_returns_best_valid_iterate(small_committee, perturbed, ala2):
    attack = Attack(small_committee, kT=5.0, n_steps=30, step_size=0.002, batch_size=3, report_interval=3,
                    geometry_check=ala2, platform="CPU", progress=False, training_energies=[0.0])
    result = attack.run(perturbed(4))  # 4 seeds in chunks of 3: the last chunk is padded
    assert result.positions.shape == (4, 22, 3)
    for s in range(4):
        if result.valid[s]:
            k = np.flatnonzero(result.report_steps == result.best_step[s])[0]
            assert result.log_objective_best[s] == pytest.approx(np.nanmax(result.log_objective_trajectory[s][: k + 1]))
            assert result.log_objective_best[s] > result.log_objective_initial[s]
            # the returned geometry really has the reported uncertainty
            assert small_committee.uncertainty(result.positions[s])[0] == pytest.approx(result.uncertainty_best[s], rel=1e-6)
    assert result.n_force_evaluations == 2 * 3 * 30
    cands = result.candidates()
    assert len(cands) == int(result.valid.sum()) and cands.sampler == "attack"


def test_platforms_give_the_same_attack(small_committee, perturbed, ala2):
    out = []
    for platform in ("Reference", "CPU"):
        attack = Attack(small_committee, kT=5.0, n_steps=10, step_size=0.001, batch_size=2, report_interval=5,
                        geometry_check=ala2, platform=platform, progress=False, training_energies=[0.0])
        out.append(attack.run(perturbed(2)))
    np.testing.assert_allclose(out[0].positions, out[1].positions, atol=1e-6)
    np.testing.assert_allclose(out[0].log_objective_best, out[1].log_objective_best, rtol=1e-6)


def test_batch_of_b_equals_b_single_attacks(small_committee, perturbed, ala2):
    seeds = perturbed(3, seed=4)
    kwargs = dict(kT=5.0, n_steps=8, step_size=0.001, report_interval=4, geometry_check=ala2, platform="Reference",
                  progress=False, training_energies=[0.0])
    batched = Attack(small_committee, batch_size=3, **kwargs).run(seeds)
    single = Attack(small_committee, batch_size=1, **kwargs).run(seeds)
    np.testing.assert_allclose(batched.positions, single.positions, atol=1e-10)
    np.testing.assert_allclose(batched.log_objective_trajectory, single.log_objective_trajectory, rtol=1e-8)


def test_broken_geometries_are_flagged_not_returned(small_committee, perturbed, ala2):
    # A huge displacement budget lets the untrained committee crush bonds: never a crash,
    # never a broken candidate.
    check = GeometryCheck.for_system(ala2)
    attack = Attack(small_committee, kT=50.0, n_steps=60, step_size=0.02, max_step=0.05, max_displacement=1.0,
                    batch_size=4, report_interval=2, geometry_check=check, platform="Reference", progress=False,
                    training_energies=[0.0])
    result = attack.run(perturbed(4))
    assert (~result.valid).sum() >= 2  # the scenario really produces broken geometries
    ok, _ = check(result.positions[result.valid])
    assert ok.all()
    for s in np.flatnonzero(~result.valid):
        assert result.flags[s]
    assert len(result.candidates()) == int(result.valid.sum())


def test_integrator_respects_step_and_displacement_limits(small_committee, ala2):
    force, _ = adversarial_force(small_committee, 5.0, training_energies=[0.0])
    integrator = attack_integrator(10.0, optimizer="gradient", max_step=0.01, max_displacement=0.03)
    ctx = replica_context(force, 22, integrator=integrator)
    ctx.setPositions(ala2.positions)
    previous = ala2.positions
    for _ in range(6):
        integrator.step(1)
        x = ctx.getState(getPositions=True).getPositions(asNumpy=True)._value
        assert np.abs(x - previous).max() <= 0.01 + 1e-9
        assert np.abs(x - ala2.positions).max() <= 0.03 + 1e-9
        previous = x


def test_bad_seeds_are_clear_errors(small_committee, ala2):
    attack = Attack(small_committee, progress=False, platform="Reference")
    with pytest.raises(ValueError, match=r"\[S, 22, 3\]"):
        attack.run(np.zeros((2, 20, 3)))
    bad = ala2.positions.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        attack.run(bad)
    with pytest.raises(ValueError, match="optimizer"):
        attack_integrator(0.1, optimizer="sgd")


def test_kT_accepts_units(small_committee):
    from openmm import unit

    a = Attack(small_committee, kT=300 * unit.kelvin, progress=False)
    assert a.kT == pytest.approx(2.494, rel=1e-3)
    b = Attack(small_committee, kT=5 * unit.kilocalorie_per_mole, progress=False)
    assert b.kT == pytest.approx(20.92, rel=1e-3)
    with pytest.raises(ValueError, match="cannot be converted"):
        Attack(small_committee, kT=3 * unit.nanometer, progress=False)
