"""``openmm-adv`` command line."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(
        output_dir=args.output, n_seeds=args.seeds, n_steps=args.steps, kT=args.kT, step_size=args.step_size,
        platform=args.platform, threads=args.threads, seed=args.seed, committee_path=args.committee,
        progress=not args.quiet,
    )
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
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"openmm-adv {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
