"""Generator3D, PatchDiscriminator2D and init_weights."""

import numpy as np
import pytest
import torch
from scripts.nets.networks import Generator3D, PatchDiscriminator2D, init_weights, receptive_reach
from torch import nn

REFERENCE = {"upsampling": "transpose", "residual": False}  # the reference code's generator (tanh output)
REFERENCE_D = {"n_layers": 4}


def tiny_generator(**kwargs) -> Generator3D:
    return Generator3D(channels=4, n_residual_blocks=1, **{**REFERENCE, **kwargs})


def test_constructor_defaults_are_the_reference_codes():
    g, d = Generator3D(), PatchDiscriminator2D()
    assert not g.residual and isinstance(g.model[-1], torch.nn.Tanh) and d.n_layers == 4


@pytest.mark.parametrize("shape", [(29, 16, 16), (17, 12, 20), (40, 8, 8), (29, 37, 53), (1, 1, 1), (3, 5, 2)])
def test_generator_output_matches_input_shape_and_range(shape):
    g = tiny_generator()
    x = torch.randn(2, 1, *shape) * 3
    y = g(x)
    assert y.shape == x.shape
    assert y.min() >= -1 and y.max() <= 1


def test_generator_resize_upsampling_and_zero_padding_keep_shape():
    g = tiny_generator(upsampling="resize", padding_mode="zeros", n_downsampling=3)
    x = torch.randn(1, 1, 29, 37, 53)
    assert g(x).shape == x.shape


def test_generator_channels_in_and_out():
    g = tiny_generator(in_channels=2, out_channels=3)
    assert g(torch.randn(1, 2, 9, 10, 11)).shape == (1, 3, 9, 10, 11)


def test_generator_padding_rule():
    g = tiny_generator()
    assert g.padded_shape((29, 128, 128)) == (32, 128, 128)
    assert g.padded_shape((29, 37, 53)) == (32, 40, 56)
    # a single deepest voxel would break instance norm: Z is doubled
    assert g.padded_shape((1, 1, 1)) == (8, 4, 4)


def test_generator_gradients_flow_to_input_and_every_parameter():
    g = tiny_generator()
    x = torch.randn(1, 1, 17, 12, 12, requires_grad=True)
    g(x).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in g.named_parameters():
        assert p.grad is not None, name


def test_generator_reference_size_matches_architecture():
    g = Generator3D(**REFERENCE)
    convs = [m for m in g.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    assert convs[0].out_channels == 16 and convs[0].kernel_size == (5, 5, 5)
    assert max(c.out_channels for c in convs) == 64
    assert convs[-1].out_channels == 1 and convs[-1].kernel_size == (5, 5, 5)
    assert sum(isinstance(c, nn.ConvTranspose3d) for c in convs) == 2
    assert not any(isinstance(m, nn.InstanceNorm3d) and m.affine for m in g.modules())
    # hand count: normalised convs have no bias, the output conv has one
    c, k3 = 16, 27
    first = 1 * c * 125
    downsamplings = c * 2 * c * k3 + 2 * c * 4 * c * k3
    residual_blocks = 6 * 2 * (4 * c) ** 2 * k3
    transposed = 4 * c * 2 * c * k3 + 2 * c * c * k3
    output = c * 1 * 125 + 1
    expected = first + downsamplings + residual_blocks + transposed + output
    assert sum(p.numel() for p in g.parameters()) == expected == 1_469_345


def test_generator_rejects_bad_options():
    with pytest.raises(ValueError, match="padding_mode"):
        Generator3D(padding_mode="reflect")
    with pytest.raises(ValueError, match="norm"):
        Generator3D(norm="layer")
    with pytest.raises(ValueError, match="B,C,Z,Y,X"):
        tiny_generator()(torch.randn(1, 8, 8, 8))


@pytest.mark.parametrize("hw, out", [((128, 128), (8, 8)), ((29, 128), (1, 8)), ((16, 16), (1, 1)), ((29, 29), (1, 1))])
def test_discriminator_patch_map_sizes(hw, out):
    d = PatchDiscriminator2D(**REFERENCE_D)
    logits = d(torch.randn(3, 1, *hw))
    assert logits.shape == (3, 1, *out)
    assert d.output_size(*hw) == out
    assert torch.isfinite(logits).all()


def test_discriminator_min_size_and_rejection():
    d = PatchDiscriminator2D(channels=4, **REFERENCE_D)
    assert d.min_size == 16
    assert PatchDiscriminator2D(channels=4, n_layers=3).min_size == 8
    with pytest.raises(ValueError, match="16"):
        d(torch.randn(1, 1, 15, 64))


def test_discriminator_single_pixel_map_is_not_zeroed():
    """On a 16x16 input the deepest map is 1x1: the output must still depend on the input."""
    torch.manual_seed(0)
    d = PatchDiscriminator2D(channels=4, **REFERENCE_D)
    init_weights(d)
    a, b = d(torch.randn(1, 1, 16, 16)), d(torch.randn(1, 1, 16, 16))
    assert not torch.allclose(a, b)


def test_discriminator_layers_and_gradients():
    d = PatchDiscriminator2D(**REFERENCE_D)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256, 1]
    assert convs[-1].kernel_size == (3, 3)
    x = torch.randn(2, 1, 29, 64, requires_grad=True)
    d(x).mean().backward()
    assert x.grad.abs().sum() > 0


