"""Torsion space: rotatable bonds, exact rigid rotations, torques as derivatives, CV novelty,
and the torsion attack through OpenMM."""

import numpy as np
import pytest
import torch

from conftest import make_small_committee
from openmm_adv.geometry import GeometryCheck
from openmm_adv.models import Committee
from openmm_adv.novelty import CVDensity, frontier_indices
from openmm_adv.samplers.torsion_attack import TorsionAttack, TorsionAttackSampler, rotors_for
from openmm_adv.torsions import dihedral_gradient, find_rotors, rotate, rotors_for_dihedrals, torques


def _bond_lengths_and_angles(x, bonds):
    bonds = np.asarray(bonds)
    lengths = np.linalg.norm(x[:, bonds[:, 0]] - x[:, bonds[:, 1]], axis=-1)
    graph = {}
    for a, b in bonds:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, []).append(a)
    cosines = []
    for j, nbrs in graph.items():
        for p in range(len(nbrs)):
            for q in range(p + 1, len(nbrs)):
                u, v = x[:, nbrs[p]] - x[:, j], x[:, nbrs[q]] - x[:, j]
                cosines.append(np.sum(u * v, -1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1))
    return lengths, np.stack(cosines, axis=1)


def test_default_rotors_of_alanine_dipeptide_are_phi_and_psi(ala2):
    rotors = find_rotors(ala2.bonds, ala2.atomic_numbers)
    phi, psi = ala2.collective_variables["phi"].atoms, ala2.collective_variables["psi"].atoms
    assert sorted(r.axis for r in rotors) == sorted([tuple(sorted(phi[1:3])), tuple(sorted(psi[1:3]))])
    with_methyls = find_rotors(ala2.bonds, ala2.atomic_numbers, include_terminal=True)
    with_amides = find_rotors(ala2.bonds, ala2.atomic_numbers, include_amides=True)
    assert len(with_methyls) == 5 and len(with_amides) == 4
    for rotor in rotors:  # the smaller side moves
        assert len(rotor.moving) <= ala2.n_atoms // 2


def test_rotors_of_other_molecules():
    # butane: only the central C-C turns a heavy group; with terminal rotors the two methyls too
    carbons = [(0, 1), (1, 2), (2, 3)]
    hydrogens = [(0, 4), (0, 5), (0, 6), (1, 7), (1, 8), (2, 9), (2, 10), (3, 11), (3, 12), (3, 13)]
    z = [6, 6, 6, 6] + [1] * 10
    (rotor,) = find_rotors(carbons + hydrogens, z)
    assert rotor.axis == (1, 2) and rotor.dihedral == (0, 1, 2, 3) and len(rotor.moving) == 6
    assert len(find_rotors(carbons + hydrogens, z, include_terminal=True)) == 3
    # N-methylacetamide's C-N is an amide bond: not a rotor unless asked for
    nma = [(0, 1), (1, 2), (1, 3), (3, 4), (4, 5)] + [(0, 6), (0, 7), (0, 8), (3, 9), (5, 10), (5, 11), (5, 12)]
    z_nma = [6, 6, 8, 7, 6, 6] + [1] * 7  # C-C(=O)-N(H)-C-C
    assert [r.axis for r in find_rotors(nma, z_nma)] == [(3, 4)]
    assert (1, 3) in [r.axis for r in find_rotors(nma, z_nma, include_amides=True)]


def test_rotation_is_rigid_and_turns_exactly_its_dihedral(ala2, perturbed):
    x = perturbed(3)
    rotors = rotors_for(ala2, "cvs")
    angles = np.array([[0.7, -1.1], [2.5, 0.3], [-3.0, 3.0]])
    y = rotate(x, rotors, angles)
    for before, after in zip(_bond_lengths_and_angles(x, ala2.bonds), _bond_lengths_and_angles(y, ala2.bonds)):
        np.testing.assert_allclose(after, before, atol=1e-12)
    cv0, cv1 = ala2.compute_cvs(x), ala2.compute_cvs(y)
    for t, name in enumerate(("phi", "psi")):
        turned = np.angle(np.exp(1j * (cv1[name] - cv0[name])))
        np.testing.assert_allclose(turned, np.angle(np.exp(1j * angles[:, t])), atol=1e-6)
    np.testing.assert_allclose(rotate(rotate(y, rotors[::-1], -angles[:, ::-1]), [], np.zeros((3, 0))), x, atol=1e-12)


