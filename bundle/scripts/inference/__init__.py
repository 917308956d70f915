"""Applying a trained generator: sliding-window inference on stacks, tiled whole-slide inference."""

from scripts import lazy_submodules

__getattr__ = lazy_submodules(__name__)
