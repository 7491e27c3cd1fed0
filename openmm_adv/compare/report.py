"""REPORT.md, CSV/JSON and figures of a comparison."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..data import Dataset  # noqa: E402
from ..loop import read_log  # noqa: E402

__all__ = ["write_report", "spread"]


def spread(values) -> tuple[float, float, float]:
    """Median and interquartile range (25th, 75th percentiles), ignoring missing values."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return (float("nan"),) * 3
    return float(np.median(v)), float(np.percentile(v, 25)), float(np.percentile(v, 75))


def _fmt(values, digits: int = 1) -> str:
    median, q1, q3 = spread(values)
    if np.isnan(median):
        return "n/a"
    if q1 == q3:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} [{q1:.{digits}f}, {q3:.{digits}f}]"


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def _series(rows, sampler, key, x_key):
    """Per-generation median and IQR over repeats of ``key``, against the median of ``x_key``."""
    generations = sorted({r["generation"] for r in rows if r["sampler"] == sampler})
    x, med, lo, hi = [], [], [], []
    for g in generations:
        sel = [r for r in rows if r["sampler"] == sampler and r["generation"] == g]
        m, a, b = spread([r.get(key) for r in sel])
        x.append(spread([r.get(x_key) for r in sel])[0])
        med.append(m), lo.append(a), hi.append(b)
    return np.array(x), np.array(med), np.array(lo), np.array(hi)