def test_init_weights():
    torch.manual_seed(0)
    g = Generator3D(channels=8, n_residual_blocks=2, norm="batch", **REFERENCE)
    for m in g.modules():  # make biases non-zero first
        if isinstance(m, nn.modules.conv._ConvNd) and m.bias is not None:
            nn.init.ones_(m.bias)
    init_weights(g, gain=0.02)
    convs = [m for m in g.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    weights = torch.cat([c.weight.flatten() for c in convs])
    assert abs(weights.mean().item()) < 1e-3 and weights.std().item() == pytest.approx(0.02, rel=0.05)
    assert all(torch.all(c.bias == 0) for c in convs if c.bias is not None)
    bns = [m for m in g.modules() if isinstance(m, nn.BatchNorm3d)]
    assert bns and all(torch.all(b.bias == 0) and abs(b.weight.mean() - 1) < 0.05 for b in bns)


@pytest.mark.parametrize("upsampling", ["transpose", "transpose4", "resize", "pixelshuffle"])
def test_residual_generator_is_the_identity_at_init_for_every_upsampling(upsampling):
    g = init_weights(Generator3D(channels=4, n_residual_blocks=1, upsampling=upsampling, residual=True))
    x = torch.rand(1, 1, 9, 20, 12) * 3 - 1.5  # also beyond [-1, 1]: no tanh clips it
    with torch.no_grad():
        assert torch.equal(g(x), x)
    y = g(x)
    y.sum().backward()
    last = [m for m in g.modules() if isinstance(m, torch.nn.Conv3d)][-1]
    assert last.weight.grad.abs().sum() > 0  # it learns from there


def test_non_residual_generator_ends_in_tanh_and_residual_needs_matching_channels():
    assert isinstance(Generator3D(channels=4, n_residual_blocks=0, residual=False).model[-1], torch.nn.Tanh)
    with pytest.raises(ValueError, match="residual needs"):
        Generator3D(in_channels=1, out_channels=2, residual=True)


@pytest.mark.parametrize("upsampling", ["transpose4", "pixelshuffle"])
def test_new_upsamplings_keep_shape(upsampling):
    g = Generator3D(channels=4, n_residual_blocks=1, upsampling=upsampling)
    assert g(torch.rand(1, 1, 7, 13, 18)).shape == (1, 1, 7, 13, 18)


def test_pixelshuffle_starts_as_nearest_neighbour_upsampling_and_init_weights_keeps_it():
    from monai.networks.blocks import SubpixelUpsample

    g = init_weights(Generator3D(channels=4, n_residual_blocks=0, upsampling="pixelshuffle"), 0.02)
    shuffle = next(m for m in g.modules() if isinstance(m, SubpixelUpsample))
    conv = shuffle.conv_block.weight  # ICNR: the 8 sub-pixel kernels of each output channel are equal
    per_output = conv.reshape(conv.shape[0] // 8, 8, *conv.shape[1:])
    assert torch.allclose(per_output, per_output[:, :1].expand_as(per_output))
    assert conv.std() > 0.05  # not overwritten by N(0, 0.02)


def test_init_weights_without_gain_leaves_the_network_alone():
    g = Generator3D(channels=4, n_residual_blocks=1)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    assert init_weights(g, None) is g
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())


def test_residual_and_plain_weights_never_load_into_each_other():
    plain = Generator3D(channels=4, n_residual_blocks=1, residual=False)
    residual = Generator3D(channels=4, n_residual_blocks=1, residual=True)
    with pytest.raises(RuntimeError, match="skip.gain"):
        plain.load_state_dict(residual.state_dict())
    with pytest.raises(RuntimeError, match="skip.gain"):
        residual.load_state_dict(plain.state_dict())
    Generator3D(channels=4, n_residual_blocks=1, residual=True).load_state_dict(residual.state_dict())


def test_focal_guide_gives_each_plane_the_focal_plane_and_its_distance():
    from scripts.nets.networks import focal_guide

    torch.manual_seed(0)
    x = torch.rand(2, 1, 7, 12, 10) * 0.1  # low-contrast planes ...
    x[0, :, 2] = torch.rand(12, 10)  # ... and one sharp plane per volume, at another depth in each
    x[1, :, 5] = torch.rand(12, 10)
    h = focal_guide(x)
    assert h.shape == (2, 3, 7, 12, 10)
    assert torch.equal(h[:, :1], x)
    assert all(torch.equal(h[0, 1, z], x[0, 0, 2]) and torch.equal(h[1, 1, z], x[1, 0, 5]) for z in range(7))
    assert torch.allclose(h[0, 2, :, 0, 0], (torch.arange(7) - 2) / 7)
    assert torch.allclose(h[1, 2, :, 3, 4], (torch.arange(7) - 5) / 7)
    given = focal_guide(x, torch.tensor([4]))  # a plane found over the whole stack, for every volume
    assert all(torch.equal(given[b, 1, z], x[b, 0, 4]) for b in range(2) for z in range(7))
    assert torch.allclose(given[1, 2, :, 0, 0], (torch.arange(7) - 4) / 7)
    with pytest.raises(ValueError, match="only for a focus-guided generator"):
        Generator3D(channels=4, n_residual_blocks=1)(x, focus=torch.tensor([4]))


def test_focus_guided_generator_starts_as_the_identity_scripts_and_learns_from_the_guide():
    g = init_weights(
        Generator3D(channels=4, n_residual_blocks=1, upsampling="pixelshuffle", residual=True, focus_guide=True)
    )
    x = torch.rand(1, 1, 9, 16, 12) * 2 - 1
    with torch.no_grad():
        assert torch.equal(g(x), x)
        assert torch.equal(torch.jit.script(g)(x), x)  # the guide is inside: a plain volume in, as exported
    first = [m for m in g.modules() if isinstance(m, torch.nn.Conv3d)][0]
    assert first.in_channels == 3  # x, its focal plane, the distance from it
    optimiser = torch.optim.SGD(g.parameters(), lr=0.1)
    for _ in range(2):  # the first step moves the zero-initialised last convolution, the second reaches the first
        optimiser.zero_grad()
        (g(x) - x.flip(2)).square().mean().backward()
        optimiser.step()
    assert first.weight.grad[:, 1:].abs().sum() > 0  # the guide's channels take part


def test_focus_guided_and_plain_weights_never_load_into_each_other_and_2d_is_refused():
    from scripts.nets.networks import ResNetGenerator

    guided = Generator3D(channels=4, n_residual_blocks=1, residual=True, focus_guide=True)
    plain = Generator3D(channels=4, n_residual_blocks=1, residual=True)
    with pytest.raises(RuntimeError, match="size mismatch"):
        plain.load_state_dict(guided.state_dict())
    with pytest.raises(RuntimeError, match="size mismatch"):
        guided.load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match="focus_guide needs a 3D"):
        ResNetGenerator(spatial_dims=2, focus_guide=True)