def test_torque_is_the_derivative_with_respect_to_the_angle(ala2, perturbed):
    committee = make_small_committee(ala2.atomic_numbers)
    rotors = find_rotors(ala2.bonds, ala2.atomic_numbers, include_terminal=True)
    x = perturbed(2)
    _, forces = committee.energies_and_forces(x)
    g = torques(x, -forces.mean(axis=1), rotors)  # gradient of the mean energy
    h = 1e-5
    for t in range(len(rotors)):
        step = np.zeros((2, len(rotors)))
        step[:, t] = h
        fd = (committee.energies(rotate(x, rotors, step)).mean(1) - committee.energies(rotate(x, rotors, -step)).mean(1)) / (2 * h)
        np.testing.assert_allclose(g[:, t], fd, rtol=1e-5, atol=1e-6)


def test_dihedral_gradient_matches_mdtraj_and_finite_differences(ala2, perturbed):
    x = perturbed(4, scale=0.02)
    atoms = ala2.collective_variables["psi"].atoms
    angle, grad = dihedral_gradient(x, atoms)
    np.testing.assert_allclose(angle, ala2.compute_cvs(x)["psi"], atol=1e-6)
    h = 1e-6
    for q, a in enumerate(atoms):
        for d in range(3):
            plus, minus = x.copy(), x.copy()
            plus[:, a, d] += h
            minus[:, a, d] -= h
            fd = (dihedral_gradient(plus, atoms)[0] - dihedral_gradient(minus, atoms)[0]) / (2 * h)
            np.testing.assert_allclose(grad[:, q, d], fd, rtol=1e-6, atol=1e-6)


def test_dihedrals_that_cannot_be_turned_are_refused():
    ring = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0), (0, 6), (3, 7)]
    with pytest.raises(ValueError, match="in a ring"):
        rotors_for_dihedrals([(6, 0, 1, 2)], ring, 8)
    with pytest.raises(ValueError, match="not bonded"):
        rotors_for_dihedrals([(6, 0, 2, 3)], ring, 8)
    assert find_rotors(ring, [6] * 6 + [1, 1]) == []


def test_cv_density_is_periodic_and_its_gradient_is_exact(ala2, perturbed):
    cvs = [ala2.collective_variables["phi"], ala2.collective_variables["psi"]]
    data = np.array([[-1.4, 1.2], [-1.3, 1.0], [3.1, 3.0]])
    density = CVDensity(cvs, data, bandwidth=0.4)
    assert density.log_density(np.array([[3.1, -3.2]]))[0] == pytest.approx(
        density.log_density(np.array([[3.1 - 2 * np.pi, -3.2 + 2 * np.pi]]))[0])
    assert density.log_density(data[:1])[0] > density.log_density(np.array([[1.0, -1.0]]))[0]
    x = perturbed(2, scale=0.02)
    novelty, grad = density.novelty_and_gradient(x)
    h = 1e-6
    for atom in cvs[0].atoms + cvs[1].atoms:
        plus, minus = x.copy(), x.copy()
        plus[:, atom, 1] += h
        minus[:, atom, 1] -= h
        fd = (density.novelty_and_gradient(plus)[0] - density.novelty_and_gradient(minus)[0]) / (2 * h)
        np.testing.assert_allclose(grad[:, atom, 1], fd, rtol=1e-5, atol=1e-6)
    # the isolated point is the frontier
    assert frontier_indices(density, data, 1).tolist() == [2]
    assert sorted(frontier_indices(density, data, 3, np.random.default_rng(0)).tolist()) == [0, 1, 2]


