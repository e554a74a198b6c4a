import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("_ddp_run.py")


@pytest.mark.skipif(sys.platform != "linux", reason="two gloo processes on one machine")
def test_two_process_ddp_on_cpu_covers_every_cell_once_per_epoch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    src = str(Path(__file__).parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    train_idx = np.sort(ranks[0]["train_idx"])
    for epoch in ("0", "1"):
        per_rank = [r["epochs"][epoch] for r in ranks]
        assert not set(per_rank[0]) & set(per_rank[1])  # each rank reads its own shard
        np.testing.assert_array_equal(np.sort(per_rank[0] + per_rank[1]), train_idx)
    assert ranks[0]["epochs"]["0"] != ranks[0]["epochs"]["1"]  # reshuffled
    # the ranks stepped together (6 steps of 2 × 8 cells per epoch) and stayed in sync
    assert [r["global_step"] for r in ranks] == [12, 12]
    assert [r["total_steps"] for r in ranks] == [12, 12]
    np.testing.assert_allclose(ranks[0]["first_weight"], ranks[1]["first_weight"])