def test_focal_transfer_mixes_each_frequency_by_what_defocus_kept_and_keeps_each_planes_own_content():
    from scipy import ndimage
    from scripts.nets.networks import _gaussian_rows, focal_transfer

    rng = np.random.default_rng(0)
    f = torch.from_numpy(ndimage.gaussian_filter(rng.random((40, 36)), 1.0) * 2 - 1)
    sigma0, k, focus = 0.45, 0.29, 4
    rows = _gaussian_rows(40, torch.tensor([0.87], dtype=torch.float64))[0]
    taps = torch.from_numpy(np.exp(-0.5 * np.arange(-3, 4) ** 2 / 0.87**2))  # cut at 4 sigma = 3.5 px
    assert torch.allclose(rows[20, 17:24], taps / taps.sum()) and rows[20, :17].sum() == 0 == rows[20, 24:].sum()
    assert torch.allclose(rows.sum(1), torch.ones(40, dtype=torch.float64))
    assert torch.allclose(rows[0, :4], torch.cat([taps[:4].sum()[None], taps[4:]]) / taps.sum())  # edge replicated
    # a thin specimen: plane z is the focal plane defocused by focal_transfer's own Gaussian G_z
    sigma = torch.tensor([float(np.hypot(sigma0, k * (z - focus))) for z in range(11)], dtype=torch.float64)
    ys, xs = _gaussian_rows(40, sigma), _gaussian_rows(36, sigma)
    blur = [lambda a, z=z: ys[z] @ a @ xs[z].T for z in range(11)]
    stack = torch.stack([blur[z](f) for z in range(11)])
    stack[focus] = f
    x = stack[None, None].float()
    out = focal_transfer(x, torch.tensor([focus]), torch.tensor([sigma0, k]))[0, 0].double()
    assert out.shape == stack.shape and torch.equal(out[focus].float(), x[0, 0, focus])  # the focal plane as it is
    for z in set(range(11)) - {focus}:  # f + G_z (G_z f - f): (1 - T + T^2) f in frequency, T = G_z's transfer
        assert torch.allclose(out[z], f + blur[z](blur[z](f) - f), atol=1e-5)
    # the more detail defocus removed, the closer a plane comes back to the focal plane
    left = [float((out[z] - f).norm() / (stack[z] - f).norm()) for z in range(10, focus, -1)]
    assert left == sorted(left) and left[0] < 0.25
    own = torch.from_numpy(ndimage.gaussian_filter(rng.random((40, 36)), 4.0))
    thick = x.clone()
    thick[0, 0, 9] += own.float()  # content of plane 9's own, smooth: it stays, blurred as it was
    kept = focal_transfer(thick, torch.tensor([focus]), torch.tensor([sigma0, k]))[0, 0, 9].double() - out[9]
    assert torch.allclose(kept, blur[9](own), atol=1e-5)
    pixel = x[:, :, :, :1, :1]  # any size: a plane of one pixel has no detail to take, it stays
    assert torch.allclose(focal_transfer(pixel, torch.tensor([focus]), torch.tensor([sigma0, k])), pixel, atol=1e-7)


