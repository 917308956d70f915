"""Atomic writes: every write of the bundle that must not be lost or left half-done goes through here.

``atomic(path)`` yields a temporary path beside ``path`` and renames it into place on success
(``os.replace``, atomic on one file system); ``write_text_atomic`` is the same for a text file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic", "write_text_atomic"]


@contextmanager
def atomic(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so the libraries pick the same format);
    on success it replaces ``path``, on failure it is removed and ``path`` is left as it was. Every
    write of the bundle that must not be lost or left half-done goes through here.
    """
    target = Path(path)
    suffix = target.suffix if suffix is None else suffix
    target.parent.mkdir(parents=True, exist_ok=True)
    stem = target.name[: len(target.name) - len(suffix)]
    tmp = target.with_name(f".{stem}.{secrets.token_hex(4)}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (beside it, then rename); returns ``path`` as a Path."""
    with atomic(path) as tmp:
        tmp.write_text(text)
    return Path(path)