def test_vdw_clash_check_flags_groups_pushed_together_but_not_thermal_frames(ala2):
    from openmm_adv.data import Dataset
    from openmm_adv.resources import default_dataset_path

    check = GeometryCheck.for_system(ala2, atomic_numbers=ala2.atomic_numbers, vdw_clash_factor=0.6)
    frames = Dataset.load(default_dataset_path()).positions[::10]
    assert check(frames)[0].all()
    # A (phi, psi) grid of rigid rotations: every bond intact and no atoms on top of each other
    # (the basic check passes them all), but some turn groups into each other.
    grid = np.array([[a, b] for a in np.linspace(-np.pi, np.pi, 12) for b in np.linspace(-np.pi, np.pi, 12)])
    turned = rotate(np.repeat(ala2.positions[None], len(grid), 0), rotors_for(ala2, "cvs"), grid)
    assert GeometryCheck.for_system(ala2)(turned)[0].all()
    ok, reasons = check(turned)
    assert 0 < (~ok).sum() < len(grid)
    assert all("van der Waals" in r for r, good in zip(reasons, ok) if not good)


@pytest.fixture(scope="module")
def shipped(ala2):
    from openmm_adv.resources import default_committee_path

    return Committee.load(default_committee_path(), system=ala2)


def test_torsion_gradient_through_openmm_is_the_objective_derivative(ala2, perturbed):
    from openmm_adv.data import Dataset
    from openmm_adv.resources import default_dataset_path

    labelled = Dataset.load(default_dataset_path()).positions[::50]
    committee = make_small_committee(ala2.atomic_numbers, "painn_prior")  # float64: exact differences
    attack = TorsionAttack(committee, ala2, n_steps=1, batch_size=2, novelty_weight=0.5, labelled=labelled,
                           training_energies=[0.0, 5.0], torsions="rotatable", platform="Reference", progress=False)
    attack._build_context(2)
    x = perturbed(2)
    g = torques(x, attack._objective_gradient(x), attack.rotors)
    h = 1e-5
    for t in range(len(attack.rotors)):
        step = np.zeros((2, len(attack.rotors)))
        step[:, t] = h
        fd = (attack._values(rotate(x, attack.rotors, step))[0] - attack._values(rotate(x, attack.rotors, -step))[0]) / (2 * h)
        np.testing.assert_allclose(g[:, t], fd, rtol=1e-6, atol=1e-7)


def test_torsion_attack_climbs_and_keeps_bonds(ala2, shipped):
    from openmm_adv.data import Dataset
    from openmm_adv.resources import default_dataset_path

    data = Dataset.load(default_dataset_path())
    seeds = data.positions[[0, 250, 500, 750]]
    found = TorsionAttack(shipped, ala2, n_steps=20, batch_size=4, progress=False).run(seeds)
    assert len(found) >= 2 and found.sampler == "torsion_attack"
    assert found.info["n_flagged"] == 4 - len(found)
    assert all(found.info["flags"][s] for s in set(range(4)) - set(found.seed_index.tolist()))
    assert (found.info["objective_best"] > found.info["objective_initial"]).all()
    for before, after in zip(_bond_lengths_and_angles(seeds[found.seed_index], ala2.bonds),
                             _bond_lengths_and_angles(found.positions, ala2.bonds)):
        np.testing.assert_allclose(after, before, atol=1e-9)
    assert found.n_force_evaluations >= 4 * 20
    assert found.info["host_seconds_per_step"] > 0


def test_sampler_with_novelty_and_frontier_seeds(ala2, shipped):
    from openmm_adv.data import Dataset
    from openmm_adv.resources import default_dataset_path

    data = Dataset.load(default_dataset_path())
    sampler = TorsionAttackSampler(ala2, seeds="frontier", novelty_weight=1.0, n_steps=10, batch_size=2,
                                   progress=False)
    with pytest.raises(ValueError, match="observe_dataset"):
        sampler.sample(shipped, data.positions[:2])
    sampler.observe_dataset(data.positions[::20])
    found = sampler.sample(shipped, data.positions[:2], np.random.default_rng(0))
    assert found.sampler == "torsion_attack_novelty" and (found.seed_index == -1).all()
    density = CVDensity.from_positions(ala2, data.positions[::20])
    # frontier seeds are sparser than the uniform draw's, and the attack moves further out
    assert np.median(density.novelty_and_gradient(found.positions)[0]) > np.median(
        density.novelty_and_gradient(data.positions[:2])[0])
    with pytest.raises(ValueError, match="needs the labelled"):
        TorsionAttack(shipped, ala2, novelty_weight=1.0)


