"""scripts.evaluation.evaluate and .report: measures per stack, aggregation, the report's files, MLflow."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from monai.inferers import SlidingWindowInferer
from scripts.errors import InputError
from scripts.evaluation import baselines
from scripts.evaluation.evaluate import (
    INPUT,
    Evaluation,
    RichardsonLucy,
    Settings,
    aggregate,
    evaluation_datalist,
    evenly_spaced_vertical_sections,
    measure_stack,
    summary_table,
    unit_domain,
    vertical_positions,
)
from scripts.nets.architecture import default_generator
from scripts.nets.networks import Generator3D
from scripts.ops.handlers import RunSummary
from scripts.simulate.zstacks import simulate_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("evaldata")
    simulate_dataset(path, n_stacks=3, n_infocus=1, size=40, depth=17, seed=5, progress=False)
    return path


def test_unit_domain_maps_the_input_percentiles_to_0_and_1_and_clips():
    x = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    unit = unit_domain(x, 10.0, 90.0)
    lo, hi = np.percentile(x, [10, 90])
    assert unit(np.array([lo, hi])) == pytest.approx([0.0, 1.0])
    assert unit(np.array([-5.0, 5000.0])).tolist() == [0.0, 1.0]


def test_vertical_sections_are_interior_xz_then_yz_with_depth_along_rows():
    stack = np.zeros((7, 20, 30), np.float32)
    assert vertical_positions(20, 2) == [6, 13]
    sections = evenly_spaced_vertical_sections(stack, 4)
    assert [(v, p) for v, p, _ in sections] == [("xz", 6), ("xz", 13), ("yz", 10), ("yz", 19)]
    assert [s.shape for _, _, s in sections] == [(7, 30), (7, 30), (7, 20), (7, 20)]


def test_measure_stack_of_the_input_itself_is_perfectly_consistent(dataset):
    from scripts.data.io import read_stack

    x = read_stack(dataset / "stacks" / "sim_00000.tif")[0].astype(np.float32)
    truth = read_stack(dataset / "truth" / "sim_00000.tif")[0].astype(np.float32)
    rows, histograms = measure_stack("s", x, {"copy": x.copy()}, truth, Settings(n_vertical=4))
    by = {(r["method"], r["view"], r["index"], r["measure"]): r["value"] for r in rows}
    for method in (INPUT, "copy"):
        assert by[(method, "xy", 3, "ssim_input")] == pytest.approx(1.0)
        assert by[(method, "3d", "all", "hellinger")] == pytest.approx(0.0, abs=1e-12)
        assert by[(method, "xy", 3, "psnr_truth")] == by[(INPUT, "xy", 3, "psnr_truth")]
    # the input's SSIM to its own sharpest slice is 1 there and lower elsewhere
    focus_curve = [by[(INPUT, "xy", k, "ssim_focus")] for k in range(17)]
    assert max(focus_curve) == pytest.approx(1.0) and min(focus_curve) < 0.9
    assert {r["view"] for r in rows} == {"xy", "xz", "yz", "3d"}
    assert sum(1 for r in rows if r["method"] == INPUT and r["view"] == "xz" and r["measure"] == "piqe") == 2
    assert histograms[INPUT]["xy"].sum() == histograms["copy"]["xy"].sum() > 0
    assert np.array_equal(histograms[INPUT]["vertical"], histograms["copy"]["vertical"])


def test_measure_stack_without_truth_has_no_truth_rows_and_sharpest_copy_is_sharper_in_xy(dataset):
    from scripts.data.io import read_stack

    x = read_stack(dataset / "stacks" / "sim_00001.tif")[0].astype(np.float32)
    rows, _ = measure_stack("s", x, {"sharpest": baselines.sharpest_slice(x)}, None, Settings(n_vertical=2))
    assert not any(r["measure"].endswith("_truth") for r in rows)
    agg = {(a["method"], a["view"], a["index"], a["measure"]): a["mean"] for a in aggregate(rows)}
    # slice by slice the copied sharpest slice is sharper than the blurred outer slices...
    assert agg[("sharpest", "xy", "all", "gradient")] > agg[(INPUT, "xy", "all", "gradient")]
    # ...but it is a different image from most input slices
    assert agg[("sharpest", "xy", "all", "ssim_input")] < 0.9


def test_aggregate_means_and_stds_over_stacks_per_slice_and_overall():
    rows = [
        {"method": "m", "stack": s, "view": "xy", "index": k, "measure": "fm", "value": v}
        for s, values in (("a", [1.0, 3.0]), ("b", [3.0, 5.0]))
        for k, v in enumerate(values)
    ] + [
        {"method": "m", "stack": "a", "view": "xz", "index": 4, "measure": "fm", "value": 2.0},
        {"method": "m", "stack": "a", "view": "yz", "index": 4, "measure": "fm", "value": 4.0},
        {"method": "m", "stack": "a", "view": "3d", "index": "all", "measure": "psnr_truth", "value": math.inf},
    ]
    agg = {(a["view"], a["index"], a["measure"]): a for a in aggregate(rows)}
    assert agg[("xy", 0, "fm")]["mean"] == 2.0 and agg[("xy", 0, "fm")]["std"] == 1.0 and agg[("xy", 0, "fm")]["n"] == 2
    assert agg[("xy", "all", "fm")]["mean"] == 3.0  # stack means 2 and 4
    assert agg[("vertical", "all", "fm")]["mean"] == 3.0 and ("vertical", 4, "fm") not in agg
    assert agg[("xz", 4, "fm")]["mean"] == 2.0
    assert agg[("3d", "all", "psnr_truth")]["n"] == 0 and agg[("3d", "all", "psnr_truth")]["n_infinite"] == 1
    assert "m" in summary_table(aggregate(rows)).splitlines()[2]


def test_evaluation_datalist_pairs_truth_and_holds_out_the_validation_split(dataset, tmp_path):
    items = evaluation_datalist(dataset, "all")
    assert len(items) == 3 and all(item["truth"] and item["truth"].endswith(item["image"][-13:]) for item in items)
    held_out = evaluation_datalist(dataset, "held_out", 0.1, 0)
    assert len(held_out) == 1 and held_out[0] in items
    with pytest.raises(InputError, match="subset"):
        evaluation_datalist(dataset, "everything")
    with pytest.raises(InputError, match="no such file or folder"):
        evaluation_datalist(tmp_path, "all")


@pytest.mark.slow
def test_evaluation_writes_the_report_and_logs_it_to_mlflow(dataset, tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path / "..")  # artifacts go beside the store, not into the working folder
    torch.manual_seed(0)
    model = Generator3D(channels=4, n_residual_blocks=1).eval()
    out = tmp_path / "report"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    evaluation = Evaluation(
        evaluation_datalist(dataset, "all"),
        str(out),
        models={"G_S": model},
        baselines={"sharpest_slice": baselines.sharpest_slice, "richardson_lucy": RichardsonLucy(num_iter=3)},
        inferer=SlidingWindowInferer(roi_size=(-1, 32, 32)),
        settings=Settings(n_vertical=2),
        num_workers=0,
        n_views=1,
        tracking_uri=uri,
        config={"fm_threshold": 1000.0},
        summary=RunSummary(str(out), "evaluated", "stack"),
    )
    with caplog.at_level("INFO", logger="zsegan"):
        result = evaluation.run()
    n = len(evaluation.datalist)  # quiet: one bar over all stacks, none per stack or window; a summary line at the end
    assert re.search(rf"evaluated: 100%\|.*\| {n}/{n} ", capsys.readouterr().err)
    assert re.fullmatch(rf"evaluated {n} stacks into {re.escape(str(out))} in \d+\.\d s", caplog.messages[-1])
    methods = [INPUT, "G_S", "sharpest_slice", "richardson_lucy"]
    with open(out / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table if r["view"] == "3d" and r["measure"] == "psnr_truth"] == methods
    per_slice = [r for r in table if r["method"] == "G_S" and r["view"] == "xy" and r["measure"] == "piqe"]
    assert [r["index"] for r in per_slice] == [str(k) for k in range(17)] + ["all"]
    report = json.loads((out / "metrics.json").read_text())
    assert report["methods"] == methods and len(report["per_stack"]) == len(result["rows"])
    assert set(report["gradient_histograms"]["counts"]) == set(methods)
    for name in ("ssim_per_slice", "sharpness_per_slice", "piqe_per_slice", "gradient_histograms", "truth_per_slice"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name
    assert len(list((out / "views").glob("*.png"))) == 1
    runs = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("zsegan-evaluation").experiment_id]
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    metrics = runs[0].data.metrics
    gs_piqe = next(
        r for r in table if (r["method"], r["view"], r["index"], r["measure"]) == ("G_S", "xy", "all", "piqe")
    )
    assert metrics["G_S.xy.piqe"] == pytest.approx(float(gs_piqe["mean"]))
    assert runs[0].data.params["fm_threshold"] == "1000.0"
    history = mlflow.MlflowClient(uri).get_metric_history(runs[0].info.run_id, "input.xy.fm.per_slice")
    assert sorted(m.step for m in history) == list(range(17))
    artifacts = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(runs[0].info.run_id)}
    assert {"metrics.csv", "metrics.json", "gradient_histograms.png", "views"} <= artifacts
    assert (tmp_path / "mlruns").is_dir() and not (tmp_path / ".." / "mlruns").exists()


def test_evaluation_rejects_duplicate_method_names(dataset):
    with pytest.raises(ValueError, match="unique"):
        Evaluation([], "out", models={"input": torch.nn.Identity()}, baselines={})
    with pytest.raises(ValueError, match="may hold only"):  # MLflow would refuse them after all the work
        Evaluation([], "out", models={"g@64": torch.nn.Identity()}, baselines={})


def _evaluate_cli(*args: str):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    config = root / "bundle" / "configs" / "evaluate.yaml"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "evaluate", "--config_file", str(config), *args]
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_evaluate_config_end_to_end_with_a_model_and_the_baselines(dataset, tmp_path):
    torch.manual_seed(0)
    torch.save(default_generator(channels=4, n_residual_blocks=1).state_dict(), tmp_path / "tiny.pt")
    out = tmp_path / "out"
    training_store = Path(__file__).resolve().parents[2] / "bundle" / "runs" / "train" / "mlflow.db"
    before = training_store.stat().st_mtime_ns if training_store.exists() else None
    result = _evaluate_cli(
        "--dataset_dir", str(dataset), "--subset", "all", "--output_dir", str(out),
        "--model_path", str(tmp_path / "tiny.pt"), "--g_channels", "4", "--g_residual_blocks", "1",
        "--sw_roi_size", "[-1, 32, 32]", "--sw_overlap_px", "16", "--n_vertical", "2", "--rl_num_iter", "2", "--num_workers", "1",
    )  # fmt: skip
    after = training_store.stat().st_mtime_ns if training_store.exists() else None
    assert before == after, "the evaluation wrote into training's MLflow store instead of <output_dir>/mlflow.db"
    assert result.returncode == 0, result.stderr[-3000:]
    for method in ("input", "G_S", "sharpest_slice", "focal_transfer", "edf", "richardson_lucy"):
        assert method in result.stdout
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"input", "G_S", "sharpest_slice", "focal_transfer", "edf", "richardson_lucy"}
    assert any(r["measure"] == "ssim_truth" and r["view"] == "3d" for r in rows)
    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("zsegan-evaluation").experiment_id])
    assert len(runs) == 1 and "G_S.vertical.piqe" in runs[0].data.metrics


@pytest.mark.slow
def test_evaluate_config_bad_stack_fails_clearly_and_writes_no_report(dataset, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    (data / "stacks" / "sim_00001.tif").write_bytes(b"not a tiff at all")
    out = tmp_path / "out"
    result = _evaluate_cli(
        "--dataset_dir", str(data), "--subset", "all", "--output_dir", str(out), "--models", "{}",
        "--n_vertical", "2", "--num_workers", "0",
    )  # fmt: skip
    assert result.returncode == 2
    assert "sim_00001.tif" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "metrics.csv").exists()


def test_fidelity_rows_pass_for_the_input_and_fail_for_an_unrelated_stack(dataset):
    from scripts.data.io import read_stack

    x = read_stack(dataset / "stacks" / "sim_00000.tif")[0].astype(np.float32)
    unrelated = baselines.Unrelated([{"image": str(p)} for p in sorted((dataset / "stacks").iterdir())])
    other = unrelated(x)
    assert other.shape == x.shape and not np.array_equal(other, x)
    assert np.array_equal(unrelated(x), other)  # the same one every time
    sharpest = baselines.sharpest_slice(x)
    rows, _ = measure_stack("s", x, {"other": other, "sharpest": sharpest}, None, Settings(n_vertical=2))
    by = {(r["method"], r["view"], r["index"], r["measure"]): r["value"] for r in rows}
    assert by[(INPUT, "3d", "all", "ssim_focus_slice")] == pytest.approx(1.0)
    assert by[(INPUT, "3d", "all", "ssim_coarse_min")] == pytest.approx(1.0)
    assert by[(INPUT, "3d", "all", "detail_support_min")] == pytest.approx(1.0)
    assert by[("sharpest", "3d", "all", "detail_support_min")] == pytest.approx(1.0)  # x's own focal detail
    assert by[("other", "3d", "all", "detail_support_min")] < 0.5  # another specimen's detail is not in x
    assert min(by[("other", "xy", k, "detail_support")] for k in range(17)) == pytest.approx(
        by[("other", "3d", "all", "detail_support_min")]
    )
    assert by[("sharpest", "3d", "all", "ssim_focus_slice")] == pytest.approx(1.0)  # its focus slice is x's
    assert by[("other", "3d", "all", "ssim_focus_slice")] < 0.5
    assert by[("other", "3d", "all", "ssim_coarse_min")] < by[("sharpest", "3d", "all", "ssim_coarse_min")] < 1
    coarse = [by[("sharpest", "xy", k, "ssim_coarse")] for k in range(17)]
    assert max(coarse) == pytest.approx(1.0) and min(coarse) == pytest.approx(
        by[("sharpest", "3d", "all", "ssim_coarse_min")]
    )
    ratios = [by[(INPUT, "xy", k, "fm_ratio")] for k in range(17)]
    assert max(ratios) == pytest.approx(1.0, rel=0.2) and min(ratios) < 0.9
    assert by[(INPUT, "3d", "all", "piqe_focus_slice")] == pytest.approx(
        by[("sharpest", "3d", "all", "piqe_focus_slice")]
    )


def test_unrelated_needs_another_stack_of_the_same_shape(dataset):
    from scripts.data.io import read_stack

    path = dataset / "stacks" / "sim_00000.tif"
    with pytest.raises(ValueError, match="no other stack"):
        baselines.Unrelated([{"image": str(path)}])(read_stack(path)[0])
