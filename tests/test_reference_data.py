"""The shipped alanine dipeptide reference data: free-energy surface, test set, basin assignment."""

import numpy as np
import pytest

from openmm_adv.reference_data import (
    BASINS_DEG,
    ReferenceFES,
    assign_basin,
    load_reference_fes,
    load_test_set,
    periodic_distance_deg,
    wrap_deg,
)


@pytest.fixture(scope="module")
def fes():
    return load_reference_fes()


@pytest.fixture(scope="module")
def test_set():
    return load_test_set()


@pytest.fixture(scope="module")
def test_set_angles(test_set, ala2):
    cvs = ala2.compute_cvs(test_set.positions)
    return np.degrees(cvs["phi"]), np.degrees(cvs["psi"])


def test_fes_grid_and_minimum(fes):
    assert fes.free_energy.shape == (36, 36)
    np.testing.assert_allclose(fes.phi_edges, np.arange(-180, 181, 10))
    np.testing.assert_allclose(fes.psi_edges, np.arange(-180, 181, 10))
    assert np.isfinite(fes.free_energy).all()
    assert fes.free_energy.min() == pytest.approx(0.0, abs=1e-9)
    for key in ("settings", "simulated_time_ns", "seed", "versions", "timestamp", "convergence"):
        assert key in fes.metadata
    assert fes.metadata["settings"]["temperature_K"] == 300.0


def test_basin_free_energies(fes):
    basins = fes.basin_free_energies()
    assert set(basins) == set(BASINS_DEG)
    assert basins["C7eq"] < 10.0 and basins["C5"] < 10.0
    for name in ("alpha_L", "C7ax"):
        assert np.isfinite(basins[name]) and basins[name] > basins["C7eq"]
    assert min(basins.values()) == pytest.approx(0.0, abs=1e-9)  # the global minimum lies in a basin