def test_jitter_dresses_each_found_geometry(ala2, shipped):
    """jitter adds Gaussian noise of that size per coordinate to every found geometry and re-scores it."""
    from openmm_adv.data import Dataset
    from openmm_adv.resources import default_dataset_path

    seeds = Dataset.load(default_dataset_path()).positions[:3]
    common = dict(n_steps=5, batch_size=3, refine_steps=0, progress=False)
    plain = TorsionAttackSampler(ala2, **common).sample(shipped, seeds, np.random.default_rng(0))
    shaken = TorsionAttackSampler(ala2, jitter=0.005, **common).sample(shipped, seeds, np.random.default_rng(0))
    assert len(shaken) == len(plain) and shaken.seed_index.tolist() == plain.seed_index.tolist()
    rms = np.sqrt(np.mean((shaken.positions - plain.positions) ** 2))
    assert rms == pytest.approx(0.005, rel=0.25)
    np.testing.assert_allclose(shaken.uncertainty, shipped.uncertainty(shaken.positions), rtol=1e-3)
    assert shaken.n_force_evaluations > plain.n_force_evaluations and shaken.info["jitter_nm"] == 0.005
    with pytest.raises(ValueError, match="jitter"):
        TorsionAttackSampler(ala2, jitter=-1.0)


def test_frontier_seeds_use_their_own_bandwidth(ala2, shipped, monkeypatch):
    """The frontier is read at ``frontier_bandwidth`` while the novelty term keeps its own."""
    import openmm_adv.samplers.torsion_attack as module
    from openmm_adv.data import Dataset
    from openmm_adv.resources import default_dataset_path

    seen = []

    def record(density, values, n, rng=None):
        seen.append(density.bandwidth)
        return np.arange(n)

    class NoAttack:
        def __init__(self, committee, system, labelled=None, novelty_bandwidth=None, **options):
            seen.append(novelty_bandwidth)

        def run(self, positions):
            raise StopIteration

    monkeypatch.setattr(module, "frontier_indices", record)
    monkeypatch.setattr(module, "TorsionAttack", NoAttack)
    data = Dataset.load(default_dataset_path()).positions[::50]
    for frontier_bandwidth, expected in ((0.5, 0.5), (None, 0.1)):
        seen.clear()
        sampler = TorsionAttackSampler(ala2, seeds="frontier", frontier_bandwidth=frontier_bandwidth,
                                       novelty_weight=1.0, novelty_bandwidth=0.1)
        sampler.observe_dataset(data)
        with pytest.raises(StopIteration):
            sampler.sample(shipped, data[:2])
        assert np.allclose(seen[0], expected) and seen[1] == 0.1
    with pytest.raises(ValueError, match="frontier_bandwidth"):
        TorsionAttackSampler(ala2, seeds="frontier", frontier_bandwidth=0.0)


def test_torsion_attack_from_a_config_section(ala2):
    from openmm_adv.builders import build_samplers
    from openmm_adv.config import SAMPLER_CONFIGS, ConfigError, parse_section

    section = parse_section(SAMPLER_CONFIGS["torsion_attack"],
                            {"novelty_weight": 1.0, "seeds": "frontier", "torsions": [[4, 6, 8, 14]]})
    (sampler,) = build_samplers({"torsion_attack": section}, ala2, progress=False)
    assert sampler.name == "torsion_attack_novelty" and sampler.seeds == "frontier"
    assert [r.dihedral for r in rotors_for(ala2, section.torsions)] == [(4, 6, 8, 14)]
    for bad, message in (({"torsions": "all"}, "rotatable"), ({"torsions": [[4, 6, 10, 14]]}, "not bonded"),
                         ({"seeds": "edge"}, "not allowed|one of")):
        with pytest.raises(ConfigError, match=message):
            build_samplers({"torsion_attack": parse_section(SAMPLER_CONFIGS["torsion_attack"], bad)}, ala2)


