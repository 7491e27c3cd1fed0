"""First labelled data of a new molecule: `openmm-adv init` and its parts."""

from pathlib import Path

import numpy as np
import pytest

from openmm_adv import initial_data as init
from openmm_adv.cli import main
from openmm_adv.commands import run_init
from openmm_adv.config import InitRunConfig, parse_section
from openmm_adv.data import Dataset
from openmm_adv.plausibility import default_max_label_energy
from openmm_adv.systems import get_system

DATA = Path(__file__).parents[1] / "examples" / "ethanol_xtb"


def test_numerical_hessian_of_a_quadratic_is_exact():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    stiffness = a @ a.T + 6 * np.eye(6)
    x0 = rng.normal(size=(2, 3))
    hessian = init.numerical_hessian(lambda x: -(x.reshape(len(x), 6) - x0.ravel()) @ stiffness, x0)
    np.testing.assert_allclose(hessian, stiffness, rtol=1e-8)


def test_thermal_displacements_carry_kT_per_mode_and_no_rigid_motion():
    """Harmonic equipartition: <dx H dx / 2> = (3N - 6) kT / 2, and mass-weighted vibrations move
    neither the centre of mass nor (to first order) the orientation."""
    nh3 = get_system("ammonia")
    hessian = init.numerical_hessian(lambda x: nh3.reference_energies_forces(x, platform="Reference")[1], nh3.positions)
    x, info = init.thermal_displacements(nh3.positions, nh3.masses, hessian, 4000, 300.0, np.random.default_rng(1))
    dx = (x - nh3.positions).reshape(len(x), -1)
    harmonic = 0.5 * np.einsum("bi,ij,bj->b", dx, hessian, dx)
    kT = init.BOLTZMANN_KJ_MOL_K * 300.0
    assert info["n_modes"] == 6 and info["n_soft_or_imaginary"] == 0
    assert harmonic.mean() == pytest.approx(3 * kT, rel=0.05)  # 6 modes, kT/2 each; 4000 samples: ~1% noise
    com = np.einsum("i,bij->bj", nh3.masses, x - nh3.positions) / nh3.masses.sum()
    assert np.abs(com).max() < 1e-5 * np.abs(x - nh3.positions).max()  # finite-difference Hessian noise
    # Eckart condition: sum_i m_i r_i x dx_i = 0 for vibrations about the minimum
    r = nh3.positions - np.einsum("i,ij->j", nh3.masses, nh3.positions) / nh3.masses.sum()
    angular = np.einsum("i,bij->bj", nh3.masses, np.cross(r[None], x - nh3.positions))
    scale = np.einsum("i,bi->b", nh3.masses, np.linalg.norm(r, axis=-1)[None] * np.linalg.norm(x - nh3.positions, axis=-1))
    assert (np.linalg.norm(angular, axis=-1) / scale).max() < 1e-3
    # higher temperature, wider: energy scales with T
    hot, _ = init.thermal_displacements(nh3.positions, nh3.masses, hessian, 4000, 600.0, np.random.default_rng(1))
    dxh = (hot - nh3.positions).reshape(len(hot), -1)
    assert (0.5 * np.einsum("bi,ij,bj->b", dxh, hessian, dxh)).mean() == pytest.approx(6 * kT, rel=0.05)


def test_soft_modes_are_floored():
    """A mode softer than MIN_WAVENUMBER is sampled as if it had that wavenumber."""
    masses = np.array([1.0, 1.0])
    soft = 1e-3  # kJ/mol/nm^2: a near-free stretch
    hessian = np.zeros((6, 6))
    for i, j, sign in ((0, 0, 1), (3, 3, 1), (0, 3, -1), (3, 0, -1)):
        hessian[i, j] = sign * soft
    positions = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    x, info = init.thermal_displacements(positions, masses, hessian, 2000, 300.0, np.random.default_rng(0))
    floor = (init.MIN_WAVENUMBER / init._WAVENUMBER_PER_SQRT_LAMBDA) ** 2
    stretch = (x[:, 1, 0] - x[:, 0, 0]) - 0.1
    # mass-weighted mode (1/sqrt2)(-1, 1): relative coordinate variance 2 kT / lambda_floor
    assert stretch.var() == pytest.approx(2 * init.BOLTZMANN_KJ_MOL_K * 300.0 / floor, rel=0.1)
    assert info["n_soft_or_imaginary"] == 1


def test_default_label_cap_scales_with_the_molecule():
    assert default_max_label_energy(1) is None and default_max_label_energy(2) is None
    k = 30.0  # alanine dipeptide: 22 atoms
    assert default_max_label_energy(22) == pytest.approx(20.9 * (k + 3 * np.sqrt(k)))
    assert default_max_label_energy(9) < default_max_label_energy(22) < default_max_label_energy(100)