def test_a_negative_sigma0_is_a_depth_of_field_whose_planes_come_out_as_they_are():
    from scripts.nets.networks import FOCAL_DEFOCUS, focal_sigma, focal_transfer

    d = torch.arange(-8.0, 9.0)
    sigma = focal_sigma(d, torch.tensor([-1.05, 0.35]))  # a depth of field of 3 planes each side
    assert torch.equal(sigma[5:12], torch.zeros(7)) and torch.all(sigma[:5] > 0) and torch.all(sigma[12:] > 0)
    assert torch.allclose(sigma, 0.35 * (d**2 - 9).clamp(min=0).sqrt())
    assert sigma[0] < 0.35 * 8 and torch.equal(sigma, sigma.flip(0))  # below k |d|, the same either side
    fitted = focal_sigma(d, torch.tensor([0.45, 0.29]))  # sigma0 >= 0: the focal plane's own blur, as before
    assert torch.allclose(fitted, torch.sqrt(0.45**2 + (0.29 * d) ** 2))
    x = torch.rand(2, 1, 15, 20, 18) * 2 - 1
    focus = torch.tensor([7, 3])
    out = focal_transfer(x, focus, torch.tensor(FOCAL_DEFOCUS))
    assert FOCAL_DEFOCUS[0] < 0
    dof = round(-FOCAL_DEFOCUS[0] / FOCAL_DEFOCUS[1])
    for b in range(2):
        near = slice(max(0, int(focus[b]) - dof), int(focus[b]) + dof + 1)
        assert torch.allclose(out[b, :, near], x[b, :, near], atol=1e-6)  # within the depth of field: as they are
        assert (out[b, :, int(focus[b]) + dof + 2] - x[b, :, int(focus[b]) + dof + 2]).abs().max() > 0.1