def test_capped_novelty_is_bounded_and_its_gradient_exact(ala2, perturbed):
    cvs = [ala2.collective_variables["phi"], ala2.collective_variables["psi"]]
    data = np.array([[-1.4, 1.2], [-1.3, 1.0]])
    capped, free = CVDensity(cvs, data, bandwidth=0.35, cap=3.0), CVDensity(cvs, data, bandwidth=0.35)
    far = np.array([[1.2, -1.2]])
    # far from the data the unbounded novelty grows with distance, the capped one stops at the cap
    assert -free.log_density(far)[0] > 20
    assert -capped.log_density(far)[0] == pytest.approx(3.0, abs=1e-3)
    # on a labelled point both are about -log(kernel sum) (the cap changes almost nothing there)
    assert -capped.log_density(data[:1])[0] == pytest.approx(-free.log_density(data[:1])[0], abs=0.06)
    x = perturbed(2, scale=0.02)
    for spread in (False, True):
        _, grad = capped.novelty_and_gradient(x, spread=spread)
        h = 1e-6
        for atom in cvs[0].atoms:
            plus, minus = x.copy(), x.copy()
            plus[0, atom, 2] += h
            minus[0, atom, 2] -= h
            # replica 1 held fixed: the spread term's gradient for replica 0 is exact too
            fd = (capped.novelty_and_gradient(plus, spread)[0][0] - capped.novelty_and_gradient(minus, spread)[0][0]) / (2 * h)
            assert grad[0, atom, 2] == pytest.approx(fd, rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="cap must be positive"):
        CVDensity(cvs, data, cap=0.0)


def test_spread_counts_the_other_replicas_as_labelled(ala2, perturbed):
    cvs = [ala2.collective_variables["phi"], ala2.collective_variables["psi"]]
    density = CVDensity(cvs, np.array([[1.2, -1.2]]), bandwidth=0.35, cap=4.0)  # data in C7ax
    x = perturbed(1, scale=0.0)  # the C7eq geometry
    twins = np.concatenate([x, x])  # two replicas on the same spot, far from the data
    alone, _ = density.novelty_and_gradient(twins, spread=False)
    together, _ = density.novelty_and_gradient(twins, spread=True)
    assert alone[0] == pytest.approx(alone[1]) and alone[0] > 3.9
    # each twin counts the other as a labelled point on top of it: novelty about -log(1 + S)
    assert together[0] == pytest.approx(-np.log(np.exp(-alone[0]) + 1.0), abs=1e-9)
    assert together[0] < alone[0] - 0.5
    # a padding replica (a copy of a real one) is not counted: the real one sees only the data
    padded, _ = density.novelty_and_gradient(twins, spread=np.array([True, False]))
    assert padded[0] == pytest.approx(alone[0]) and padded[1] == pytest.approx(together[1])


def test_max_turn_bounds_every_angle_from_its_seed(ala2, shipped):
    from openmm_adv.data import Dataset
    from openmm_adv.resources import default_dataset_path

    seeds = Dataset.load(default_dataset_path()).positions[[0, 400]]
    free = TorsionAttack(shipped, ala2, n_steps=30, batch_size=2, step_size=0.1, torsions="cvs",
                         progress=False).run(seeds)
    bounded = TorsionAttack(shipped, ala2, n_steps=30, batch_size=2, step_size=0.1, torsions="cvs", max_turn=0.1,
                            progress=False).run(seeds)

    def turn(found):
        after, before = ala2.compute_cvs(found.positions), ala2.compute_cvs(seeds[found.seed_index])
        return np.abs(np.angle(np.exp(1j * np.stack([after[k] - before[k] for k in ("phi", "psi")]))))

    assert turn(free).max() > 0.2  # unbounded, 30 steps of 0.1 rad go further
    assert len(bounded) and turn(bounded).max() <= 0.1 + 1e-5  # float32 positions
    with pytest.raises(ValueError, match="max_turn"):
        TorsionAttack(shipped, ala2, max_turn=0.0)
