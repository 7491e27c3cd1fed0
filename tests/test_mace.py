"""MACE committees (openmm_adv.models.mace): units, graph, gradients, OpenMM, persistence, CLI.

Skipped where mace-torch is not installed (``pip install -e '.[mace]'``). The models are tiny
untrained mace-torch models built in Python (seeded), float64 so finite differences are exact
to ~1e-6 relative. Committees have two members: every TorchForce made from a MACE committee
costs seconds of TorchScript loading and optimisation per member, so the file stays short.
"""

import json
import time

import numpy as np
import pytest
import torch

mace = pytest.importorskip("mace")

from openmm_adv.forces import mean_energy_force, uncertainty_force  # noqa: E402
from openmm_adv.models import Committee  # noqa: E402
from openmm_adv.models.mace import (  # noqa: E402
    EV_TO_KJ_PER_MOL,
    MACEMember,
    MACENotInstalledError,
    MACETrainingError,
    mace_committee,
    require_mace,
    train_mace_committee,
)
from openmm_adv.systems import alanine_dipeptide, ammonia  # noqa: E402

from conftest import energy_forces, replica_context  # noqa: E402

TABLE = [1, 6, 7, 8]  # H, C, N, O: alanine dipeptide and ammonia


def tiny_mace(seed: int, table=TABLE, r_max: float = 5.0):
    """An untrained ScaleShiftMACE: 8x0e+8x1o, max_ell 2, correlation 2, 2 interactions."""
    from e3nn import o3
    from mace import modules

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(seed)
        block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
        return modules.ScaleShiftMACE(
            r_max=r_max, num_bessel=8, num_polynomial_cutoff=5, max_ell=2,
            interaction_cls=block, interaction_cls_first=block, num_interactions=2,
            num_elements=len(table), hidden_irreps=o3.Irreps("8x0e+8x1o"), MLP_irreps=o3.Irreps("16x0e"),
            atomic_energies=np.linspace(-1.0, -4.0, len(table)), avg_num_neighbors=8.0,
            atomic_numbers=list(table), correlation=2, gate=torch.nn.functional.silu,
            atomic_inter_scale=1.0, atomic_inter_shift=0.0,
        )
    finally:
        torch.set_default_dtype(old)


@pytest.fixture(scope="module")
def models():
    return [tiny_mace(seed) for seed in range(2)]


@pytest.fixture(scope="module")
def nh3():
    return ammonia()


@pytest.fixture(scope="module")
def committee(models, nh3):
    return mace_committee(models, nh3.atomic_numbers)


def geometries(system, b, scale=0.005, seed=0):
    rng = np.random.default_rng(seed)
    return system.positions[None] + scale * rng.normal(size=(b, system.n_atoms, 3))


def raw_mace_energy_ev(model, numbers, xyz_nm):
    """The model's energy through mace's own data pipeline (matscipy neighbour list)."""
    import ase
    from mace import data
    from mace.tools import AtomicNumberTable, torch_geometric

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        config = data.config_from_atoms(ase.Atoms(numbers=numbers, positions=xyz_nm * 10.0))
        graph = data.AtomicData.from_config(config, z_table=AtomicNumberTable(TABLE), cutoff=float(model.r_max))
        batch = next(iter(torch_geometric.dataloader.DataLoader([graph], batch_size=1))).to_dict()
        energy = model(batch, compute_force=False)["energy"]
    finally:
        torch.set_default_dtype(old)
    return float(energy.detach()), graph.edge_index.shape[1]


