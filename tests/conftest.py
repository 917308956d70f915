"""Shared test set-up: the bundle's ``scripts`` package is imported from ``bundle/``.

The tests mirror ``bundle/scripts`` (tests/data, tests/zsegan, ...; every file name unique); end-to-end runs
of each config and other slow tests are marked ``slow`` (``pytest -m "not slow"`` is the quick lane)."""

import sys
from pathlib import Path

import pytest
import torch
from monai.utils import set_determinism

TESTS = Path(__file__).resolve().parent
BUNDLE = TESTS.parent / "bundle"
for folder in (TESTS, BUNDLE):  # tests/: shared helpers (test_workflows) for the tests in sub-folders
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


@pytest.fixture(autouse=True)
def _one_thread_and_reset_determinism():
    """One intra-op thread (tiny convolutions are much slower with 2 threads on a busy 2-core machine),
    and no seed left behind for the next test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    set_determinism(seed=None)