def _line_plot(path: Path, rows, samplers, key, ylabel, x_key="oracle_calls", xlabel="oracle calls beyond the initial data",
               title=None, log=False) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in samplers:
        x, med, lo, hi = _series(rows, name, key, x_key)
        if np.all(np.isnan(med)):
            continue
        line, = ax.plot(x, med, marker="o", ms=3, label=name)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.set_title(title or f"{ylabel} (median, interquartile band over repeats)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _ramachandran_grid(path: Path, protocol, points: dict) -> Path:
    from ..reference_data import load_reference_fes
    from ..systems import alanine_dipeptide

    system = alanine_dipeptide()
    fes = load_reference_fes()
    samplers = list(protocol.samplers)
    cols = min(4, len(samplers))
    rows = int(np.ceil(len(samplers) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.1 * rows), squeeze=False)
    centres_phi = 0.5 * (fes.phi_edges[1:] + fes.phi_edges[:-1])
    centres_psi = 0.5 * (fes.psi_edges[1:] + fes.psi_edges[:-1])
    for ax, name in zip(axes.flat, samplers):
        ax.contourf(centres_phi, centres_psi, np.clip(fes.free_energy.T, 0, 50), levels=np.arange(0, 52.5, 5),
                    cmap="Greys_r", alpha=0.8)
        data = Dataset.load(points[(name, 0)])
        cvs = system.compute_cvs(data.positions)
        generation = data.provenance["generation"]
        initial = generation == 0
        ax.scatter(np.degrees(cvs["phi"][initial]), np.degrees(cvs["psi"][initial]), s=3, c="tab:blue", label="initial")
        sc = ax.scatter(np.degrees(cvs["phi"][~initial]), np.degrees(cvs["psi"][~initial]), s=6,
                        c=generation[~initial], cmap="autumn", label="labelled")
        ax.set_title(f"{name} (repeat 0)", fontsize=9)
        ax.set_xlim(-180, 180), ax.set_ylim(-180, 180)
        ax.set_xlabel("phi (deg)", fontsize=8), ax.set_ylabel("psi (deg)", fontsize=8)
    for ax in list(axes.flat)[len(samplers):]:
        ax.axis("off")
    fig.suptitle("Labelled points over the reference free-energy surface (grey: 0-50 kJ/mol; colour: generation)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _by_generation(rows, samplers, value, digits: int = 1) -> list[str]:
    """A samplers x generations table of the median over repeats of ``value(row, previous_row)``."""
    generations = sorted({r["generation"] for r in rows})
    lines = ["| sampler | " + " | ".join(f"g{g}" for g in generations) + " |", "|---|" + "---|" * len(generations)]
    for name in samplers:
        cells = []
        for g in generations:
            values = []
            for r in [r for r in rows if r["sampler"] == name and r["generation"] == g]:
                previous = [p for p in rows if p["sampler"] == name and p["repeat"] == r["repeat"]
                            and p["generation"] == g - 1]
                values.append(value(r, previous[0] if previous else None))
            cells.append(_fmt(values, digits) if any(v is not None for v in values) else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def new_bins_per_label(row: dict, previous: dict | None, n_accessible: int) -> float | None:
    """Accessible bins a generation added to the labelled data, per oracle label it spent
    (``None`` for generation 0 or a generation without labels)."""
    if previous is None or row["label_calls"] == previous["label_calls"]:
        return None
    gained = round((row["coverage"] - previous["coverage"]) * n_accessible)
    return gained / (row["label_calls"] - previous["label_calls"])


def reach_of(rows, sampler: str, target_sampler: str = "reference_md", key: str = "force_rmse") -> list[dict]:
    """Per repeat: the oracle calls after which ``sampler``'s committee first had a ``key`` at or
    below ``target_sampler``'s final one in the same repeat (``None``: never within the run)."""
    out = []
    for repeat in sorted({r["repeat"] for r in rows if r["sampler"] == sampler}):
        target_rows = [r for r in rows if r["sampler"] == target_sampler and r["repeat"] == repeat]
        if not target_rows:
            continue
        target = max(target_rows, key=lambda r: r["generation"])
        own = sorted((r for r in rows if r["sampler"] == sampler and r["repeat"] == repeat), key=lambda r: r["generation"])
        hit = next((r for r in own if r.get(key) is not None and r[key] <= target[key]), None)
        out.append({"repeat": repeat, "target": target[key], "target_calls": target["oracle_calls"],
                    "calls": None if hit is None else hit["oracle_calls"],
                    "generation": None if hit is None else hit["generation"]})
    return out


def _fes_figure(path: Path, protocol, out: Path, cutoff: float) -> Path | None:
    """Each sampler's final committee's phi/psi free energy (repeat 0, reweighted test frames)
    beside the reference, on one colour scale."""
    from ..fes import fes_by_reweighting
    from ..models.committee import Committee
    from ..reference_data import load_reference_fes, load_test_set
    from ..systems import alanine_dipeptide

    samplers = [n for n in protocol.samplers if (out / "runs" / n / "rep00" / "final" / "committee.pt").exists()]
    if not samplers:
        return None
    system, fes, test = alanine_dipeptide(), load_reference_fes(), load_test_set()
    cvs = system.compute_cvs(test.positions)
    phi, psi = np.degrees(cvs["phi"]), np.degrees(cvs["psi"])
    panels = [("reference", None)]
    for name in samplers:
        committee = Committee.load(out / "runs" / name / "rep00" / "final" / "committee.pt", system=system)
        energies = committee.evaluate_in_batches(test.positions)[0]
        panels.append((name, fes_by_reweighting(energies, test.energies, phi, psi, fes, cutoff_kj_mol=cutoff)))
    cols = min(5, len(panels))
    n_rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.0 * cols, 2.9 * n_rows), squeeze=False)
    edges = np.linspace(-180, 180, 37)
    reference = panels[1][1]["reference"]
    mesh = None
    for ax, (name, result) in zip(axes.flat, panels):
        surface = reference if result is None else result["free_energy"]
        shown = np.where(np.isfinite(surface) & (reference < cutoff), surface - np.nanmin(surface), np.nan)
        mesh = ax.pcolormesh(edges, edges, shown.T, vmin=0, vmax=cutoff, cmap="viridis")
        title = name if result is None else f"{name}\nRMSE {result['rmse_kj_mol']:.1f} kJ/mol"
        ax.set_title(title, fontsize=8)
        ax.set_xlim(-180, 180), ax.set_ylim(-180, 180)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.colorbar(mesh, ax=axes.ravel().tolist(), shrink=0.8, label="free energy (kJ/mol)")
    fig.suptitle(f"Final committees' phi/psi free energy, repeat 0 (bins below {cutoff:g} kJ/mol; reweighted "
                 "reference frames)", fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _double_well_figure(path: Path, rows, samplers) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for key, ax, label in (("energy_rmse", axes[0], "energy RMSE on the grid (kJ/mol)"),
                           ("new_labels", axes[1], "sampled points (cumulative)"),
                           ("sampled_energy_median", axes[2], "energy of sampled points (kJ/mol)")):
        for name in samplers:
            x, med, lo, hi = _series(rows, name, key, "generation")
            line, = ax.plot(x, med, marker="o", ms=3, label=name)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("generation")
        ax.set_ylabel(label)
        if key == "energy_rmse":
            ax.set_yscale("log")
    axes[0].legend()
    fig.suptitle("Double well: median and interquartile range over independent loops", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _label_statistics(points: dict, name: str, repeats: int) -> dict:
    """What one sampler labelled, per repeat: reference energies of its new structures above
    the lowest initial energy, and the committee's energy error on them (from the loop logs)."""
    above, high, error = [], [], []
    for repeat in range(repeats):
        path = points.get((name, repeat))
        if path is None:
            continue
        data = Dataset.load(path)
        generation = data.provenance["generation"]
        relative = data.energies[generation >= 1] - data.energies[generation == 0].min()
        if relative.size:
            above.append(float(np.median(relative)))
            high.append(float(np.mean(relative > 50.0)))
        log = read_log(Path(path).parent / "log.jsonl")
        maes = [r["committee_energy_error_on_new"]["mae_kj_mol"] for r in log
                if isinstance(r.get("generation"), int) and r["committee_energy_error_on_new"]["mae_kj_mol"] is not None]
        if maes:
            error.append(float(np.mean(maes)))
    return {"energy_above_min": above, "share_above_50": high, "committee_error": error}


def _own_seeds(protocol) -> str:
    own = [f"{name} {entry.seeds}" for name, entry in protocol.samplers.items() if entry.seeds]
    return f" ({', '.join(own)})" if own else ""


def _stage_minutes(final: dict) -> float:
    """Minutes of every loop's stages: the last generation's rows hold cumulative seconds."""
    stages = ("seconds_sample", "seconds_select", "seconds_label", "seconds_train")
    return sum(row.get(key, 0.0) for rows in final.values() for row in rows for key in stages) / 60


def write_report(protocol, out: Path, rows: list[dict], points: dict, wall_seconds: float) -> dict:
    """Write ``metrics.csv``, ``metrics.json``, the figures and ``REPORT.md`` into ``out``."""
    samplers = list(protocol.samplers)
    _write_csv(out / "metrics.csv", rows)
    (out / "metrics.json").write_text(json.dumps(rows, indent=1) + "\n")
    final = {name: [r for r in rows if r["sampler"] == name and r["generation"] == protocol.generations]
             for name in samplers}
    is_ala2 = protocol.system.shipped == "alanine_dipeptide"
    lines = [f"# {protocol.name}", "", protocol.description.strip(), "",
             f"{len(samplers)} samplers x {protocol.repeats} repeats, {protocol.generations} generations, "
             f"{protocol.seeds} seeds per generation{_own_seeds(protocol)}, at most "
             f"{protocol.selection.max_selected} oracle calls per generation; initial data: {protocol.initial_data.path} ({protocol.initial_data.max_frames or 'all'} "
             f"frames); oracle: {protocol.oracle.kind}. Sampling, selection, labelling and training summed over "
             f"all loops: {_stage_minutes(final):.1f} min (one process each; metrics not included). Wall time of "
             f"this invocation: {wall_seconds / 60:.1f} min (work resumed from an earlier one not included).", "",
             "Values are median [25th, 75th percentile] over repeats, for the committee trained on all data "
             f"after generation {protocol.generations}. Oracle calls include failed and rejected labels "
             + (f"(rejected: more than {protocol.max_label_energy:g} kJ/mol above the data's lowest energy)"
                if protocol.max_label_energy else "(no label energy cap)")
             + "; labels kept are those trained on.", ""]
    figures = []
    if is_ala2:
        figures.append(_line_plot(out / "force_rmse_vs_oracle_calls.png", rows, samplers, "force_rmse",
                                  "test force RMSE (kJ/mol/nm)"))
        figures.append(_line_plot(out / "coverage_vs_oracle_calls.png", rows, samplers, "coverage",
                                  f"coverage (bins below {protocol.metrics.fes_cutoff:g} kJ/mol)"))
        figures.append(_ramachandran_grid(out / "ramachandran.png", protocol, points))
        header = ("| sampler | oracle calls | labels kept | force RMSE | force MAE | energy MAE | coverage | basins found | "
                  "NN force evals | sample s | train s | NN-MD stable | NN-MD survival ps |")
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        for name in samplers:
            f = final[name]
            lines.append(
                f"| {name} | {_fmt([r['oracle_calls'] for r in f], 0)} | {_fmt([r['new_labels'] for r in f], 0)} | "
                f"{_fmt([r['force_rmse'] for r in f])} | "
                f"{_fmt([r['force_mae'] for r in f])} | {_fmt([r['energy_mae'] for r in f])} | "
                f"{_fmt([r['coverage'] for r in f], 3)} | {_fmt([r['basins_found'] for r in f], 0)} | "
                f"{_fmt([r['force_evaluations'] for r in f], 0)} | {_fmt([r['seconds_sample'] for r in f], 0)} | "
                f"{_fmt([r['seconds_train'] for r in f], 0)} | {_fmt([r.get('stable_fraction') for r in f], 2)} | "
                f"{_fmt([r.get('median_survival_ps') for r in f], 2)} |"
            )
        steps = protocol.metrics.stability_steps
        if steps:
            fs = protocol.metrics.stability_timestep_fs
            ps = steps * fs / 1000.0
            lines += ["", f"NN-MD stable: share of {protocol.metrics.stability_seeds} replicas (test geometries spread "
                          f"over the basins) of 300 K Langevin MD on the final committee's mean that keep every bond "
                          f"and no clash for {ps:g} ps ({steps} steps of {fs:g} fs); survival: the median replica's "
                          f"time to its first broken bond or clash ({ps:g} when it never failed)."]
        if any("fes_rmse" in r for r in rows):
            fes_keys = [k for k in ("fes_error_C5", "fes_error_alpha_R", "fes_error_alpha_L", "fes_error_C7ax")
                        if any(k in r for r in rows)]
            lines += ["", "Free-energy fidelity of the final committee (kJ/mol): its phi/psi surface by free-energy "
                          "perturbation of the reference test frames within 10-degree bins (`openmm_adv.fes`), "
                          f"against the reference in every bin below {protocol.metrics.fes_cutoff:g} kJ/mol (mean "
                          "offset removed), and each basin's free energy relative to C7eq minus the reference's; "
                          "median effective frames per bin:", "",
                      "| sampler | FES RMSE | FES RMSE (kT) | " + " | ".join(k.removeprefix("fes_error_") for k in fes_keys)
                      + " | median ESS |", "|---|---|---|" + "---|" * len(fes_keys) + "---|"]
            for name in samplers:
                f = final[name]
                lines.append(f"| {name} | {_fmt([r.get('fes_rmse') for r in f])} | {_fmt([r.get('fes_rmse_kT') for r in f], 2)} | "
                             + " | ".join(_fmt([r.get(k) for r in f]) for k in fes_keys)
                             + f" | {_fmt([r.get('fes_median_ess') for r in f], 1)} |")
        basin_keys = sorted({k for r in rows for k in r if k.startswith("force_rmse_")})
        if basin_keys:
            lines += ["", "Test force RMSE per basin (kJ/mol/nm):", "",
                      "| sampler | " + " | ".join(k.removeprefix("force_rmse_") for k in basin_keys) + " |",
                      "|---|" + "---|" * len(basin_keys)]
            for name in samplers:
                lines.append(f"| {name} | " + " | ".join(_fmt([r.get(k) for r in final[name]]) for k in basin_keys) + " |")
        label_keys = sorted({k for r in rows for k in r if k.startswith("labels_")})
        if label_keys:
            lines += ["", "Labelled structures per basin (initial data included):", "",
                      "| sampler | " + " | ".join(k.removeprefix("labels_") for k in label_keys) + " |",
                      "|---|" + "---|" * len(label_keys)]
            for name in samplers:
                lines.append(f"| {name} | " + " | ".join(_fmt([r.get(k) for r in final[name]], 0) for k in label_keys) + " |")
        lines += ["", "What each sampler labelled (new structures of all generations; per repeat, then median "
                      "[IQR] over repeats): reference energy above the lowest initial energy, share more than "
                      "50 kJ/mol above it, and the committee's mean absolute energy error on the structures it "
                      "chose, at the time it chose them:", "",
                  "| sampler | E_ref - E_min (kJ/mol) | share > 50 kJ/mol | committee abs. E error on picks (kJ/mol) |",
                  "|---|---|---|---|"]
        for name in samplers:
            stats = _label_statistics(points, name, protocol.repeats)
            lines.append(f"| {name} | {_fmt(stats['energy_above_min'])} | {_fmt(stats['share_above_50'], 2)} | "
                         f"{_fmt(stats['committee_error'])} |")
        from ..reference_data import load_reference_fes

        n_accessible = int(load_reference_fes().accessible_bins(protocol.metrics.fes_cutoff).sum())

        lines += ["", "Per generation (median [IQR] over repeats; g0 is the shared initial committee and data).", "",
                  "Test force RMSE (kJ/mol/nm):", ""]
        lines += _by_generation(rows, samplers, lambda r, p: r["force_rmse"])
        lines += ["", "Test energy MAE (kJ/mol):", ""]
        lines += _by_generation(rows, samplers, lambda r, p: r["energy_mae"])
        lines += ["", f"New 10-degree bins below {protocol.metrics.fes_cutoff:g} kJ/mol per oracle label of the generation:", ""]
        lines += _by_generation(rows, samplers, lambda r, p: new_bins_per_label(r, p, n_accessible), 2)
        lines += ["", "Basins labelled (of five; initial data included):", ""]
        lines += _by_generation(rows, samplers, lambda r, p: r["basins_found"], 0)
        lines += ["", "Oracle calls on the generation's cumulative axis (labels plus a sampler's own reference "
                      "evaluations):", ""]
        lines += _by_generation(rows, samplers, lambda r, p: r["oracle_calls"], 0)
        if "reference_md" in samplers:
            lines += ["", "Reaching reference MD's final test force RMSE (same repeat): repeats that reached it, "
                          "the oracle calls it took (median over the repeats that did) and their share of reference "
                          "MD's own final oracle calls:", "",
                      "| sampler | repeats | oracle calls to reach | share of reference MD's |", "|---|---|---|---|"]
            for name in samplers:
                reach = reach_of(rows, name)
                hit = [r for r in reach if r["calls"] is not None]
                share = [r["calls"] / r["target_calls"] for r in hit]
                lines.append(f"| {name} | {len(hit)}/{len(reach)} | {_fmt([r['calls'] for r in hit], 0) if hit else '-'} | "
                             f"{_fmt(share, 2) if hit else '-'} |")
        fes_figure = _fes_figure(out / "fes_final_committees.png", protocol, out, protocol.metrics.fes_cutoff)
        if fes_figure is not None:
            figures.append(fes_figure)
        initial = [r for r in rows if r["generation"] == 0]
        lines += ["", f"Before any sampling (generation 0, shared by all samplers): force RMSE "
                      f"{_fmt([r['force_rmse'] for r in initial])}, coverage {_fmt([r['coverage'] for r in initial], 3)}."]
    else:
        figures.append(_double_well_figure(out / "double_well.png", rows, samplers))
        figures.append(_line_plot(out / "energy_rmse_vs_oracle_calls.png", rows, samplers, "energy_rmse",
                                  "grid energy RMSE (kJ/mol)", log=True))
        lines += ["| sampler | final energy RMSE (kJ/mol) | same, mean offset removed | final force RMSE (kJ/mol/nm) | "
                  "sampled points | energy of sampled points (kJ/mol) |",
                  "|---|---|---|---|---|---|"]
        for name in samplers:
            f = final[name]
            lines.append(f"| {name} | {_fmt([r['energy_rmse'] for r in f], 3)} | "
                         f"{_fmt([r.get('energy_rmse_shifted') for r in f], 3)} | {_fmt([r['force_rmse'] for r in f], 2)} | "
                         f"{_fmt([r['new_labels'] for r in f], 0)} | {_fmt([r.get('sampled_energy_median') for r in f], 2)} |")
        if "attack" in samplers:
            attack = spread([r["energy_rmse"] for r in final["attack"]])[0]
            for name in [n for n in samplers if n.startswith("random")]:
                ratio = spread([r["energy_rmse"] for r in final[name]])[0] / attack
                lines += ["", f"Median final energy RMSE, {name} / attack: {ratio:.2f} (the tutorial reports about 3)."]
    lines += ["", "Figures: " + ", ".join(f"`{p.name}`" for p in figures) + ". Raw numbers: `metrics.csv`, `metrics.json`; "
              "settings: `protocol.json`; every loop's folder (log, dataset, committees) under `runs/`."]
    (out / "REPORT.md").write_text("\n".join(lines) + "\n")
    return {"rows": rows, "figures": [str(p) for p in figures], "protocol": asdict(protocol)}
