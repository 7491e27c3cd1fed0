"""Ground-truth oracles: exact labels, failures recorded per structure, executors, pickling."""

import pickle
import subprocess
import sys
import types
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import numpy as np
import openmm
import pytest
from openmm import unit

from openmm_adv.oracles import (
    AnalyticOracle,
    ASEOracle,
    Labels,
    OpenMMOracle,
    XTBOracle,
    make_oracle,
)
from openmm_adv.oracles import _units
from openmm_adv.systems import double_well, mueller_brown

WATER_NM = np.array([[0.0, 0.0, 0.0117], [0.0, 0.0757, -0.0469], [0.0, -0.0757, -0.0469]])


# -- helpers (module level, so process pools can pickle them) --------------------------------
def harmonic(x):
    """E = sum |x|^2 (kJ/mol, nm); raises for a first coordinate beyond 0.9 nm."""
    if x[0, 0] > 0.9:
        raise ValueError("too far\nsecond line that must not be recorded")
    return float(np.sum(x**2)), -2.0 * x


def blows_up(x):
    return (np.inf if x[0, 0] > 0.9 else 1.0), (np.full_like(x, np.nan) if x[0, 1] > 0.9 else np.zeros_like(x))


def central_differences(oracle, x, coords, h):
    grads = []
    for atom, axis in coords:
        xp, xm = x.copy(), x.copy()
        xp[atom, axis] += h
        xm[atom, axis] -= h
        ep, em = oracle.compute(np.stack([xp, xm])).energies
        grads.append((ep - em) / (2 * h))
    return np.array(grads)


def random_rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    return q if np.linalg.det(q) > 0 else -q


class FailingExecutor(Executor):
    """Runs tasks in-process, but the chunks listed in ``fail`` come back as failed futures and
    those in ``refuse`` make ``submit`` raise, as a crashed or broken process pool would."""

    def __init__(self, fail=(), refuse=()):
        self.fail, self.refuse, self.calls, self.shut = set(fail), set(refuse), 0, False

    def submit(self, fn, *args, **kwargs):
        call, self.calls = self.calls, self.calls + 1
        if call in self.refuse:
            raise RuntimeError("pool is broken")
        future = Future()
        if call in self.fail:
            future.set_exception(RuntimeError("worker died\nwith a traceback"))
        else:
            future.set_result(fn(*args, **kwargs))
        return future

    def shutdown(self, wait=True, **kwargs):
        self.shut = True


class PicklingExecutor(Executor):
    """Sends every task through pickle, like a process pool, but runs it in this process."""

    def submit(self, fn, *args, **kwargs):
        future = Future()
        try:
            fn, args = pickle.loads(pickle.dumps((fn, args)))
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future


@pytest.fixture(scope="module")
def ala2_oracle(ala2):
    return OpenMMOracle.from_molecular_system(ala2)


# -- OpenMM -----------------------------------------------------------------------------------
def test_openmm_oracle_equals_a_direct_context(ala2, ala2_oracle, perturbed):
    x = perturbed(3, scale=0.01)
    labels = ala2_oracle.compute(x)
    system = ala2.create_reference_system()
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    for k in range(3):
        context.setPositions(x[k])
        state = context.getState(getEnergy=True, getForces=True)
        assert labels.energies[k] == pytest.approx(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), rel=1e-12)
        np.testing.assert_allclose(
            labels.forces[k],
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer),
            rtol=1e-12, atol=1e-10,
        )
    assert labels.ok.all() and labels.errors == [None] * 3 and labels.oracle == "openmm"
    assert labels.wall_seconds > 0


def test_openmm_forces_are_minus_the_energy_gradient(ala2, ala2_oracle):
    x = ala2.positions + 0.01 * np.random.default_rng(1).normal(size=ala2.positions.shape)
    coords = [(0, 0), (4, 1), (8, 2), (14, 0), (21, 1)]
    forces = ala2_oracle.compute(x).forces[0]
    grad = central_differences(ala2_oracle, x, coords, h=1e-5)
    np.testing.assert_allclose(-grad, [forces[a, i] for a, i in coords], rtol=1e-5, atol=1e-4)


