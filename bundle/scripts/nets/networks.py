"""The paper's networks: the 3D generators G_S and G_B and the 2D PatchGAN discriminators D_S, D_B.

G_S (sharpen, X -> Y) and G_B (blur, Y -> X) share one architecture, :class:`Generator3D`: a
CycleGAN ResNet generator made 3D, as in the reference code (first convolution 5^3 to 16 channels,
two stride-2 downsamplings to 64 channels, 6 residual blocks, two upsamplings, a 5^3 output
convolution and tanh). D_S and D_B are :class:`PatchDiscriminator2D`: they judge 2D sections
(horizontal x_par, vertical x_perp) and in-focus images y*, one logit per patch.

Tensors are BCZYX for the generators and NCHW for the discriminators (see ``scripts/__init__``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.blocks import ADN, Convolution, SubpixelUpsample
from torch import nn

__all__ = ["Generator3D", "PatchDiscriminator2D", "init_weights", "unwrap"]

_NORMS = {"instance": "instance", "batch": "batch", "none": None}
_PADDING_MODES = ("zeros", "replicate")
_UPSAMPLINGS = ("transpose", "transpose4", "resize", "pixelshuffle")


def _norm_arg(norm: str | None) -> str | None:
    """MONAI's name for ``norm`` ("instance", "batch", "none"/None); ValueError for others."""
    key = "none" if norm is None else str(norm).lower()
    if key not in _NORMS:
        raise ValueError(f"norm must be one of {sorted(_NORMS)}, got {norm!r}")
    return _NORMS[key]


