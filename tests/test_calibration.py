"""Calibration metrics: rank correlation, ROC-AUC, top-fraction errors, group ratios."""

import numpy as np
import pytest

from openmm_adv.calibration import (calibration_report, group_ratios, per_frame_force_rmse, roc_auc, spearman,
                                    top_fraction_error)


def test_perfect_and_reversed_rankings():
    err = np.linspace(1.0, 10.0, 50)
    assert spearman(err**2, err) == pytest.approx(1.0)
    assert spearman(-err, err) == pytest.approx(-1.0)
    assert roc_auc(err, err, threshold=5.0) == pytest.approx(1.0)
    assert roc_auc(-err, err, threshold=5.0) == pytest.approx(0.0)


def test_roc_auc_equals_the_pairwise_definition():
    rng = np.random.default_rng(0)
    err = rng.gamma(2.0, size=200)
    u = err + rng.normal(scale=1.0, size=200)
    u[:10] = u[10]  # ties count one half
    threshold = np.percentile(err, 80)
    pos, neg = u[err > threshold], u[err <= threshold]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert roc_auc(u, err, threshold) == pytest.approx(pairwise, rel=1e-12)
    assert np.isnan(roc_auc(u, err, threshold=1e9))
    # an uninformative uncertainty is near chance
    assert abs(roc_auc(rng.normal(size=4000), rng.gamma(2.0, size=4000), 2.0) - 0.5) < 0.05


def test_top_fraction_and_group_ratios():
    u = np.arange(100.0)
    err = np.where(u >= 90, 5.0, 1.0)
    top = top_fraction_error(u, err, 0.1)
    assert top == {"top": 5.0, "rest": 1.0, "ratio": 5.0}
    groups = np.array(["a"] * 50 + ["b"] * 50)
    assert group_ratios(u, groups, "a") == {"a": 1.0, "b": pytest.approx(74.5 / 24.5)}
    with pytest.raises(ValueError, match="reference group"):
        group_ratios(u, groups, "c")
    report = calibration_report(u, err, groups, "a")
    assert report["roc_auc"] == pytest.approx(1.0) and report["median_uncertainty_ratio"]["b"] > 3


def test_bad_inputs_and_force_rmse():
    with pytest.raises(ValueError, match="one value per structure"):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        spearman([1, np.nan, 3], [1, 2, 3])
    f = np.zeros((2, 4, 3))
    g = f.copy()
    g[1] = 2.0
    np.testing.assert_allclose(per_frame_force_rmse(g, f), [0.0, 2.0])


def test_miscalibration_area_of_known_spreads():
    from openmm_adv.calibration import miscalibration_area

    rng = np.random.default_rng(3)
    sigma = rng.uniform(5.0, 50.0, size=400)
    residuals = rng.normal(size=(400, 6, 3)) * sigma[:, None, None]
    assert miscalibration_area(sigma, residuals) < 0.01  # Gaussian with the predicted spread
    # a spread ten times too small: almost nothing inside the intervals, area close to 0.5
    assert miscalibration_area(sigma / 10, residuals) > 0.4
    # twice too large: analytic area of a normal with half the assumed width
    from scipy import stats
    p = (np.arange(100) + 0.5) / 100
    expected = np.mean(np.abs((2 * stats.norm.cdf(2 * stats.norm.ppf(0.5 + p / 2)) - 1) - p))
    assert miscalibration_area(2 * sigma, residuals) == pytest.approx(expected, abs=0.01)
    # per-atom spreads broadcast over x, y, z
    assert miscalibration_area(np.repeat(sigma[:, None], 6, 1), residuals) == pytest.approx(miscalibration_area(sigma, residuals))


def test_calibrated_nll_forgives_one_scale_but_not_a_wrong_shape():
    from openmm_adv.calibration import calibrated_nll

    rng = np.random.default_rng(4)
    sigma = rng.uniform(1.0, 30.0, size=500)
    residuals = rng.normal(size=(500, 4, 3)) * sigma[:, None, None]
    right = calibrated_nll(sigma, residuals)
    scaled = calibrated_nll(7.0 * sigma, residuals)
    assert scaled["nll"] == pytest.approx(right["nll"], rel=1e-12)
    assert scaled["scale"] == pytest.approx(right["scale"] / 7.0)
    assert right["scale"] == pytest.approx(1.0, abs=0.05)
    # the exact NLL of the generating Gaussians
    expected = np.mean(0.5 * np.log(2 * np.pi) + np.log(sigma)[:, None, None] + residuals**2 / (2 * sigma[:, None, None] ** 2))
    assert right["nll"] == pytest.approx(expected, abs=0.02)
    flat = calibrated_nll(np.full(500, sigma.mean()), residuals)  # right size, no variation
    assert flat["nll"] > right["nll"] + 0.2
    with pytest.raises(ValueError, match="positive"):
        calibrated_nll(np.zeros(500), residuals)
    with pytest.raises(ValueError, match="per structure"):
        calibrated_nll(sigma[:10], residuals)


def test_error_vs_uncertainty_figure(tmp_path):
    from openmm_adv.plots import error_vs_uncertainty_plot

    rng = np.random.default_rng(0)
    panels = {m: {"in-domain": (rng.uniform(1, 10, 30), rng.uniform(1, 10, 30)),
                  "out-of-domain": (rng.uniform(5, 50, 30), rng.uniform(5, 80, 30))} for m in ("ensemble", "gmm")}
    path = error_vs_uncertainty_plot(tmp_path / "fig.png", panels, title="test")
    assert path.stat().st_size > 5000
    with pytest.raises(ValueError, match="empty"):
        error_vs_uncertainty_plot(tmp_path / "none.png", {})
