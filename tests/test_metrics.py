"""Sampling-study metrics with known answers, so that a broken metric fails a test:
test-set errors of a committee with a known error, coverage over the right data, basins found,
and NN-MD stability where one replica blows up."""

import numpy as np
import pytest
import torch

from openmm_adv import analysis
from openmm_adv.analysis import basins_found, coverage, nn_md_stability
from openmm_adv.models import Committee
from openmm_adv.reference_data import assign_basin


class Harmonic(torch.nn.Module):
    """E = k/2 |x - x0|^2 (+ shift): forces -k (x - x0), known exactly."""

    def __init__(self, x0, k: float, shift: float = 0.0):
        super().__init__()
        self.register_buffer("x0", torch.as_tensor(x0, dtype=torch.float64))
        self.k, self.shift = k, shift

    def forward(self, x):
        return 0.5 * self.k * (x - self.x0).pow(2).sum(dim=(-1, -2)) + self.shift


class Runaway(Harmonic):
    """The harmonic restraint plus -|x|^6 per atom: far from the origin it accelerates without bound."""

    def forward(self, x):
        restraint = 0.5 * self.k * (x - self.x0).pow(2).sum(dim=(-1, -2)) + self.shift
        return restraint - x.pow(2).sum(-1).pow(3).sum(-1)


def test_test_set_errors_of_a_committee_with_a_known_error(ala2, perturbed):
    x0 = ala2.positions
    committee = Committee.from_models([torch.jit.script(Harmonic(x0, 100.0, 5.0)),
                                       torch.jit.script(Harmonic(x0, 300.0, 5.0))], ala2.atomic_numbers)
    x = perturbed(6, scale=0.01, seed=3)  # the members run in float32 (no parameters to say otherwise)
    # the truth: k = 200 (the members' mean), energies 2 kJ/mol lower
    true_e = 0.5 * 200.0 * ((x - x0) ** 2).sum(axis=(1, 2)) + 3.0
    true_f = -200.0 * (x - x0)
    errors = analysis.test_set_errors(committee, x, true_e, true_f, basins=["a", "a", "a", "b", "b", ""])
    assert errors["force_rmse"] == pytest.approx(0.0, abs=1e-4)
    assert errors["energy_mae"] == pytest.approx(2.0, abs=1e-4)
    assert errors["energy_mae_shifted"] == pytest.approx(0.0, abs=1e-4)
    # forces 10 % off: the errors are 10 % of the true forces, component by component
    errors = analysis.test_set_errors(committee, x, true_e, 1.1 * true_f)
    assert errors["force_mae"] == pytest.approx(0.1 * np.abs(true_f).mean(), rel=1e-5)
    assert errors["force_rmse"] == pytest.approx(0.1 * np.sqrt((true_f**2).mean()), rel=1e-5)
    per_basin = analysis.test_set_errors(committee, x, true_e - np.array([0, 0, 0, 4, 4, 0]), true_f,
                                basins=["a", "a", "a", "b", "b", ""])["per_basin"]
    assert per_basin["a"]["energy_mae"] == pytest.approx(2.0, abs=1e-4)
    assert per_basin["b"]["energy_mae"] == pytest.approx(6.0, abs=1e-4)
    assert per_basin["a"]["n"] == 3 and set(per_basin) == {"a", "b"}


def test_coverage_and_basins_count_what_they_are_given():
    accessible = np.zeros((36, 36), dtype=bool)
    accessible[10, 25] = accessible[10, 26] = accessible[24, 11] = accessible[0, 0] = True  # 4 bins
    phi = np.array([-75.0, -75.0, 65.0, 100.0])
    psi = np.array([75.0, 78.0, -65.0, 100.0])  # two in one bin, one in another, one outside
    assert coverage(phi, psi, accessible) == pytest.approx(2 / 4)
    assert coverage(phi[:1], psi[:1], accessible) == pytest.approx(1 / 4)
    names = assign_basin(phi, psi)
    assert basins_found(names, ["C7eq", "C7ax", "alpha_L"]) == {"C7eq": 2, "C7ax": 1, "alpha_L": 0}
    with pytest.raises(ValueError, match="no accessible bins"):
        coverage(phi, psi, np.zeros((36, 36), dtype=bool))


def test_one_replica_blowing_up_does_not_fail_the_others(ala2):
    centred = ala2.positions - ala2.positions.mean(axis=0)
    member = torch.jit.script(Runaway(centred, 2.0e4))
    committee = Committee.from_models([member, member], ala2.atomic_numbers)
    seeds = np.stack([centred + 20.0, centred, centred, centred])  # the first is thrown outwards
    result = nn_md_stability(committee, ala2, seeds, temperature=50.0, n_steps=400, check_interval=100)
    survival = np.asarray(result["survival_ps"])
    assert survival[0] < result["simulated_ps"]
    np.testing.assert_allclose(survival[1:], result["simulated_ps"])
    assert result["fraction_stable"] == pytest.approx(0.75)
    assert result["median_survival_ps"] == pytest.approx(result["simulated_ps"])


def test_stability_is_measured_not_assumed(ala2):
    """Replicas that do fall apart are counted as failed, at the check where they did."""
    centred = ala2.positions - ala2.positions.mean(axis=0)
    free = torch.jit.script(Harmonic(centred, 0.0))  # no forces at all: hot atoms fly apart
    committee = Committee.from_models([free, free], ala2.atomic_numbers)
    result = nn_md_stability(committee, ala2, np.stack([centred] * 3), temperature=3000.0, n_steps=2000,
                             check_interval=50)
    assert result["fraction_stable"] == 0.0
    assert 0 < max(result["survival_ps"]) < result["simulated_ps"]
