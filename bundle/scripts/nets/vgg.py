"""VGG16 / VGG19 feature extractors for the perceptual losses, with ImageNet weights and no silent fallback.

MicroscopyGAN's losses compare images in the feature space of ImageNet-trained VGG networks (Simonyan &
Zisserman 2015): VGG16 relu3_3 (the content loss) and VGG19 relu1_1-relu4_1 (the Gram-matrix style loss).
:class:`VGGFeatures` is the ``features`` part of torchvision's VGG16 ("D") and VGG19 ("E") layouts, layer
for layer, so that torchvision's weight files load into it as they are (keys ``features.<i>.weight``);
torchvision itself is not needed (the bundle's environment does not have it).

Weights, in this order (:func:`load_vgg_weights`): the file given as ``weights`` (a configured path; if
given it must load), else the torch hub cache (``torch.hub.get_dir()/checkpoints``, where torchvision
keeps them too), else a download from download.pytorch.org into that cache. If none works, one
:class:`~scripts.errors.InputError` says how to provide the file. There is no random fallback: tests
and CI write random weights to a file (:func:`save_random_vgg_weights`) and pass its path, and
``VGGFeatures.weights_tag`` says "imagenet" only for the published file (checked by its SHA-256 prefix),
so a run with random features is never mistaken for the paper's loss (log it as an MLflow param).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from scripts.errors import InputError
from torch import nn

__all__ = ["LAYOUTS", "URLS", "VGGFeatures", "layer_names", "load_vgg_weights", "save_random_vgg_weights"]

#: torchvision's layouts: conv 3x3 output channels, "M" a 2x2 max pool
LAYOUTS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
#: torchvision's ImageNet weight files; the 8 hex digits in each name are its SHA-256 prefix
URLS = {
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_arch(arch: str) -> None:
    if arch not in LAYOUTS:
        raise ValueError(f"arch must be one of {sorted(LAYOUTS)}, got {arch!r}")


def layer_names(arch: str) -> dict[str, int]:
    """Index in ``features`` of each ReLU, by its usual name: ``relu<block>_<n>`` (e.g. vgg16 relu3_3 -> 15)."""
    _check_arch(arch)
    names, index, block, n = {}, 0, 1, 0
    for value in LAYOUTS[arch]:
        if value == "M":
            index, block, n = index + 1, block + 1, 0
        else:
            n += 1
            names[f"relu{block}_{n}"] = index + 1  # conv at index, its ReLU after it
            index += 2
    return names


def _features(arch: str, last: int) -> nn.Sequential:
    """torchvision's ``features`` of ``arch`` up to and including index ``last``."""
    layers: list[nn.Module] = []
    channels = 3
    for value in LAYOUTS[arch]:
        if value == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, value, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = value
    return nn.Sequential(*layers[: last + 1])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _how_to_provide(arch: str) -> str:
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    return (
        f"download {URLS[arch]} where the internet is reachable and either give its path as the {arch} "
        f"weights (config key {arch}_weights) or copy it into {cache}"
    )


