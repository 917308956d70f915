"""Checkpoint handlers: latest_checkpoint, ResumableCheckpoint, ExportGenerator, save_state_dict_atomic."""

from __future__ import annotations

import copy
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader as MonaiLoader
from monai.data import Dataset
from monai.transforms import Compose, RandFlipd, RandSpatialCropd
from monai.utils import set_determinism
from scripts.data.datalist import ResumableSampler
from scripts.errors import InputError
from scripts.inference.sliding_window import read_settings, weights_digest
from scripts.nets.networks import Generator3D, PatchDiscriminator2D
from scripts.ops import handlers
from scripts.ops.handlers import ExportGenerator, ResumableCheckpoint, latest_checkpoint, save_state_dict_atomic
from scripts.zsegan.trainer import ZSEGANTrainer
from torch.utils.data import DataLoader


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir())


# ----------------------------------------------------------------------------- latest_checkpoint


def test_latest_checkpoint_picks_highest_iteration(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None
    for name in ("state_checkpoint_9.pt", "state_checkpoint_100.pt", "state_checkpoint_10.pt", "state_x.pt",
                 "other_500.pt", "state_checkpoint_700.pt.tmp"):  # fmt: skip
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path) == tmp_path / "state_checkpoint_100.pt"
    assert latest_checkpoint(tmp_path, prefix="other") == tmp_path / "other_500.pt"


# ----------------------------------------------------------------------------- ResumableCheckpoint, plain Engine


class _Counting:
    """A tiny training loop: one Adam step of a linear model per iteration; counts the iterations run."""

    def __init__(self, seed: int):
        torch.manual_seed(seed)
        self.model = torch.nn.Linear(3, 2)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.1)
        self.steps = 0
        self.engine = Engine(self._step)
        self.engine.state.device = torch.device("cpu")  # what MONAI's workflows provide

    def _step(self, engine, batch):
        self.steps += 1
        self.optimizer.zero_grad()
        loss = self.model(batch).pow(2).mean()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def checkpoint(self, folder, **kwargs) -> ResumableCheckpoint:
        handler = ResumableCheckpoint(str(folder), {"model": self.model, "optimizer": self.optimizer}, **kwargs)
        handler.attach(self.engine)
        return handler


DATA = [torch.full((4, 3), float(i)) for i in range(5)]


def test_checkpoint_every_interval_keeps_n_saved(tmp_path):
    saved = []
    loop = _Counting(seed=0)
    loop.checkpoint(tmp_path, interval=2, n_saved=2)
    loop.engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: saved.append(_files(tmp_path)))
    loop.engine.run(DATA, max_epochs=1)
    # after iterations 2 and 4, and at the end (5); the oldest removed
    assert saved[1] == ["state_checkpoint_2.pt"]
    assert saved[3] == ["state_checkpoint_2.pt", "state_checkpoint_4.pt"]
    assert _files(tmp_path) == ["state_checkpoint_4.pt", "state_checkpoint_5.pt"]
    checkpoint = torch.load(tmp_path / "state_checkpoint_5.pt", weights_only=True)
    assert {"model", "optimizer", "trainer", "checkpointer"} <= set(checkpoint)
    assert checkpoint["trainer"]["iteration"] == 5
    for key, value in loop.model.state_dict().items():
        assert torch.equal(checkpoint["model"][key], value)


def test_no_duplicate_save_when_the_end_falls_on_the_interval(tmp_path):
    loop = _Counting(seed=0)
    loop.checkpoint(tmp_path, interval=5, n_saved=3)
    loop.engine.run(DATA, max_epochs=1)
    assert _files(tmp_path) == ["state_checkpoint_5.pt"]