def test_positions_may_be_an_openmm_quantity(ala2, ala2_oracle):
    plain = ala2_oracle.compute(ala2.positions)
    quantity = ala2_oracle.compute(ala2.positions * 10.0 * unit.angstrom)
    assert quantity.energies[0] == pytest.approx(plain.energies[0], rel=1e-12)


def test_unknown_platform_is_named():
    with pytest.raises(ValueError, match="'NoSuchPlatform' is not available; choose one of"):
        OpenMMOracle(openmm.System(), platform="NoSuchPlatform")


# -- per-structure failures ------------------------------------------------------------------
def test_one_failing_structure_does_not_stop_the_batch():
    oracle = AnalyticOracle(harmonic, n_atoms=2, name="harmonic")
    x = np.zeros((4, 2, 3))
    x[0, 1] = [0.1, 0.2, 0.3]
    x[1, 0, 2] = np.nan  # bad coordinates
    x[2, 0, 0] = 1.0  # the function raises
    x[3, 0] = [0.5, 0.0, 0.0]
    for labels in (oracle.compute(x), oracle.label(x), oracle.label(x, executor=FailingExecutor(), chunk_size=1)):
        np.testing.assert_array_equal(labels.ok, [True, False, False, True])
        assert labels.errors == [None, "non-finite coordinates", "ValueError: too far", None]
        assert labels.failures() == [(1, "non-finite coordinates"), (2, "ValueError: too far")]
        assert labels.n_failed == 2 and len(labels) == 4
        np.testing.assert_allclose(labels.energies[[0, 3]], [0.14, 0.25])
        np.testing.assert_allclose(labels.forces[3], -2.0 * x[3])
        assert np.isnan(labels.energies[[1, 2]]).all() and np.isnan(labels.forces[[1, 2]]).all()


def test_non_finite_energy_or_forces_are_failures():
    x = np.zeros((3, 1, 3))
    x[1, 0, 0] = 1.0  # infinite energy
    x[2, 0, 1] = 1.0  # NaN forces
    labels = AnalyticOracle(blows_up, n_atoms=1).compute(x)
    np.testing.assert_array_equal(labels.ok, [True, False, False])
    assert labels.errors[1:] == ["non-finite energy or forces"] * 2
    assert np.isnan(labels.forces[1:]).all()


def test_wrong_atom_count_is_a_clear_error(ala2_oracle):
    with pytest.raises(ValueError, match=r"expects positions of 22 atoms.*got shape \(2, 21, 3\).*system the oracle was built for"):
        ala2_oracle.compute(np.zeros((2, 21, 3)))
    with pytest.raises(ValueError, match="expects positions of 22 atoms"):
        ala2_oracle.label(np.zeros((21, 3)), n_workers=2)
    with pytest.raises(ValueError, match="n_workers must be >= 1"):
        ala2_oracle.label(np.zeros((22, 3)), n_workers=0)


# -- executors --------------------------------------------------------------------------------
def test_process_pool_gives_the_serial_labels_in_order(ala2, ala2_oracle, perturbed):
    """Two spawn workers: the oracle travels as a pickle, rebuilds its Context there."""
    x = perturbed(6, scale=0.01, seed=4)
    x[3, 5, 1] = np.inf
    pooled = ala2_oracle.label(x, n_workers=2, chunk_size=2)
    serial = ala2_oracle.compute(x)
    np.testing.assert_array_equal(pooled.ok, [True, True, True, False, True, True])
    assert pooled.errors == serial.errors and pooled.errors[3] == "non-finite coordinates"
    np.testing.assert_array_equal(pooled.energies, serial.energies)
    np.testing.assert_array_equal(pooled.forces, serial.forces)
    single = [ala2_oracle.compute(x[k]).energies[0] for k in (0, 5)]
    np.testing.assert_array_equal(pooled.energies[[0, 5]], single)