def test_focal_gate_leaves_the_planes_within_the_depth_of_field_as_they_are_and_keeps_its_kind():
    from scripts.nets.networks import FOCAL_DEFOCUS, focal_sigma, focal_transfer

    torch.manual_seed(0)
    args = dict(channels=4, n_residual_blocks=1, residual=True, focus_guide=True, focal_skip=True, norm="batch")
    gated, ungated = Generator3D(**args, focal_gate=True).eval(), Generator3D(**args).eval()
    with torch.no_grad():
        for p in gated.parameters():  # a trained-looking correction, not the zero one training starts from
            p.normal_(0, 0.1)
    ungated.load_state_dict({k: v for k, v in gated.state_dict().items() if k != "base.gate"})
    x = torch.rand(2, 1, 15, 16, 12) * 2 - 1
    focus = torch.tensor([7, 3])
    with torch.no_grad():
        out, free = gated(x, focus=focus), ungated(x, focus=focus)
        base = focal_transfer(x, focus, torch.tensor(FOCAL_DEFOCUS))
        assert torch.equal(torch.jit.script(gated)(x, focus=focus), out)  # exported as it runs
    d = (torch.arange(15).view(1, 15) - focus.view(2, 1)).float()
    weight = 1 - torch.exp(-0.5 * focal_sigma(d, torch.tensor(FOCAL_DEFOCUS)) ** 2)
    expected = base + (free - base) * weight.view(2, 1, 15, 1, 1)  # the ungated correction, weighed per plane
    assert torch.allclose(out, expected, atol=1e-6)
    for b in range(2):
        near = slice(max(0, int(focus[b]) - 3), int(focus[b]) + 4)  # FOCAL_DEFOCUS's depth of field: 3 planes
        assert torch.allclose(out[b, :, near], x[b, :, near], atol=1e-6)
        assert not torch.allclose(free[b, :, near], x[b, :, near], atol=1e-3)  # ungated, the correction acts there
    assert (
        0.34 < float(weight[0, 11]) < 0.35 and 0.91 < float(weight[0, 0]) < 0.92
    )  # sigma 0.93 px at 4 planes, 2.2 at 7
    with pytest.raises(RuntimeError, match="base.gate"):
        ungated.load_state_dict(gated.state_dict())
    with pytest.raises(RuntimeError, match="base.gate"):
        gated.load_state_dict(ungated.state_dict())
    with pytest.raises(ValueError, match="focal_gate .* needs focal_skip"):
        Generator3D(channels=4, n_residual_blocks=1, residual=True, focus_guide=True, focal_gate=True)


def test_focal_skip_generator_starts_as_focal_transfer_scripts_and_keeps_its_kind():
    from scripts.nets.networks import FOCAL_DEFOCUS, focal_plane, focal_transfer

    torch.manual_seed(0)
    g = Generator3D(channels=4, n_residual_blocks=1, residual=True, focus_guide=True, focal_skip=True).eval()
    x = torch.rand(2, 1, 9, 16, 12) * 2 - 1
    x[1, :, 6] = torch.rand(16, 12) * 4 - 2  # a sharper plane in the second volume
    with torch.no_grad():
        expected = focal_transfer(x, focal_plane(x), torch.tensor(FOCAL_DEFOCUS))
        assert torch.equal(g(x), expected)
        assert torch.equal(torch.jit.script(g)(x), expected)  # exported as it runs
        given = torch.tensor([3, 3])
        assert torch.equal(
            g(x, focus=given), focal_transfer(x, given, torch.tensor(FOCAL_DEFOCUS))
        )  # a plane found over the whole stack
    assert torch.equal(g.state_dict()["base.defocus"], torch.tensor(FOCAL_DEFOCUS))
    guided = Generator3D(channels=4, n_residual_blocks=1, residual=True, focus_guide=True)
    with pytest.raises(RuntimeError, match="base.defocus"):
        guided.load_state_dict(g.state_dict())
    with pytest.raises(RuntimeError, match="base.defocus"):
        g.load_state_dict(guided.state_dict())
    for kind in ({"residual": True}, {"focus_guide": True}):
        with pytest.raises(ValueError, match="focal_skip needs a focus-guided residual"):
            Generator3D(channels=4, n_residual_blocks=1, focal_skip=True, **kind)


# ---------------------------------------------------------------- the shared ResNet generator (2D, CIN), critic


