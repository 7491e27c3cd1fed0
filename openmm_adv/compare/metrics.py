"""Per-generation metrics of one comparison loop (alanine dipeptide or a 2D toy)."""

from __future__ import annotations

import numpy as np

from ..analysis import basins_found, coverage, nn_md_stability, test_set_errors
from ..fes import fes_by_reweighting
from ..data import Dataset
from ..models.committee import Committee

__all__ = ["generation_metrics", "toy_grid"]


def _committee_after(loop, generation: int, n_generations: int):
    """The committee trained on the data of generations 0..``generation``."""
    if generation == n_generations:
        return loop.run_dir / "final" / "committee.pt"
    return loop.generation_dir(generation + 1) / "committee.pt"


def _cumulative_costs(log: list[dict], generation: int) -> dict:
    records = [r for r in log if isinstance(r.get("generation"), int) and r["generation"] <= generation]
    stages = ("train", "sample", "select", "label")
    return {
        # Labels plus the reference evaluations a sampler made itself (reference MD's steps):
        # both cost one call of the ground truth each.
        "oracle_calls": int(sum(r["oracle_calls"] + sum(s.get("oracle_calls", 0) for s in r["samplers"].values())
                                for r in records)),
        "label_calls": int(sum(r["oracle_calls"] for r in records)),
        "oracle_failures": int(sum(r["oracle_failures"] for r in records)),
        "force_evaluations": int(sum(s["force_evaluations"] for r in records for s in r["samplers"].values())),
        **{f"seconds_{stage}": float(sum(r["stage_seconds"][stage] for r in records)) for stage in stages},
    }


def toy_grid(system, points: int, cutoff: float):
    """Grid points of a 2D toy whose true energy is within ``cutoff`` of the grid minimum."""
    from ..systems import toy_energy

    x = np.linspace(-1.6, 1.6, points)
    y = np.linspace(-0.8, 0.8, max(4, points // 2))
    xy = np.stack(np.meshgrid(x, y, indexing="ij"), -1).reshape(-1, 2)
    energy = toy_energy(system, xy)
    keep = energy - energy.min() < cutoff
    positions = np.concatenate([xy[keep], np.zeros((int(keep.sum()), 1))], 1)[:, None, :]
    return positions


def generation_metrics(loop, metrics_config, system, log: list[dict]) -> list[dict]:
    """One row per generation 0..G: test errors of the committee trained on the data so far,
    coverage, basins, costs; the last row adds NN-MD stability of the final committee."""
    n_generations = max(r["generation"] for r in log if isinstance(r.get("generation"), int))
    data = Dataset.load(loop.dataset_path)
    generation_of = data.provenance["generation"]
    if system.name == "alanine_dipeptide":
        from ..reference_data import assign_basin, load_reference_fes, load_test_set

        fes = load_reference_fes()
        accessible = fes.accessible_bins(metrics_config.fes_cutoff)
        test = load_test_set()
        test_cvs = system.compute_cvs(test.positions)
        test_basins = assign_basin(np.degrees(test_cvs["phi"]), np.degrees(test_cvs["psi"]))
        cvs = system.compute_cvs(data.positions)
        phi, psi = np.degrees(cvs["phi"]), np.degrees(cvs["psi"])
        data_basins = assign_basin(phi, psi)
        basin_names = list(fes.basin_free_energies())
    else:
        grid = toy_grid(system, metrics_config.grid_points, metrics_config.grid_cutoff)
        grid_e, grid_f = system.reference_energies_forces(grid)
    rows = []
    for g in range(n_generations + 1):
        committee = Committee.load(_committee_after(loop, g, n_generations), system=system)
        mask = generation_of <= g
        new = (generation_of >= 1) & mask
        row = {"generation": g, "dataset_size": int(mask.sum()), "new_labels": int(new.sum()),
               **_cumulative_costs(log, g)}
        if system.name == "alanine_dipeptide":
            errors = test_set_errors(committee, test.positions, test.energies, test.forces, basins=test_basins)
            row.update({k: v for k, v in errors.items() if k != "per_basin"})
            for basin, values in errors.get("per_basin", {}).items():
                row[f"force_rmse_{basin}"] = values.get("force_rmse")
            row["coverage"] = coverage(phi[mask], psi[mask], accessible)
            found = basins_found(data_basins[mask], basin_names)
            row["basins_found"] = int(sum(1 for n in found.values() if n > 0))
            row.update({f"labels_{basin}": n for basin, n in found.items()})
        else:
            energies, forces, _ = committee.evaluate_in_batches(grid)
            error = energies - grid_e
            row["energy_rmse"] = float(np.sqrt(np.mean(error**2)))
            # A constant offset changes no force and no Boltzmann weight: report the error without it too.
            row["energy_rmse_shifted"] = float(np.sqrt(np.mean((error - error.mean()) ** 2)))
            row["force_rmse"] = float(np.sqrt(np.mean((forces - grid_f)[..., :2] ** 2)))
            sampled = data.energies[new]
            row["sampled_energy_median"] = float(np.median(sampled)) if sampled.size else None
        if g == n_generations and system.name == "alanine_dipeptide":
            # Free-energy fidelity of the final committee: the test frames reweighted (openmm_adv.fes).
            energies, _, _ = committee.evaluate_in_batches(test.positions)
            test_cvs_deg = np.degrees(test_cvs["phi"]), np.degrees(test_cvs["psi"])
            fidelity = fes_by_reweighting(energies, test.energies, *test_cvs_deg, fes,
                                          cutoff_kj_mol=metrics_config.fes_cutoff)
            row.update(fes_rmse=fidelity["rmse_kj_mol"], fes_rmse_kT=fidelity["rmse_kT"],
                       fes_median_ess=fidelity["median_ess"], fes_bins=fidelity["n_bins"])
            for basin, values in fidelity["basins"].items():
                row[f"fes_error_{basin}"] = values["error_kj_mol"]
        if g == n_generations and metrics_config.stability_steps > 0 and system.name == "alanine_dipeptide":
            pick = _stability_seeds(test_basins, metrics_config.stability_seeds)
            stability = nn_md_stability(committee, system, test.positions[pick], n_steps=metrics_config.stability_steps,
                                        timestep=metrics_config.stability_timestep_fs / 1000.0, seed=0)
            row["stable_fraction"] = stability["fraction_stable"]
            row["median_survival_ps"] = stability["median_survival_ps"]
        rows.append(row)
    return rows


def _stability_seeds(basins: np.ndarray, n: int) -> np.ndarray:
    """``n`` test frames spread over the basins in turn (deterministic)."""
    names = [b for b in sorted(set(basins.tolist())) if b]
    order = [np.flatnonzero(basins == b) for b in names]
    pick = []
    k = 0
    while len(pick) < n and any(len(o) > k for o in order):
        for o in order:
            if len(o) > k and len(pick) < n:
                pick.append(o[k])
        k += 1
    return np.asarray(pick, dtype=np.int64)
