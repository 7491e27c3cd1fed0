#!/usr/bin/env bash
# GPU check, for the day a CUDA machine is lent: runs in about 5 minutes at most.
#
# What it does, each part logged to $OUT/<part>.log (OUT defaults to gpu_check_out):
#   1. nvidia-smi, OpenMM's platforms and plugin load failures, torch's view of the GPU;
#   2. the CUDA tests (python -m pytest -q -m cuda tests/), after checking that
#      tests/test_forces.py::test_cuda_matches_reference is collected under the cuda marker
#      (a skipped CUDA test is reported as SKIPPED, not as a pass);
#   3. openmm-adv demo --platform CUDA with few seeds and steps;
#   4. the benchmarks with --platform CUDA and small step counts: attack_step.py without and with
#      --cuda-graphs (shipped committee, then an untrained PaiNN), committee_md.py, system_size.py.
# A failing part does not stop the others: its exit status is recorded and a summary is printed
# at the end (also in $OUT/summary.txt). The script exits non-zero if any part failed.
#
# Usage, from the repository root, with the project installed in .venv (or PYTHON pointing at
# an interpreter that has it):  bash benchmarks/gpu_check.sh
# Environment: PYTHON (default .venv/bin/python), OUT (default gpu_check_out), DEADLINE
# (seconds for the whole check, default 290: parts that would start later are skipped).
set -euo pipefail

PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-gpu_check_out}
DEADLINE=${DEADLINE:-290}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"
mkdir -p "$OUT"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "gpu_check: no Python at '$PYTHON'; set PYTHON to the interpreter that has openmm-adv installed" >&2
    exit 2
fi
# The console script beside the interpreter, else on PATH, else the module it runs.
if [[ -x "$(dirname "$PYTHON")/openmm-adv" ]]; then
    OPENMM_ADV=("$(dirname "$PYTHON")/openmm-adv")
elif command -v openmm-adv >/dev/null 2>&1; then
    OPENMM_ADV=(openmm-adv)
else
    OPENMM_ADV=("$PYTHON" -m openmm_adv.cli)
fi
export OPENMM_ADV_THREADS=${OPENMM_ADV_THREADS:-1}

START=$SECONDS
NAMES=()
STATUSES=()
SECONDS_TAKEN=()

# run_part NAME TIMEOUT_S COMMAND...: run COMMAND with stdout+stderr to $OUT/NAME.log, at most
# TIMEOUT_S seconds (less if the deadline is nearer); record its exit status, never abort.
run_part() {
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - (SECONDS - START)))
    local status t0=$SECONDS
    if ((left < 15)); then
        echo "== $name: skipped (deadline of ${DEADLINE}s reached)"
        NAMES+=("$name"); STATUSES+=("skipped: deadline"); SECONDS_TAKEN+=(0)
        return 0
    fi
    ((limit > left)) && limit=$left
    local shown="$*"
    shown=${shown//$'\n'/ }
    echo "== $name (at most ${limit}s): ${shown:0:150}"
    if timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1; then
        status=0
    else
        status=$?
    fi
    tail -n 25 "$OUT/$name.log" | sed 's/^/   /'
    ((status == 124 || status == 137)) && status="$status (timed out after ${limit}s)"
    NAMES+=("$name"); STATUSES+=("$status"); SECONDS_TAKEN+=($((SECONDS - t0)))
    return 0
}

# 1. What the machine has.
run_part nvidia_smi 20 nvidia-smi
run_part platforms 60 "$PYTHON" -c '
import openmm_adv._torch  # imports torch first and reloads openmm-torch plugins if needed
import openmm, torch
names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
print("OpenMM", openmm.__version__, "platforms:", names)
for failure in openmm.Platform.getPluginLoadFailures():
    print("plugin load failure:", failure)
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available:", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name(0))
cuda = openmm.Platform.getPlatformByName("CUDA")  # raises if the CUDA platform is missing
print("CUDA platform speed", cuda.getSpeed(), "default properties",
      {k: cuda.getPropertyDefaultValue(k) for k in cuda.getPropertyNames()})
assert torch.cuda.is_available(), "torch sees no CUDA device"
'

# 2. The CUDA tests; a collected-but-skipped CUDA test is not a pass.
run_part cuda_test_collected 60 bash -c \
    "'$PYTHON' -m pytest -q --collect-only -m cuda tests/ | grep -F 'tests/test_forces.py::test_cuda_matches_reference'"
run_part cuda_tests 120 "$PYTHON" -m pytest -q -rs -m cuda tests/
if grep -qi "skipped" "$OUT/cuda_tests.log" 2>/dev/null; then
    for i in "${!NAMES[@]}"; do
        [[ ${NAMES[$i]} == cuda_tests && ${STATUSES[$i]} == 0 ]] && STATUSES[$i]="0 but SKIPPED (see log)"
    done
fi

# 3. The demo on CUDA (few seeds and steps: it checks the path, not the science).
run_part demo_cuda 90 "${OPENMM_ADV[@]}" demo --platform CUDA --seeds 8 --steps 30 --quiet --output "$OUT/demo"

# 4. Benchmarks on CUDA, small step counts.
run_part attack_step_cuda 60 "$PYTHON" benchmarks/attack_step.py --platform CUDA --steps 10 --repeats 2
run_part attack_step_cuda_graphs 60 "$PYTHON" benchmarks/attack_step.py --platform CUDA --cuda-graphs --steps 10 --repeats 2
run_part attack_step_cuda_painn 60 "$PYTHON" benchmarks/attack_step.py --platform CUDA --architecture painn --steps 10 --repeats 2
run_part attack_step_cuda_graphs_painn 60 "$PYTHON" benchmarks/attack_step.py --platform CUDA --cuda-graphs --architecture painn --steps 10 --repeats 2
run_part committee_md_cuda 60 "$PYTHON" benchmarks/committee_md.py --platform CUDA --steps 20 --repeats 2
run_part system_size_cuda 90 "$PYTHON" benchmarks/system_size.py --platform CUDA --copies 1 28 --timeout 40

# Summary.
failed=0
for i in "${!NAMES[@]}"; do
    [[ ${STATUSES[$i]} == 0 ]] || failed=1
done
{
    echo "gpu_check summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), $((SECONDS - START)) s, logs in $OUT/):"
    for i in "${!NAMES[@]}"; do
        printf '  %-32s exit %-28s %4ss\n' "${NAMES[$i]}" "${STATUSES[$i]}" "${SECONDS_TAKEN[$i]}"
    done
    if ((failed)); then
        echo "some parts failed, were skipped or timed out: read their logs"
    else
        echo "all parts passed"
    fi
} | tee "$OUT/summary.txt"
exit "$failed"