def test_generator3d_is_the_3d_resnet_generator_with_the_same_weights():
    from scripts.nets.networks import ResNetGenerator

    torch.manual_seed(0)
    g = Generator3D(channels=4, n_residual_blocks=1, residual=True)
    same = ResNetGenerator(3, channels=4, n_residual_blocks=1, output="residual")
    same.load_state_dict(g.state_dict())  # identical keys: models/model.pt loads into both
    init_weights(g)
    same.load_state_dict(g.state_dict())
    x = torch.randn(1, 1, 7, 13, 18)
    torch.testing.assert_close(same(x), g(x))


@pytest.mark.parametrize("shape", [(16, 16), (13, 21), (1, 1), (3, 40)])
def test_2d_generator_keeps_shape(shape):
    from scripts.nets.networks import ResNetGenerator

    g = ResNetGenerator(2, channels=4, n_residual_blocks=1, upsampling="pixelshuffle")
    x = torch.randn(2, 1, *shape)
    assert g(x).shape == x.shape
    assert not any(isinstance(m, nn.Conv3d) for m in g.modules())
    with pytest.raises(ValueError, match="B,C,Y,X"):
        g(torch.randn(1, 1, 4, 8, 8))


def test_mean_output_is_the_average_of_tanh_and_input():
    from scripts.nets.networks import ResNetGenerator

    g = ResNetGenerator(2, channels=4, n_residual_blocks=1, output="mean")
    plain = ResNetGenerator(2, channels=4, n_residual_blocks=1, output="tanh")
    state = {k: v for k, v in g.state_dict().items() if k != "skip.mean"}
    plain.load_state_dict(state)
    x = torch.rand(1, 1, 16, 16) * 2 - 1
    torch.testing.assert_close(g(x), (plain(x) + x) / 2)
    with pytest.raises(RuntimeError, match="skip.mean"):
        plain.load_state_dict(g.state_dict())


@pytest.mark.parametrize(
    "kind, steps, margin",
    [({"output": "residual"}, 120, 0.6), ({"output": "mean", "n_conditions": 2}, 150, 0.7)],
    ids=["restorer", "conditioned"],
)
def test_long_skip_lets_the_generator_learn_a_full_resolution_correction(kind, steps, margin):
    """Denoising needs a correction at the voxel scale. In 3D each downsampling keeps a quarter of the channels per
    voxel, so a generator that reaches its output only through its coarser levels barely learns it (a residual one
    stays near the identity); with the first convolution's features carried past them (long_skip) it learns it
    (docs/multidefect.md: the restorers' denoising task). The same for stage 1's conditioned generator (the CIN-GAN,
    (tanh + input) / 2 output), whose first convolution sits in its conditioned encoder: here under condition 1."""
    from scripts.nets.networks import ResNetGenerator

    torch.manual_seed(0)
    clean = torch.nn.functional.avg_pool3d(torch.rand(2, 1, 24, 24, 24), 9, stride=1) * 2 - 1  # smooth, 16^3
    noisy = clean + 0.3 * torch.randn_like(clean)
    condition = 1 if kind.get("n_conditions") else None
    error = {"input": (noisy - clean).abs().mean().item()}
    for long_skip in (False, True):
        torch.manual_seed(1)
        g = ResNetGenerator(3, channels=4, n_residual_blocks=1, first_kernel_size=3, long_skip=long_skip, **kind)
        if kind["output"] == "residual":
            torch.testing.assert_close(g(noisy), noisy)  # the identity at the start, either way
        optimiser = torch.optim.Adam(g.parameters(), 1e-3)
        for _ in range(steps):
            loss = (g(noisy, condition) - clean).abs().mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            error[long_skip] = (g(noisy, condition) - clean).abs().mean().item()
    assert error[True] < 0.3 * error["input"] and error[True] < margin * error[False], error