def _config(tmp_path, **values):
    return parse_section(InitRunConfig, {"output": str(tmp_path / "init.h5"), **values})


def test_init_md_with_the_reference_force_field(tmp_path):
    summary = run_init(_config(tmp_path, n_frames=6, md={"interval": 50, "equilibration_steps": 200}), progress=False,
                       echo=lambda m: None)
    data = Dataset.load(tmp_path / "init.h5")
    assert len(data) == 6 and summary["method"] == "md" and summary["oracle_calls"] == 6
    ala2 = get_system("alanine_dipeptide")
    energies, forces = ala2.reference_energies_forces(data.positions)
    np.testing.assert_allclose(data.energies, energies, atol=1e-3)  # the oracle runs on the CPU platform
    # thermal at 300 K: a few tens of kJ/mol above the lowest, far below the cap
    assert 1.0 < summary["energy_above_min_kj_mol"]["median"] < 80.0
    phi = np.degrees(ala2.compute_cvs(data.positions)["phi"])
    assert summary["cvs"]["phi"]["unit"] == "deg" and summary["cvs"]["phi"]["min"] == pytest.approx(phi.min())
    assert (tmp_path / "init.h5.init.json").exists()
    with pytest.raises(ValueError, match="exists"):
        run_init(_config(tmp_path, n_frames=6), progress=False, echo=lambda m: None)


def test_init_displacements_with_xtb_for_an_xyz_molecule(tmp_path):
    pytest.importorskip("tblite")
    config = _config(tmp_path, system={"structure": str(DATA / "ethanol.xyz")}, oracle={"kind": "xtb"}, n_frames=8)
    summary = run_init(config, progress=False, echo=lambda m: None)
    assert summary["method"] == "displacements" and summary["hessian_from"] == "gfn2-xtb"
    # minimisation, 6N Hessian force calls and one label per frame (the minimum included) are all counted
    assert summary["oracle_calls"] >= 6 * 9 + 8
    assert summary["lowest_wavenumber_cm"] > 150  # ethanol's softest mode (a torsion) is ~200 cm^-1 in GFN2
    data = Dataset.load(tmp_path / "init.h5")
    assert len(data) == 8 and summary["energy_above_min_kj_mol"]["max"] < default_max_label_energy(9)
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="reference force field"):
        run_init(_config(tmp_path / "x", method="md", system={"structure": str(DATA / "ethanol.xyz")}),
                 progress=False, echo=lambda m: None)


def test_init_imports_labelled_and_unlabelled_frames(tmp_path):
    shipped = Dataset.load(__import__("openmm_adv.resources", fromlist=["x"]).default_dataset_path()).subset(np.arange(40))
    labelled = tmp_path / "labelled.extxyz"
    shipped.to_extxyz(labelled)
    summary = run_init(_config(tmp_path, input=str(labelled), n_frames=10), progress=False, echo=lambda m: None)
    data = Dataset.load(tmp_path / "init.h5")
    assert summary["method"] == "import" and summary["oracle_calls"] == 0 and summary["frames_in_file"] == 40
    np.testing.assert_allclose(data.energies, shipped.energies[np.linspace(0, 39, 10).round().astype(int)], atol=1e-3)
    # the same frames as a trajectory without labels are labelled by the oracle
    import mdtraj

    ala2 = get_system("alanine_dipeptide")
    trajectory = mdtraj.Trajectory(shipped.positions, mdtraj.Topology.from_openmm(ala2.topology))
    trajectory.save_dcd(str(tmp_path / "frames.dcd"))
    (tmp_path / "again").mkdir()
    summary = run_init(parse_section(InitRunConfig, {"output": str(tmp_path / "again" / "init.h5"),
                                                     "input": str(tmp_path / "frames.dcd"), "n_frames": 5}),
                       progress=False, echo=lambda m: None)
    assert summary["oracle_calls"] == 5 and summary["kept"] == 5


def test_init_refuses_labels_above_the_cap(tmp_path):
    summary = run_init(_config(tmp_path, method="displacements", n_frames=12, temperature=900.0, max_label_energy=30.0),
                       progress=False, echo=lambda m: None)
    data = Dataset.load(tmp_path / "init.h5")
    assert summary["refused_above_cap"] > 0 and len(data) == summary["kept"] == 12 - summary["refused_above_cap"]
    assert (data.energies - data.energies.min()).max() <= 30.0


def test_init_from_the_command_line(tmp_path, capsys):
    config = tmp_path / "init.yaml"
    config.write_text(f"output: {tmp_path / 'cli.h5'}\nn_frames: 3\nmd: {{interval: 20, equilibration_steps: 20}}\n")
    assert main(["init", str(config), "--quiet"]) == 0
    assert "wrote 3 labelled frames" in capsys.readouterr().out
    assert main(["init", str(config), "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["config", "init"]) == 0
    assert "method: auto" in capsys.readouterr().out
