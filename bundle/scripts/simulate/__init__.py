"""Simulated data: the defocus optics and one module per kind of simulated stack."""

from scripts import lazy_submodules

__getattr__ = lazy_submodules(__name__)