def test_long_skip_weights_never_load_into_a_generator_without_it():
    from scripts.nets.networks import ResNetGenerator

    with_skip = ResNetGenerator(3, channels=4, n_residual_blocks=1, output="residual", long_skip=True)
    without = ResNetGenerator(3, channels=4, n_residual_blocks=1, output="residual")
    with pytest.raises(RuntimeError):
        without.load_state_dict(with_skip.state_dict())
    with pytest.raises(RuntimeError):
        with_skip.load_state_dict(without.state_dict())
    assert with_skip(torch.randn(1, 1, 9, 13, 11)).shape == (1, 1, 9, 13, 11)
    conditioned = ResNetGenerator(3, channels=4, n_residual_blocks=1, n_conditions=3, output="mean", long_skip=True)
    with pytest.raises(RuntimeError):
        ResNetGenerator(3, channels=4, n_residual_blocks=1, n_conditions=3, output="mean").load_state_dict(
            conditioned.state_dict()
        )
    assert conditioned(torch.randn(2, 1, 9, 13, 11), torch.tensor([0, 2])).shape == (2, 1, 9, 13, 11)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cin_generator_conditions_its_first_three_convolutions(spatial_dims):
    from scripts.nets.cin import ConditionalInstanceNorm
    from scripts.nets.networks import ResNetGenerator

    torch.manual_seed(0)
    g = ResNetGenerator(spatial_dims, channels=4, n_residual_blocks=2, output="mean", n_conditions=3)
    cins = [m for m in g.modules() if isinstance(m, ConditionalInstanceNorm)]
    assert len(cins) == 3 and [c.num_features for c in cins] == [4, 8, 16]
    assert len(g.encoder) == 3
    with torch.no_grad():  # give each defect type its own scale and shift
        for c in cins:
            c.weight.normal_(1.0, 0.5)
            c.bias.normal_(0.0, 0.5)
    x = torch.rand((1, 1) + (12,) * spatial_dims) * 2 - 1
    outputs = [g(x, s) for s in range(3)]
    assert all(o.shape == x.shape for o in outputs)
    assert not torch.allclose(outputs[0], outputs[1]) and not torch.allclose(outputs[1], outputs[2])
    batch = g(x.expand(3, *x.shape[1:]), torch.tensor([0, 1, 2]))  # per-sample conditions
    torch.testing.assert_close(batch, torch.cat(outputs), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="condition"):
        g(x)


def test_microscopygan_generator_size():
    from scripts.nets.networks import ResNetGenerator

    g = ResNetGenerator(2, channels=64, n_residual_blocks=12, first_kernel_size=7, output="mean", n_conditions=3)
    blocks = [m for m in g.model if m.__class__.__name__ == "ResidualBlock"]
    assert len(blocks) == 12
    assert not any(isinstance(m, nn.InstanceNorm2d) and m.affine for m in g.modules())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_critic_gives_one_score_per_sample_without_normalisation(spatial_dims):
    from scripts.nets.networks import Critic

    critic = Critic(spatial_dims, channels=4, n_layers=3)
    scores = critic(torch.randn((5, 1) + (16,) * spatial_dims))
    assert scores.shape == (5,)
    norms = (nn.InstanceNorm2d, nn.InstanceNorm3d, nn.BatchNorm2d, nn.BatchNorm3d)
    assert not any(isinstance(m, norms) for m in critic.modules())


def test_conditioned_critic_scores_each_sample_with_its_condition():
    from scripts.nets.networks import Critic

    torch.manual_seed(0)
    critic = Critic(2, channels=4, n_layers=2, n_conditions=3)
    x = torch.randn(1, 1, 16, 16).expand(3, -1, -1, -1)
    scores = critic(x, torch.tensor([0, 1, 2]))
    assert scores.shape == (3,) and len(set(scores.tolist())) == 3
    torch.testing.assert_close(critic(x[:1], 2), scores[2:])
    with pytest.raises(ValueError, match="condition"):
        critic(x)


def test_shipped_weights_give_what_they_gave_when_they_were_shipped():
    """models/model.pt (0.8.0: focal skip, depth-of-field gate) through today's network code: the output sum
    recorded for this input when these weights were shipped, so that a code change that alters it is seen."""
    from pathlib import Path

    from scripts.nets.architecture import default_generator

    g = default_generator()
    g.load_state_dict(torch.load(Path(__file__).parents[2] / "bundle" / "models" / "model.pt", weights_only=True))
    with torch.no_grad():
        y = g.eval()(torch.rand(1, 1, 5, 16, 16, generator=torch.Generator().manual_seed(2)))
    assert y.double().sum().item() == pytest.approx(626.9811063483357, rel=1e-5)


def _trained_batch_norms(g: Generator3D) -> Generator3D:
    """``g`` with running statistics from a few training-mode passes, in eval mode."""
    with torch.no_grad():
        for _ in range(3):
            g(torch.randn(1, 1, 8, 32, 32))
    return g.eval()