def load_vgg_weights(arch: str, weights: str | os.PathLike | None = None) -> tuple[dict, Path]:
    """The state dict of torchvision's ImageNet ``arch`` and the file it came from: ``weights`` if given
    (it must load), else the torch hub cache, else downloaded into it. InputError if none works."""
    _check_arch(arch)
    if weights is not None and str(weights) != "":
        path = Path(weights)
        if not path.is_file():
            raise InputError(path, f"no such {arch} weights file; {_how_to_provide(arch)}")
    else:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(URLS[arch])
        if not path.is_file():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(URLS[arch], str(path), hash_prefix=path.stem.split("-")[-1])
            except Exception as e:  # no network, a proxy page, a wrong hash: all end the same way
                raise InputError(
                    None,
                    f"the ImageNet {arch} weights for the VGG feature losses are not in the torch hub cache and "
                    f"could not be downloaded ({type(e).__name__}: {e}); {_how_to_provide(arch)}",
                ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(path, f"cannot be read as {arch} weights ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise InputError(path, f"holds a {type(state).__name__}, not a state dict of {arch}")
    return state, path


def save_random_vgg_weights(
    arch: str, path: str | os.PathLike, up_to: str | None = None, seed: int = 0, scaled: bool = False
) -> Path:
    """Write random weights of ``arch``'s ``features`` (all, or up to the layer named ``up_to``) to ``path``,
    with torchvision's keys: for tests and CI, never the paper's loss. ``scaled``: He's initialisation (normal,
    fan-in, biases 0), which keeps the features' magnitude from layer to layer (PyTorch's default roughly
    halves it at every layer: relu3_3 features about 200 times smaller): a stand-in for runs without the ImageNet file.
    """
    _check_arch(arch)
    torch.manual_seed(seed)
    last = len(LAYOUTS[arch]) * 2 if up_to is None else layer_names(arch)[up_to]
    features = _features(arch, last)
    if scaled:
        for module in features.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


class VGGFeatures(nn.Module):
    """Frozen VGG features of grayscale or RGB images at the named ReLU layers.

    Args:
        arch: "vgg16" or "vgg19".
        layers: ReLU names (:func:`layer_names`), e.g. ``("relu3_3",)``; the network stops at the deepest.
        weights: the weights file (torchvision's), or None for the torch hub cache / download
            (:func:`load_vgg_weights`).
        value_range: the images' intensity range, mapped to [0, 1] before ImageNet's normalisation
            ((-1, 1): the bundle's normalised images).

    ``forward(x)``: x N,1,H,W (repeated to 3 channels) or N,3,H,W -> {layer name: N,C,h,w features}.
    ``weights_file`` and ``weights_tag`` ("imagenet" for the published file, else "other sha256:<prefix>")
    say which weights are in use. The parameters never train; the module stays in eval mode.
    """

    def __init__(
        self,
        arch: str = "vgg16",
        layers: tuple[str, ...] | list[str] = ("relu3_3",),
        weights: str | os.PathLike | None = None,
        value_range: tuple[float, float] = (-1.0, 1.0),
    ):
        super().__init__()
        names = layer_names(arch)
        unknown = [name for name in layers if name not in names]
        if unknown or not layers:
            raise ValueError(f"{arch} layers must be among {list(names)}, got {list(layers)}")
        self.arch, self.layers = arch, tuple(layers)
        self._indices = {names[name]: name for name in layers}
        self.features = _features(arch, max(self._indices))
        state, path = load_vgg_weights(arch, weights)
        mine = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        mine = {k: v for k, v in mine.items() if int(k.split(".")[0]) < len(self.features)}
        try:
            self.features.load_state_dict(mine)
        except RuntimeError as e:
            problem = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(path, f"does not hold the {arch} features ({problem})") from None
        self.weights_file = str(path)
        digest = _sha256(path)
        published = os.path.basename(URLS[arch]).rsplit("-", 1)[1].split(".")[0]
        self.weights_tag = "imagenet" if digest.startswith(published) else f"other sha256:{digest[:8]}"
        self.requires_grad_(False)
        self.eval()
        lo, hi = value_range
        self.register_buffer("scale", torch.tensor(1.0 / (hi - lo)))
        self.register_buffer("offset", torch.tensor(float(lo)))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1))

    def train(self, mode: bool = True) -> VGGFeatures:
        """Always eval mode (a fixed feature space)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: N,1|3,H,W in ``value_range`` -> {layer name: features}."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"VGGFeatures expects N,1,H,W or N,3,H,W images, got shape {tuple(x.shape)}")
        h = (x - self.offset) * self.scale
        h = (h.expand(-1, 3, -1, -1) - self.mean) / self.std
        out = {}
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in self._indices:
                out[self._indices[index]] = h
        return out
