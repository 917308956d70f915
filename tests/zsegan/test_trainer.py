"""ZSEGANTrainer on tiny synthetic data, and the linear learning-rate decay."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Events
from monai.utils import set_determinism
from scripts.nets.networks import Generator3D, PatchDiscriminator2D
from scripts.zsegan.trainer import ZSEGANTrainer, linear_decay
from torch.utils.data import DataLoader

LOSS_KEYS = ("loss_G", "loss_G_S_adv", "loss_G_B_adv", "loss_cycle", "loss_identity", "loss_D_S", "loss_D_B")


def _stacks(n: int, depth: int, size: int = 32) -> list[dict]:
    items = []
    for _ in range(n):
        image = torch.rand(1, depth, size, size) * 2 - 1
        weights = torch.linspace(1.0, 1.67, depth)
        items.append({"image": image, "alpha": weights, "cycle_weight": weights + 0.5, "sharpness": 1 / weights})
    return items


def make_trainer(depth: int = 17, infocus_size: int = 32, max_epochs: int = 1, n_stacks: int = 2, **kwargs):
    g_s = Generator3D(channels=4, n_residual_blocks=1)
    g_b = Generator3D(channels=4, n_residual_blocks=1)
    d_s = PatchDiscriminator2D(channels=8, n_layers=4)  # 16 <= 17 rows of a vertical section
    d_b = PatchDiscriminator2D(channels=8, n_layers=4)
    g_opt = torch.optim.Adam(list(g_s.parameters()) + list(g_b.parameters()), lr=1e-3, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(list(d_s.parameters()) + list(d_b.parameters()), lr=1e-3, betas=(0.5, 0.999))
    infocus = [{"image": torch.rand(1, infocus_size, infocus_size) * 2 - 1} for _ in range(4)]
    options = {"n_horizontal": 2, "n_vertical": 2, "pool_size": 4, **kwargs}
    return ZSEGANTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=DataLoader(_stacks(n_stacks, depth), batch_size=1, shuffle=False),
        infocus_loader=DataLoader(infocus, batch_size=2, shuffle=True),
        g_s=g_s,
        g_b=g_b,
        d_s=d_s,
        d_b=d_b,
        g_optimizer=g_opt,
        d_optimizer=d_opt,
        **options,
    )


def _snapshot(trainer) -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: {k: v.detach().clone() for k, v in getattr(trainer, name).state_dict().items()}
        for name in ("g_s", "g_b", "d_s", "d_b")
    }


@pytest.mark.parametrize("depth", [17, 29])
def test_two_iterations_give_finite_losses_and_update_all_networks(depth):
    set_determinism(seed=0)
    trainer = make_trainer(depth=depth)
    before = _snapshot(trainer)
    trainer.run()
    assert trainer.state.iteration == 2
    output = trainer.state.output
    assert set(LOSS_KEYS) <= set(output)
    for key in LOSS_KEYS:
        assert math.isfinite(output[key]), key
    assert output["loss_identity"] == 0.0  # lambda_identity is 0 by default
    assert output["loss_cycle"] > 0 and output["loss_D_S"] > 0 and output["loss_D_B"] > 0
    assert output["loss_G"] == pytest.approx(output["loss_G_S_adv"] + output["loss_G_B_adv"] + output["loss_cycle"])
    assert output["lr_G"] == pytest.approx(1e-3) and output["lr_D"] == pytest.approx(1e-3)
    after = _snapshot(trainer)
    for name in before:
        changed = [k for k in before[name] if not torch.equal(before[name][k], after[name][k])]
        weights = [k for k in before[name] if k.endswith("weight")]
        assert set(weights) <= set(changed), f"{name}: unchanged {set(weights) - set(changed)}"


def test_identity_loss_is_used_when_weighted():
    set_determinism(seed=0)
    trainer = make_trainer(lambda_identity=0.5, n_stacks=1)
    trainer.run()
    output = trainer.state.output
    assert output["loss_identity"] > 0
    assert output["loss_G"] == pytest.approx(
        output["loss_G_S_adv"] + output["loss_G_B_adv"] + output["loss_cycle"] + output["loss_identity"]
    )


def test_same_seed_gives_identical_runs():
    results = []
    for _ in range(2):
        set_determinism(seed=1)
        trainer = make_trainer()
        losses: list[dict] = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e, out=losses: out.append(dict(e.state.output)))
        trainer.run()
        results.append((losses, _snapshot(trainer)))
    (losses_a, weights_a), (losses_b, weights_b) = results
    assert len(losses_a) == 2 and losses_a == losses_b
    for name in weights_a:
        for key in weights_a[name]:
            assert torch.equal(weights_a[name][key], weights_b[name][key]), f"{name}.{key}"
    # and another seed gives another run
    set_determinism(seed=2)
    other = make_trainer()
    other.run()
    assert other.state.output["loss_G"] != losses_a[-1]["loss_G"]


def test_state_dict_holds_and_restores_the_pools():
    set_determinism(seed=0)
    trainer = make_trainer()
    trainer.run()
    state = trainer.state_dict()
    assert set(state["pools"]) == {"S_parallel", "S_perpendicular", "B_parallel"}
    # 2 iterations x 2 sections, capped at the pool size 4
    assert len(state["pools"]["S_parallel"]["images"]) == 4
    assert state["pools"]["B_parallel"]["weights"] is not None
    assert state["iteration"] == 2

    fresh = make_trainer()
    assert all(len(pool) == 0 for pool in fresh.pools.values())
    fresh.load_state_dict(state)
    assert fresh.state.iteration == 2
    for name, pool in trainer.pools.items():
        restored = fresh.pools[name]
        assert len(restored) == len(pool) > 0
        for a, b in zip(pool.images, restored.images, strict=True):
            assert torch.equal(a, b)
    weights = zip(trainer.pools["B_parallel"].weights, fresh.pools["B_parallel"].weights, strict=True)
    assert all(torch.equal(a, b) for a, b in weights)
    # loading a state without pools (an older checkpoint) leaves them as they are
    old_style = {k: v for k, v in state.items() if k != "pools"}
    another = make_trainer()
    another.load_state_dict(old_style)
    assert all(len(pool) == 0 for pool in another.pools.values())


def test_too_small_infocus_images_raise():
    trainer = make_trainer(depth=17, infocus_size=16, n_stacks=1)  # 16 rows < 17 planes
    with pytest.raises(ValueError, match="too small"):
        trainer.run()


def test_linear_decay():
    factor = linear_decay(100)
    assert [factor(i) for i in (0, 10, 49)] == [1.0, 1.0, 1.0]
    assert factor(50) == pytest.approx(1.0)
    assert factor(75) == pytest.approx(0.5)
    assert factor(90) == pytest.approx(0.2)
    assert factor(100) == 0.0 and factor(150) == 0.0
    values = [factor(i) for i in range(50, 101)]
    assert all(a > b for a, b in zip(values[:-1], values[1:], strict=True))  # strictly decreasing after the start
    late = linear_decay(10, start_fraction=0.8)
    assert late(7) == 1.0 and late(9) == pytest.approx(0.5)
    assert linear_decay(1)(0) == 1.0


def test_linear_decay_drives_lambda_lr():
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, linear_decay(4))
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.0])


def test_networks_train_in_training_mode_after_validation():
    trainer = make_trainer(max_epochs=2)
    modes = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: engine.g_s.eval())  # as the evaluator leaves it
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda engine: modes.append([engine.g_s.training, engine.d_s.training])
    )
    trainer.run()
    assert modes == [[True, True]] * 4


@pytest.mark.parametrize("sharp_domain", ["stack", "both"])
def test_sharp_domain_takes_the_stacks_sharpest_slices(sharp_domain):
    set_determinism(seed=0)
    trainer = make_trainer(n_stacks=1, sharp_domain=sharp_domain)
    x = torch.rand(1, 1, 17, 32, 32)
    sharpness = torch.zeros(1, 17)
    sharpness[0, [5, 6, 7]] = torch.tensor([0.9, 1.0, 0.95])
    examples = trainer._sharp_examples(x, sharpness)
    assert examples.shape == (2, 1, 32, 32)
    own = [e for e in examples if any(torch.equal(e, x[0, :, z]) for z in (5, 6, 7))]
    assert len(own) == (2 if sharp_domain == "stack" else 1)
    trainer.run()
    assert math.isfinite(trainer.state.output["loss_D_S"])
    with pytest.raises(ValueError, match="sharp_domain"):
        make_trainer(sharp_domain="sharpest")


def test_optical_g_b_lowpass_and_spectral_losses_train():
    from scripts.nets.optical import OpticalBlur

    set_determinism(seed=0)
    trainer = make_trainer(n_stacks=1, lambda_lowpass=2.0, lambda_spectrum=0.5)
    trainer.g_b = OpticalBlur()
    trainer.optical_g_b = True
    trainer.g_optimizer.add_param_group({"params": list(trainer.g_b.parameters())})
    before = trainer.g_b.log_k.detach().clone()
    trainer.run()
    output = trainer.state.output
    assert output["loss_lowpass"] > 0 and output["loss_spectrum"] > 0
    terms = ("loss_G_S_adv", "loss_G_B_adv", "loss_cycle", "loss_lowpass", "loss_spectrum")
    assert output["loss_G"] == pytest.approx(sum(output[t] for t in terms))
    assert not torch.equal(before, trainer.g_b.log_k)  # the blur is learnt


def test_correction_tv_prior_is_a_term_of_the_generators_loss():
    set_determinism(seed=0)
    trainer = make_trainer(n_stacks=1, lambda_correction_tv=0.5)
    trainer.run()
    output = trainer.state.output
    assert output["loss_correction_tv"] > 0
    terms = ("loss_G_S_adv", "loss_G_B_adv", "loss_cycle", "loss_correction_tv")
    assert output["loss_G"] == pytest.approx(sum(output[t] for t in terms))


def test_focal_detail_prior_is_a_term_with_the_optical_g_b_only():
    from scripts.nets.optical import OpticalBlur

    set_determinism(seed=0)
    with pytest.raises(ValueError, match="lambda_focal_detail > 0 needs the optical G_B"):
        make_trainer(n_stacks=1, lambda_focal_detail=1.0)
    plain = make_trainer(n_stacks=1)
    trainer = ZSEGANTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=plain.data_loader,
        infocus_loader=plain.infocus_loader,
        g_s=plain.g_s,
        g_b=OpticalBlur(),
        d_s=plain.d_s,
        d_b=plain.d_b,
        g_optimizer=plain.g_optimizer,
        d_optimizer=plain.d_optimizer,
        n_horizontal=2,
        n_vertical=2,
        pool_size=4,
        lambda_focal_detail=2.0,
    )
    trainer.run()
    output = trainer.state.output
    assert output["loss_focal_detail"] > 0
    terms = ("loss_G_S_adv", "loss_G_B_adv", "loss_cycle", "loss_focal_detail")
    assert output["loss_G"] == pytest.approx(sum(output[t] for t in terms))


def test_optical_g_b_is_recognised_through_a_wrapper():
    from scripts.nets.optical import OpticalBlur

    trainer = make_trainer(n_stacks=1)
    assert not trainer.optical_g_b
    t = ZSEGANTrainer(
        device="cpu", max_epochs=1, train_data_loader=trainer.data_loader, infocus_loader=trainer.infocus_loader,
        g_s=trainer.g_s, g_b=torch.nn.DataParallel(OpticalBlur()), d_s=trainer.d_s, d_b=trainer.d_b,
        g_optimizer=trainer.g_optimizer, d_optimizer=trainer.d_optimizer,
    )  # fmt: skip
    assert t.optical_g_b


def test_lowpassed_cycle_and_no_d_b():
    """cycle_sigma compares x and G_B(G_S(x)) low-passed (a noise-only difference costs ~nothing), and
    lambda_adversarial_b 0 leaves D_B out: its weights stay as they were, its losses are 0."""
    from scripts.zsegan.losses import lowpass, weighted_cycle_loss

    torch.manual_seed(0)
    x = torch.zeros(1, 1, 3, 32, 32)
    x[..., 10:20, 10:20] = 0.5
    noisy = x + 0.05 * torch.randn_like(x)
    w = torch.ones(())
    assert weighted_cycle_loss(lowpass(noisy, 1.0), lowpass(x, 1.0), w) < 0.4 * weighted_cycle_loss(noisy, x, w)

    set_determinism(seed=0)
    trainer = make_trainer(n_stacks=1, cycle_sigma=1.0, lambda_adversarial_b=0.0)
    before = [p.detach().clone() for p in trainer.d_b.parameters()]
    trainer.run()
    output = trainer.state.output
    assert output["loss_D_B"] == 0 and output["loss_G_B_adv"] == 0 and output["loss_cycle"] > 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.d_b.parameters(), strict=True))
    assert math.isfinite(output["loss_D_S"])


def test_bfloat16_mixed_precision_runs_on_cpu_through_the_autocast_path():
    """amp with bfloat16 autocasts on the CPU (the code path CUDA's float16 takes, without the scaler);
    float16 amp on a CPU stays off, as before."""
    from scripts.nets.optical import OpticalBlur

    set_determinism(seed=0)
    trainer = make_trainer(n_stacks=1, amp=True, amp_dtype="bfloat16", lambda_spectrum=0.5, cycle_sigma=1.0)
    trainer.g_b = OpticalBlur()
    trainer.optical_g_b = True
    dtypes = []
    trainer.g_s.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    before = _snapshot(trainer)["g_s"]
    trainer.run()
    assert trainer.autocast and trainer.scaler is None
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert all(math.isfinite(v) for k, v in trainer.state.output.items() if k.startswith("loss"))
    assert any(not torch.equal(before[k], v) for k, v in trainer.g_s.state_dict().items())
    assert not make_trainer(n_stacks=1, amp=True).autocast  # float16 needs CUDA
    with pytest.raises(ValueError, match="amp_dtype"):
        make_trainer(amp=True, amp_dtype="float8")


def test_amp_dtype_auto_is_float16_on_cuda_and_bfloat16_where_the_cpu_computes_it(monkeypatch):
    """auto: float16 with gradient scaling on CUDA; on the CPU bfloat16 autocast where the CPU has native bfloat16
    (measured 2.5 times faster there: docs/benchmarks.md), float32 elsewhere (emulated bfloat16 is slower)."""
    from scripts.zsegan import trainer as module

    assert module.resolve_amp_dtype("auto", "cuda") == "float16"
    assert (
        module.resolve_amp_dtype("bfloat16", "cpu") == "bfloat16"
        and module.resolve_amp_dtype("float16", "cpu") == "float16"
    )
    for native in (True, False):
        monkeypatch.setattr(module, "native_bfloat16", lambda native=native: native)
        assert module.resolve_amp_dtype("auto", "cpu") == ("bfloat16" if native else "float16")
        trainer = make_trainer(n_stacks=1, amp=True, amp_dtype="auto")
        assert trainer.autocast is native and trainer.scaler is None
        assert trainer.amp_dtype == (torch.bfloat16 if native else torch.float16)
