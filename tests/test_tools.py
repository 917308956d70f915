"""The scripts in tools/ (benchmarks, figure makers: not part of the bundle) still start and find the bundle."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end-to-end runs: not in the quick lane (pytest -m 'not slow')

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "tool",
    [
        "ablation",
        "benchmark_training",
        "benchmark_evaluation",
        "benchmark_inference",
        "make_figures",
        "sliding_window_seams",
    ],
)
def test_tool_starts(tool):
    run = subprocess.run([sys.executable, f"tools/{tool}.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage" in run.stdout.lower()


def test_tools_are_outside_the_bundle_and_docs():
    assert not list((ROOT / "docs").glob("*.py"))
    assert not list((ROOT / "bundle").rglob("tools"))
