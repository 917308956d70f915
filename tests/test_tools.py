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
        "benchmark_focal_transfer",
        "benchmark_one_output_conv",
        "benchmark_tiling",
        "defocus_from_stacks",
        "floors",
        "hot_pixels",
        "make_figures",
        "sim_realism",
        "sliding_window_seams",
        "systems_study",
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


def test_defocus_domains_tell_a_light_keeping_blur_from_an_absorbance_blur(tmp_path, capsys):
    """Stacks blurred in intensity: the intensity fit keeps the mean and explains more than the absorbance one."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    sys.path.insert(0, str(ROOT / "tools"))
    import defocus_from_stacks

    rng = np.random.default_rng(1)
    specimen = 0.1 + 0.9 * (gaussian_filter(rng.random((48, 48)), 1.5) > 0.5)  # cells and background
    stack = np.stack([gaussian_filter(specimen, 0.3 + 0.3 * abs(z - 12), mode="nearest") for z in range(25)])
    fits = defocus_from_stacks.domain_fit(stack)
    shift = {domain: np.median([f[3] for f in fits[domain] if f[0] == 12]) for domain in fits}
    unexplained = {domain: np.median([f[2] for f in fits[domain]]) for domain in fits}
    assert shift["intensity"] < 0.002 < shift["absorbance"]
    assert unexplained["intensity"] < unexplained["absorbance"]
    np.savez(tmp_path / "s.npz", arr_0=stack.transpose(1, 2, 0).astype(np.float32))
    defocus_from_stacks.main([str(tmp_path), "--domains"])
    assert "| intensity | 12 | 2 |" in capsys.readouterr().out


def test_benchmark_training_sets_the_iteration_against_its_bare_passes(tmp_path, capsys):
    """Issue 17, item 3: every network call of an iteration, run bare, and the rest; on tiny settings."""
    from scripts.simulate.zstacks import simulate_dataset

    sys.path.insert(0, str(ROOT / "tools"))
    import benchmark_training

    simulate_dataset(tmp_path / "data", n_stacks=4, n_infocus=4, size=40, depth=17, seed=5, progress=False)
    args = ["--data", str(tmp_path / "data"), "--variants", "optical", "--crop_size", "32", "--iterations", "1"]
    benchmark_training.main([*args, "--rounds", "1", "--out", str(tmp_path / "out"), "--passes"])
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.splitlines() if line.startswith("| ")}
    # G step: D_S on y_par and y_perp, D_B on G_B's slices; D step: D_S on 4 batches, D_B on 2
    assert {name: int(rows[name][0]) for name in ("g_s", "g_b", "d_s", "d_b")} == {
        "g_s": 1,
        "g_b": 1,
        "d_s": 6,
        "d_b": 3,
    }
    iteration, total, ratio = (
        float(line.split()[k].rstrip(","))
        for line in out.splitlines()
        if line.startswith("optical:")
        for k in (2, 8, 11)
    )
    parts = sum(float(rows[name][1]) for name in ("g_s", "g_b", "d_s", "d_b", "optimiser steps"))
    # printed to 3 decimals (seconds) and 2 (ratio): the ratio of the printed seconds may differ by their rounding
    rounding = 0.005 + 0.0005 * (1 + iteration / total) / total
    assert total == pytest.approx(parts, abs=6e-3) and ratio == pytest.approx(iteration / total, abs=rounding)
    assert float(rows["g_s"][1]) > float(rows["d_s"][1]) > 0  # G_S's 3D passes outweigh the 2D discriminator's
    more = ["--amp_dtypes", "auto", "bfloat16", "--g_s", "eager", "channels_last"]
    benchmark_training.main([*args, "--rounds", "1", "--out", str(tmp_path / "out"), *more])
    table = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| optical")]
    rows = {cells[1].strip(): cells[2:-1] for cells in table}
    names = ["optical auto", "optical auto channels_last", "optical bfloat16", "optical bfloat16 channels_last"]
    assert list(rows) == names and float(rows["optical auto"][1]) == 1.0


def test_sliding_window_seams_tilings_halo_is_one_window_and_blend_is_not():
    """Issue 17: the --tilings benchmark's rows, on a tiny untrained batch-norm G_S: halo tiling gives one window's
    output and seam index, MONAI's blend at the same window does not."""
    sys.path.insert(0, str(ROOT / "tools"))
    import sliding_window_seams

    rows = sliding_window_seams.compare_tilings(96, 64, halos=(2,), channels=4, n_residual_blocks=1, n_downsampling=1)
    names = [row[0] for row in rows]
    assert names == ["one window", "blend, auto overlap", "blend, 28 px overlap", "halo 14 px", "halo 2 px", "truth"]
    one, blend, _, halo, short, _ = rows
    assert halo[2] < 1e-3 and halo[1] == pytest.approx(one[1])
    assert short[2] > 1e-3  # a halo far below G_S's reach cuts off what a voxel's output depends on


