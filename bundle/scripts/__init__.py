"""Python of the ZSE-GAN bundle: only what MONAI does not already provide.

Axis order: every array inside the bundle is ZYX (channel-first tensors are CZYX, batches
BCZYX, matching torch's NCDHW); 2D images are YX. Readers convert from the file's own order
(TIFF: ZYX, the paper's npz: YXZ, NIfTI: XYZ) and writers convert back.

Names follow the paper ("Visual enhancement of image stacks from a z-scanning
microscope using focal lengths weighted GANs"): G_S sharpens, G_B blurs, D_S and D_B are the 2D
discriminators, ``p`` weighs vertical sections, ``alpha`` is the per-slice focal weight of D_B,
``lambda_cycle`` the cycle-consistency weight.
"""


def lazy_submodules(package: str):
    """A module ``__getattr__`` for ``package`` that imports ``package.<name>`` on first use, so that configs
    can say ``@scripts.zsegan.trainer.linear_decay`` without importing every module up front."""
    import importlib

    def __getattr__(name: str):
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{package}.{name}":
                raise  # a module of ours that failed to import something else
            raise AttributeError(f"module {package!r} has no attribute or module {name!r}") from None

    return __getattr__


__getattr__ = lazy_submodules(__name__)
