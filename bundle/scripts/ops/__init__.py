"""Running the bundle: Ignite handlers and metrics, MLflow registry, the command-line layer, packing."""

from scripts import lazy_submodules

__getattr__ = lazy_submodules(__name__)
