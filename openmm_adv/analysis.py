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

    x = np.asarray(test_positions)
    e_ref, f_ref = np.asarray(test_energies, dtype=np.float64), np.asarray(test_forces, dtype=np.float64)
    e_mean, f_mean, u, member_f_abs = [], [], [], []
    for s in range(0, len(x), batch_size):
        e, f, value = committee.energies_forces_uncertainty(x[s : s + batch_size], metric)
        e_mean.append(e.mean(1))
        f_mean.append(f.mean(1))
        u.append(value)
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
    not finite (:class:`~openmm_adv.geometry.GeometryCheck`). A failed replica is frozen at its
    seed (mass 0), so it cannot end the run for the others. When OpenMM itself stops (NaN
    positions inside a check interval), the run goes back to the last check, retries the
    interval one step at a time and, if a single step still fails, retires the replica with the
    largest committee force there: one replica blowing up never counts the others as failed.
    Returns per-replica survival times (``n_steps * timestep`` for a replica that never failed),
    their median and the fraction that survived.
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
    nm, nm_ps = unit.nanometer, unit.nanometer / unit.picosecond

    def snapshot():
        state = context.getState(getPositions=True, getVelocities=True)
        return (np.asarray(state.getPositions(asNumpy=True).value_in_unit(nm)).reshape(b, n, 3),
                np.asarray(state.getVelocities(asNumpy=True).value_in_unit(nm_ps)).reshape(b, n, 3))

    def restore(x, v):
        context.setPositions(x.reshape(-1, 3))
        context.setVelocities(v.reshape(-1, 3))

    def retire(replicas, x, v, at_step):
        survived[replicas] = at_step * timestep
        alive[replicas] = False
        # Freeze retired replicas at their seed (mass 0: the integrator leaves them alone), so
        # a replica whose seed is itself unstable cannot blow up again.
        x[replicas], v[replicas] = seeds[replicas], 0.0
        for r in np.atleast_1d(replicas).nonzero()[0] if np.asarray(replicas).dtype == bool else np.atleast_1d(replicas):
            for atom in range(n):
                omm.setParticleMass(int(r) * n + atom, 0.0)
        context.reinitialize(preserveState=True)
        restore(x, v)

    def check_and_retire(at_step):
        x, v = snapshot()
        ok, _ = check(x)
        ok &= np.isfinite(v).all(axis=(1, 2))
        newly = alive & ~ok
        if newly.any():
            retire(newly, x, v, at_step)
        return x, v

    good_x, good_v = snapshot()
    done = 0
    while done < n_steps and alive.any():
        steps = min(check_interval, n_steps - done)
        try:
            integrator.step(steps)
            done += steps
            good_x, good_v = check_and_retire(done)
            continue
        except openmm.OpenMMException:
            restore(good_x, good_v)
        # Retry the interval step by step to find when, and which replica, fails.
        target = done + steps
        while done < target and alive.any():
            try:
                integrator.step(1)
                done += 1
                good_x, good_v = check_and_retire(done)
            except openmm.OpenMMException:
                # The replica that will blow up: the largest committee force, or, where the
                # committee cannot even be evaluated, the fastest atom.
                try:
                    _, forces = committee.energies_and_forces(good_x)
                    worst = np.nan_to_num(np.abs(forces.mean(axis=1)).max(axis=(1, 2)), nan=np.inf)
                except ValueError:
                    worst = np.nan_to_num(np.abs(good_v).max(axis=(1, 2)), nan=np.inf)
                worst[~alive] = -np.inf
                retire(np.array([int(np.argmax(worst))]), good_x, good_v, done)
    return {
        "survival_ps": survived.tolist(),
        "median_survival_ps": float(np.median(survived)),
        "fraction_stable": float(alive.mean()),
        "simulated_ps": float(n_steps * timestep),
    }