def test_second_engine_resumes_from_latest(tmp_path):
    first = _Counting(seed=0)
    first.checkpoint(tmp_path, interval=2, n_saved=2)
    first.engine.run(DATA, max_epochs=1)
    saved = torch.load(tmp_path / "state_checkpoint_5.pt", weights_only=True)

    second = _Counting(seed=1)  # other initial weights, empty optimiser
    assert not torch.equal(second.model.weight, first.model.weight)
    second.checkpoint(tmp_path, interval=2, n_saved=2)
    at_start = {}

    def capture(engine):
        at_start["iteration"] = engine.state.iteration
        at_start["model"] = {k: v.clone() for k, v in second.model.state_dict().items()}
        at_start["optimizer"] = copy.deepcopy(second.optimizer.state_dict())

    second.engine.add_event_handler(Events.STARTED, capture)  # runs after the loader (attached first)
    second.engine.run(DATA, max_epochs=2)

    assert at_start["iteration"] == 5
    for key, value in saved["model"].items():
        assert torch.equal(at_start["model"][key], value)
    for index, state in saved["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(at_start["optimizer"]["state"][index][name]), torch.as_tensor(value))
    assert second.steps == 5  # only the second epoch was run
    assert second.engine.state.iteration == 10
    # n_saved holds across the resume: the checkpointer's own state was restored
    assert _files(tmp_path) == ["state_checkpoint_10.pt", "state_checkpoint_8.pt"]


def test_rerunning_a_finished_training_does_nothing(tmp_path):
    first = _Counting(seed=0)
    first.checkpoint(tmp_path, interval=2)
    first.engine.run(DATA, max_epochs=1)
    again = _Counting(seed=1)
    again.checkpoint(tmp_path, interval=2)
    again.engine.run(DATA, max_epochs=1)
    assert again.steps == 0 and again.engine.state.iteration == 5
    assert torch.equal(again.model.weight, first.model.weight)
    assert _files(tmp_path) == ["state_checkpoint_4.pt", "state_checkpoint_5.pt"]


def test_a_truncated_or_foreign_latest_checkpoint_is_named_with_the_way_on(tmp_path):
    first = _Counting(seed=0)
    first.checkpoint(tmp_path, interval=2)
    first.engine.run(DATA, max_epochs=1)
    latest = tmp_path / "state_checkpoint_5.pt"
    data = latest.read_bytes()
    cases = {
        "truncated": (data[: len(data) // 2], "cannot resume from it"),
        "foreign": (None, "holds a model of another architecture"),
        "not a checkpoint": (None, "is not a checkpoint of this training (no optimizer)"),
    }
    for name, (content, problem) in cases.items():
        if name == "foreign":
            torch.save({"model": torch.nn.Linear(4, 2).state_dict(), "optimizer": {}}, latest)
        elif name == "not a checkpoint":
            torch.save({"model": first.model.state_dict()}, latest)
        else:
            latest.write_bytes(content)
        with pytest.raises(InputError, match=re.escape(problem)) as error:
            _Counting(seed=1).checkpoint(tmp_path, interval=2)
        assert error.value.path == str(latest) and "delete it to resume from state_checkpoint_4.pt" in str(error.value)


def test_resume_false_starts_over(tmp_path):
    first = _Counting(seed=0)
    first.checkpoint(tmp_path, interval=5)
    first.engine.run(DATA, max_epochs=1)
    second = _Counting(seed=1)
    initial = second.model.weight.detach().clone()
    second.checkpoint(tmp_path, interval=100, resume=False)
    at_start = {}
    second.engine.add_event_handler(Events.STARTED, lambda e: at_start.update(weight=second.model.weight.clone()))
    second.engine.run(DATA, max_epochs=1)
    assert torch.equal(at_start["weight"], initial)
    assert second.steps == 5 and second.engine.state.iteration == 5


# ----------------------------------------------------------------------------- ResumableCheckpoint, ZSEGANTrainer


def _zsegan(max_epochs: int) -> ZSEGANTrainer:
    nets = {
        "g_s": Generator3D(channels=4, n_residual_blocks=1),
        "g_b": Generator3D(channels=4, n_residual_blocks=1),
        "d_s": PatchDiscriminator2D(channels=8),
        "d_b": PatchDiscriminator2D(channels=8),
    }
    depth = 17
    stacks = [
        {"image": torch.rand(1, depth, 32, 32) * 2 - 1, "alpha": torch.ones(depth), "cycle_weight": torch.ones(depth),
         "sharpness": torch.ones(depth)}
        for _ in range(2)
    ]  # fmt: skip
    infocus = [{"image": torch.rand(1, 32, 32) * 2 - 1} for _ in range(2)]
    return ZSEGANTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=DataLoader(stacks, batch_size=1),
        infocus_loader=DataLoader(infocus, batch_size=2),
        g_optimizer=torch.optim.Adam(list(nets["g_s"].parameters()) + list(nets["g_b"].parameters())),
        d_optimizer=torch.optim.Adam(list(nets["d_s"].parameters()) + list(nets["d_b"].parameters())),
        n_horizontal=2,
        n_vertical=2,
        pool_size=3,
        **nets,
    )


def _save_dict(trainer: ZSEGANTrainer) -> dict:
    names = ("g_s", "g_b", "d_s", "d_b", "g_optimizer", "d_optimizer")
    return {name: getattr(trainer, name) for name in names}


def test_zsegan_trainer_resumes_networks_optimisers_and_pools(tmp_path):
    set_determinism(seed=0)
    first = _zsegan(max_epochs=1)
    ResumableCheckpoint(tmp_path, _save_dict(first), interval=1).attach(first)
    first.run()
    assert _files(tmp_path) == ["state_checkpoint_1.pt", "state_checkpoint_2.pt"]

    second = _zsegan(max_epochs=2)
    ResumableCheckpoint(tmp_path, _save_dict(second), interval=1).attach(second)
    at_start = {}

    def capture(engine):
        at_start["iteration"] = engine.state.iteration
        at_start["g_s"] = {k: v.clone() for k, v in engine.g_s.state_dict().items()}
        at_start["d_b"] = {k: v.clone() for k, v in engine.d_b.state_dict().items()}
        at_start["g_step"] = engine.g_optimizer.state_dict()["state"][0]["step"].clone()
        at_start["pools"] = {name: len(pool) for name, pool in engine.pools.items()}

    second.add_event_handler(Events.STARTED, capture)
    second.run()
    assert at_start["iteration"] == 2
    for name in ("g_s", "d_b"):
        for key, value in getattr(first, name).state_dict().items():
            assert torch.equal(at_start[name][key], value), f"{name}.{key}"
    assert float(at_start["g_step"]) == 2
    assert at_start["pools"] == dict.fromkeys(first.pools, 3)
    assert second.state.iteration == 4
    assert _files(tmp_path) == ["state_checkpoint_3.pt", "state_checkpoint_4.pt"]


# ----------------------------------------------------------------------------- export and atomic save


def test_export_generator_writes_a_loadable_state_dict(tmp_path):
    g_s = Generator3D(channels=4, n_residual_blocks=1)
    path = tmp_path / "models" / "model.pt"
    engine = Engine(lambda engine, batch: None)
    ExportGenerator(g_s, str(path)).attach(engine)
    assert not path.exists()
    engine.run([0, 1], max_epochs=1)
    state = torch.load(path, weights_only=True)
    assert set(state) == set(g_s.state_dict())
    fresh = Generator3D(channels=4, n_residual_blocks=1)
    fresh.load_state_dict(state)
    x = torch.rand(1, 1, 5, 8, 8)
    torch.testing.assert_close(fresh(x), g_s(x))
    assert _files(path.parent) == ["model.pt"]  # no settings given: none written


def test_export_generator_writes_the_settings_of_its_weights_beside_them(tmp_path):
    """paired_train.yaml's export: the registered model's settings (the per-system ranges among them) beside the
    weights, with their digest, so that inference from the file applies G as it was trained."""
    g = Generator3D(channels=4, n_residual_blocks=1)
    path = tmp_path / "paired.pt"
    settings = {"builder": "Generator3D", "system_ranges": {"A": [100.0, 400.0], "B": [0.0, 10.0]}}
    engine = Engine(lambda engine, batch: None)
    ExportGenerator(g, str(path), settings).attach(engine)
    engine.run([0], max_epochs=1)
    assert _files(tmp_path) == ["paired.pt", "paired.settings.json"]
    written = read_settings(path)  # checks the digest against the weights in paired.pt
    assert written["system_ranges"] == settings["system_ranges"]
    assert written["weights_sha256"] == weights_digest(torch.load(path, weights_only=True))


def test_save_state_dict_atomic_leaves_nothing_on_failure(tmp_path, monkeypatch):
    module = torch.nn.Linear(2, 2)
    path = save_state_dict_atomic(module, tmp_path / "model.pt")
    original = path.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(handlers.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_state_dict_atomic(torch.nn.Linear(2, 2), path)
    with pytest.raises(OSError, match="disk full"):
        save_state_dict_atomic(module, tmp_path / "new" / "model.pt")
    assert _files(tmp_path) == ["model.pt", "new"]
    assert _files(tmp_path / "new") == []
    assert path.read_bytes() == original


@pytest.mark.slow
def test_resumed_mlflow_run_keeps_first_params_and_accepts_changed_ones(tmp_path):
    import mlflow
    from ignite.engine import Engine
    from scripts.ops.handlers import ResumableMLFlowHandler

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = ResumableMLFlowHandler(tracking_uri=uri, experiment_name="e", experiment_param={"max_epochs": 2, "p": 2.0})
    first.start(Engine(lambda e, b: None))  # the run stays RUNNING, as after an interruption
    resumed = ResumableMLFlowHandler(tracking_uri=uri, experiment_name="e", experiment_param={"max_epochs": 5, "lr": 1})
    resumed.start(Engine(lambda e, b: None))  # plain MLFlowHandler raises here: a param may not change value
    assert resumed.cur_run.info.run_id == first.cur_run.info.run_id
    params = mlflow.MlflowClient(uri).get_run(first.cur_run.info.run_id).data.params
    assert params["max_epochs"] == "2" and params["p"] == "2.0" and params["lr"] == "1"


def test_validation_artifacts_write_views_and_per_slice_sharpness(tmp_path):
    import numpy as np
    from ignite.engine import Engine
    from PIL import Image
    from scripts.ops.handlers import ValidationArtifacts

    g = torch.Generator().manual_seed(0)
    stacks = [torch.rand(1, 9, 24, 24, generator=g) * 2 - 1 for _ in range(3)]
    blurred = [torch.nn.functional.avg_pool3d(s[None], 3, 1, 1)[0] for s in stacks]  # a blurrier "output"
    outputs = iter([[{"image": s, "pred": b}] for s, b in zip(stacks, blurred, strict=False)])
    engine = Engine(lambda e, batch: next(outputs))
    ValidationArtifacts(str(tmp_path)).attach(engine)
    engine.run(range(3), max_epochs=1)

    assert Image.open(tmp_path / "views" / "epoch_0001.png").size[1] == 14 + 2 * (24 + 4)  # header + 2 rows
    table = np.loadtxt(tmp_path / "sharpness" / "epoch_0001.csv", delimiter=",", skiprows=1)
    assert table.shape == (9, 3) and list(table[:, 0]) == list(range(9))
    assert (table[:, 2] < table[:, 1]).all()  # the blurred output is less sharp on every slice
    assert (tmp_path / "sharpness" / "epoch_0001.png").stat().st_size > 1000


def test_random_states_are_saved_and_loaded_whole(tmp_path):
    """torch's, numpy's and Python's generators, each loader's sampler place and its random transforms' own."""
    data = [{"image": torch.arange(64.0).reshape(1, 8, 8) + i} for i in range(5)]
    transform = Compose([RandSpatialCropd("image", (4, 4), random_size=False), RandFlipd("image", prob=0.5)])
    dataset = Dataset(data, transform)
    loader = MonaiLoader(dataset, batch_size=2, sampler=ResumableSampler(dataset, 1), generator=torch.Generator())
    states = handlers.RandomStates([loader])
    batches = iter(loader)
    next(batches)  # a pass under way, as when a checkpoint is saved

    def draws(rest_of_pass):
        images = [b["image"] for b in rest_of_pass] + [b["image"] for b in loader]  # and the next pass
        return images, torch.rand(3), np.random.rand(3), random.random()

    torch.save(states.state_dict(), tmp_path / "random.pt")
    first = draws(batches)
    states.load_state_dict(torch.load(tmp_path / "random.pt", weights_only=True))  # as a checkpoint holds them
    second = draws(iter(loader))  # resuming: a new iterator takes the pass up where it was
    assert all(torch.equal(a, b) for a, b in zip(first[0], second[0], strict=True))
    assert torch.equal(first[1], second[1]) and (first[2] == second[2]).all() and first[3] == second[3]


def test_run_summary_says_how_many_were_done_where_and_how_long(caplog):
    engine = Engine(lambda engine, batch: None)
    handlers.RunSummary("/out", unit="stack").attach(engine)
    with caplog.at_level("INFO", logger="zsegan"):
        engine.run([0, 1, 2], max_epochs=1)
        engine.run([0], max_epochs=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "zsegan"]
    assert len(lines) == 2 and re.fullmatch(r"enhanced 3 stacks into /out in \d+\.\d s", lines[0]), lines
    assert re.fullmatch(r"enhanced 1 stack into /out in \d+\.\d s", lines[1]), lines
    with caplog.at_level("INFO", logger="zsegan"):
        handlers.RunSummary("/out", "evaluated").finish(2)  # without an engine: the clock started when it was made
    assert re.fullmatch(r"evaluated 2 stacks into /out in \d+\.\d s", caplog.messages[-1])