@pytest.mark.slow
def test_benchmark_focal_transfer_prints_its_share_of_g_s(capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    import benchmark_focal_transfer

    benchmark_focal_transfer.main(["--sizes", "16", "24", "--depth", "5", "--repeats", "1"])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| 16 × 16", "| 24 × 24"]
    for row in rows:
        skip, plain, alone, share = (float(c.split()[0].rstrip("%")) for c in row.strip("| ").split(" | ")[1:])
        assert 0 < alone < skip and plain > 0 and 0 < share < 100  # the times are rounded: the share is the exact one


@pytest.mark.slow
def test_benchmark_one_output_conv_compares_the_two_ways_on_the_same_weights(capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    import benchmark_one_output_conv

    benchmark_one_output_conv.main(["--sizes", "16", "--depth", "5", "--repeats", "1"])
    rows = [[c.strip() for c in r.split("|")[1:-1]] for r in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0] for r in rows] == [
        "last convolution alone, 16 px",
        "G_S forward, 16 px, float32",
        "G_S forward and backward, 16 px, bfloat16",
    ]
    for name, by_tap, plain, ratio, diff in rows:
        assert float(by_tap) > 0 and float(plain) > 0 and float(ratio) > 0
        if diff:
            assert float(diff) < 1e-4, name  # the same weights give the same output, to float rounding


def test_depths_above_input_pairs_each_stacks_values_and_gives_the_standard_error(tmp_path):
    """Depth 1: the method is above the input in every stack (paired mean 1.5, standard error 0.5, counted unless
    the tolerance is larger); depth 0: below."""
    import json

    sys.path.insert(0, str(ROOT / "tools"))
    from ablation_table import depths_above_input

    values = {("input", "a", 0): 20, ("input", "b", 0): 30, ("g", "a", 0): 19, ("g", "b", 0): 29.5}
    values |= {("input", "a", 1): 20, ("input", "b", 1): 40, ("g", "a", 1): 21, ("g", "b", 1): 42}
    rows = [
        {"method": m, "stack": s, "view": "xy", "index": z, "measure": "piqe", "value": v}
        for (m, s, z), v in values.items()
    ]
    rows += [{"method": "g", "stack": "a", "view": "xy", "index": "all", "measure": "piqe", "value": 99.0}]
    rows += [{"method": "g", "stack": "a", "view": "xy", "index": 0, "measure": "fm", "value": 99.0}]
    assert depths_above_input({"per_stack": rows}, "g") == [(1, 1.5, 0.5)]
    assert depths_above_input({"per_stack": rows}, "g", tolerance=2) == []
    assert depths_above_input({"per_stack": rows}, "input") == []
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"methods": ["input", "g"], "per_stack": rows}))
    run = subprocess.run(
        [sys.executable, "tools/ablation_table.py", str(metrics)], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0 and run.stdout.strip() == "g: 1 depths above the input's (1: +1.50 ± 0.50)", run.stderr


def test_hot_pixels_counts_images_whose_output_leaves_the_targets_range(tmp_path):
    """A G that returns its input has no hot pixel; one that adds 50 has them in every image."""
    sys.path.insert(0, str(ROOT / "tools"))
    import numpy as np
    import torch
    from hot_pixels import hot_pixels
    from scripts.data.io import write_image
    from scripts.inference.sliding_window import write_settings
    from scripts.nets.paired import residual_unet
    from scripts.ops.handlers import save_state_dict_atomic

    rng = np.random.default_rng(0)
    for kind in ("widefield", "confocal"):
        (tmp_path / kind).mkdir()
        for name in ("a.tif", "b.tif"):
            write_image(tmp_path / kind / name, rng.integers(0, 4000, (32, 32)).astype(np.uint16))
    args = {"spatial_dims": 2, "channels": [4, 8], "strides": [2], "num_res_units": 1, "norm": None}
    g = residual_unet(**args)
    for bias in (0.0, 50.0):
        with torch.no_grad():
            for p in g.parameters():
                p.zero_()
            [*g.parameters()][-1].fill_(bias)  # the last convolution's bias: the output's offset
        weights = tmp_path / f"g{int(bias)}.pt"
        save_state_dict_atomic(g, weights)
        write_settings(weights, {"builder": "residual_unet", "network_args": args})
        found = hot_pixels(weights, tmp_path, 10.0)
        assert found["images"] == 2 and found["hot"] == (2 if bias else 0)
        assert (found["peak"] > 49) == bool(bias) and found["worst"][1].startswith(("a.tif", "b.tif"))
    stacked = {**args, "in_channels": 3}  # a G trained with --input_planes 3, given the 2D pairs: one line
    save_state_dict_atomic(residual_unet(**stacked), tmp_path / "planes.pt")
    write_settings(tmp_path / "planes.pt", {"builder": "residual_unet", "network_args": stacked})
    with pytest.raises(SystemExit, match=r"^error: .*a.tif: .*planes.pt takes 3 plane\(s\)"):
        hot_pixels(tmp_path / "planes.pt", tmp_path, 10.0)