def test_a_failed_chunk_marks_each_of_its_structures():
    oracle = AnalyticOracle(harmonic, n_atoms=1)
    x = np.random.default_rng(0).uniform(0, 0.5, size=(7, 1, 3))
    executor = FailingExecutor(fail={1}, refuse={3})
    labels = oracle.label(x, executor=executor, chunk_size=2)  # chunks [0,2) [2,4) [4,6) [6,7)
    np.testing.assert_array_equal(labels.ok, [True, True, False, False, True, True, False])
    assert labels.errors[2:4] == ["executor: RuntimeError: worker died"] * 2
    assert labels.errors[6] == "executor: RuntimeError: pool is broken"
    np.testing.assert_allclose(labels.energies[[0, 1, 4, 5]], np.sum(x[[0, 1, 4, 5]] ** 2, axis=(1, 2)))
    assert not executor.shut  # the caller's executor is the caller's to shut down


def test_an_unpicklable_oracle_fails_per_structure_not_the_batch():
    oracle = AnalyticOracle(lambda x: (0.0, np.zeros_like(x)), n_atoms=1)
    labels = oracle.label(np.zeros((3, 1, 3)), executor=PicklingExecutor(), chunk_size=2)
    assert not labels.ok.any()
    assert all(e.startswith("executor: ") and "lambda" in e for e in labels.errors)


def test_thread_pool_executor_is_safe_and_left_open(ala2_oracle, perturbed):
    x = perturbed(6, scale=0.01, seed=5)
    with ThreadPoolExecutor(2) as pool:
        threaded = ala2_oracle.label(x, executor=pool, chunk_size=1)
        pool.submit(int).result()  # still usable
    np.testing.assert_array_equal(threaded.energies, ala2_oracle.compute(x).energies)


def test_importing_oracles_does_not_import_torch():
    code = "import sys, openmm_adv.oracles; print('torch' in sys.modules, 'tblite' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# -- analytic toys ----------------------------------------------------------------------------
