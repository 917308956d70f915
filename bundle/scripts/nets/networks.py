"""The paper's networks: the 3D generators G_S and G_B and the 2D PatchGAN discriminators D_S, D_B.

G_S (sharpen, X -> Y) and G_B (blur, Y -> X) share one architecture, :class:`Generator3D`: a
CycleGAN ResNet generator made 3D, as in the reference code (first convolution 5^3 to 16 channels,
two stride-2 downsamplings to 64 channels, 6 residual blocks, two upsamplings, a 5^3 output
convolution and tanh). D_S and D_B are :class:`PatchDiscriminator2D`: they judge 2D sections
(horizontal x_par, vertical x_perp) and in-focus images y*, one logit per patch.

Tensors are BCZYX for the generators and NCHW for the discriminators (see ``scripts/__init__``).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from monai.networks.blocks import ADN, Convolution, SubpixelUpsample
from monai.networks.layers import SkipConnection
from scripts.nets.cin import ConditionalInstanceNorm
from torch import nn

__all__ = [
    "FOCAL_DEFOCUS",
    "Critic",
    "Generator3D",
    "PatchDiscriminator",
    "PatchDiscriminator2D",
    "ResNetGenerator",
    "box_smooth",
    "focal_guide",
    "focal_plane",
    "focal_sigma",
    "focal_transfer",
    "focus_guided",
    "init_weights",
    "receptive_reach",
    "unwrap",
]

_NORMS = {"instance": "instance", "batch": "batch", "none": None}
_PADDING_MODES = ("zeros", "replicate")
_UPSAMPLINGS = ("transpose", "transpose4", "resize", "pixelshuffle")
_OUTPUTS = ("tanh", "residual", "mean")
_REPLICATION_PADS = {2: nn.ReplicationPad2d, 3: nn.ReplicationPad3d}
_NORM_LAYERS = (nn.modules.instancenorm._InstanceNorm, nn.modules.batchnorm._BatchNorm, nn.GroupNorm)


def _norm_arg(norm: str | None) -> str | None:
    """MONAI's name for ``norm`` ("instance", "batch", "none"/None); ValueError for others."""
    key = "none" if norm is None else str(norm).lower()
    if key not in _NORMS:
        raise ValueError(f"norm must be one of {sorted(_NORMS)}, got {norm!r}")
    return _NORMS[key]


def _conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    norm: str | None,
    act: str | None,
    padding_mode: str,
) -> nn.Module:
    """Conv ("same" padding for stride 1) -> norm -> act, with zero or replicate padding, 2D or 3D.

    MONAI's Convolution only zero-pads, so replicate padding is an explicit pad layer before an
    unpadded convolution (as CycleGAN does with reflection padding). Convolutions followed by a
    norm have no bias: the norm's mean subtraction would cancel it.
    """
    pad = (kernel_size - 1) // 2
    conv = Convolution(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        strides=stride,
        kernel_size=kernel_size,
        padding=pad if padding_mode == "zeros" else 0,
        norm=norm,
        act=act,
        bias=norm is None,
        conv_only=norm is None and act is None,
    )
    if out_channels == 1 and stride == 1 and kernel_size > 1:
        conv.conv = _one_output(conv.conv)
    if padding_mode == "zeros" or pad == 0:
        return conv
    return nn.Sequential(_REPLICATION_PADS[spatial_dims](pad), conv)


