"""tools/systems_study.py end to end on tiny settings: trained on systems A and B, tested on all three, for each
variant (none, augmentation of the input over the nuisances, per-system normalisation)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scripts.simulate.fluorescence import simulate_pairs

ROOT = Path(__file__).resolve().parents[1]
TINY_NET = "--u_channels '[4, 8, 16, 32]' --sw_roi_size '[32, 32]'"
TINY_TRAIN = TINY_NET + " --d_channels 8 --crop_size 32 --batch_size 2 --checkpoint_interval 2"


@pytest.mark.slow
def test_systems_study_trains_on_two_systems_and_tests_the_third(tmp_path):
    data = tmp_path / "data"
    simulate_pairs(data, n_per_system=4, size=48, seed=0, progress=False)
    out = tmp_path / "study"
    cmd = [
        sys.executable, str(ROOT / "tools" / "systems_study.py"), "--data", str(data), "--out", str(out),
        "--hold_out", "C", "--epochs", "1", "--log_interval", "1", "--override", TINY_TRAIN,
        "--override_eval", TINY_NET + " --rl_iterations 3",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = json.loads((out / "table.json").read_text())
    assert table["systems"] == ["A", "B", "C"] and list(table["held_out"]) == ["C"]
    held_out = table["held_out"]["C"]
    assert held_out["trained_on"] == ["A_", "B_"]
    assert table["variants"] == list(held_out["variants"]) == ["none", "augmentation", "system_norm"]
    for variant, result in held_out["variants"].items():
        methods = result["methods"]
        assert set(methods) == {"input", "gan", "l1", "richardson_lucy"}, variant
        assert methods["input"]["psnr_gain_seen"] == methods["input"]["psnr_drop"] == 0
        for row in methods.values():
            assert row["psnr_drop"] == pytest.approx(row["psnr_gain_seen"] - row["psnr_gain_unseen"])
            assert 0 < row["psnr_unseen"] < 100 and -1 <= row["ssim_unseen"] <= 1
        rows = json.loads((out / "without_C" / variant / "evaluate" / "metrics.json").read_text())["per_image"]
        tested = {r["image"] for r in rows if r["method"] == "gan"}
        assert sum(name.startswith("C_") for name in tested) == 4  # every pair of the unseen system
        assert any(name.startswith(("A_", "B_")) for name in tested)  # and held-out pairs of the seen ones
        assert f"| C | {variant} | gan |" in (out / "table.md").read_text()
    trained = {v: (out / "without_C" / v / "gan" / "run" / "config.yaml").read_text() for v in held_out["variants"]}
    assert "augment_input: true" in trained["augmentation"] and "augment_input: false" in trained["none"]
    assert "system_normalisation: true" in trained["system_norm"] and "augment_input: false" in trained["system_norm"]
    evaluated = (out / "without_C" / "system_norm" / "evaluate" / "config.yaml").read_text()
    assert "system_normalisation: true" in evaluated  # G's inputs mapped as in its training
    # run again: everything is done, nothing is trained or evaluated again
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("trained already") == 6, again.stderr[-3000:]
    assert "evaluating" not in again.stdout
