"""``openmm-adv`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(
        output_dir=args.output, n_seeds=args.seeds, n_steps=args.steps, kT=args.kT, step_size=args.step_size,
        platform=args.platform, threads=args.threads, seed=args.seed, committee_path=args.committee,
        progress=not args.quiet,
    )
    return 0


def _load_config(cls, path, args=None):
    from .config import load_yaml, parse_section

    config = parse_section(cls, load_yaml(path))
    if getattr(args, "allow_mixed_oracles", False):
        config.oracle.allow_mixed = True
    return config


def _init(args) -> int:
    from .commands import run_init
    from .config import InitRunConfig

    run_init(_load_config(InitRunConfig, args.config), progress=not args.quiet)
    return 0


def _md(args) -> int:
    from .commands import run_md
    from .config import MDRunConfig

    run_md(_load_config(MDRunConfig, args.config), progress=not args.quiet)
    return 0


def _label(args) -> int:
    from .commands import run_label
    from .config import LabelRunConfig

    run_label(_load_config(LabelRunConfig, args.config, args), progress=not args.quiet)
    return 0


def _train(args) -> int:
    from .commands import run_train
    from .config import TrainRunConfig

    run_train(_load_config(TrainRunConfig, args.config), progress=not args.quiet)
    return 0


def _attack(args) -> int:
    from .commands import run_attack
    from .config import AttackRunConfig

    run_attack(_load_config(AttackRunConfig, args.config), progress=not args.quiet)
    return 0


def _loop(args) -> int:
    from .commands import run_loop
    from .config import LoopRunConfig

    config = _load_config(LoopRunConfig, args.config, args)
    run_dir = args.run_dir or str(Path("runs") / Path(args.config).stem)
    run_loop(config, run_dir, progress=not args.quiet)
    return 0


def _export(args) -> int:
    from .commands import run_export

    run_export(args.dataset, args.output, generation=args.generation)
    return 0


def _protocol_path(name: str) -> Path:
    """A protocol file, or ``protocols/<name>/protocol.yaml`` for a shipped protocol's name."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = Path("protocols") / name / "protocol.yaml"
    if not candidate.is_file():
        raise FileNotFoundError(f"no protocol file {path} and no {candidate}")
    return candidate


def _compare(args) -> int:
    from .compare import load_protocol, run_protocol

    path = _protocol_path(args.protocol)
    overrides = {k: v for k, v in (("repeats", args.repeats), ("generations", args.generations)) if v is not None}
    protocol = load_protocol(path, overrides)
    output = args.output or str(Path("compare_output") / protocol.name)
    run_protocol(protocol, output, progress=not args.quiet, workers=args.workers,
                 executor=_dask_executor(args.dask, protocol.executor))
    return 0


def _uq_compare(args) -> int:
    from .uq_compare import load_uq_protocol, run_uq_compare

    protocol = load_uq_protocol(_protocol_path(args.protocol))
    run_uq_compare(protocol, args.output or str(Path("compare_output") / protocol.name),
                   echo=(lambda message: None) if args.quiet else print)
    return 0


def _dask_executor(where: str | None, configured):
    """The protocol's executor, or a dask one when ``--dask`` names a cluster kind or address."""
    if where is None:
        return configured
    from dataclasses import replace

    from .config import ExecutorConfig, parse_section
    from .executors import DASK_CLUSTERS

    cluster, address = (where, None) if "://" not in where else ("address", where)
    if cluster not in DASK_CLUSTERS or cluster == "address":
        raise ValueError(f"--dask {where}: give local, a scheduler address such as tcp://host:8786, or one of "
                         f"{', '.join(DASK_CLUSTERS[2:])}")
    if cluster == configured.cluster and configured.kind == "dask":
        return replace(configured, address=address or configured.address)
    # another kind of cluster than the protocol's: its options do not apply
    return parse_section(ExecutorConfig, {"kind": "dask", "cluster": cluster, "address": address}, "--dask")


