"""UncertaintyReporter in a real app.Simulation of alanine dipeptide (Amber, vacuum, Reference)."""

import csv

import numpy as np
import openmm
import pytest
from openmm import app, unit

from openmm_adv.data import Dataset, read_extxyz
from openmm_adv.models import Committee, CommitteeError
from openmm_adv.reporter import UncertaintyLimitExceeded, UncertaintyReporter
from openmm_adv.resources import default_committee_path, default_dataset_path

DT = 0.001  # ps
INTERVAL = 20
STEPS = 200
SEED = 5


@pytest.fixture(scope="module")
def committee():
    return Committee.load(default_committee_path())


class Recorder:
    """Keeps the unwrapped positions at every report step, independently of the reporter."""

    def __init__(self, interval):
        self.interval, self.steps, self.positions = interval, [], []

    def describeNextReport(self, simulation):
        return {"steps": self.interval - simulation.currentStep % self.interval, "periodic": False,
                "include": ["positions"]}

    def report(self, simulation, state):
        self.steps.append(simulation.currentStep)
        self.positions.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))


def simulation(topology, system, positions):
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 5.0 / unit.picosecond, DT * unit.picosecond)
    integrator.setRandomNumberSeed(SEED)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    sim.context.setVelocitiesToTemperature(300, SEED)
    return sim


def ala2_simulation(ala2):
    return simulation(ala2.topology, ala2.create_reference_system(), ala2.positions)


