"""Shared test set-up: the bundle's ``scripts`` package is imported from ``bundle/``."""

import sys
from pathlib import Path

import pytest
import torch
from monai.utils import set_determinism

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
if str(BUNDLE) not in sys.path:
    sys.path.insert(0, str(BUNDLE))


@pytest.fixture(autouse=True)
def _one_thread_and_reset_determinism():
    """One intra-op thread (tiny convolutions are much slower with 2 threads on a busy 2-core machine),
    and no seed left behind for the next test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    set_determinism(seed=None)
