"""The archive's manifest and the check that a bundle unpacked from it is complete (the archive itself: test_zoo)."""

from __future__ import annotations

import zipfile

import pytest
from scripts.errors import InputError
from scripts.ops.pack import MANIFEST, check_complete, pack


def test_a_bundle_unpacked_part_way_is_refused_with_what_to_do(tmp_path):
    archive = zipfile.ZipFile(pack(output_dir=tmp_path / "dist"))
    names = archive.namelist()
    assert names[0] == f"zsegan/{MANIFEST}"  # first: any partial unpacking holds it
    archive.extractall(tmp_path / "partial", members=names[: len(names) // 2])  # MONAI's unpacking, stopped
    with pytest.raises(InputError, match="incomplete bundle .* files missing.*delete this folder and download") as e:
        check_complete(tmp_path / "partial" / "zsegan")
    assert e.value.path == str(tmp_path / "partial" / "zsegan")
    archive.extractall(tmp_path / "whole")
    check_complete(tmp_path / "whole" / "zsegan")
    check_complete()  # this working copy: no manifest, nothing to check