def test_receptive_reach_is_the_hand_count_and_where_a_window_stops_mattering():
    """Issue 17, item 2. Hand count for 1 downsampling, kernels 3, sub-pixel upsampling: first conv 1, the
    stride-2 conv 1, the residual block's two convs 2 x 2, the sub-pixel conv 2 and its blur pool 1, last conv 1."""
    g = _trained_batch_norms(
        tiny_generator(norm="batch", n_downsampling=1, first_kernel_size=3, upsampling="pixelshuffle")
    )
    reach = receptive_reach(g)
    assert reach == 10
    x = torch.randn(1, 1, 8, 64, 64)
    with torch.no_grad():
        whole, window = g(x), g(x[..., 12:44, 12:44])
    inside = window[..., reach:-reach, reach:-reach] - whole[..., 12 + reach : 44 - reach, 12 + reach : 44 - reach]
    assert inside.abs().max() < 1e-5  # beyond the reach from its edges, a window gives the whole field's output
    assert (window - whole[..., 12:44, 12:44]).abs().max() > 1e-3  # within it, not
    assert receptive_reach(tiny_generator(n_downsampling=1, first_kernel_size=3, upsampling="pixelshuffle")) == 10


def test_batch_norm_is_the_default_and_instance_norm_weights_never_load_into_it():
    """Issue 17, item 1: g_norm "batch" (window-independent in eval mode) is the default since 0.6.0, measured
    to keep the quality (docs/results.md, round 5); weights of an instance-norm G_S (before 0.6.0, or
    ``--g_norm instance``) lack its running statistics and are refused, not loaded half."""
    from scripts.nets.architecture import DEFAULTS

    assert DEFAULTS["g_norm"] == "batch"
    instance, batch = tiny_generator(), tiny_generator(norm="batch")
    with pytest.raises(RuntimeError, match="running_mean"):
        instance.load_state_dict(batch.state_dict())
    with pytest.raises(RuntimeError, match="running_mean"):
        batch.load_state_dict(instance.state_dict())


@pytest.mark.parametrize(
    "spatial_dims, padding_mode, bias", [(3, "replicate", True), (2, "zeros", True), (3, "zeros", False)]
)
def test_a_one_channel_convolution_computed_by_tap_is_the_plain_convolution(
    spatial_dims, padding_mode, bias, monkeypatch
):
    """A generator's last convolution (to one channel) is computed tap by tap along the first axis: the same output
    and gradients as a plain convolution with its weights, the same parameters, and no random number drawn."""
    from scripts.nets import networks

    conv_type = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
    plain = conv_type(6, 1, 5, padding=2 if padding_mode == "zeros" else 0, bias=bias)
    folded = networks._one_output(plain)
    assert type(folded) is not conv_type and isinstance(folded, conv_type)
    assert dict(folded.named_parameters()) == dict(plain.named_parameters())  # the same tensors
    x = torch.randn(2, 6, *([9, 11, 8][-spatial_dims:]), requires_grad=True)
    expected = plain(x)
    expected.square().sum().backward()
    grads = [x.grad.clone(), plain.weight.grad.clone()]
    x.grad = plain.weight.grad = None
    y = folded(x)
    assert y.shape == expected.shape
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    y.square().sum().backward()
    torch.testing.assert_close(x.grad, grads[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(folded.weight.grad, grads[1], rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the type autocast gives a convolution's output
        assert folded(x).dtype == plain(x).dtype == torch.bfloat16

    def built(seed: int) -> tuple[nn.Module, torch.Tensor]:
        torch.manual_seed(seed)
        g = networks.ResNetGenerator(spatial_dims, channels=4, n_residual_blocks=1, padding_mode=padding_mode)
        return init_weights(g), torch.rand(1)

    g, after = built(0)
    convs = [m for m in g.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    assert type(convs[-1]).__name__ == f"_OneOutputConv{spatial_dims}d"
    assert {type(m) for m in convs[:-1]} <= {nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d}
    monkeypatch.setattr(networks, "_one_output", lambda conv: conv)
    plain_g, plain_after = built(0)
    assert type([m for m in plain_g.modules() if isinstance(m, nn.modules.conv._ConvNd)][-1]) is conv_type
    assert torch.equal(after, plain_after)
    for (name, p), q in zip(g.state_dict().items(), plain_g.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
