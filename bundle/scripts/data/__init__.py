"""Files in and out: readers and writers (ZYX inside), datalists, MONAI transforms, atomic writes."""

from scripts import lazy_submodules

__getattr__ = lazy_submodules(__name__)