def _shifted_sum(taps: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """taps (B, k, n + k - 1, ...) -> (B, 1, n, ...): the sum over i of taps[:, i] shifted by i along the first
    spatial axis, plus ``bias`` (1 value) in taps' type (as a convolution under autocast adds its bias)."""
    k = taps.shape[1]
    n = taps.shape[2] - k + 1
    out = taps[:, :1, :n]
    for i in range(1, k):
        out = out + taps[:, i : i + 1, i : i + n]
    return out if bias is None else out + bias.to(out.dtype)


class _OneOutputConv2d(nn.Conv2d):
    """A stride-1 convolution to one channel (a generator's last), computed as a convolution to k channels, one per
    tap along the first spatial axis (the weight 1, C, k, ... read as k, C, 1, ...), whose maps
    :func:`_shifted_sum` adds: the same output to float rounding, 3 times faster forward and backward on a CPU, whose
    convolution kernels vectorise over output channels, so that one output channel leaves most of each vector idle
    (docs/benchmarks.md). Its weights are the convolution's: state dicts and initialisation are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _shifted_sum(self._conv_forward(x, self.weight.transpose(0, 2), None), self.bias)


class _OneOutputConv3d(nn.Conv3d):
    """:class:`_OneOutputConv2d` in 3D."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _shifted_sum(self._conv_forward(x, self.weight.transpose(0, 2), None), self.bias)


def _one_output(conv: nn.Module) -> nn.Module:
    """``conv`` (an nn.Conv2d or nn.Conv3d to one channel, stride 1) as a :class:`_OneOutputConv2d` or 3d with
    the same parameters (built on the meta device: no random numbers are drawn)."""
    kind = _OneOutputConv2d if isinstance(conv, nn.Conv2d) else _OneOutputConv3d
    folded = kind(
        conv.in_channels,
        1,
        conv.kernel_size,
        padding=conv.padding,
        padding_mode=conv.padding_mode,
        bias=False,
        device="meta",
    )
    folded.weight, folded.bias = conv.weight, conv.bias
    return folded


class _ConditionedConv(nn.Module):
    """Conv (replicate or zero padding, no bias) -> conditional instance norm -> ReLU: the CIN-GAN's
    conditioned layers, whose forward also takes the condition (the defect type)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        n_conditions: int,
        padding_mode: str,
    ):
        super().__init__()
        self.conv = _conv(spatial_dims, in_channels, out_channels, kernel_size, stride, None, None, padding_mode)
        for m in self.conv.modules():  # the norm's mean subtraction would cancel a bias
            if isinstance(m, nn.modules.conv._ConvNd):
                m.bias = None
        self.norm = ConditionalInstanceNorm(out_channels, n_conditions, spatial_dims)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """ReLU(CIN(conv(x), condition)); ``condition`` is required."""
        if condition is None:
            raise ValueError("this generator is conditioned: give the condition (a defect type per sample)")
        return self.act(self.norm(self.conv(x), condition))


class ResidualBlock(nn.Module):
    """CycleGAN's residual block, 2D or 3D: x + (conv3-norm-relu-conv3-norm)(x), no activation after."""

    def __init__(
        self, channels: int, norm: str | None = "instance", padding_mode: str = "replicate", spatial_dims: int = 3
    ):
        super().__init__()
        self.body = nn.Sequential(
            _conv(spatial_dims, channels, channels, 3, 1, norm, "relu", padding_mode),
            _conv(spatial_dims, channels, channels, 3, 1, norm, None, padding_mode),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + body(x); shape unchanged."""
        return x + self.body(x)


class ResNetGenerator(nn.Module):
    """ResNet generator, 2D or 3D: an image B,C,(Z,)Y,X in, one of the same size out.

    Layout (CycleGAN's, Johnson et al. 2016): conv ``first_kernel_size`` -> ``channels``;
    ``n_downsampling`` stride-2 conv 3 blocks, doubling channels; ``n_residual_blocks`` residual blocks
    at the deepest level; as many stride-2 upsamplings back; conv ``first_kernel_size`` ->
    ``out_channels``. Every hidden convolution is followed by ``norm`` (instance norm without affine
    parameters, as in CycleGAN) and ReLU. :class:`Generator3D` documents the options shared with it;
    this class adds:

    ``spatial_dims``: 2 (B,C,Y,X) or 3 (B,C,Z,Y,X).

    ``output``: "tanh" (tanh of the last convolution), "residual" (input + correction, no tanh, the last
    convolution zero-initialised) or "mean" ((tanh + input) / 2: MicroscopyGAN's input skip).

    ``n_conditions``: 0, or the number of conditions (defect types) S: the first ``1 + n_downsampling``
    convolutions (MicroscopyGAN's first three) then use conditional instance norm
    (:class:`~scripts.nets.cin.ConditionalInstanceNorm`, one gamma and beta per channel and condition)
    instead of ``norm``, and ``forward(x, condition)`` needs the condition (a B long tensor or an int);
    every other weight is shared between the conditions. Those convolutions are then held in
    ``encoder`` (a ModuleList) rather than ``model``.

    ``long_skip``: the first convolution's full-resolution features are added to the last upsampling's
    output, before the last convolution (EDSR's global residual, Lim et al. 2017). Without it everything
    reaches the output through the ``2**n_downsampling`` coarser levels, so a residual output cannot learn a
    full-resolution correction (noise, a plane's lost detail): on the restorer's denoising task it stays the
    identity (docs/multidefect.md). With ``n_conditions`` the layers after the conditioned ``encoder`` up to
    the last convolution are held in ``body``, and the conditioned first convolution's features are added to
    its output.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 16,
        n_downsampling: int = 2,
        n_residual_blocks: int = 6,
        first_kernel_size: int = 5,
        norm: str | None = "instance",
        padding_mode: str = "replicate",
        upsampling: str = "transpose",
        output: str = "tanh",
        n_conditions: int = 0,
        focus_guide: bool = False,
        focal_skip: bool = False,
        focal_gate: bool = False,
        long_skip: bool = False,
    ):
        super().__init__()
        if spatial_dims not in _REPLICATION_PADS:
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {list(_OUTPUTS)}, got {output!r}")
        if output != "tanh" and in_channels != out_channels:
            raise ValueError(f"{output} output needs in_channels == out_channels, got {in_channels} and {out_channels}")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {list(_PADDING_MODES)}, got {padding_mode!r}")
        if upsampling not in _UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {list(_UPSAMPLINGS)}, got {upsampling!r}")
        if first_kernel_size < 1 or first_kernel_size % 2 == 0:
            raise ValueError(f"first_kernel_size must be odd and positive, got {first_kernel_size}")
        if n_downsampling < 0 or n_residual_blocks < 0 or channels < 1 or n_conditions < 0:
            raise ValueError("channels must be >= 1, n_downsampling, n_residual_blocks and n_conditions >= 0")
        if focus_guide and spatial_dims != 3:
            raise ValueError("focus_guide needs a 3D generator (spatial_dims 3): it guides each plane by the focal one")
        if focal_skip and not (focus_guide and output == "residual"):
            raise ValueError("focal_skip needs a focus-guided residual generator (focus_guide, residual output)")
        if focal_gate and not focal_skip:
            raise ValueError("focal_gate weighs the correction added to the focal transfer: it needs focal_skip")
        norm = _norm_arg(norm)
        self.spatial_dims, self.n_conditions, self.output = spatial_dims, n_conditions, output
        self.focus_guide = bool(focus_guide)
        self.n_downsampling = n_downsampling
        self.multiple = 2**n_downsampling  # each spatial size is padded to a multiple of this
        self._message = f"{type(self).__name__} expects a B,C,{'Z,Y,X' if spatial_dims == 3 else 'Y,X'} tensor, got "

        # the encoder: the first convolution and the downsamplings, conditioned when n_conditions > 0
        kernels = [first_kernel_size] + [3] * n_downsampling
        first_in = 2 * in_channels + 1 if focus_guide else in_channels  # focal_guide's channels
        widths = [first_in] + [channels * 2**i for i in range(n_downsampling + 1)]
        encoder: list[nn.Module] = []
        for i, kernel in enumerate(kernels):
            stride = 1 if i == 0 else 2
            if n_conditions:
                block = _ConditionedConv(
                    spatial_dims, widths[i], widths[i + 1], kernel, stride, n_conditions, padding_mode
                )
            else:
                block = _conv(spatial_dims, widths[i], widths[i + 1], kernel, stride, norm, "relu", padding_mode)
            encoder.append(block)
        ch = widths[-1]
        self.encoder = nn.ModuleList(encoder if n_conditions else [])
        layers: list[nn.Module] = [] if n_conditions else encoder
        layers += [ResidualBlock(ch, norm, padding_mode, spatial_dims) for _ in range(n_residual_blocks)]
        for _ in range(n_downsampling):
            layers.append(self._upsample(ch, ch // 2, norm, padding_mode, upsampling))
            ch //= 2
        # long_skip: the first convolution's output plus everything after it up to here; conditioned, the first
        # convolution is encoder[0] and forward adds its output to body's
        self.conditioned_skip = bool(long_skip and n_conditions)
        self.body = nn.Sequential(*layers) if self.conditioned_skip else nn.Identity()
        if self.conditioned_skip:
            layers = []
        elif long_skip:
            layers = [layers[0], SkipConnection(nn.Sequential(*layers[1:]), mode="add")]
        last = _conv(spatial_dims, ch, out_channels, first_kernel_size, 1, None, None, padding_mode)
        layers.append(last)
        self.residual = output == "residual"
        self.skip = {"residual": _ResidualSkip, "mean": _MeanSkip, "tanh": _NoSkip}[output]()
        self.base = (_GatedFocalTransfer() if focal_gate else _FocalTransfer()) if focal_skip else _Input()
        self.focal_skip = bool(focal_skip)
        if self.residual:
            _zero_last_conv(last)
        else:
            layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)

    def _upsample(self, in_ch: int, out_ch: int, norm: str | None, padding_mode: str, upsampling: str) -> nn.Module:
        """One x2 upsampling block -> norm -> ReLU."""
        dims = self.spatial_dims
        if upsampling in ("transpose", "transpose4"):  # kernel 3 or 4, output padding 1 (MONAI's default)
            kernel = 3 if upsampling == "transpose" else 4
            return Convolution(
                spatial_dims=dims,
                in_channels=in_ch,
                out_channels=out_ch,
                strides=2,
                kernel_size=kernel,
                padding=1,
                output_padding=1,
                is_transposed=True,
                norm=norm,
                act="relu",
                bias=norm is None,
            )
        if upsampling == "pixelshuffle":
            shuffle = SubpixelUpsample(dims, in_ch, out_ch, scale_factor=2, bias=norm is None)
            shuffle.conv_block.keep_init = True  # ICNR: init_weights must not overwrite it
            adn = ADN(ordering="NA", in_channels=out_ch, act="relu", norm=norm, norm_dim=dims)
            return nn.Sequential(shuffle, adn)
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="trilinear" if dims == 3 else "bilinear", align_corners=False),
            _conv(dims, in_ch, out_ch, 3, 1, norm, "relu", padding_mode),
        )

    def padded_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The (Z,) Y, X the network runs on for an input of spatial ``shape`` (see :class:`Generator3D`)."""
        return tuple(self._padded_sizes(list(shape)))

    def _padded_sizes(self, sizes: list[int]) -> list[int]:
        m = self.multiple
        blocks = [(s + m - 1) // m for s in sizes]  # blocks of m
        count = 1
        for b in blocks:
            count = count * b
        # a single deepest voxel (count == 1) gets a second one along the first axis: 2 // (n + 1) is 1 for
        # n = 1, else 0 (not 1 // n: onnxruntime's optimizer rewrites m * (1 // n) as m // n)
        blocks[0] = blocks[0] + 2 // (count + 1)
        return [b * m for b in blocks]

    def forward(
        self, x: torch.Tensor, condition: torch.Tensor | None = None, focus: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: B,C,(Z,)Y,X (any sizes >= 1) -> B,out_channels,(Z,)Y,X; ``condition`` (B defect types, or one)
        only for a conditioned generator; ``focus`` (the stack's focal plane, :func:`focal_guide`) only for a
        focus-guided one."""
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(self._message + f"{x.dim()} dimensions")
        sizes: list[int] = []
        for d in range(self.spatial_dims):
            sizes.append(x.shape[2 + d])
        targets = self._padded_sizes(sizes)
        # F.pad takes (last before, last after, ..., first before, first after); always padded (maybe by 0),
        # as a branch on the size would be frozen into an exported graph
        before: list[int] = []
        pads: list[int] = []
        for d in range(self.spatial_dims):
            before.append((targets[d] - sizes[d]) // 2)
        for d in range(self.spatial_dims - 1, -1, -1):
            pads += [before[d], targets[d] - sizes[d] - before[d]]
        if focus is not None and not self.focus_guide:
            raise ValueError("focus (the stack's focal plane) is only for a focus-guided generator (focus_guide)")
        if self.focus_guide:  # found once, for the guide and the focal transfer alike
            focus = _stack_focus(x, focus)
        h = focal_guide(x, focus) if self.focus_guide else x
        h = F.pad(h, pads, mode="replicate")
        first = h
        for i, block in enumerate(self.encoder):  # empty unless conditioned
            h = block(h, condition)
            if i == 0:
                first = h
        if self.conditioned_skip:
            h = self.body(h) + first
        out = self.model(h)
        if self.spatial_dims == 3:
            out = out[
                :,
                :,
                before[0] : before[0] + sizes[0],
                before[1] : before[1] + sizes[1],
                before[2] : before[2] + sizes[2],
            ]
        else:
            out = out[:, :, before[0] : before[0] + sizes[0], before[1] : before[1] + sizes[1]]
        return self.skip(self.base(x, focus), self.base.weigh(out, focus))


def _box_sums(a: torch.Tensor) -> torch.Tensor:
    a = F.pad(a, (1, 1, 1, 1))
    a = a[..., :-2, :] + a[..., 1:-1, :] + a[..., 2:, :]
    return a[..., :-2] + a[..., 1:-1] + a[..., 2:]


def box_smooth(x: torch.Tensor) -> torch.Tensor:
    """x (..., Y, X) averaged over 3x3 boxes in y and x, at the edges over the pixels inside the image (any
    size, even 1 px): the smoothing against noise of :func:`focal_plane`, also run block by block on whole
    slides (:func:`scripts.inference.wholeslide.stack_focal_plane`)."""
    return _box_sums(x) / _box_sums(torch.ones(x.shape[-2:], dtype=x.dtype, device=x.device))


def focal_plane(x: torch.Tensor) -> torch.Tensor:
    """x (B,C,Z,Y,X) -> B: the index of each volume's focal plane, its plane of greatest gradient energy
    (squared finite differences in y and x after :func:`box_smooth`, averaged over channels): cheaper than
    :func:`scripts.zsegan.focus.focus_measure`, for every training step. Any positive scaling of x, e.g. the
    intensity mapping, finds the same plane."""
    smooth = box_smooth(x)
    dy = smooth[:, :, :, 1:, :] - smooth[:, :, :, :-1, :]
    dx = smooth[:, :, :, :, 1:] - smooth[:, :, :, :, :-1]
    energy = dy.pow(2).mean(dim=(1, 3, 4)) + dx.pow(2).mean(dim=(1, 3, 4))  # B, Z
    return energy.argmax(dim=1)


def _stack_focus(x: torch.Tensor, focus: torch.Tensor | None) -> torch.Tensor:
    """B focal-plane indices for x (B,C,Z,Y,X): ``focus`` (B values, or one for all) on x's device, or, where it is
    None, :func:`focal_plane` of x itself."""
    return focal_plane(x) if focus is None else focus.to(x.device).reshape(-1).expand(x.shape[0])


def focal_guide(x: torch.Tensor, focus: torch.Tensor | None = None) -> torch.Tensor:
    """x (B,C,Z,Y,X) -> B,2C+1,Z,Y,X: x, its focal plane repeated at every depth, and each plane's signed
    distance from the focal plane (in units of the depth Z), the input of a focus-guided generator.

    ``focus``: the focal plane's index (a tensor of B values, or one for all), found over the whole stack when x is a
    window of it (the sliding window's :class:`~scripts.inference.sliding_window.SlidingWindow`), so that
    every window borrows the same plane; None: :func:`focal_plane` of x itself (training's crops).
    Nothing is learnt here: the guide only puts the sharp detail that the stack holds within reach of every
    plane, so that a plane far from focus can borrow it instead of inventing texture (a 3D network sees the
    focal plane only through many layers otherwise).
    """
    b, c, depth, height, width = x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    focus = _stack_focus(x, focus)
    index = focus.view(b, 1, 1, 1, 1).expand(b, c, 1, height, width)
    sharp = x.gather(2, index).expand(b, c, depth, height, width)
    distance = _plane_distances(focus, depth).to(x.dtype).view(b, 1, depth, 1, 1) / depth
    return torch.cat([x, sharp, distance.expand(b, 1, depth, height, width)], dim=1)


def _gaussian_rows(n: int, sigma: torch.Tensor) -> torch.Tensor:
    """(..., n, n) matrices that blur a length-n signal by a Gaussian of each ``sigma`` (...) px, cut at 4 sigma,
    the signal extended by its edge values (replicate, as G_S and the halo tiling pad) by n on each side: any n,
    and sizes that depend only on n, so that an exported graph keeps the rule for every size."""
    i = torch.arange(n, device=sigma.device, dtype=sigma.dtype)
    j = torch.arange(-n, 2 * n, device=sigma.device, dtype=sigma.dtype)
    offset2 = (i.view(n, 1) - j.view(1, 3 * n)) ** 2
    s = sigma.clamp(min=1e-3)[..., None, None]
    weights = torch.exp(-0.5 * offset2 / s**2) * (offset2 <= (4 * s) ** 2).to(sigma.dtype)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    inside = weights[..., n : 2 * n]
    first, last = (i == 0).to(sigma.dtype), (i == n - 1).to(sigma.dtype)
    # what lies before the signal falls on its first value, what lies after it on its last
    return inside + weights[..., :n].sum(dim=-1, keepdim=True) * first + weights[..., 2 * n :].sum(-1, True) * last


#: (sigma0 px, k px per plane) of :func:`focal_transfer`'s defocus law. Negative sigma0: the real brain stacks'
#: depth of field, |sigma0| / k = 3 planes on each side of focus as sharp as it (their focus measure is 0.94-1.01
#: of the focal plane's there), then a Gaussian that grows to k px per plane (docs/results.md, round 7)
FOCAL_DEFOCUS = (-1.05, 0.35)


def _plane_distances(focus: torch.Tensor, depth: int) -> torch.Tensor:
    """(B, depth) float32: each plane's signed distance z - focus from its volume's focal plane (``focus``: B)."""
    return (torch.arange(depth, device=focus.device).view(1, depth) - focus.view(-1, 1)).to(torch.float32)


def focal_sigma(d: torch.Tensor, defocus: torch.Tensor) -> torch.Tensor:
    """The defocus sigma (px) of planes ``d`` planes from focus: sqrt(max(0, s + (k d)^2)), s = sigma0 |sigma0| and
    ``defocus`` = (sigma0, k). sigma0 >= 0 is the focal plane's own blur (sigma0 at focus, :class:`~scripts.nets.
    optical.OpticalBlur`'s law); sigma0 < 0 a depth of field: sigma 0 (nothing to restore) within |sigma0| / k
    planes of focus, k sqrt(d^2 - d0^2) beyond, approaching k |d| far from focus."""
    defocus = defocus.to(device=d.device, dtype=torch.float32)
    return torch.sqrt((defocus[0] * defocus[0].abs() + (defocus[1] * d) ** 2).clamp(min=0))


def focal_transfer(x: torch.Tensor, focus: torch.Tensor, defocus: torch.Tensor) -> torch.Tensor:
    """x (B,C,Z,Y,X) -> each plane z as f + G_z * (x_z - f), f the focal plane (``focus``: B plane indices).

    G_z is the defocus of plane z relative to focus, a Gaussian of sigma_z = :func:`focal_sigma` (d, defocus) px
    at d = z - focus planes, ``defocus`` = (sigma0, k), e.g. ``torch.tensor(FOCAL_DEFOCUS)`` (planes within its
    depth of field come out as they are). In frequency, with T_z the transfer of G_z, each plane becomes
    (1 - T_z) f + T_z x_z: where its defocus kept a frequency (T_z near 1) the plane's own content, where it
    removed it (T_z near 0) the focal plane's. So the focal plane comes out unchanged, content of a plane's own
    stays as blurred as it was (nothing is invented), and a plane that is the focal plane defocused comes back
    to it up to a dip of at most a quarter at the frequencies its defocus halved (1 - T + T^2 >= 3/4).
    Nothing is learnt: the base of a ``focal_skip`` G_S, and the evaluation's ``focal_transfer`` baseline.
    Blurs are separable matrix products (exact at every size, the planes extended by their edge values), which
    TorchScript and ONNX export as they are.
    """
    b, c, depth, height, width = x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    focus = _stack_focus(x, focus)
    sharp = x.gather(2, focus.view(b, 1, 1, 1, 1).expand(b, c, 1, height, width))
    sigma = focal_sigma(_plane_distances(focus, depth), defocus)  # B, Z
    difference = (x - sharp).float()
    blurred = torch.einsum("bzij,bczjx->bczix", _gaussian_rows(height, sigma), difference)
    blurred = torch.einsum("bzij,bczyj->bczyi", _gaussian_rows(width, sigma), blurred)
    return sharp + blurred.to(x.dtype)


def focus_guided(network) -> bool:
    """Whether ``network``, or the network it wraps (``module``: DataParallel; ``network``: the inference's
    ``Accelerated``; ``_orig_mod``: torch.compile), is a focus-guided G_S (``--g_focus_guide true``)."""
    while not hasattr(network, "focus_guide"):
        network = next((getattr(network, a) for a in ("module", "network", "_orig_mod") if hasattr(network, a)), None)
        if network is None:
            return False
    return bool(network.focus_guide)


class Generator3D(ResNetGenerator):
    """3D ResNet generator (G_S or G_B): a volume B,C,Z,Y,X in, a volume of the same size out.

    Layout (the reference code's): conv 5^3 -> ``channels`` (16); ``n_downsampling`` (2) stride-2
    conv 3^3 blocks, doubling channels (16 -> 32 -> 64); ``n_residual_blocks`` (6) residual blocks at
    the deepest level; as many stride-2 upsamplings back (64 -> 32 -> 16); conv 5^3 ->
    ``out_channels``. Every hidden convolution is followed by ``norm`` (InstanceNorm3d without affine
    parameters, as in CycleGAN) and ReLU, and a tanh at the end. The constructor's defaults are the
    reference code's; the bundle's configs default to the fidelity study's choices instead
    (``scripts.nets.architecture.DEFAULTS``: sub-pixel upsampling and a residual output).

    ``upsampling``: "transpose" (ConvTranspose3d k3 s2 p1 op1, the reference code's; cheapest, but
    its kernel does not divide by its stride, so its output has a checkerboard: Odena et al. 2016),
    "transpose4" (k4 s2 p1: every output voxel gets the same number of kernel taps), "resize"
    (trilinear x2 then conv 3^3: no checkerboard, about 60 % more multiply-adds at the default
    sizes) or "pixelshuffle" (sub-pixel convolution: conv 3^3 to 8x the channels, ICNR-initialised
    so that it starts as nearest-neighbour upsampling, then a 3D pixel shuffle; MONAI's
    ``SubpixelUpsample``, with its blur pooling).
    ``padding_mode`` ("replicate" or "zeros") pads the stride-1 and downsampling convolutions.

    ``focus_guide=True`` gives the first convolution, besides the volume, its focal plane repeated at every
    depth and each plane's distance from it (:func:`focal_guide`): every plane can then borrow the sharp
    detail of the focal plane directly. The input stays a plain volume (the guide is computed inside), so
    inference, export and the registry need nothing else; the window must hold the focal plane (the
    configs' windows span the whole depth).

    ``focal_skip=True`` (with ``focus_guide`` and ``residual``) adds the correction to :func:`focal_transfer` of
    the input instead of the input itself: each plane's low frequencies with the focal plane's high frequencies
    that its defocus removed. Training then starts from that non-learned reference (which keeps the specimen
    and sharpens every plane: docs/results.md) and learns only what it misses. ``focal_gate=True`` weighs that
    correction per plane by 1 - exp(-sigma_z^2 / 2), sigma_z the plane's defocus (:func:`focal_sigma`, px): none
    within the focal transfer's depth of field, whose planes then come out exactly as they went in.

    ``residual=True`` makes the network learn a correction: output = input + r(input), with the last
    convolution zero-initialised so that training starts from the identity (residual learning, as
    in VDSR and EDSR), and no tanh, so nothing clips the darkest cell cores (which the percentile
    mapping may place below -1). It needs ``in_channels == out_channels``. Its state_dict holds a
    ``skip.gain`` (1), so that its weights and a non-residual generator's never load into each other.

    Any Z, Y, X >= 1 is accepted: each spatial dimension is replicate-padded (split evenly, the
    extra voxel after) up to a multiple of ``2 ** n_downsampling`` and the output is cropped back.
    If the deepest feature map would then hold a single voxel (every dimension <= that multiple),
    Z is padded to twice the multiple, because instance norm of one voxel is undefined.
    The padding is integer arithmetic without branches, so TorchScript (``torch.jit.script``) and
    ONNX export with dynamic Z, Y, X keep the rule for every size.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 16,
        n_downsampling: int = 2,
        n_residual_blocks: int = 6,
        first_kernel_size: int = 5,
        norm: str | None = "instance",
        padding_mode: str = "replicate",
        upsampling: str = "transpose",
        residual: bool = False,
        focus_guide: bool = False,
        focal_skip: bool = False,
        focal_gate: bool = False,
    ):
        if residual and in_channels != out_channels:
            raise ValueError(f"residual needs in_channels == out_channels, got {in_channels} and {out_channels}")
        super().__init__(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=channels,
            n_downsampling=n_downsampling,
            n_residual_blocks=n_residual_blocks,
            first_kernel_size=first_kernel_size,
            norm=norm,
            padding_mode=padding_mode,
            upsampling=upsampling,
            output="residual" if residual else "tanh",
            focus_guide=focus_guide,
            focal_skip=focal_skip,
            focal_gate=focal_gate,
        )


class _ResidualSkip(nn.Module):
    """input + gain * correction. ``gain`` (1) is a state_dict entry that only residual generators have:
    weights of one kind loaded into a network of the other fail ``load_state_dict`` (a missing or an
    unexpected key) instead of silently running with or without the skip connection and the tanh."""

    def __init__(self):
        super().__init__()
        self.register_buffer("gain", torch.ones(()))

    def forward(self, x: torch.Tensor, correction: torch.Tensor) -> torch.Tensor:
        """x + gain * correction."""
        return x + self.gain * correction


class _Input(nn.Module):
    """What the skip connection adds the correction to: the input itself."""

    def forward(self, x: torch.Tensor, focus: torch.Tensor | None) -> torch.Tensor:
        """x."""
        return x

    def weigh(self, correction: torch.Tensor, focus: torch.Tensor | None) -> torch.Tensor:
        """The correction as it is."""
        return correction


class _FocalTransfer(nn.Module):
    """What a ``focal_skip`` generator adds its correction to: :func:`focal_transfer` of the input. Its
    ``defocus`` buffer (sigma0, k: :data:`FOCAL_DEFOCUS`) travels with the weights, so that they never load into
    a generator of another kind (as ``skip.gain`` does) and a file says which base its correction was learnt on."""

    def __init__(self):
        super().__init__()
        self.register_buffer("defocus", torch.tensor(FOCAL_DEFOCUS))

    def forward(self, x: torch.Tensor, focus: torch.Tensor | None) -> torch.Tensor:
        """focal_transfer(x, focus) (``focus`` None: x's own focal plane)."""
        return focal_transfer(x, _stack_focus(x, focus), self.defocus)

    def weigh(self, correction: torch.Tensor, focus: torch.Tensor | None) -> torch.Tensor:
        """The correction as it is."""
        return correction


class _GatedFocalTransfer(_FocalTransfer):
    """The focal transfer of a ``focal_gate`` generator, which weighs the correction of plane z by
    1 - exp(-(sigma_z / gate)^2 / 2), sigma_z its defocus (:func:`focal_sigma`): nothing within the depth of field
    (sigma 0), 39% where sigma_z is ``gate`` (a buffer, 1 px), 86% at twice it. The buffer also keeps its weights
    and an ungated generator's from loading into each other."""

    def __init__(self):
        super().__init__()
        self.register_buffer("gate", torch.ones(()))

    def weigh(self, correction: torch.Tensor, focus: torch.Tensor | None) -> torch.Tensor:
        """``correction`` (B,C,Z,Y,X) weighed per plane by its distance from ``focus`` (B plane indices, those the
        generator found or was given: a correction has no focal plane of its own)."""
        if focus is None:
            raise ValueError("the focal gate needs the stack's focal plane")
        b, depth = correction.shape[0], correction.shape[2]
        d = _plane_distances(focus.to(correction.device).reshape(-1).expand(b), depth)
        weight = 1 - torch.exp(-0.5 * (focal_sigma(d, self.defocus) / self.gate) ** 2)
        return correction * weight.view(b, 1, depth, 1, 1).to(correction.dtype)


class _MeanSkip(nn.Module):
    """MicroscopyGAN's input skip: (tanh output + input) / 2. Its ``mean`` buffer (0.5) keeps its weights
    and another kind of generator's from loading into each other, as ``skip.gain`` does."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.full((), 0.5))

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """(out + x) / 2."""
        return self.mean * (out + x)


class _NoSkip(nn.Module):
    """The plain generator's output as it is."""

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out."""
        return out


def _zero_last_conv(module: nn.Module) -> None:
    """Zero the weights and bias of the last convolution in ``module`` and mark it so that
    :func:`init_weights` leaves it at zero (a residual network then starts as the identity)."""
    conv = [m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)][-1]
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    conv.keep_init = True


class _SkipSinglePixel(nn.Module):
    """Applies ``norm`` unless the feature map has one pixel, where instance norm is undefined.

    Instance norm of a 1x1 map raises in PyTorch (and would set every value to 0 anyway); such a
    map is passed on unnormalised instead. It happens in D's deepest layer for 16-31 pixel sides.
    """

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """norm(x), or x itself when x has a single spatial element."""
        return x if math.prod(x.shape[2:]) == 1 else self.norm(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator, 2D or 3D: N,C,(D,)H,W images -> N,``out_channels``,(d,)h,w patch logits.

    ``n_layers`` stride-2 conv 4 (padding 1) blocks with ``channels`` * 2**i channels, LeakyReLU 0.2,
    ``norm`` on all but the first; then a conv 3 (stride 1, padding 1) to ``out_channels``.
    :class:`PatchDiscriminator2D` documents the sizes.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        channels: int = 32,
        n_layers: int = 4,
        norm: str | None = "instance",
        out_channels: int = 1,
    ):
        super().__init__()
        if n_layers < 1 or channels < 1 or out_channels < 1:
            raise ValueError(
                f"n_layers, channels and out_channels must be >= 1, got {n_layers}, {channels}, {out_channels}"
            )
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        norm = _norm_arg(norm)
        self.spatial_dims, self.n_layers = spatial_dims, n_layers
        self._axes = "N,C,H,W" if spatial_dims == 2 else "N,C,D,H,W"
        layers: list[nn.Module] = []
        ch_in, ch = in_channels, channels
        for i in range(n_layers):
            layer_norm = norm if i > 0 else None
            block = Convolution(
                spatial_dims=spatial_dims,
                in_channels=ch_in,
                out_channels=ch,
                strides=2,
                kernel_size=4,
                padding=1,
                norm=layer_norm,
                act=("leakyrelu", {"negative_slope": 0.2}),
                bias=layer_norm is None,
            )
            if layer_norm == "instance":
                block.adn.N = _SkipSinglePixel(block.adn.N)
            layers.append(block)
            ch_in, ch = ch, ch * 2
        layers.append(
            Convolution(
                spatial_dims=spatial_dims,
                in_channels=ch_in,
                out_channels=out_channels,
                strides=1,
                kernel_size=3,
                padding=1,
                conv_only=True,
                bias=True,
            )
        )
        self.model = nn.Sequential(*layers)

    @property
    def min_size(self) -> int:
        """Smallest side accepted: 2**n_layers."""
        return 2**self.n_layers

    def output_size(self, *sizes: int) -> tuple[int, ...]:
        """The sizes of the logit map for an input of spatial ``sizes``."""
        return tuple(size // self.min_size for size in sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: N,C,(D,)H,W with every side >= min_size -> N,out_channels,(D,)H,W // min_size logits."""
        name = type(self).__name__
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"{name} expects an {self._axes} tensor, got shape {tuple(x.shape)}")
        if min(x.shape[2:]) < self.min_size:
            sides = "H, W" if self.spatial_dims == 2 else "D, H, W"
            raise ValueError(
                f"{name} with {self.n_layers} layers needs {sides} >= {self.min_size}, "
                f"got an image of {'x'.join(str(s) for s in x.shape[2:])}"
            )
        return self.model(x)


class PatchDiscriminator2D(PatchDiscriminator):
    """2D PatchGAN discriminator (D_S or D_B): N,C,H,W images -> N,1,h,w patch logits.

    ``n_layers`` (4, the reference code's; the configs default to 3, whose receptive field is smaller
    than a 64-px crop, so that D judges local sharpness rather than layout) stride-2 conv 4x4 (padding
    1) blocks with ``channels`` * 2**i channels (32, 64, 128, 256), LeakyReLU 0.2, ``norm`` on all but
    the first; then a 1-channel conv 3x3 (stride 1, padding 1). Each stride-2 block halves a side
    (floor), so H and W must both be at least :attr:`min_size` = 2**n_layers (16): a 128x128 image
    gives 8x8 logits, a 29x128 vertical section 1x8, a 16x16 image 1x1. The kernel 3 of the last
    conv (the reference code's was 2, which changes the map size) keeps h, w equal to the last
    block's map, so every input >= ``min_size`` gives at least one logit. Where the deepest map is a single pixel (sides
    min_size to 2 min_size - 1), instance norm is skipped in that layer (it is undefined on one pixel).
    """

    def __init__(self, in_channels: int = 1, channels: int = 32, n_layers: int = 4, norm: str | None = "instance"):
        super().__init__(spatial_dims=2, in_channels=in_channels, channels=channels, n_layers=n_layers, norm=norm)


class Critic(PatchDiscriminator):
    """WGAN-GP critic (Gulrajani et al. 2017), 2D or 3D: N,C,(D,)H,W -> N scores, the mean of a patch map.

    A :class:`PatchDiscriminator` without normalisation: the gradient penalty is taken per sample
    (``scripts.cingan.losses.gradient_penalty``), which batch norm would couple and the paper advises
    against. With ``n_conditions`` > 0 (one per defect type) the last convolution gives one map per
    condition and ``forward(x, condition)`` scores each sample with its condition's map, so one critic
    judges every defect type with all other weights shared.
    """

    def __init__(
        self, spatial_dims: int = 2, in_channels: int = 1, channels: int = 32, n_layers: int = 3, n_conditions: int = 0
    ):
        if n_conditions < 0:
            raise ValueError(f"n_conditions must be >= 0, got {n_conditions}")
        super().__init__(spatial_dims, in_channels, channels, n_layers, norm=None, out_channels=max(1, n_conditions))
        self.n_conditions = n_conditions

    def forward(self, x: torch.Tensor, condition: torch.Tensor | int | None = None) -> torch.Tensor:
        """x: N,C,(D,)H,W -> N critic values (higher: more like the real images of ``condition``)."""
        maps = super().forward(x).flatten(2).mean(dim=2)  # N, max(1, n_conditions)
        if self.n_conditions == 0:
            return maps[:, 0]
        if condition is None:
            raise ValueError("this critic is conditioned: give the condition (a defect type per sample)")
        condition = torch.as_tensor(condition, device=x.device).long().reshape(-1).expand(x.shape[0])
        return maps.gather(1, condition[:, None])[:, 0]


def init_weights(module: nn.Module, gain: float | None = 0.02) -> nn.Module:
    """CycleGAN's "normal" initialisation, in place, for every submodule of ``module``.

    Convolution (and transposed convolution) weights ~ N(0, gain), biases 0; affine norm layers
    (batch norm, affine instance norm) get weights ~ N(1, gain) and biases 0. Layers marked
    ``keep_init`` (a residual generator's zero last convolution, the ICNR-initialised sub-pixel
    convolutions) are left as they are. Returns ``module``, so that a
    config can write ``$@scripts.nets.networks.init_weights(@network_def, 0.02)``; ``gain`` None leaves
    PyTorch's default initialisation.
    """
    if gain is None:
        return module
    for m in module.modules():
        if getattr(m, "keep_init", False):
            continue  # a residual generator's zero last convolution, a sub-pixel convolution's ICNR
        if isinstance(m, nn.modules.conv._ConvNd):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm)) and getattr(m, "affine", False):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return module


def unwrap(module: nn.Module) -> nn.Module:
    """The network inside a ``DistributedDataParallel`` or ``DataParallel`` wrapper (whose state_dict
    keys carry a ``module.`` prefix) and inside ``torch.compile``'s (``_orig_mod.``), or ``module`` itself: what
    to save, export or run on one process."""
    if isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        module = module.module
    compiled = getattr(module, "_orig_mod", None)  # torch.compile's OptimizedModule
    return compiled if isinstance(compiled, nn.Module) else module


def receptive_reach(network: nn.Module, in_channels: int = 1, block: int = 16) -> int:
    """How far, in pixels along y and x, ``network``'s output reaches into its input: the largest distance
    from an output pixel to an input pixel it depends on, measured by a gradient probe.

    The probe is a copy of ``network`` with every weight 1 / fan-in, every bias 0 and every norm layer the
    identity (an instance norm's statistics would make every output depend on all of the window; the reach
    is that of the convolutions, exact for batch norm in eval mode): its output is then a positive
    combination of its inputs, so the gradient of a ``block``-pixel band of outputs (all phases of a
    network with strides up to ``block``) is non-zero exactly on the inputs they depend on. Inputs
    (B,C,Z,Y,X or B,C,Y,X, as the first convolution is 3D or 2D) are ``block`` planes and pixels across the
    band and grow along y, then x, until the gradient no longer reaches the input's border. About 2 s for
    the default G_S on one CPU thread (65 px), without touching ``network``.
    """
    probe = copy.deepcopy(network).float().eval()
    spatial_dims = next(len(m.kernel_size) for m in probe.modules() if isinstance(m, nn.modules.conv._ConvNd))
    for m in probe.modules():
        if isinstance(m, _NORM_LAYERS):
            m.register_forward_hook(lambda module, args, out: args[0])
    with torch.no_grad():
        for p in probe.parameters():
            p.copy_(torch.full_like(p, 1.0 / p[0].numel()) if p.dim() > 1 else torch.zeros_like(p))
    reach, size = 0, 4 * block
    for axis in (-2, -1):
        while True:
            shape = [1, in_channels] + [block] * spatial_dims
            shape[axis] = size
            x = torch.ones(shape, requires_grad=True)
            centre = size // 2
            probe(x).narrow(axis, centre, block).sum().backward()
            support = x.grad.abs().movedim(axis, 0).flatten(1).sum(1).nonzero()[:, 0]
            first, last = int(support.min()), int(support.max())
            if first > 0 and last < size - 1:
                reach = max(reach, centre - first, last - (centre + block - 1))
                break
            size *= 2
    return reach
