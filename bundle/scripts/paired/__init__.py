"""The paired cross-system GAN (wide-field → confocal, arXiv 2403.18026; pix2pix's objective): its trainer."""

from scripts import lazy_submodules

__getattr__ = lazy_submodules(__name__)
