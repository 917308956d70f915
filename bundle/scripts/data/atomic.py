"""Atomic writes: every write of the bundle that must not be lost or left half-done goes through here.

``atomic(path)`` yields a temporary path beside ``path`` and renames it into place on success
(``os.replace``, atomic on one file system); ``write_text_atomic`` is the same for a text file, ``write_zip_atomic``
for a zip archive whose bytes depend on its entries only.
``hold_lock(folder)`` keeps other processes out of an output folder while this one writes there.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scripts.errors import InputError

__all__ = ["LOCK_NAME", "atomic", "hold_lock", "write_text_atomic", "write_zip_atomic"]

LOCK_NAME = ".zsegan.lock"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry
_HELD: dict[str, object] = {}  # folder -> its open lock file, held until this process ends


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


def write_zip_atomic(path: str | os.PathLike, entries: dict[str, bytes]) -> Path:
    """Write the zip archive ``path`` of ``entries`` (name in the archive -> content), in their order, atomically;
    every entry deflated, dated ``_EPOCH`` and rw-r--r--, so the same entries always give the same bytes."""
    with atomic(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in entries.items():
            entry = zipfile.ZipInfo(name, date_time=_EPOCH)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16  # rw-r--r--
            zf.writestr(entry, content)
    return Path(path)


def hold_lock(folder: str | os.PathLike) -> None:
    """Lock ``folder`` (created if missing) for this process, until it ends: an exclusive ``flock`` on
    ``<folder>/.zsegan.lock``, which the OS releases when the process dies, however it dies. InputError
    naming the folder and the process holding it when another process has it."""
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _HELD:
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = open(folder / LOCK_NAME, "a+")  # noqa: SIM115 - open as long as this process runs
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise InputError(folder, f"is in use by {holder}: wait for it to end, or choose another output_dir") from None
    lock.truncate(0)
    lock.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    lock.flush()
    _HELD[key] = lock
