"""Shared test set-up: the bundle's ``scripts`` package is imported from ``bundle/``."""

import sys
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
if str(BUNDLE) not in sys.path:
    sys.path.insert(0, str(BUNDLE))
