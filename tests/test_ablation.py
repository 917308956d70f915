"""tools/ablation.py end to end on tiny settings: two variants trained, evaluated, tabulated and drawn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scripts.simulate.zstacks import simulate_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY = "--g_channels 4 --g_residual_blocks 1 --d_channels 8 --n_horizontal 2 --n_vertical 2 --log_interval 1"


@pytest.mark.slow
def test_ablation_trains_evaluates_and_tabulates(tmp_path):
    data = tmp_path / "data"
    simulate_dataset(data, n_stacks=6, n_infocus=4, size=40, depth=17, seed=5, progress=False)
    new = tmp_path / "new"  # other stacks, with truth: evaluated instead of the held-out ones
    simulate_dataset(new, n_stacks=2, n_infocus=0, size=40, depth=17, seed=6, progress=False)
    out = tmp_path / "ablation"
    cmd = [
        sys.executable, str(ROOT / "tools" / "ablation.py"), "--data", str(data), "--eval_data", str(new),
        "--out", str(out),
        "--variants", "paper", "optical", "--epochs", "1", "--epoch_length", "2", "--crop_size", "32",
        "--jobs", "1", "--override", TINY, "--override_eval", "--g_channels 4 --g_residual_blocks 1",
        "--depths", "0", "8", "16", "--window_variants", "optical", "--window", "32",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {r["method"]: r for r in json.loads((out / "table.json").read_text())["rows"]}
    assert set(rows) == {
        "input",
        "sharpest_slice",
        "focal_detail",
        "focal_transfer",
        "unrelated",
        "paper",
        "optical",
        "optical-w32",
    }
    evaluated = json.loads((out / "eval" / "reference" / "metrics.json").read_text())["stacks"]
    assert [Path(s).parent for s in evaluated] == [new / "stacks"] * 2  # every stack of --eval_data
    assert rows["input"]["support_worst"] == pytest.approx(1.0)  # the input's detail is the input's
    assert rows["unrelated"]["support_worst"] < rows["sharpest_slice"]["support_worst"] == pytest.approx(1.0)
    assert all(0 <= r["ssim_truth"] <= 1 for r in rows.values())  # --eval_data has truth: scored against it
    assert rows["optical-w32"]["seconds_per_iteration"] == rows["optical"]["seconds_per_iteration"]
    assert rows["input"]["ssim_focus"] == pytest.approx(1.0) and rows["input"]["coarse_worst"] == pytest.approx(1.0)
    assert rows["unrelated"]["ssim_focus"] < 0.9  # another stack is not the input
    for name in ("paper", "optical"):
        assert 0 < rows[name]["seconds_per_iteration"] < 600
        assert -1 <= rows[name]["coarse_worst"] <= 1
    # a residual G_S starts as the identity: after 2 iterations it is still close to the input
    assert rows["optical"]["ssim_focus"] > rows["unrelated"]["ssim_focus"]
    table = (out / "table.md").read_text()
    assert "| optical |" in table and "| *target* |" in table and "detail support worst" in table
    assert (out / "ssim_coarse_per_depth.png").stat().st_size > 0
    assert len(list(out.glob("views_*.png"))) == 1
    # run again: everything is done, nothing is trained again
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "trained already" in again.stdout
