"""Tests of scripts.data.atomic's lock on an output folder (atomic writes are tested with their writers)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from scripts.data.atomic import LOCK_NAME, hold_lock
from scripts.errors import InputError

BUNDLE = Path(__file__).resolve().parents[2] / "bundle"


def test_a_folder_is_held_by_one_process_until_it_ends(tmp_path):
    folder = tmp_path / "run"
    code = f"import sys, time; sys.path.insert(0, {str(BUNDLE)!r}); from scripts.data.atomic import hold_lock; "
    code += f"hold_lock({str(folder)!r}); print('held', flush=True); time.sleep(60)"
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=f"is in use by process {other.pid} on ") as error:
            hold_lock(folder)
        assert error.value.path == str(folder)
    finally:
        other.kill()  # killed: the OS lets go of its lock
        other.wait()
    deadline = time.time() + 10
    while True:
        try:
            hold_lock(folder)
            break
        except InputError:
            assert time.time() < deadline
            time.sleep(0.05)
    hold_lock(folder)  # held already by this process: fine
    assert (folder / LOCK_NAME).read_text().startswith("process ")
