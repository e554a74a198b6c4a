#!/usr/bin/env bash
# GPU check of scr2mae, in under 8 minutes on one GPU:
#   1. the CUDA tests (tests/masking, ids with "cuda");
#   2. the masking tests with the masking core under torch.cuda.set_sync_debug_mode("error")
#      (SCR2MAE_SYNC_DEBUG=1, see tests/masking/conftest.py);
#   3. training throughput at 1M x 2000 and 1M x 5000: the fast path against scVI and the bare
#      module step (floor), in fp32 and bf16 (throughput.py, first LIMIT_STEPS steps of an epoch);
#   4. peak GPU memory of each throughput run (torch.cuda.max_memory_allocated).
# It writes, under OUT: tests_cuda.txt, tests_sync_debug.txt, throughput/throughput.csv,
# report.md (the figures to report) and summary.json; the exit status is non-zero if a step failed.
#
#   benchmarks/genomics/singlecell/gpu_check.sh            # on a machine with a CUDA GPU
#   benchmarks/genomics/singlecell/gpu_check.sh --dry-run  # CPU, tiny sizes, well under a minute
#
# Environment: PYTHON (python3), OUT (benchmarks/genomics/singlecell/results/gpu_check[_dry_run]),
# SIZES, WIDTHS, BATCH_SIZE, LIMIT_STEPS override the throughput settings.
set -uo pipefail

DRY_RUN=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$arg' (expected --dry-run)" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT" || exit 2
PYTHON="${PYTHON:-python3}"
# this checkout's package, whatever an editable install points to
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"

if [ "$DRY_RUN" = 1 ]; then
    OUT="${OUT:-benchmarks/genomics/singlecell/results/gpu_check_dry_run}"
    SIZES="${SIZES:-300x20 300x50}"
    WIDTHS="${WIDTHS:-16/4}"
    BATCH_SIZE="${BATCH_SIZE:-64}"
    LIMIT_STEPS="${LIMIT_STEPS:-2}"
    DEVICE=cpu
    SYNC_TESTS=tests/masking/test_masks.py
    EXTRA=(--threads 1 --skip-warm-up)
    export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
else
    OUT="${OUT:-benchmarks/genomics/singlecell/results/gpu_check}"
    SIZES="${SIZES:-1000000x2000 1000000x5000}"
    WIDTHS="${WIDTHS:-128/32}"
    BATCH_SIZE="${BATCH_SIZE:-128}"
    LIMIT_STEPS="${LIMIT_STEPS:-1000}"
    DEVICE=cuda
    SYNC_TESTS=tests/masking
    EXTRA=()
    if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "gpu_check.sh: no CUDA device visible to torch; use --dry-run on a CPU." >&2
        exit 2
    fi
fi
# time limits per step: together under 8 minutes (a stopped throughput run keeps its CSV)
T_TESTS=75
T_THROUGHPUT=300
mkdir -p "$OUT/throughput"
PYTEST=("$PYTHON" -m pytest -q -rs -p no:cacheprovider)
STEPS=()

step() {  # name, seconds, log file, command...
    local name="$1" limit="$2" log="$3"
    shift 3
    local start=$SECONDS
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" 2>&1 | tee "$log"
    local status=${PIPESTATUS[0]}
    echo "== $name: exit $status, $((SECONDS - start)) s"
    STEPS+=("$name=$status:$((SECONDS - start))")
}

step cuda_tests "$T_TESTS" "$OUT/tests_cuda.txt" "${PYTEST[@]}" tests/masking -k cuda
step sync_debug_tests "$T_TESTS" "$OUT/tests_sync_debug.txt" \
    env SCR2MAE_SYNC_DEBUG=1 "${PYTEST[@]}" $SYNC_TESTS
# shellcheck disable=SC2086  # the size and width lists split into arguments
step throughput "$T_THROUGHPUT" "$OUT/throughput.txt" \
    "$PYTHON" benchmarks/genomics/singlecell/throughput.py \
    --sizes $SIZES --widths $WIDTHS --modes fast scVI floor --precisions fp32 bf16 \
    --device "$DEVICE" --batch-size "$BATCH_SIZE" --limit-steps "$LIMIT_STEPS" \
    --floor-steps "$LIMIT_STEPS" --out "$OUT/throughput" "${EXTRA[@]}"

DRY_RUN="$DRY_RUN" OUT="$OUT" "$PYTHON" - "${STEPS[@]}" <<'PY'
"""Collect the step results into report.md and summary.json."""
import json
import os
import re
import sys
from pathlib import Path

import pandas as pd
import torch

out = Path(os.environ["OUT"])
steps = {}
for item in sys.argv[1:]:
    name, rest = item.split("=")
    status, seconds = rest.split(":")
    steps[name] = {"exit": int(status), "seconds": int(seconds)}


def pytest_counts(path):
    text = path.read_text() if path.exists() else ""
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", text)}


steps["cuda_tests"].update(pytest_counts(out / "tests_cuda.txt"))
steps["sync_debug_tests"].update(pytest_counts(out / "tests_sync_debug.txt"))
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
summary = {
    "dry_run": os.environ["DRY_RUN"] == "1",
    "device": gpu or "cpu",
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "steps": steps,
    "total_seconds": sum(s["seconds"] for s in steps.values()),
}
lines = [
    "# GPU check" + (" (dry run on the CPU: tiny sizes, not GPU figures)" if summary["dry_run"] else ""),
    "",
    f"device: {summary['device']}; torch {summary['torch']} (CUDA {summary['cuda']}); "
    f"total {summary['total_seconds']} s",
    "",
    "| step | exit | seconds | passed | failed | skipped |",
    "|:--|--:|--:|--:|--:|--:|",
]
for name, s in steps.items():
    lines.append(
        f"| {name} | {s['exit']} | {s['seconds']} | {s.get('passed', '')} | "
        f"{s.get('failed', '')} | {s.get('skipped', '')} |"
    )
csv = out / "throughput" / "throughput.csv"
if csv.exists():
    table = pd.read_csv(csv)
    index = ["n_cells", "n_genes", "widths", "precision"]
    wide = table.pivot_table(index=index, columns="mode", values="cells_per_s")
    for base in ("scVI", "floor"):
        if {"fast", base} <= set(wide.columns):
            wide[f"fast/{base}"] = wide["fast"] / wide[base]
    peak = table.pivot_table(index=index, columns="mode", values="peak_gpu_gb", dropna=False)
    wide = wide.join(peak.add_prefix("GPU GB "))
    wide = wide.round(2).astype(object).where(wide.notna(), "n/a")
    lines += ["", "Training cells/s (first steps of an epoch), ratios, peak GPU memory (GB):", ""]
    lines.append(wide.to_markdown())
    summary["throughput_rows"] = len(table)
else:
    lines += ["", "throughput: no results (see throughput.txt)"]
    summary["throughput_rows"] = 0
(out / "report.md").write_text("\n".join(lines) + "\n")
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print("\n".join(lines))
PY
REPORT_STATUS=$?

FAILED=$REPORT_STATUS
for item in "${STEPS[@]}"; do
    status="${item#*=}"
    status="${status%%:*}"
    [ "$status" = 0 ] || FAILED=1
done
echo "report: $OUT/report.md"
exit "$FAILED"
