"""Python of the ZSE-GAN bundle: only what MONAI does not already provide.

Axis order: every array inside the bundle is ZYX (channel-first tensors are CZYX, batches
BCZYX, matching torch's NCDHW); 2D images are YX. Readers convert from the file's own order
(TIFF: ZYX, the paper's npz: YXZ, NIfTI: XYZ) and writers convert back.

Names follow the paper ("Visual enhancement of image stacks from a z-scanning
microscope using focal lengths weighted GANs"): G_S sharpens, G_B blurs, D_S and D_B are the 2D
discriminators, ``p`` weighs vertical sections, ``alpha`` is the per-slice focal weight of D_B,
``lambda_cycle`` the cycle-consistency weight.
"""


def __getattr__(name: str):
    """``scripts.<module>`` imports the module on first use, so configs can say ``@scripts.data.datalist``."""
    import importlib

    try:
        return importlib.import_module(f"scripts.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"scripts.{name}":
            raise  # a module of ours that failed to import something else
        raise AttributeError(f"module 'scripts' has no attribute or module {name!r}") from None
