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
