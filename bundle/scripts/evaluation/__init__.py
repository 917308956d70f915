"""Judging results: measures, baselines, the evaluation workflow, its report and orthogonal views."""

from scripts import lazy_submodules

__getattr__ = lazy_submodules(__name__)