def _config(args) -> int:
    from .commands import example_config

    print(example_config(args.kind), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openmm-adv", description="Adversarial uncertainty sampling in OpenMM")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="batched attacks on alanine dipeptide with the shipped committee")
    demo.add_argument("--output", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--seeds", type=int, default=16, help="number of C7eq seed geometries = replicas (16)")
    demo.add_argument("--steps", type=int, default=150, help="Adam steps (150)")
    demo.add_argument("--kT", type=float, default=20.9, help="sampling temperature in kJ/mol (20.9 = 5 kcal/mol)")
    demo.add_argument("--step-size", type=float, default=0.004, help="Adam learning rate in nm (0.004)")
    demo.add_argument("--platform", default="CPU", choices=["Reference", "CPU", "CUDA"], help="OpenMM platform")
    demo.add_argument("--threads", type=int, default=None, help="torch threads (default 1, or $OPENMM_ADV_THREADS)")
    demo.add_argument("--seed", type=int, default=0, help="which training frames become seeds")
    demo.add_argument("--committee", default=None, help="a committee .pt file (default: the shipped one)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)

    def with_config(name: str, help_text: str, func):
        command = sub.add_parser(name, help=help_text,
                                 description=f"{help_text}. Print an example config with 'openmm-adv config {name}'.")
        command.add_argument("config", help="YAML config file")
        command.add_argument("--quiet", action="store_true", help="no progress bars")
        command.set_defaults(func=func)
        return command

    with_config("init", "make the first labelled dataset of a molecule (reference MD, thermal normal-mode "
                        "displacements, or frames of an existing trajectory)", _init)
    with_config("md", "run MD on a committee's mean energy, logging its uncertainty and the frames to label", _md)
    label = with_config("label", "label geometries with a ground-truth oracle and append them to a dataset", _label)
    mixing = ("let labels of another oracle join a dataset labelled by a different one (normally refused; "
              "config: oracle.allow_mixed)")
    label.add_argument("--allow-mixed-oracles", action="store_true", help=mixing)
    with_config("train", "train a committee on a dataset and save it as TorchScript", _train)
    with_config("attack", "attack seed geometries with a committee and write the selected candidates", _attack)
    loop = with_config("loop", "run (or resume) the active-learning loop", _loop)
    loop.add_argument("--run-dir", default=None, help="run folder (default: runs/<config name>); rerun to resume")
    loop.add_argument("--allow-mixed-oracles", action="store_true", help=mixing)
    export = sub.add_parser("export", help="convert a dataset between HDF5 (.h5) and extended XYZ (.extxyz)")
    export.add_argument("dataset", help="dataset file (.h5 or .extxyz), or a loop run folder")
    export.add_argument("--output", required=True, help="output file (.extxyz or .h5)")
    export.add_argument("--generation", type=int, default=None, help="only records of this generation")
    export.set_defaults(func=_export)
    compare = sub.add_parser("compare", help="run a sampler comparison protocol and write its report",
                             description="Run (or resume) every sampler x repeat loop of a protocol and write "
                                         "REPORT.md, figures and metrics to the output folder.")
    compare.add_argument("protocol", help="protocol YAML, or a name under protocols/ (ala2_compare, double_well)")
    compare.add_argument("--output", default=None, help="report folder (default: compare_output/<name>); rerun to resume")
    compare.add_argument("--repeats", type=int, default=None, help="override the protocol's number of repeats")
    compare.add_argument("--generations", type=int, default=None, help="override the protocol's generations")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    compare.add_argument("--workers", type=int, default=1,
                         help="loops run in parallel, one process (or dask worker) each (default 1); results do not "
                              "depend on it")
    compare.add_argument("--dask", default=None, metavar="CLUSTER",
                         help="run the loops on a dask cluster: local (a LocalCluster of --workers workers), a "
                              "scheduler address (tcp://host:8786), or slurm, pbs, sge, lsf, htcondor, moab, oar "
                              "with the protocol's executor.options (dask-jobqueue, --workers workers)")
    compare.set_defaults(func=_compare)
    uq = sub.add_parser("uq-compare", help="measure the committee and single-model uncertainties (GMM, MVE, "
                        "evidential) on in- and out-of-domain test sets, and write the report")
    uq.add_argument("protocol", help="protocol YAML, or a name under protocols/ (uq_compare)")
    uq.add_argument("--output", default=None, help="report folder (default: compare_output/<name>); rerun to resume")
    uq.add_argument("--quiet", action="store_true", help="no status lines")
    uq.set_defaults(func=_uq_compare)
    config = sub.add_parser("config", help="print an example YAML config with every key and its default")
    config.add_argument("kind", choices=["init", "md", "label", "train", "attack", "loop"])
    config.set_defaults(func=_config)
    return parser


def main(argv=None) -> int:
    from ._errors import LoopBusyError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"openmm-adv {args.command}: interrupted; finished work is saved (rerun to resume)", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, LoopBusyError) as exc:
        print(f"openmm-adv {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be read or written after the start-up checks
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"openmm-adv {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
