"""The networks: 3D generators (G_S, G_B) and 2D patch discriminators (D_S, D_B)."""

from scripts import lazy_submodules

__getattr__ = lazy_submodules(__name__)