@pytest.mark.parametrize("make_toy", [double_well, mueller_brown])
def test_toy_oracle_matches_openmm_and_finite_differences(make_toy):
    toy = make_toy()
    analytic, reference = AnalyticOracle.for_toy(toy), OpenMMOracle.from_molecular_system(toy)
    rng = np.random.default_rng(2)
    x = toy.positions[None] + rng.normal(0, [0.3, 0.3, 0.01], size=(5, 1, 3))
    a, r = analytic.compute(x), reference.compute(x)
    np.testing.assert_allclose(a.energies, r.energies, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(a.forces, r.forces, rtol=1e-10, atol=1e-8)
    grad = central_differences(analytic, x[0], [(0, 0), (0, 1), (0, 2)], h=1e-5)
    np.testing.assert_allclose(-grad, a.forces[0, 0], rtol=1e-6, atol=1e-5)


def test_for_toy_refuses_a_molecule(ala2):
    with pytest.raises(ValueError, match="use OpenMMOracle.from_molecular_system"):
        AnalyticOracle.for_toy(ala2)


# -- GFN2-xTB ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def water_xtb():
    pytest.importorskip("tblite")
    return XTBOracle([8, 1, 1], accuracy=0.01)


def test_xtb_energy_and_forces_in_openmm_units(water_xtb):
    from tblite.interface import Calculator

    x = WATER_NM + 0.005 * np.random.default_rng(3).normal(size=(3, 3))
    labels = water_xtb.compute(x)
    calc = Calculator("GFN2-xTB", np.array([8, 1, 1]), x / 0.0529177210903)
    calc.set("verbosity", 0)
    calc.set("accuracy", 0.01)
    res = calc.singlepoint()
    assert labels.energies[0] == pytest.approx(res.get("energy") * 2625.4996394799, rel=1e-10)
    np.testing.assert_allclose(labels.forces[0], -res.get("gradient") * 2625.4996394799 / 0.0529177210903, rtol=1e-8)
    grad = central_differences(water_xtb, x, [(0, 1), (0, 2), (1, 1), (2, 2)], h=1e-4)
    force = np.array([labels.forces[0][a, i] for a, i in [(0, 1), (0, 2), (1, 1), (2, 2)]])
    np.testing.assert_allclose(-grad, force, rtol=1e-3)


def test_xtb_energy_is_rotation_invariant(water_xtb):
    rot = random_rotation(7)
    labels = water_xtb.compute(np.stack([WATER_NM, WATER_NM @ rot.T]))
    assert labels.energies[1] == pytest.approx(labels.energies[0], rel=1e-9)
    np.testing.assert_allclose(labels.forces[1], labels.forces[0] @ rot.T, atol=1e-4)


def test_xtb_unconverged_scf_is_a_failure_and_the_oracle_recovers():
    pytest.importorskip("tblite")
    oracle = XTBOracle([8, 1, 1], max_iterations=1)
    labels = oracle.compute(np.stack([WATER_NM, WATER_NM * 1.1]))
    assert not labels.ok.any()
    assert all(e.startswith("TBLiteRuntimeError: SCF not converged") for e in labels.errors)
    oracle.max_iterations = 250  # the calculator is rebuilt after a failure, with this setting
    assert oracle.compute(WATER_NM).ok.all()


def test_xtb_checks_charge_and_multiplicity():
    pytest.importorskip("tblite")
    with pytest.raises(ValueError, match="multiplicity 2 is impossible with 10 electrons.*fix charge or multiplicity"):
        XTBOracle([8, 1, 1], multiplicity=2)
    with pytest.raises(ValueError, match="multiplicity 1 is impossible with 9 electrons"):
        XTBOracle([8, 1, 1], charge=1)
    with pytest.raises(ValueError, match="integer >= 1"):
        XTBOracle([8, 1, 1], multiplicity=0)
    with pytest.raises(ValueError, match="method 'GFN3-xTB' is not supported"):
        XTBOracle([8, 1, 1], method="GFN3-xTB")
    cation = XTBOracle([8, 1, 1], charge=1, multiplicity=2)
    assert cation.compute(WATER_NM).ok.all()


def test_xtb_leaves_torch_threads_alone():
    """tblite shares torch's libgomp when torch is imported first; its thread limit must not leak."""
    pytest.importorskip("tblite")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        XTBOracle([8, 1, 1], threads=1).compute(WATER_NM)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# -- ASE --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cu_cluster():
    pytest.importorskip("ase")
    from ase.cluster import Octahedron

    atoms = Octahedron("Cu", 2)  # 6 atoms
    atoms.numbers[0] = 13  # one Al
    rng = np.random.default_rng(0)
    return atoms, atoms.positions[None] / 10.0 + 0.005 * rng.normal(size=(3, len(atoms), 3))


def test_ase_oracle_matches_ase_in_openmm_units(cu_cluster):
    from ase.calculators.emt import EMT

    atoms, x = cu_cluster
    for calculator in (EMT(), EMT, "ase.calculators.emt:EMT"):
        labels = ASEOracle(calculator, atoms.numbers).compute(x)
        assert labels.ok.all()
        for k in range(len(x)):
            probe = atoms.copy()
            probe.positions = x[k] * 10.0
            probe.calc = EMT()
            assert labels.energies[k] == pytest.approx(probe.get_potential_energy() * 96.48533212331, rel=1e-10)
            np.testing.assert_allclose(labels.forces[k], probe.get_forces() * 964.8533212331, rtol=1e-10, atol=1e-9)


def test_make_oracle_builds_ase_from_a_string(cu_cluster):
    atoms, x = cu_cluster
    system = types.SimpleNamespace(name="cu_cluster", atomic_numbers=atoms.numbers)
    oracle = make_oracle("ase", system, calculator="ase.calculators.emt:EMT", name="emt")
    labels = oracle.label(x, executor=PicklingExecutor(), chunk_size=1)  # the string survives pickling
    assert labels.ok.all() and labels.oracle == "emt"
    with pytest.raises(ValueError, match="needs the option 'calculator'"):
        make_oracle("ase", system)
    with pytest.raises(ValueError, match="cannot import module 'ase.calculators.nope'"):
        make_oracle("ase", system, calculator="ase.calculators.nope:EMT")
    with pytest.raises(ValueError, match="expected 'package.module:callable'"):
        make_oracle("ase", system, calculator="EMT")


# -- make_oracle, pickling, units -------------------------------------------------------------
def test_make_oracle_names_unknown_kinds_and_options(ala2):
    with pytest.raises(ValueError, match=r"unknown oracle kind 'dft'; choose one of \['analytic', 'ase', 'openmm', 'xtb'\]"):
        make_oracle("dft", ala2)
    with pytest.raises(ValueError, match=r"unknown option 'platfrom' for oracle kind 'openmm'; allowed options: \['platform'"):
        make_oracle("openmm", ala2, platfrom="CPU")
    with pytest.raises(ValueError, match="needs a system"):
        make_oracle("openmm")
    oracle = make_oracle("openmm", "alanine_dipeptide", platform="CPU", platform_properties={"Threads": 1})
    assert oracle.n_atoms == 22 and oracle.platform == "CPU"
    assert isinstance(make_oracle("analytic", double_well()), AnalyticOracle)


def _oracles_for_pickling(ala2):
    yield OpenMMOracle.from_molecular_system(ala2), ala2.positions
    yield AnalyticOracle.for_toy(double_well()), double_well().positions
    try:
        import tblite  # noqa: F401

        yield XTBOracle([8, 1, 1]), WATER_NM
    except ImportError:
        pass
    try:
        import ase  # noqa: F401

        yield ASEOracle("ase.calculators.emt:EMT", [29, 29], name="emt"), np.array([[0, 0, 0], [0.25, 0, 0]])
    except ImportError:
        pass


def test_oracles_pickle_after_use(ala2):
    for oracle, x in _oracles_for_pickling(ala2):
        before = oracle.compute(x)  # builds the Context / calculator / compiled expression
        clone = pickle.loads(pickle.dumps(oracle))
        after = clone.compute(x)
        assert after.ok.all() and clone.name == oracle.name, oracle
        np.testing.assert_allclose(after.energies, before.energies, rtol=1e-12)
        np.testing.assert_allclose(after.forces, before.forces, rtol=1e-10, atol=1e-10)


def test_a_used_ase_calculator_instance_says_to_pass_a_factory(cu_cluster):
    from ase.calculators.emt import EMT

    atoms, x = cu_cluster
    oracle = ASEOracle(EMT(), atoms.numbers)
    oracle.compute(x)  # EMT keeps lambdas once used
    with pytest.raises(TypeError, match="cannot be pickled.*pass a factory instead"):
        pickle.dumps(oracle)
    labels = oracle.label(x, executor=PicklingExecutor())
    assert not labels.ok.any() and "pass a factory" in labels.errors[0]


def test_an_empty_batch_gives_empty_labels(ala2_oracle):
    labels = ala2_oracle.label(np.zeros((0, 22, 3)), n_workers=2)  # no pool is started for nothing
    assert len(labels) == 0 and labels.forces.shape == (0, 22, 3) and labels.failures() == []


def test_labels_helpers():
    labels = Labels.failed(3, 2, "boom", "x")
    labels.ok[1], labels.errors[1] = True, None
    assert labels.n_failed == 2 and labels.failures() == [(0, "boom"), (2, "boom")]


def test_unit_constants_are_codata_2018():
    assert _units.HARTREE_TO_KJ_PER_MOL == pytest.approx(2625.4996394799, rel=1e-12)
    assert _units.BOHR_TO_NM == pytest.approx(0.0529177210903, rel=1e-12)
    assert _units.EV_TO_KJ_PER_MOL == pytest.approx(96.48533212331, rel=1e-12)
    assert _units.BOLTZMANN_HARTREE_PER_KELVIN * 300 == pytest.approx(9.5004e-4, rel=1e-4)
