"""Free-energy fidelity by reweighting: known answers on a synthetic surface."""

import numpy as np
import pytest

from openmm_adv.fes import KB_KJ_MOL_K, fes_by_reweighting
from openmm_adv.reference_data import BASINS_DEG, ReferenceFES, assign_basin

KT = KB_KJ_MOL_K * 300.0
EDGES = np.linspace(-180.0, 180.0, 37)
CENTRES = EDGES[:-1] + 5.0


@pytest.fixture()
def surface():
    """10 kJ/mol everywhere below the cutoff except the basin centres' bins, at 0."""
    free = np.full((36, 36), 10.0)
    free[:, 18:20] = 40.0  # above the 25 kJ/mol cutoff: never compared
    for phi, psi in BASINS_DEG.values():
        free[int((phi + 180) // 10) % 36, int((psi + 180) // 10) % 36] = 0.0
    return ReferenceFES(EDGES, EDGES, free)


def frames_everywhere(per_bin=3, seed=0):
    """``per_bin`` frames in every bin (near the bin centre), with Amber-like energies."""
    rng = np.random.default_rng(seed)
    phi, psi = np.meshgrid(CENTRES, CENTRES, indexing="ij")
    phi = np.repeat(phi.ravel(), per_bin) + rng.uniform(-4, 4, 36 * 36 * per_bin)
    psi = np.repeat(psi.ravel(), per_bin) + rng.uniform(-4, 4, 36 * 36 * per_bin)
    return phi, psi, rng.normal(-50.0, 10.0, len(phi))


def test_a_committee_equal_to_the_reference_reproduces_its_surface(surface):
    phi, psi, e_ref = frames_everywhere()
    result = fes_by_reweighting(e_ref + 123.0, e_ref, phi, psi, surface)  # a constant offset is no error
    assert result["rmse_kj_mol"] == pytest.approx(0.0, abs=1e-9)
    assert result["n_bins"] == result["n_accessible"] == 36 * 34
    assert result["median_ess"] == pytest.approx(3.0)
    for values in result["basins"].values():
        assert values["error_kj_mol"] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(result["free_energy"][np.isfinite(result["free_energy"])],
                               surface.free_energy[surface.free_energy < 25])


def test_a_basin_the_committee_puts_higher_shows_as_that_basin_s_error(surface):
    phi, psi, e_ref = frames_everywhere()
    bin_phi = CENTRES[np.floor((phi + 180) / 10).astype(int) % 36]
    bin_psi = CENTRES[np.floor((psi + 180) / 10).astype(int) % 36]
    in_alpha_l = assign_basin(bin_phi, bin_psi) == "alpha_L"
    result = fes_by_reweighting(e_ref + 6.0 * in_alpha_l, e_ref, phi, psi, surface)
    basins = result["basins"]
    assert basins["alpha_L"]["error_kj_mol"] == pytest.approx(6.0, abs=1e-9)
    for name in ("C5", "alpha_R", "C7ax"):
        assert basins[name]["error_kj_mol"] == pytest.approx(0.0, abs=1e-9)
    grid_basins = assign_basin(*np.meshgrid(CENTRES, CENTRES, indexing="ij"))
    share = (grid_basins == "alpha_L")[surface.free_energy < 25].mean()
    assert result["rmse_kj_mol"] == pytest.approx(6.0 * np.sqrt(share * (1 - share)), rel=1e-9)
    assert result["rmse_kT"] == pytest.approx(result["rmse_kj_mol"] / KT)


def test_within_a_bin_the_average_is_exponential(surface):
    # one bin with two frames: the committee right on one, 5 kJ/mol low on the other
    phi, psi = np.array([-75.0, -75.0, 65.0]), np.array([155.0, 155.0, -75.0])
    e_ref = np.zeros(3)
    e_nn = np.array([0.0, -5.0, 0.0])
    result = fes_by_reweighting(e_nn, e_ref, phi, psi, surface)
    i, j = 10, 33  # the bin of (-75, 155)
    # the median of e_nn - e_ref is 0, so the unchanged frame carries weight 1
    expected = surface.free_energy[i, j] - KT * np.log((1 + np.exp(5.0 / KT)) / 2)
    assert result["free_energy"][i, j] == pytest.approx(expected)
    assert result["ess"][i, j] == pytest.approx((1 + np.exp(5 / KT)) ** 2 / (1 + np.exp(10 / KT)))


def test_bad_input_is_refused(surface):
    with pytest.raises(ValueError, match="one value per frame"):
        fes_by_reweighting([0.0, 1.0], [0.0], [0.0], [0.0], surface)
    with pytest.raises(ValueError, match="finite"):
        fes_by_reweighting([np.nan], [0.0], [0.0], [0.0], surface)
    with pytest.raises(ValueError, match="below the cutoff"):
        fes_by_reweighting([0.0], [0.0], [0.0], [0.0], surface, cutoff_kj_mol=-1.0)