# ---------------------------------------------------------------------- (a) units and graph
def test_member_energy_equals_raw_mace_model(models):
    ala2 = alanine_dipeptide()
    x = geometries(ala2, 2, scale=0.01)
    member = MACEMember(models[0], ala2.atomic_numbers)
    got = member(torch.from_numpy(x)).detach().numpy()
    for b in range(2):
        e_ev, n_edges = raw_mace_energy_ev(models[0], ala2.atomic_numbers, x[b])
        assert got[b] == pytest.approx(e_ev * EV_TO_KJ_PER_MOL, rel=1e-12, abs=1e-9)
    n = ala2.n_atoms
    assert 0 < n_edges < n * (n - 1)  # the 5 A cutoff drops pairs: the graph is not all-pairs
    # float32 positions are cast to the model's float64 (to 1e-7 nm precision)
    got32 = member(torch.from_numpy(x).float()).detach().numpy()
    np.testing.assert_allclose(got32, got, rtol=1e-6)
    assert EV_TO_KJ_PER_MOL == pytest.approx(96.48533212, rel=1e-10)


# ---------------------------------------------------------------------- (b) forces
def test_committee_forces_equal_minus_finite_differences(committee, nh3):
    x = geometries(nh3, 1)[0]
    e, f = committee.energies_and_forces(x)
    assert e.shape == (1, 2) and f.shape == (1, 2, 4, 3)
    assert np.ptp(e[0]) > 1e-3  # the members differ
    h = 1e-5
    displaced = []
    for i in range(nh3.n_atoms):
        for k in range(3):
            for sign in (1, -1):
                y = x.copy()
                y[i, k] += sign * h
                displaced.append(y)
    ed = committee.energies(np.stack(displaced)).reshape(nh3.n_atoms, 3, 2, 2)  # atom, xyz, +-, member
    fd = -(ed[:, :, 0] - ed[:, :, 1]) / (2 * h)  # [atom, xyz, member]
    np.testing.assert_allclose(f[0], fd.transpose(2, 0, 1), rtol=1e-6, atol=1e-5)
    assert np.abs(f).max() > 1.0


