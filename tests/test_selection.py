"""Selector properties."""

import numpy as np
import pytest

from openmm_adv.geometry import GeometryCheck
from openmm_adv.samplers import Candidates
from openmm_adv.selection import Selector, aligned_rmsd


def rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def make(positions, uncertainty, energies=None):
    k = len(positions)
    return Candidates(np.asarray(positions), np.zeros(k) if energies is None else np.asarray(energies, float),
                      np.asarray(uncertainty, float), "force_variance", "test", np.arange(k))


def test_aligned_rmsd_is_rotation_free(ala2, perturbed):
    x = perturbed(3, scale=0.02)
    moved = x @ rotation(2).T + 1.5
    d = aligned_rmsd(x, moved)
    assert np.allclose(np.diag(d), 0.0, atol=1e-7)
    direct = np.sqrt(((x[0] - x[1]) ** 2).sum(-1).mean())
    assert 0 < d[0, 1] <= direct + 1e-12
    mirror = x[:1] * np.array([1, 1, -1])
    assert aligned_rmsd(x[:1], mirror)[0, 0] > 0.01  # a mirror image is not a rotation


def test_trust_window_absolute_and_percentile(perturbed):
    c = make(perturbed(5, scale=0.05), [1, 2, 3, 4, 5])
    sel = Selector(lower=2, upper=5, min_rmsd=0, max_selected=None)
    assert sorted(sel.select(c).uncertainty) == [2, 3, 4]
    assert sel.last_report["outside_trust_window"] == 2
    pct = Selector(percentile_lower=80, min_rmsd=0, max_selected=None)
    out = pct.select(c, reference_uncertainty=np.arange(11.0) / 2)  # 80th percentile = 4.0
    assert sorted(out.uncertainty) == [4, 5]
    with pytest.raises(ValueError, match="reference_uncertainty"):
        pct.select(c)


def test_dedup_against_dataset_and_clustering(ala2, perturbed):
    base = perturbed(3, scale=0.05, seed=1)
    twins = base[[0, 0, 1]] @ rotation(5).T + 0.001 * np.random.default_rng(3).normal(size=(3, 22, 3))
    c = make(np.concatenate([base, twins]), [1, 2, 3, 4, 5, 6])
    sel = Selector(min_rmsd=0.01, max_selected=None)
    out = sel.select(c, dataset_positions=base[2:3])  # base[2] is already labelled
    # base[2] dropped as near the data; {base0, twin0, twin1} and {base1, twin2} are clusters
    assert sel.last_report["near_dataset"] == 1
    assert sorted(out.uncertainty) == [5, 6]
    assert out.uncertainty[0] == 6  # most uncertain first


def test_cap_and_physical_filters(ala2, perturbed):
    x = perturbed(4, scale=0.005, seed=2)
    x[1, 0] = x[1, 1] + 3 * (x[1, 0] - x[1, 1])  # a broken C-H bond
    c = make(x, [4, 3, 2, 1], energies=[0, 0, 500, 0])
    sel = Selector(min_rmsd=0.0, max_selected=1, energy_cap=100, geometry_check=GeometryCheck.for_system(ala2))
    out = sel.select(c, reference_energies=[-10.0, 0.0])
    assert out.uncertainty.tolist() == [4]
    assert sel.last_report["unphysical"] == 1 and sel.last_report["above_energy_cap"] == 1
    assert sel.last_report["over_cap"] == 1 and sel.last_report["selected"] == 1


def test_bad_settings():
    with pytest.raises(ValueError, match="percentile"):
        Selector(percentile_lower=120)
    with pytest.raises(ValueError, match="min_rmsd"):
        Selector(min_rmsd=-1)
