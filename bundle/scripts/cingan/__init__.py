"""MicroscopyGAN's stage 1: the CIN-GAN that learns to add defects (per defect type) to clean images."""

from scripts import lazy_submodules

__getattr__ = lazy_submodules(__name__)
