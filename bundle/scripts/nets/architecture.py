"""The networks' architectures as config keys: one source for training, inference, evaluation and registration.

Every constructor option of the generators (G_S, G_B: :class:`~scripts.nets.networks.Generator3D`) and of
the discriminators (D_S, D_B: :class:`~scripts.nets.networks.PatchDiscriminator2D`) is a config key, and
its default is the constructor's own default (read from the signatures, so nothing is written twice)
except where :data:`STUDY_DEFAULTS` says otherwise (:data:`DEFAULTS`). Each workflow config (train,
inference, evaluate) declares the keys from :data:`DEFAULTS`, so ``--g_channels 8`` overrides them on
the command line, and builds its networks from :func:`generator_args` / :func:`discriminator_args`;
train.yaml's ``train#register#network_args`` (what the registered MLflow model rebuilds G_S from) is
the same ``generator_args``.

========================  ======================  =====================================================
key                       constructor argument    meaning
========================  ======================  =====================================================
``g_channels``            ``channels``            channels after the first convolution
``g_downsamplings``       ``n_downsampling``      stride-2 downsamplings (each doubles the channels)
``g_residual_blocks``     ``n_residual_blocks``   residual blocks at the lowest resolution
``g_first_kernel``        ``first_kernel_size``   kernel of the first and the last convolution
``g_norm``                ``norm``                "instance", "batch" or "none"
``g_padding_mode``        ``padding_mode``        "replicate" or "zeros"
``g_upsampling``          ``upsampling``          "transpose", "transpose4", "resize" or "pixelshuffle"
``g_residual``            ``residual``            output = input + correction (no tanh)
``g_focus_guide``         ``focus_guide``         every plane also sees the focal plane (focal_guide)
``g_focal_skip``          ``focal_skip``          output = focal_transfer(input) + correction
``g_focal_gate``          ``focal_gate``          that correction none within the depth of field
``d_channels``            ``channels``            channels of the discriminator's first layer
``d_layers``              ``n_layers``            stride-2 layers (inputs need sides >= 2**d_layers)
``d_norm``                ``norm``                "instance", "batch" or "none"
========================  ======================  =====================================================
"""

from __future__ import annotations

import inspect

from scripts.nets.networks import Generator3D, PatchDiscriminator2D

__all__ = [
    "DEFAULTS",
    "DISCRIMINATOR_KEYS",
    "GENERATOR_KEYS",
    "STUDY_DEFAULTS",
    "default_generator",
    "discriminator_args",
    "generator_args",
]

#: config key -> Generator3D argument, in the order :func:`generator_args` takes them
GENERATOR_KEYS = {
    "g_channels": "channels",
    "g_downsamplings": "n_downsampling",
    "g_residual_blocks": "n_residual_blocks",
    "g_first_kernel": "first_kernel_size",
    "g_norm": "norm",
    "g_padding_mode": "padding_mode",
    "g_upsampling": "upsampling",
    "g_residual": "residual",
    "g_focus_guide": "focus_guide",
    "g_focal_skip": "focal_skip",
    "g_focal_gate": "focal_gate",
}
#: config key -> PatchDiscriminator2D argument, in the order :func:`discriminator_args` takes them
DISCRIMINATOR_KEYS = {"d_channels": "channels", "d_layers": "n_layers", "d_norm": "norm"}


def _defaults(cls: type, keys: dict[str, str]) -> dict:
    parameters = inspect.signature(cls).parameters
    return {key: parameters[argument].default for key, argument in keys.items()}


#: where the bundle's default differs from the constructor's (the reference code's): the choices of the
#: fidelity study (docs/results.md): sub-pixel upsampling (no checkerboard), a residual G_S (the identity
#: at the start, no tanh), 3-layer discriminators (a receptive field smaller than the 64-px crops), G_S handed
#: the focal plane at every depth (round 4, with train.yaml's focal-detail prior), batch norms in G_S, whose
#: running statistics make its output independent of the window (round 5: the same quality, exact halo tiling),
#: G_S's correction added to the non-learned focal transfer of its input (round 6: the outer planes as sharp
#: as the focal plane, with the specimen kept), and that correction weighed by each plane's defocus, none within
#: the depth of field (round 7: the in-focus planes come out as they went in)
STUDY_DEFAULTS = {
    "g_upsampling": "pixelshuffle",
    "g_residual": True,
    "g_focus_guide": True,
    "g_norm": "batch",
    "g_focal_skip": True,
    "g_focal_gate": True,
    "d_layers": 3,
}

#: every architecture key with its default: the constructors' defaults, with :data:`STUDY_DEFAULTS` over them
DEFAULTS = {
    **_defaults(Generator3D, GENERATOR_KEYS),
    **_defaults(PatchDiscriminator2D, DISCRIMINATOR_KEYS),
    **STUDY_DEFAULTS,
}


def _arguments(keys: dict[str, str], values: tuple) -> dict:
    if len(values) != len(keys):
        raise TypeError(f"expected the {len(keys)} keys {list(keys)} in this order, got {len(values)} values")
    return dict(zip(keys.values(), values, strict=True))


def _as_bool(key: str, value) -> bool:
    """A flag from the command line: True/False, or the strings true/false in any case (``--g_residual
    false`` arrives as the string "false", which Python would take as true)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{key} must be true or false, got {value!r}")


def generator_args(*values) -> dict:
    """Generator3D's keyword arguments from the values of :data:`GENERATOR_KEYS`, in that order."""
    args = _arguments(GENERATOR_KEYS, values)
    args["residual"] = _as_bool("g_residual", args["residual"])
    args["focus_guide"] = _as_bool("g_focus_guide", args["focus_guide"])
    args["focal_skip"] = _as_bool("g_focal_skip", args["focal_skip"])
    args["focal_gate"] = _as_bool("g_focal_gate", args["focal_gate"])
    if args["focal_gate"] and not args["focal_skip"]:
        raise ValueError("--g_focal_gate true needs --g_focal_skip true (it weighs the correction added to the "
                         "focal transfer): pass --g_focal_gate false with --g_focal_skip false")  # fmt: skip
    for key, needed in (("g_focus_guide", "focus_guide"), ("g_residual", "residual")):
        if args["focal_skip"] and not args[needed]:  # the default G_S adds its correction to the focal transfer
            raise ValueError(f"--g_focal_skip true needs {key} true (the focal transfer is the focal plane's and a "
                             f"residual G_S's base): pass --g_focal_skip false with --{key} false")  # fmt: skip
    return args


def discriminator_args(*values) -> dict:
    """PatchDiscriminator2D's keyword arguments from the values of :data:`DISCRIMINATOR_KEYS`, in that order."""
    return _arguments(DISCRIMINATOR_KEYS, values)


def default_generator(**overrides) -> Generator3D:
    """G_S as the configs build it by default (:data:`DEFAULTS`), with constructor arguments in ``overrides``
    (e.g. ``channels=4``): what ``models/model.pt`` and the weights of a default training load into."""
    defaults = generator_args(*(DEFAULTS[key] for key in GENERATOR_KEYS))
    return Generator3D(**{**defaults, **overrides})