def test_accessible_bins_hold_every_basin_centre(fes):
    mask = fes.accessible_bins(25.0)
    assert mask.shape == (36, 36) and mask.dtype == bool
    assert 100 < mask.sum() < 1296
    for name, (phi, psi) in BASINS_DEG.items():
        i, j = int((phi + 180) // 10), int((psi + 180) // 10)
        if name == "alpha_L":
            # Not accessible at the nominal centre (60, 45): with ff14SB in vacuum the phi > 0
            # region is one broad basin whose minimum lies near (60, -45) (labelled C7ax); the
            # free energy falls monotonically from (60, 45) (about 30 kJ/mol) towards it, so there
            # is no separate alpha_L minimum. The alpha_L region still holds accessible bins.
            assert not mask[i, j]
            assert 25.0 <= fes.free_energy_at(phi, psi) < 40.0
        else:
            assert fes.free_energy_at(phi, psi) < 25.0, name
            assert mask[i, j], name
    phi, psi = np.meshgrid(fes.phi_centres, fes.psi_centres, indexing="ij")
    labels = assign_basin(phi, psi)
    for name in BASINS_DEG:
        assert (mask & (labels == name)).sum() >= 5, name
    assert fes.accessible_bins(1e9).all()


def test_free_energy_lookup_is_periodic(fes):
    np.testing.assert_array_equal(fes.free_energy_at(-180.0, 75.0), fes.free_energy_at(180.0, 75.0))
    np.testing.assert_array_equal(fes.free_energy_at(-80.0, 75.0), fes.free_energy_at(280.0, 435.0))
    assert fes.free_energy_at(-175.0, -175.0) == fes.free_energy[0, 0]
    assert fes.free_energy_at(175.0, 175.0) == fes.free_energy[35, 35]
    values = fes.free_energy_at(np.array([-80.0, 60.0]), np.array([75.0, 45.0]))
    assert values.shape == (2,)


def test_coarse_graining_of_a_finer_grid():
    edges = np.linspace(-180, 180, 73)
    f = np.zeros((72, 72))
    f[0, 0] = 1000.0  # one 5-degree bin of four in the first 10-degree bin is blocked
    coarse = ReferenceFES(edges, edges, f).on_10_degree_grid()
    assert coarse.shape == (36, 36)
    assert coarse[0, 0] == pytest.approx(-0.0083144626 * 300 * np.log(0.75), rel=1e-6)
    assert coarse[1:, 1:].max() == pytest.approx(0.0, abs=1e-12)


def test_test_set_size_and_labels(test_set):
    assert len(test_set) >= 2000
    assert test_set.positions.shape == (len(test_set), 22, 3)
    assert np.isfinite(test_set.energies).all() and np.isfinite(test_set.forces).all()
    assert set(test_set.provenance["oracle"]) == {b"amber14"}
    assert set(test_set.provenance["sampler"]) == {b"reference_metad"}


def test_test_set_labels_are_amber(test_set, ala2):
    index = np.random.default_rng(0).choice(len(test_set), size=5, replace=False)
    energies, forces = ala2.reference_energies_forces(test_set.positions[index], platform="Reference")
    np.testing.assert_allclose(test_set.energies[index], energies, rtol=0, atol=1e-6)
    np.testing.assert_allclose(test_set.forces[index], forces, rtol=0, atol=1e-5)


def test_test_set_covers_every_accessible_basin_and_bin(fes, test_set_angles):
    phi, psi = test_set_angles
    basins = assign_basin(phi, psi)
    for name, f in fes.basin_free_energies().items():
        if f < 25.0:
            assert (basins == name).sum() >= 10, name
    i = np.floor((phi + 180) % 360 / 10).astype(int)
    j = np.floor((psi + 180) % 360 / 10).astype(int)
    held = np.zeros((36, 36), dtype=bool)
    held[i, j] = True
    accessible = fes.accessible_bins(25.0)
    assert held[accessible].mean() > 0.95
    # The frames were chosen in accessible bins only.
    assert accessible[i, j].all()


def test_test_set_is_thermal_in_the_bonds(test_set, ala2):
    """Bond lengths scatter as at 300 K: about 3 pm for X-H and C-C/C-N bonds, none broken."""
    bonds = np.array(ala2.bonds)
    lengths = np.linalg.norm(test_set.positions[:, bonds[:, 0]] - test_set.positions[:, bonds[:, 1]], axis=-1)
    spread = lengths.std(axis=0)
    assert (spread > 0.001).all() and (spread < 0.006).all()
    assert lengths.max() < 0.17 and lengths.min() > 0.09


def test_assign_basin_centres_and_periodicity():
    phi = np.array([c[0] for c in BASINS_DEG.values()])
    psi = np.array([c[1] for c in BASINS_DEG.values()])
    assert assign_basin(phi, psi).tolist() == list(BASINS_DEG)
    assert assign_basin(phi + 360.0, psi - 720.0).tolist() == list(BASINS_DEG)
    assert periodic_distance_deg(179.0, 0.0, -179.0, 0.0) == pytest.approx(2.0)
    assert periodic_distance_deg(0.0, -179.0, 0.0, 179.0) == pytest.approx(2.0)
    # C5 sits near the corner: points across the phi = +-180 and psi = +-180 seams belong to it.
    assert assign_basin(-150.0 + 30.0, 160.0)[()] == "C5"
    assert assign_basin(-175.0, -175.0)[()] == "C5"  # 35 deg from (-150, 160) across the psi seam
    assert assign_basin(170.0, 160.0)[()] == "C5"  # 40 deg across the phi seam
    assert assign_basin(0.0, 0.0)[()] == ""
    assert assign_basin(-80.0, 75.0, radius_deg=0.0)[()] == "C7eq"
    assert assign_basin(np.zeros((2, 3)), np.zeros((2, 3))).shape == (2, 3)
    np.testing.assert_allclose(wrap_deg([180.0, -180.0, 540.0, 179.5]), [-180.0, -180.0, -180.0, 179.5])
