"""The paper's method (ZSE-GAN): sections, focus weights, losses, image pool and the trainer."""

from scripts import lazy_submodules

__getattr__ = lazy_submodules(__name__)
