"""Committee construction, persistence and error handling."""

import numpy as np
import pytest
import torch

from openmm_adv.models import Committee, CommitteeError
from openmm_adv.systems import ammonia


def test_save_load_round_trip(small_committee, perturbed, tmp_path, ala2):
    path = small_committee.save(tmp_path / "c.pt", training_energies=[1.0, 2.0], note="x")
    loaded = Committee.load(path, system=ala2)
    assert loaded.is_scripted
    x = perturbed(3)
    np.testing.assert_allclose(loaded.energies(x), small_committee.energies(x), rtol=1e-12)
    np.testing.assert_allclose(loaded.energies_and_forces(x)[1], small_committee.energies_and_forces(x)[1], rtol=1e-10)
    meta = loaded.metadata
    assert meta["atomic_numbers"] == ala2.atomic_numbers.tolist()
    assert meta["n_members"] == 3 and meta["note"] == "x" and meta["training_energies"] == [1.0, 2.0]
    assert meta["units"]["length"] == "nm" and "openmm_adv_version" in meta
    assert meta["hyperparameters"]["n_features"] == 8


def test_load_against_wrong_system(small_committee, tmp_path):
    path = small_committee.save(tmp_path / "c.pt")
    with pytest.raises(CommitteeError, match="22 atoms but ammonia has 4"):
        Committee.load(path, system=ammonia())
    z = list(small_committee.atomic_numbers)
    z[0], z[1] = z[1], z[0]
    with pytest.raises(CommitteeError, match="atomic numbers"):
        Committee.load(path, system=z)


def test_corrupt_and_missing_files(small_committee, tmp_path):
    path = small_committee.save(tmp_path / "c.pt")
    data = path.read_bytes()
    (tmp_path / "bad.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CommitteeError, match="corrupt or truncated"):
        Committee.load(tmp_path / "bad.pt")
    with pytest.raises(CommitteeError, match="no committee file"):
        Committee.load(tmp_path / "missing.pt")
    plain = torch.jit.script(torch.nn.Linear(3, 1))
    torch.jit.save(plain, str(tmp_path / "plain.pt"))
    with pytest.raises(CommitteeError, match="no openmm-adv metadata"):
        Committee.load(tmp_path / "plain.pt")


def test_wrong_atom_count_and_nan_positions(small_committee, ala2):
    with pytest.raises(ValueError, match="22 atoms"):
        small_committee.energies(np.zeros((2, 21, 3)))
    bad = ala2.positions.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        small_committee.uncertainty(bad)


class _Member(torch.nn.Module):
    def __init__(self, k: float):
        super().__init__()
        self.k = k

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        d = positions[:, 0] - positions[:, 1]
        return self.k * (d.pow(2).sum(-1) - 0.01).pow(2)


class _Unscriptable(torch.nn.Module):
    """Differentiable, but TorchScript cannot compile a lambda attribute."""

    def __init__(self):
        super().__init__()
        self.energy = lambda x: (x[:, 0] - x[:, 1]).pow(2).sum(-1)

    def forward(self, positions):
        return self.energy(positions)


def test_committee_from_independent_models(tmp_path):
    members = [_Member(k) for k in (1.0, 2.0, 3.0)]
    torch.jit.save(torch.jit.script(members[2]), str(tmp_path / "m2.pt"))
    c = Committee.from_models([members[0], members[1], tmp_path / "m2.pt"], [1, 1])
    x = np.array([[[0.0, 0, 0], [0.2, 0, 0]]])
    expected = np.array([k * (0.04 - 0.01) ** 2 for k in (1.0, 2.0, 3.0)])
    np.testing.assert_allclose(c.energies(x)[0], expected, rtol=1e-6)
    assert c.scripted() is not None
    f = c.energies_and_forces(x)[1]
    # F_1x = -dE/dx_1 = -4k (d^2 - 0.01) * 0.2 for d = 0.2 nm along x
    np.testing.assert_allclose(f[0, :, 1, 0], -4 * np.array([1.0, 2.0, 3.0]) * 0.03 * 0.2, rtol=1e-5)


def test_unscriptable_model_gets_a_clear_error_and_python_backend_works():
    import openmm

    from openmm_adv.forces import mean_energy_force

    c = Committee.from_models([_Unscriptable(), _Unscriptable()], [1, 1])
    with pytest.raises(CommitteeError, match="backend='python'"):
        c.scripted()
    force = mean_energy_force(c, backend="python")
    assert isinstance(force, openmm.PythonForce)
    system = openmm.System()
    system.addParticle(1.0)
    system.addParticle(1.0)
    system.addForce(force)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(np.array([[0.0, 0, 0], [0.3, 0, 0]]))
    state = ctx.getState(getEnergy=True, getForces=True)
    assert state.getPotentialEnergy()._value == pytest.approx(0.09)
    assert state.getForces(asNumpy=True)._value[1, 0] == pytest.approx(-0.6)


def test_committee_needs_two_members():
    with pytest.raises(ValueError, match="at least two"):
        Committee.from_models([_Member(1.0)], [1, 1])