# ---------------------------------------------------------------------- (c) invariance
def test_rotation_translation_invariance(committee, nh3):
    x = geometries(nh3, 2, seed=1)
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))  # a proper rotation
    y = x @ q.T + np.array([0.3, -1.2, 2.0])
    ex, fx = committee.energies_and_forces(x)
    ey, fy = committee.energies_and_forces(y)
    np.testing.assert_allclose(ey, ex, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(fy, fx @ q.T, rtol=1e-8, atol=1e-7)


# ---------------------------------------------------------------------- (d) OpenMM forces
def test_committee_runs_in_openmm(committee, nh3):
    x = geometries(nh3, 2, seed=3)
    n = 2 * nh3.n_atoms
    e, f = committee.energies_and_forces(x)
    ctx = replica_context(mean_energy_force(committee, n_replicas=2), n)
    energy, forces = energy_forces(ctx, x)
    assert energy == pytest.approx(e.mean(1).sum(), rel=1e-10)
    np.testing.assert_allclose(forces.reshape(2, 4, 3), f.mean(1), rtol=1e-8, atol=1e-7)


# ---------------------------------------------------------------------- (e) double backward
def test_uncertainty_force_is_minus_gradient_through_openmm(committee, nh3):
    """Forces of the uncertainty TorchForce (a double backward) = minus the slope of its energy.

    Checked along random directions in the 12-D configuration space (F . v = -dU/dh along v),
    before and after TorchScript's profiling runs have replaced the graph by the optimised one.
    """
    x = geometries(nh3, 1, seed=4)[0]
    ctx = replica_context(uncertainty_force(committee, "force_variance"), nh3.n_atoms)
    u0, f_first = energy_forces(ctx, x)
    assert u0 > 0 and u0 == pytest.approx(committee.uncertainty(x)[0], rel=1e-10)  # the metric itself
    h = 1e-5
    directions = np.random.default_rng(8).normal(size=(4, *x.shape))
    directions /= np.linalg.norm(directions.reshape(4, -1), axis=1)[:, None, None]
    slopes = [(energy_forces(ctx, x + h * v)[0] - energy_forces(ctx, x - h * v)[0]) / (2 * h) for v in directions]
    _, f_later = energy_forces(ctx, x)  # after the profiling runs: the optimised graph
    scale = np.linalg.norm(f_first)
    assert scale > 0
    for v, slope in zip(directions, slopes):
        assert np.sum(f_first * v) == pytest.approx(-slope, rel=1e-5, abs=1e-6 * scale)
    np.testing.assert_allclose(f_later, f_first, rtol=1e-10, atol=1e-10 * scale)


# ---------------------------------------------------------------------- (f) persistence and files
def test_isolated_atoms_are_out_of_the_r_max_domain(committee, nh3):
    assert committee.domain.rules == ("isolated",) and committee.domain.cutoff_nm == pytest.approx(0.5)
    x = geometries(nh3, 2)
    x[1, 0] += 1.0  # N 1 nm away from its hydrogens, beyond r_max = 5 A
    check = committee.domain_check(x)
    assert check.out_of_domain.tolist() == [False, True] and "atom 0 (N)" in check.reasons[1]
    assert np.isfinite(committee.uncertainty(x[:1])).all() and committee.uncertainty(x[1:])[0] == np.inf


def test_save_load_round_trip(committee, nh3, tmp_path):
    path = committee.save(tmp_path / "mace.pt", training_energies=[0.0, 1.0])
    loaded = Committee.load(path, system=nh3)
    assert loaded.is_scripted
    x = geometries(nh3, 2, seed=5)
    np.testing.assert_allclose(loaded.energies(x), committee.energies(x), rtol=1e-12)
    np.testing.assert_allclose(loaded.energies_and_forces(x)[1], committee.energies_and_forces(x)[1], rtol=1e-10, atol=1e-10)
    meta = loaded.metadata
    assert meta["architecture"] == "MACE" and meta["n_members"] == 2
    hyper = meta["hyperparameters"]
    assert hyper["hidden_irreps"] == "8x0e+8x1o" and hyper["max_ell"] == 2 and hyper["correlation"] == [2, 2]
    assert hyper["r_max_angstrom"] == 5.0 and hyper["mace_torch_version"] == mace.__version__


def test_members_from_model_files(models, committee, nh3, tmp_path):
    """A pickled ``.model`` (what mace_run_train writes) and its TorchScript give the same committee."""
    import copy

    from e3nn.util import jit

    from mace.tools.scripts_utils import convert_to_json_format, extract_config_mace_model

    torch.save(models[0], tmp_path / "m0.model")
    # as mace_run_train writes its *_compiled.model: TorchScript with the config as an extra file
    config = json.dumps(convert_to_json_format(extract_config_mace_model(models[1])))
    torch.jit.save(jit.compile(copy.deepcopy(models[1])), str(tmp_path / "m1_compiled.model"), _extra_files={"config.yaml": config})
    from_files = mace_committee([tmp_path / "m0.model", str(tmp_path / "m1_compiled.model")], nh3.atomic_numbers)
    x = geometries(nh3, 2, seed=6)
    np.testing.assert_allclose(from_files.energies(x), committee.energies(x), rtol=1e-12)
    hyper = from_files.metadata["hyperparameters"]
    assert hyper["model_class"] == "ScaleShiftMACE" and hyper["hidden_irreps"] == "8x0e+8x1o"
    assert hyper["correlation"] == [2, 2] and hyper["max_ell"] == 2


# ---------------------------------------------------------------------- errors
def test_clear_errors(models, nh3, monkeypatch):
    with pytest.raises(ValueError, match=r"atomic numbers \[16\] are not in the MACE model's table \[1, 6, 7, 8\]"):
        MACEMember(models[0], [7, 1, 1, 16], compile=False)
    member = MACEMember(models[0], nh3.atomic_numbers, compile=False)
    with pytest.raises(ValueError, match=r"positions of shape \[B, 4, 3\]"):
        member(torch.zeros(2, 5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="head 'x'"):
        MACEMember(models[0], nh3.atomic_numbers, head="x", compile=False)
    with pytest.raises(TypeError, match="does not look like a mace-torch model"):
        MACEMember(torch.nn.Linear(3, 1), nh3.atomic_numbers)
    with pytest.raises(FileNotFoundError, match="no MACE model file"):
        MACEMember("/nonexistent/m.model", nh3.atomic_numbers)
    with pytest.raises(ValueError, match="did you mean 'max_num_epochs'"):
        train_mace_committee(__file__, 2, "/nonexistent", atomic_numbers=[1], max_num_epoch=3)
    monkeypatch.setitem(__import__("sys").modules, "mace", None)
    with pytest.raises(MACENotInstalledError, match=r"pip install -e '\.\[mace\]'"):
        require_mace()


# ---------------------------------------------------------------------- (g) mace_run_train
def _tiny_extxyz(path, system, n_frames=8):
    from openmm_adv.data import write_extxyz
    from openmm_adv.oracles import OpenMMOracle

    x = geometries(system, n_frames, scale=0.004, seed=7)
    labels = OpenMMOracle(system.create_reference_system()).compute(x)
    return write_extxyz(path, system.atomic_numbers, x, labels.energies, labels.forces)


TINY_CLI = dict(
    hidden_irreps="8x0e", max_ell=1, correlation=1, num_interactions=1, num_radial_basis=4,
    radial_MLP="[8]", MLP_irreps="4x0e", max_num_epochs=1, batch_size=4, valid_batch_size=4,
    valid_fraction=0.25, swa=False, ema=False,
)


@pytest.mark.slow
def test_train_mace_committee_with_the_cli(nh3, tmp_path):
    data = _tiny_extxyz(tmp_path / "train.extxyz", nh3)
    lines = []
    start = time.perf_counter()
    c = train_mace_committee(data, 2, tmp_path / "run", seeds=[3, 4], progress=lines.append, **TINY_CLI)
    elapsed = time.perf_counter() - start
    assert c.n_members == 2 and c.metadata["architecture"] == "MACE"
    assert c.metadata["training"]["seeds"] == [3, 4] and len(c.metadata["training_energies"]) == 8
    assert (tmp_path / "run" / "committee.pt").is_file()
    assert Committee.load(tmp_path / "run" / "committee.pt", system=nh3).n_members == 2
    e = c.energies(geometries(nh3, 1))
    assert np.isfinite(e).all() and abs(e[0, 0] - e[0, 1]) > 0  # different seeds, different members
    assert any("member 2/2" in line for line in lines)
    # the training distance ranges and r_max (5 A) are the committee's domain
    assert c.metadata["domain"]["n_frames"] == 8 and set(c.domain.rules) == {"isolated", "bond", "nearest"}
    assert c.domain.cutoff_nm == pytest.approx(0.5)
    assert c.domain_check(geometries(nh3, 1) * 10.0).out_of_domain.all()
    # rerunning resumes: nothing is retrained
    lines.clear()
    train_mace_committee(data, 2, tmp_path / "run", seeds=[3, 4], progress=lines.append, **TINY_CLI)
    assert sum("not retrained" in line for line in lines) == 2
    print(f"2 MACE members, 1 epoch each: {elapsed:.1f} s")


def test_cli_failure_is_reported_with_its_log(nh3, tmp_path, monkeypatch):
    """A failing mace_run_train (here a stand-in that fails at once) raises with its log's tail."""
    import sys

    from openmm_adv.models import mace as mace_module

    fail = "import sys; print('line 1'); print('mace said: bad hidden_irreps'); sys.exit(3)"
    monkeypatch.setattr(mace_module, "_cli", lambda: [sys.executable, "-c", fail])
    data = _tiny_extxyz(tmp_path / "train.extxyz", nh3, n_frames=2)
    with pytest.raises(MACETrainingError, match="(?s)exited with status 3.*mace said: bad hidden_irreps"):
        train_mace_committee(data, 2, tmp_path / "run", progress=None, **TINY_CLI)
    assert not (tmp_path / "run" / "member_00.model").exists()
    assert (tmp_path / "run" / "member_00" / "train.log").read_text().startswith("line 1")
