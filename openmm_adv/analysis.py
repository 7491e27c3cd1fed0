"""Metrics of a sampling study: test errors, phi/psi coverage, basins found, NN-MD stability.

Plain functions over arrays (as mdtraj's analysis functions are), so reports and notebooks can
call them on any committee and dataset.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "test_set_errors",
    "accuracy_and_calibration",
    "ramachandran_bins",
    "coverage",
    "basins_found",
    "nn_md_stability",
]

BIN_DEG = 10.0


def test_set_errors(committee, test_positions, test_energies, test_forces, basins=None, batch_size: int = 256) -> dict:
    """Committee-mean errors on a labelled test set (kJ/mol, kJ/mol/nm).

    Returns ``force_rmse``, ``force_mae`` (over every force component), ``energy_mae`` and
    ``energy_mae_shifted`` (after removing the mean energy offset, which a committee trained on
    a narrow energy range may carry without being wrong about forces). With ``basins`` (a name
    per structure, ``""`` for none), also ``per_basin`` errors.
    """
    energies, forces, _ = committee.evaluate_in_batches(np.asarray(test_positions), batch_size=batch_size)
    de = np.asarray(energies) - np.asarray(test_energies)
    df = np.asarray(forces) - np.asarray(test_forces)

    def block(mask) -> dict:
        if not mask.any():
            return {"n": 0}
        return {
            "n": int(mask.sum()),
            "force_rmse": float(np.sqrt(np.mean(df[mask] ** 2))),
            "force_mae": float(np.mean(np.abs(df[mask]))),
            "energy_mae": float(np.mean(np.abs(de[mask]))),
            "energy_mae_shifted": float(np.mean(np.abs(de[mask] - np.mean(de)))),
        }

    out = block(np.ones(len(de), dtype=bool))
    if basins is not None:
        basins = np.asarray(basins)
        out["per_basin"] = {name: block(basins == name) for name in sorted(set(basins.tolist())) if name}
    return out


def accuracy_and_calibration(committee, test_positions, test_energies, test_forces, groups=None,
                             reference_group: str | None = None, metric: str = "force_variance",
                             batch_size: int = 256) -> dict:
    """Committee-mean errors (overall and per group) and how well the uncertainty ranks them.

    Parameters
    ----------
    committee : Committee
    test_positions, test_energies, test_forces : array_like
        A labelled test set (nm, kJ/mol, kJ/mol/nm).
    groups : array_like of str, optional
        A group name per structure (e.g. the phi/psi basin; ``""`` for none).
    reference_group : str, optional
        The group the committee was trained in: uncertainties of the other groups are reported
        relative to its median.
    metric : str
        The uncertainty metric (see :mod:`openmm_adv.models.uncertainty`).

    Returns
    -------
    dict
        ``errors`` (as :func:`test_set_errors`, with ``member_force_mae`` per member and
        ``per_group`` errors), ``calibration`` (:func:`openmm_adv.calibration.calibration_report`
        of the uncertainty against each structure's RMS force error), ``median_uncertainty``
        per group.
    """
    from .calibration import calibration_report, per_frame_force_rmse
    from .models.uncertainty import uncertainty as uncertainty_of

    import torch

    x = np.asarray(test_positions)
    e_ref, f_ref = np.asarray(test_energies, dtype=np.float64), np.asarray(test_forces, dtype=np.float64)
    e_mean, f_mean, u, member_f_abs = [], [], [], []
    for s in range(0, len(x), batch_size):
        e, f = committee.energies_and_forces(x[s : s + batch_size])
        e_mean.append(e.mean(1))
        f_mean.append(f.mean(1))
        u.append(uncertainty_of(torch.from_numpy(e), torch.from_numpy(f), metric).numpy())
        member_f_abs.append(np.abs(f - f_ref[s : s + batch_size, None]).mean(axis=(2, 3)))
    e_mean, f_mean, u = np.concatenate(e_mean), np.concatenate(f_mean), np.concatenate(u)
    member_f_abs = np.concatenate(member_f_abs)  # [S, M]
    de, df = e_mean - e_ref, f_mean - f_ref

    def block(mask) -> dict:
        return {
            "n": int(mask.sum()),
            "force_mae": float(np.mean(np.abs(df[mask]))),
            "force_rmse": float(np.sqrt(np.mean(df[mask] ** 2))),
            "energy_mae_shifted": float(np.mean(np.abs(de[mask] - np.mean(de)))),
            "member_force_mae": [float(v) for v in member_f_abs[mask].mean(0)],
        }

    everything = np.ones(len(x), dtype=bool)
    errors = block(everything)
    errors["energy_mae"] = float(np.mean(np.abs(de)))
    out = {"metric": metric, "errors": errors}
    err = per_frame_force_rmse(f_mean, f_ref)
    out["calibration"] = calibration_report(u, err, groups, reference_group)
    if groups is not None:
        groups = np.asarray(groups)
        names = [g for g in sorted(set(groups.tolist())) if g]
        errors["per_group"] = {g: block(groups == g) for g in names}
        out["median_uncertainty"] = {g: float(np.median(u[groups == g])) for g in names}
    return out


def ramachandran_bins(phi_deg, psi_deg, bin_deg: float = BIN_DEG) -> np.ndarray:
    """Occupancy ``[n, n]`` (bool) of ``bin_deg`` phi/psi bins on [-180, 180)."""
    n = int(round(360.0 / bin_deg))
    i = (np.floor((np.asarray(phi_deg) + 180.0) / bin_deg).astype(int)) % n
    j = (np.floor((np.asarray(psi_deg) + 180.0) / bin_deg).astype(int)) % n
    grid = np.zeros((n, n), dtype=bool)
    grid[i, j] = True
    return grid


def coverage(phi_deg, psi_deg, accessible: np.ndarray) -> float:
    """Fraction of the ``accessible`` bins (reference free energy below a cutoff) holding data."""
    accessible = np.asarray(accessible, dtype=bool)
    if not accessible.any():
        raise ValueError("no accessible bins: raise the free-energy cutoff")
    occupied = ramachandran_bins(phi_deg, psi_deg, 360.0 / accessible.shape[0])
    return float((occupied & accessible).sum() / accessible.sum())


def basins_found(basin_names, all_basins) -> dict:
    """How many labelled structures sit in each basin (``basin_names`` from ``assign_basin``)."""
    names = np.asarray(basin_names)
    return {basin: int((names == basin).sum()) for basin in all_basins}


STABILITY_TIMESTEP_PS = 0.0005  # 0.5 fs: the system has no constraints, so X-H bonds vibrate freely


def nn_md_stability(committee, system, seeds, temperature: float = 300.0, timestep: float = STABILITY_TIMESTEP_PS,
                    n_steps: int = 20000, check_interval: int = 100, seed: int = 0, platform: str = "CPU") -> dict:
    """How long Langevin MD on the committee mean stays physical, per seed (ps).

    All seeds run as non-interacting replicas in one Context; a replica "fails" at the first
    check where a bond leaves 0.7-1.5x its reference length, atoms clash or a coordinate is
    not finite (:class:`~openmm_adv.geometry.GeometryCheck`). Returns per-replica survival
    times (``n_steps * timestep`` for a replica that never failed), their median and the
    fraction that survived.
    """
    import openmm
    from openmm import unit

    from .forces import mean_energy_force
    from .geometry import GeometryCheck

    seeds = np.asarray(seeds, dtype=np.float64)
    b, n = seeds.shape[0], seeds.shape[1]
    check = GeometryCheck.for_system(system)
    omm = openmm.System()
    for _ in range(b):
        for mass in system.masses:
            omm.addParticle(float(mass))
    omm.addForce(mean_energy_force(committee, n_replicas=b, force_group=0))
    integrator = openmm.LangevinMiddleIntegrator(temperature, 1.0, timestep)
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(omm, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(seeds.reshape(-1, 3))
    context.setVelocitiesToTemperature(temperature, seed + 1)
    survived = np.full(b, n_steps * timestep)
    alive = np.ones(b, dtype=bool)
    done = 0
    while done < n_steps and alive.any():
        try:
            integrator.step(check_interval)
        except openmm.OpenMMException:
            survived[alive] = done * timestep
            alive[:] = False
            break
        done += check_interval
        state = context.getState(getPositions=True, getVelocities=True)
        x = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)).reshape(b, n, 3)
        ok, _ = check(x)
        newly = alive & ~ok
        survived[newly] = done * timestep
        alive &= ok
        if newly.any():
            # Park failed replicas at their seed, at rest, so a replica blowing up cannot end
            # the run (an OpenMM NaN error) for the replicas that are still physical.
            v = np.asarray(state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)).reshape(b, n, 3)
            x[newly], v[newly] = seeds[newly], 0.0
            context.setPositions(x.reshape(-1, 3))
            context.setVelocities(v.reshape(-1, 3))
    return {
        "survival_ps": survived.tolist(),
        "median_survival_ps": float(np.median(survived)),
        "fraction_stable": float(alive.mean()),
        "simulated_ps": float(n_steps * timestep),
    }
