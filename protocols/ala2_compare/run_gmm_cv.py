"""Run only the GMM-CV sampler of protocol_v2.yaml into its own folder (issue 13).

The other samplers of ala2_compare v2 ran on commit 06dd4ae; the GMM-CV sampler needs the code
that added it. Its loops run here, into ``docs/results/ala2_compare_v2_gmm_cv``, with every
shared setting of protocol_v2.yaml (initial data, oracle, training, selection, metrics,
repeats); once both are finished, copy ``runs/gmm_cv`` and ``runs/_initial_gmm_cv`` into
``docs/results/ala2_compare_v2/runs/`` and rerun the v2 command: every loop is then finished
and the report covers all twelve samplers. Resumable like any comparison.

    python protocols/ala2_compare/run_gmm_cv.py [--workers N]
"""

import argparse
from pathlib import Path

from openmm_adv.compare import load_protocol, run_protocol

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(HERE.parents[1] / "docs" / "results" / "ala2_compare_v2_gmm_cv"))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    protocol = load_protocol(HERE / "protocol_v2.yaml")
    protocol.samplers = {"gmm_cv": protocol.samplers["gmm_cv"]}
    protocol.name = "ala2_compare_v2_gmm_cv"
    run_protocol(protocol, args.output, workers=args.workers)


if __name__ == "__main__":
    main()
