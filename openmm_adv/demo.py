"""The main job: batched attacks on alanine dipeptide with the shipped committee."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

from ._torch import configure_threads
from .data import Dataset, write_extxyz
from .models import Committee
from .plots import ramachandran_attack_plot
from .resources import default_committee_path, default_dataset_path
from .samplers import Attack
from .systems import alanine_dipeptide

__all__ = ["run_demo"]


def run_demo(
    output_dir: str | Path = "demo_output",
    n_seeds: int = 16,
    n_steps: int = 150,
    kT: float = 20.9,
    step_size: float = 0.004,
    platform: str = "CPU",
    threads: int | None = None,
    seed: int = 0,
    committee_path: str | Path | None = None,
    progress: bool = True,
    echo=print,
) -> dict:
    """Attack ``n_seeds`` C7eq geometries from the shipped training data in one batch.

    Writes ``ramachandran.png``, ``attacked.pdb`` (one MODEL per valid attack), ``attacked.extxyz``
    (with Amber labels) and ``summary.json`` to ``output_dir``, prints a table and returns the
    summary. ``kT`` is in kJ/mol (20.9 kJ/mol = 5 kcal/mol, a value of the original paper).

    Raises
    ------
    ValueError
        Before any work, for settings out of range (``n_seeds`` beyond the shipped frames), a
        platform OpenMM cannot run here, or an output folder that cannot be written.
    """
    from .outputs import check_writable_folder
    from .platforms import check_platform

    t0 = time.perf_counter()
    data = Dataset.load(default_dataset_path())
    if not 1 <= int(n_seeds) <= len(data):
        raise ValueError(f"--seeds must be between 1 and {len(data)} (the shipped frames the seeds are drawn from), "
                         f"got {n_seeds}")
    for flag, value in (("--steps", n_steps), ("--kT", kT), ("--step-size", step_size)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{flag} must be a positive number, got {value}")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    check_platform(platform, "--platform")
    out = check_writable_folder(output_dir, "--output folder")
    configure_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    system = alanine_dipeptide()
    committee = Committee.load(committee_path or default_committee_path(), system=system)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(data), size=n_seeds, replace=False))
    seeds = data.positions[pick]

    attack = Attack(
        committee, kT=kT, n_steps=n_steps, step_size=step_size, optimizer="adam", objective="log",
        batch_size=n_seeds, geometry_check=system, platform=platform, report_interval=5, progress=progress,
    )
    result = attack.run(seeds)
    valid = result.valid

    ref_seed, ref_seed_forces = system.reference_energies_forces(seeds)
    ref_att, ref_forces = system.reference_energies_forces(result.positions)
    cv_seed = np.degrees(np.stack([system.compute_cvs(seeds)[k] for k in ("phi", "psi")], 1))
    cv_att = np.degrees(np.stack([system.compute_cvs(result.positions)[k] for k in ("phi", "psi")], 1))
    committee_seed = result.energy_initial
    committee_att = result.energy_best
    f_mean = committee.evaluate_in_batches(result.positions)[1]
    force_err = np.sqrt(((f_mean - ref_forces) ** 2).mean(axis=(1, 2)))
    f_mean_seed = committee.evaluate_in_batches(seeds)[1]
    force_err_seed = np.sqrt(((f_mean_seed - ref_seed_forces) ** 2).mean(axis=(1, 2)))

    unit_u = "(kJ/mol/nm)^2"
    echo(f"openmm-adv demo: {n_seeds} C7eq seeds, {n_steps} Adam steps, kT = {kT:g} kJ/mol, platform {platform}")
    header = (f"{'#':>3} {'phi0':>6} {'psi0':>6} {'phi':>6} {'psi':>6} {'U before':>10} {'U after':>10} "
              f"{'E_NN':>9} {'E_ref':>9} {'E err':>7} {'F rmse':>7}  status")
    echo(header)
    echo("-" * len(header))
    for k in range(n_seeds):
        status = "ok" if valid[k] else f"flagged: {result.flags[k]}"
        echo(f"{k:3d} {cv_seed[k, 0]:6.0f} {cv_seed[k, 1]:6.0f} {cv_att[k, 0]:6.0f} {cv_att[k, 1]:6.0f} "
             f"{result.uncertainty_initial[k]:10.1f} {result.uncertainty_best[k]:10.1f} "
             f"{committee_att[k]:9.1f} {ref_att[k]:9.1f} {committee_att[k] - ref_att[k]:7.1f} {force_err[k]:7.1f}  {status}")
    echo("-" * len(header))
    echo(f"U = force variance over members {unit_u}; energies kJ/mol; F rmse = committee-mean force error, kJ/mol/nm")
    n_ok = int(valid.sum())
    ratio = np.median(result.uncertainty_best[valid] / result.uncertainty_initial[valid]) if n_ok else float("nan")
    echo(f"valid attacks: {n_ok}/{n_seeds}; median uncertainty gain {ratio:.1f}x; "
         f"median |E err| seeds {np.median(np.abs(committee_seed - ref_seed)):.2f} -> attacked "
         f"{np.median(np.abs(committee_att - ref_att)[valid]) if n_ok else float('nan'):.2f} kJ/mol; "
         f"median force rmse {np.median(force_err_seed):.1f} -> {np.median(force_err[valid]) if n_ok else float('nan'):.1f} kJ/mol/nm")

    background = np.degrees(np.stack([system.compute_cvs(data.positions)[k] for k in ("phi", "psi")], 1))
    png = ramachandran_attack_plot(
        out / "ramachandran.png", cv_seed, cv_att, valid, background,
        title=f"Attacks on the shipped committee (kT = {kT:g} kJ/mol, {n_steps} steps)",
    )
    keep = np.flatnonzero(valid)
    with open(out / "attacked.pdb", "w") as handle:
        app.PDBFile.writeHeader(system.topology, handle)
        for model, k in enumerate(keep):
            app.PDBFile.writeModel(system.topology, result.positions[k] * 10 * unit.angstrom, handle, modelIndex=model + 1)
        app.PDBFile.writeFooter(system.topology, handle)
    write_extxyz(out / "attacked.extxyz", system.atomic_numbers, result.positions[keep], ref_att[keep], ref_forces[keep],
                 info={"uncertainty": result.uncertainty_best[keep], "seed_frame": pick[keep]})
    summary = {
        "n_seeds": n_seeds, "n_steps": n_steps, "kT_kj_mol": kT, "platform": platform, "valid": n_ok,
        "median_uncertainty_gain": float(ratio),
        "attack_seconds": result.wall_seconds, "total_seconds": time.perf_counter() - t0,
        "per_replica": [
            {"seed_frame": int(pick[k]), "phi0": float(cv_seed[k, 0]), "psi0": float(cv_seed[k, 1]),
             "phi": float(cv_att[k, 0]), "psi": float(cv_att[k, 1]),
             "uncertainty_before": float(result.uncertainty_initial[k]), "uncertainty_after": float(result.uncertainty_best[k]),
             "energy_committee": float(committee_att[k]), "energy_reference": float(ref_att[k]),
             "force_rmse": float(force_err[k]), "valid": bool(valid[k]), "flag": result.flags[k]}
            for k in range(n_seeds)
        ],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    echo(f"wrote {png}, {out / 'attacked.pdb'}, {out / 'attacked.extxyz'}, {out / 'summary.json'} "
         f"(attack {result.wall_seconds:.1f} s, total {summary['total_seconds']:.1f} s)")
    return summary