def read_log(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def baseline(ala2, committee, tmp_path_factory):
    """One logged run without threshold, with the positions at each report recorded."""
    path = tmp_path_factory.mktemp("baseline") / "log.csv"
    sim = ala2_simulation(ala2)
    reporter = UncertaintyReporter(committee, INTERVAL, path)
    recorder = Recorder(INTERVAL)
    sim.reporters += [reporter, recorder]
    sim.step(STEPS)
    reporter.close()
    state = sim.context.getState(getPositions=True, getVelocities=True)
    return {"log": read_log(path), "reporter": reporter, "recorder": recorder,
            "positions": state.getPositions(asNumpy=True)._value, "velocities": state.getVelocities(asNumpy=True)._value}


def test_one_line_per_interval_with_the_committees_uncertainty(baseline, committee):
    log, recorder = baseline["log"], baseline["recorder"]
    assert len(log) == int(np.ceil(STEPS / INTERVAL)) == 10
    assert [int(r["step"]) for r in log] == list(range(INTERVAL, STEPS + 1, INTERVAL)) == recorder.steps
    np.testing.assert_allclose([float(r["time_ps"]) for r in log], np.array(recorder.steps) * DT, rtol=1e-9)
    x = np.array(recorder.positions)
    logged = np.array([float(r["force_variance"]) for r in log])
    # rtol: the float32 committee's TorchScript graph is re-optimised after its first runs.
    np.testing.assert_allclose(logged, committee.uncertainty(x), rtol=1e-4)
    np.testing.assert_allclose([float(r["energy_std_kj_mol"]) for r in log], committee.energies(x).std(axis=1),
                               rtol=1e-4, atol=1e-6)
    assert len(set(np.round(logged, 3))) == len(logged)  # the frames differ: not one frame logged ten times
    assert all(r["flagged"] == "0" for r in log)


def test_reports_at_multiples_of_the_interval_when_resumed(ala2, committee, tmp_path):
    sim = ala2_simulation(ala2)
    reporter = UncertaintyReporter(committee, INTERVAL, tmp_path / "log.csv")
    sim.reporters.append(reporter)
    sim.step(30)
    sim.step(25)
    assert reporter.steps == [20, 40]


def test_flags_exactly_the_frames_above_the_threshold_and_writes_them(ala2, committee, baseline, tmp_path):
    values = np.array(baseline["reporter"].values)
    threshold = float(np.sort(values)[[5, 6]].mean())  # some frames above, some below, no ties
    sim = ala2_simulation(ala2)
    # The threshold as a quantity in other units: converted to (kJ/mol/nm)^2.
    in_kcal_angstrom = threshold * (unit.kilojoule_per_mole / unit.nanometer) ** 2
    in_kcal_angstrom = in_kcal_angstrom.in_units_of((unit.kilocalorie_per_mole / unit.angstrom) ** 2)
    frames = tmp_path / "flagged.extxyz"
    reporter = UncertaintyReporter(str(default_committee_path()), INTERVAL, tmp_path / "log.csv",
                                   threshold=in_kcal_angstrom, frames=frames)
    assert reporter.threshold == pytest.approx(threshold, rel=1e-12)
    sim.reporters.append(reporter)
    sim.step(STEPS)
    expected = np.array(reporter.values) > threshold
    assert 0 < expected.sum() < len(expected)
    np.testing.assert_allclose(reporter.values, values, rtol=1e-4)
    assert reporter.flags == expected.tolist()
    assert [int(r["flagged"]) for r in read_log(tmp_path / "log.csv")] == expected.astype(int).tolist()

    # Every flagged frame is on disk before close(): a killed run keeps them.
    numbers, positions, energies, forces = read_extxyz(frames)
    reporter.close()
    recorded = np.array(baseline["recorder"].positions)[expected]
    assert energies is None and forces is None
    np.testing.assert_array_equal(numbers, committee.atomic_numbers)
    np.testing.assert_allclose(positions, recorded, atol=1e-10)  # nm
    ase_io = pytest.importorskip("ase.io")
    atoms = ase_io.read(frames, ":")
    np.testing.assert_allclose([a.get_positions() for a in atoms], recorded * 10.0, atol=1e-9)  # Angstrom
    assert [a.info["step"] for a in atoms] == np.array(reporter.steps)[expected].tolist()
    np.testing.assert_allclose([a.info["uncertainty"] for a in atoms], np.array(reporter.values)[expected], rtol=1e-9)


def test_percentile_of_the_training_set(committee, tmp_path):
    data = Dataset.load(default_dataset_path()).subset(np.arange(0, 500, 100))  # 5 frames
    u = np.sort(committee.uncertainty(data.positions))
    # With 5 values, percentiles 0, 25, 50 and 100 fall exactly on the 1st, 2nd, 3rd and 5th.
    for percentile, k in ((0, 0), (25, 1), (50, 2), (100, 4)):
        reporter = UncertaintyReporter(committee, 10, percentile=percentile, training_data=data.positions)
        assert reporter.threshold == pytest.approx(u[k], rel=1e-4)
    data.save(tmp_path / "train.h5")
    for source in (data, tmp_path / "train.h5"):
        reporter = UncertaintyReporter(committee, 10, percentile=50, training_data=source)
        assert reporter.threshold == pytest.approx(u[2], rel=1e-4)
    with pytest.raises(ValueError, match="training_data="):
        UncertaintyReporter(committee, 10, percentile=90)


def test_stop_above_stops_the_run_at_the_first_frame_above(ala2, committee, baseline, tmp_path):
    values = np.array(baseline["reporter"].values)
    limit = float(np.sort(values)[-3:-1].mean())  # below the two largest values
    first = int(np.flatnonzero(values > limit)[0])
    sim = ala2_simulation(ala2)
    reporter = UncertaintyReporter(committee, INTERVAL, tmp_path / "log.csv", stop_above=limit)
    sim.reporters.append(reporter)
    with pytest.raises(UncertaintyLimitExceeded) as stop:
        sim.step(STEPS)
    step = (first + 1) * INTERVAL
    assert stop.value.step == step == sim.currentStep
    assert stop.value.uncertainty == pytest.approx(values[first], rel=1e-4)
    assert len(read_log(tmp_path / "log.csv")) == first + 1
    sim.step(INTERVAL)  # the Simulation goes on if asked
    assert sim.currentStep == step + INTERVAL


def test_stop_after_consecutive_flagged_reports(ala2, committee):
    sim = ala2_simulation(ala2)
    reporter = UncertaintyReporter(committee, INTERVAL, threshold=0.0, stop_after=3)
    sim.reporters.append(reporter)
    with pytest.raises(UncertaintyLimitExceeded, match="3 consecutive"):
        sim.step(STEPS)
    assert sim.currentStep == 3 * INTERVAL


def test_the_reporter_does_not_change_the_dynamics(ala2, committee, baseline):
    # baseline ran with the reporter (and a threshold-free log); this run has none.
    sim = ala2_simulation(ala2)
    sim.step(STEPS)
    state = sim.context.getState(getPositions=True, getVelocities=True)
    np.testing.assert_array_equal(state.getPositions(asNumpy=True)._value, baseline["positions"])
    np.testing.assert_array_equal(state.getVelocities(asNumpy=True)._value, baseline["velocities"])


def _with_waters(ala2):
    """Three water molecules first, then the peptide: the committee's atoms are 9..30."""
    topology = app.Topology()
    chain = topology.addChain()
    o, h = app.element.oxygen, app.element.hydrogen
    water_xyz = []
    for k in range(3):
        residue = topology.addResidue("HOH", chain)
        atoms = [topology.addAtom(name, el, residue) for name, el in (("O", o), ("H1", h), ("H2", h))]
        topology.addBond(atoms[0], atoms[1])
        topology.addBond(atoms[0], atoms[2])
        centre = np.array([2.0 + 0.4 * k, 2.0, 2.0])
        water_xyz += [centre, centre + [0.09572, 0, 0], centre + [-0.024, 0.0927, 0]]
    modeller = app.Modeller(topology, np.array(water_xyz) * unit.nanometer)
    modeller.add(ala2.topology, ala2.positions * unit.nanometer)
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    return modeller.topology, system, modeller.getPositions().value_in_unit(unit.nanometer)


def test_atom_selection_in_a_system_with_extra_atoms(ala2, committee):
    topology, system, positions = _with_waters(ala2)
    for atoms in ("resname ACE ALA NME", np.arange(9, 31)):
        sim = simulation(topology, system, positions)
        reporter, recorder = UncertaintyReporter(committee, 25, atoms=atoms), Recorder(25)
        sim.reporters += [reporter, recorder]
        sim.step(50)
        x = np.array(recorder.positions)[:, 9:]
        np.testing.assert_allclose(reporter.values, committee.uncertainty(x), rtol=1e-4)


def test_wrong_atoms_are_a_clear_error_before_the_first_step(ala2, committee):
    topology, system, positions = _with_waters(ala2)
    sim = simulation(topology, system, positions)
    sim.reporters.append(UncertaintyReporter(committee, 10))
    with pytest.raises(CommitteeError, match=r"22 atoms but the simulation \(31 atoms\) gives 31.*pass atoms="):
        sim.step(10)
    assert sim.currentStep == 0
    swapped = np.arange(9, 31)
    swapped[[0, 1]] = swapped[[1, 0]]  # H and C exchanged
    sim.reporters[:] = [UncertaintyReporter(committee, 10, atoms=swapped)]
    with pytest.raises(CommitteeError, match="elements .* differ .* at positions 0 .*atom order"):
        sim.step(10)
    sim.reporters[:] = [UncertaintyReporter(committee, 10, atoms="resname HOH")]
    with pytest.raises(CommitteeError, match="gives 9"):
        sim.step(10)


def test_argument_errors_name_the_fix(committee, tmp_path):
    with pytest.raises(ValueError, match="openmm-adv label"):
        UncertaintyReporter(committee, 10, threshold=1.0, frames=tmp_path / "flagged.h5")
    with pytest.raises(ValueError, match="do not fit the metric 'force_variance'"):
        UncertaintyReporter(committee, 10, threshold=1.0 * unit.kilojoule_per_mole)
    with pytest.raises(ValueError, match="not both"):
        UncertaintyReporter(committee, 10, threshold=1.0, percentile=50, training_data=np.zeros((1, 22, 3)))
    with pytest.raises(ValueError, match="give threshold or percentile"):
        UncertaintyReporter(committee, 10, frames=tmp_path / "flagged.extxyz")
    with pytest.raises(ValueError, match="reportInterval"):
        UncertaintyReporter(committee, 0)


@pytest.mark.parametrize("metric", ["gmm_nll", "force_variance"])
def test_single_model_gmm_uncertainty_is_reported(ala2, tmp_path, metric):
    """A single model with a Gaussian mixture (no committee) watches MD the same way."""
    import torch

    from openmm_adv.models.gmm import fit_gaussian_mixture

    data = Dataset.load(default_dataset_path()).subset(np.arange(0, 400, 10))
    single = Committee.painn(ala2.atomic_numbers, n_members=1, n_features=8, dtype=torch.float64, seed=1)
    model = fit_gaussian_mixture(single, data.positions[:30], data.positions[30:], data.forces[30:], n_components=2)
    sim = ala2_simulation(ala2)
    recorder = Recorder(INTERVAL)
    sim.reporters += [UncertaintyReporter(model, INTERVAL, tmp_path / "log.csv", metric=metric), recorder]
    sim.step(100)
    logged = np.array([float(r[metric]) for r in read_log(tmp_path / "log.csv")])
    np.testing.assert_allclose(logged, model.uncertainty(np.array(recorder.positions), metric), rtol=1e-8)
    with pytest.raises(ValueError, match="max_force_deviation"):
        UncertaintyReporter(model, INTERVAL, metric="max_force_deviation")
    # thresholds in every metric's units; gmm_nll (nats above the calibration minimum) may be negative
    assert UncertaintyReporter(model, INTERVAL, metric="gmm_nll", threshold=-0.5).threshold == -0.5
    assert UncertaintyReporter(model, INTERVAL, metric="gmm_error",
                               threshold=2.0 * unit.kilojoule_per_mole / unit.angstrom).threshold == pytest.approx(20.0)
    with pytest.raises(ValueError, match=">= 0"):
        UncertaintyReporter(model, INTERVAL, metric="gmm_error", threshold=-1.0)
