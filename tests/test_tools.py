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
        "defocus_from_stacks",
        "make_figures",
        "sim_realism",
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


def test_defocus_from_stacks_recovers_a_known_gaussian_defocus(tmp_path, capsys):
    """Stacks made by blurring one specimen plane by sigma = k |d| (in absorbance) give back k."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    sys.path.insert(0, str(ROOT / "tools"))
    import defocus_from_stacks

    rng = np.random.default_rng(0)
    for n, (k, focus) in enumerate([(0.3, 8), (0.3, 10), (0.3, 9)]):
        specimen = gaussian_filter(rng.random((64, 64)), 1.0) * 4.0  # absorbance
        planes = [gaussian_filter(specimen, 0.3 + k * abs(z - focus), mode="wrap") for z in range(19)]
        stack = 250.0 * np.exp(-(np.stack(planes) - specimen.min()))
        np.savez(tmp_path / f"s{n}.npz", arr_0=stack.transpose(1, 2, 0).astype(np.float32))  # YXZ, as NPZ stacks are
    defocus_from_stacks.main([str(tmp_path), "--min_stacks", "3"])
    out = capsys.readouterr().out
    ks = [float(line.split("k = ")[1].split()[0]) for line in out.splitlines() if "k = " in line]
    assert len(ks) == 2 and all(abs(k - 0.3) < 0.05 for k in ks), out