def _conv3d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    norm: str | None,
    act: str | None,
    padding_mode: str,
) -> nn.Module:
    """Conv3d ("same" padding for stride 1) -> norm -> act, with zero or replicate padding.

    MONAI's Convolution only zero-pads, so replicate padding is an explicit pad layer before an
    unpadded convolution (as CycleGAN does with reflection padding). Convolutions followed by a
    norm have no bias: the norm's mean subtraction would cancel it.
    """
    pad = (kernel_size - 1) // 2
    conv = Convolution(
        spatial_dims=3,
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
    if padding_mode == "zeros" or pad == 0:
        return conv
    return nn.Sequential(nn.ReplicationPad3d(pad), conv)


class ResidualBlock3D(nn.Module):
    """CycleGAN's residual block in 3D: x + (conv3-norm-relu-conv3-norm)(x), no activation after."""

    def __init__(self, channels: int, norm: str | None = "instance", padding_mode: str = "replicate"):
        super().__init__()
        self.body = nn.Sequential(
            _conv3d(channels, channels, 3, 1, norm, "relu", padding_mode),
            _conv3d(channels, channels, 3, 1, norm, None, padding_mode),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + body(x); shape unchanged."""
        return x + self.body(x)


class Generator3D(nn.Module):
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
    ):
        super().__init__()
        if residual and in_channels != out_channels:
            raise ValueError(f"residual needs in_channels == out_channels, got {in_channels} and {out_channels}")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {list(_PADDING_MODES)}, got {padding_mode!r}")
        if upsampling not in _UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {list(_UPSAMPLINGS)}, got {upsampling!r}")
        if first_kernel_size < 1 or first_kernel_size % 2 == 0:
            raise ValueError(f"first_kernel_size must be odd and positive, got {first_kernel_size}")
        if n_downsampling < 0 or n_residual_blocks < 0 or channels < 1:
            raise ValueError("channels must be >= 1, n_downsampling and n_residual_blocks >= 0")
        norm = _norm_arg(norm)
        self.n_downsampling = n_downsampling
        self.multiple = 2**n_downsampling  # each spatial size is padded to a multiple of this

        layers: list[nn.Module] = [_conv3d(in_channels, channels, first_kernel_size, 1, norm, "relu", padding_mode)]
        ch = channels
        for _ in range(n_downsampling):
            layers.append(_conv3d(ch, ch * 2, 3, 2, norm, "relu", padding_mode))
            ch *= 2
        layers += [ResidualBlock3D(ch, norm, padding_mode) for _ in range(n_residual_blocks)]
        for _ in range(n_downsampling):
            layers.append(self._upsample(ch, ch // 2, norm, padding_mode, upsampling))
            ch //= 2
        last = _conv3d(ch, out_channels, first_kernel_size, 1, None, None, padding_mode)
        layers.append(last)
        self.residual = residual
        self.skip = _ResidualSkip() if residual else _NoSkip()
        if residual:
            _zero_last_conv(last)
        else:
            layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)

    @staticmethod
    def _upsample(in_ch: int, out_ch: int, norm: str | None, padding_mode: str, upsampling: str) -> nn.Module:
        """One x2 upsampling block -> norm -> ReLU."""
        if upsampling in ("transpose", "transpose4"):  # kernel 3 or 4, output padding 1 (MONAI's default)
            kernel = 3 if upsampling == "transpose" else 4
            return Convolution(
                spatial_dims=3,
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
            shuffle = SubpixelUpsample(3, in_ch, out_ch, scale_factor=2, bias=norm is None)
            shuffle.conv_block.keep_init = True  # ICNR: init_weights must not overwrite it
            adn = ADN(ordering="NA", in_channels=out_ch, act="relu", norm=norm, norm_dim=3)
            return nn.Sequential(shuffle, adn)
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
            _conv3d(in_ch, out_ch, 3, 1, norm, "relu", padding_mode),
        )

    def padded_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The Z, Y, X the network runs on for an input of spatial ``shape`` (see the class doc)."""
        m = self.multiple
        z, y, x = (shape[0] + m - 1) // m, (shape[1] + m - 1) // m, (shape[2] + m - 1) // m  # blocks of m
        # a single deepest voxel (z * y * x == 1) gets a second one in Z: 2 // (n + 1) is 1 for n = 1, else 0
        # (not 1 // n: onnxruntime's optimizer rewrites m * (1 // n) as m // n)
        z += 2 // (z * y * x + 1)
        return z * m, y * m, x * m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B,C,Z,Y,X (any sizes >= 1) -> B,out_channels,Z,Y,X in [-1, 1]."""
        if x.dim() != 5:
            raise ValueError(f"Generator3D expects a B,C,Z,Y,X tensor, got {x.dim()} dimensions")
        z, y, w = x.shape[2], x.shape[3], x.shape[4]
        tz, ty, tw = self.padded_shape((z, y, w))
        # F.pad takes (X_before, X_after, Y_before, Y_after, Z_before, Z_after); always padded (maybe by 0),
        # as a branch on the size would be frozen into an exported graph
        bz, by, bw = (tz - z) // 2, (ty - y) // 2, (tw - w) // 2
        padded = F.pad(x, [bw, tw - w - bw, by, ty - y - by, bz, tz - z - bz], mode="replicate")
        out = self.model(padded)[:, :, bz : bz + z, by : by + y, bw : bw + w]
        return self.skip(x, out)


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


class PatchDiscriminator2D(nn.Module):
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
        super().__init__()
        if n_layers < 1 or channels < 1:
            raise ValueError(f"n_layers and channels must be >= 1, got {n_layers}, {channels}")
        norm = _norm_arg(norm)
        self.n_layers = n_layers
        layers: list[nn.Module] = []
        ch_in, ch = in_channels, channels
        for i in range(n_layers):
            layer_norm = norm if i > 0 else None
            block = Convolution(
                spatial_dims=2,
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
                spatial_dims=2,
                in_channels=ch_in,
                out_channels=1,
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
        """Smallest height and width accepted: 2**n_layers."""
        return 2**self.n_layers

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The h, w of the logit map for an H x W input."""
        return height // self.min_size, width // self.min_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: N,C,H,W with H, W >= min_size -> N,1,H // min_size, W // min_size logits."""
        if x.ndim != 4:
            raise ValueError(f"PatchDiscriminator2D expects an N,C,H,W tensor, got shape {tuple(x.shape)}")
        if min(x.shape[2:]) < self.min_size:
            raise ValueError(
                f"PatchDiscriminator2D with {self.n_layers} layers needs H, W >= {self.min_size}, "
                f"got an image of {x.shape[2]}x{x.shape[3]}"
            )
        return self.model(x)


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
    keys carry a ``module.`` prefix), or ``module`` itself: what to save, export or run on one process."""
    return module.module if isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else module
