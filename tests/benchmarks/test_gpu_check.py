import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "genomics" / "singlecell" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="a bash script with coreutils")


def _run(tmp_path, *args):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "check")}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_gpu_check_dry_run_reports_every_step(tmp_path):
    """The CPU dry run of the GPU check (what CI runs so that the script does not rot)."""
    done = _run(tmp_path, "--dry-run")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "check"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True
    steps = summary["steps"]
    assert set(steps) == {"cuda_tests", "sync_debug_tests", "throughput"}
    assert all(s["exit"] == 0 for s in steps.values())
    # the CUDA-only tests were collected (skipped on a CPU); the masking tests ran
    cuda = steps["cuda_tests"]
    assert cuda.get("passed", 0) + cuda.get("skipped", 0) >= 1
    assert steps["sync_debug_tests"]["passed"] >= 10
    assert steps["sync_debug_tests"].get("failed", 0) == 0
    # 2 sizes x 2 precisions x 3 modes, every rate a positive number
    table = pd.read_csv(out / "throughput" / "throughput.csv")
    assert summary["throughput_rows"] == len(table) == 12
    assert set(table["mode"]) == {"fast", "scVI", "floor"}
    assert set(table["precision"]) == {"fp32", "bf16"}
    assert set(zip(table["n_cells"], table["n_genes"], strict=True)) == {(300, 20), (300, 50)}
    assert all(r > 0 and math.isfinite(r) for r in table["cells_per_s"])
    assert (table["peak_rss_gb"] > 0).all()
    assert table["peak_gpu_gb"].isna().all()  # no GPU memory on a CPU: reported as n/a
    report = (out / "report.md").read_text()
    assert "dry run" in report and "fast/scVI" in report and "fast/floor" in report
    assert "n/a" in report and "sync_debug_tests" in report


def test_gpu_check_rejects_unknown_arguments(tmp_path):
    done = _run(tmp_path, "--quick")
    assert done.returncode == 2
    assert "unknown argument '--quick'" in done.stderr
