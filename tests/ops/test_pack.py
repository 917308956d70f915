"""The archive's manifest and the check that a bundle unpacked from it is complete, and the bundle as a model-zoo
pull request holds it (large files left to a hosting URL); the real bundle packed and run: test_zoo."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from scripts.errors import InputError
from scripts.ops.pack import LARGE, LARGE_FILES, MANIFEST, bundle_root, check_complete, pack, zoo_bundle


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


def tiny_bundle(root: Path, weights_bytes: int) -> Path:
    """A bundle with what packing needs: metadata, a YAML config, weights of the given size, a licence."""
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text(json.dumps({"version": "0.0.1"}))
    (root / "configs" / "inference.yaml").write_text("# a comment\nsw_overlap: 0.25\nnetwork_def: null\n")
    (root / "models").mkdir()
    (root / "models" / "model.pt").write_bytes(b"w" * weights_bytes)
    (root / "LICENSE").write_text("Apache License 2.0")
    return root


def test_the_zoo_bundle_leaves_files_over_1_mb_to_its_hosting_and_lists_them(tmp_path):
    root = tiny_bundle(tmp_path / "bundle", LARGE + 1)
    target = zoo_bundle("https://example.org/w/", root, tmp_path / "pr", name="b", hosting_dir=tmp_path / "up")
    assert target == tmp_path / "pr" / "models" / "b"
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert files == [
        "LICENSE",
        "configs/inference.json",
        "configs/inference.yaml",
        "configs/metadata.json",
        LARGE_FILES,
    ]
    assert json.loads((target / "configs" / "inference.json").read_text()) == {"sw_overlap": 0.25, "network_def": None}
    (listed,) = yaml.safe_load((target / LARGE_FILES).read_text())["large_files"]
    assert listed == {
        "path": "models/model.pt", "url": "https://example.org/w/models/model.pt", "hash_type": "sha256",
        "hash_val": hashlib.sha256(b"w" * (LARGE + 1)).hexdigest(),
    }  # fmt: skip
    assert (tmp_path / "up" / "models" / "model.pt").read_bytes() == (root / "models" / "model.pt").read_bytes()
    with pytest.raises(InputError, match="exists: delete it first"):
        zoo_bundle("https://example.org/w/", root, tmp_path / "pr", name="b", hosting_dir=tmp_path / "up")


def test_the_zoo_bundle_keeps_files_up_to_1_mb(tmp_path):
    target = zoo_bundle("file:///srv/w", tiny_bundle(tmp_path / "bundle", LARGE), tmp_path / "pr")
    assert (target / "models" / "model.pt").stat().st_size == LARGE
    assert yaml.safe_load((target / LARGE_FILES).read_text()) == {"large_files": []}
    assert not (tmp_path / "pr" / "hosting").exists()


def test_the_zoo_bundle_needs_a_url_and_no_stale_json_config(tmp_path):
    root = tiny_bundle(tmp_path / "bundle", 10)
    with pytest.raises(InputError, match="weights: is not a URL"):
        zoo_bundle("weights", root, tmp_path / "pr")
    (root / "configs" / "inference.json").write_text("{}")
    with pytest.raises(InputError, match="inference.json: exists beside its YAML"):
        zoo_bundle("https://example.org/w", root, tmp_path / "pr")
    assert not (tmp_path / "pr").exists()


@pytest.mark.slow  # a Python that imports MONAI: 10 s on 2 busy cores
def test_pack_without_a_hosting_url_for_the_zoo_is_one_error_line(tmp_path):
    cmd = [sys.executable, "-m", "scripts.ops.pack", "--zoo", "--output_dir", str(tmp_path)]
    result = subprocess.run(cmd, cwd=bundle_root(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "error: --hosting_url: missing: --zoo needs the URL under which the large files will be served"
    )
