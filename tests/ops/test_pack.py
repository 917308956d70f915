"""The archive's manifest, the check that a bundle unpacked from it is complete, unpacking it all or nothing, and
the bundle as a model-zoo pull request holds it (large files left to a hosting URL); the real bundle packed and
run: test_zoo."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import pytest
import yaml
from scripts.errors import InputError
from scripts.ops.pack import (
    LARGE,
    LARGE_FILES,
    MANIFEST,
    bundle_files,
    bundle_root,
    check_complete,
    pack,
    unpack,
    zoo_bundle,
)


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


def _corrupt_an_entry_past_the_middle(archive: Path) -> str:
    """Flip bytes inside the data of an entry past the middle of ``archive`` (its CRC then fails); returns its name."""
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        info = next(i for i in infos[len(infos) // 2 :] if i.compress_size > 64)
    data = bytearray(archive.read_bytes())
    header = info.header_offset
    start = header + 30 + int.from_bytes(data[header + 26 : header + 28], "little")
    start += int.from_bytes(data[header + 28 : header + 30], "little")  # past the local header, name and extra
    for k in range(start + info.compress_size // 2, start + info.compress_size // 2 + 8):
        data[k] ^= 0xFF
    archive.write_bytes(bytes(data))
    return info.filename


def test_unpacking_is_all_or_nothing(tmp_path):
    """Issue 16, item 10: a refused archive leaves no bundle folder (MONAI's unpacking leaves a partial one)."""
    archive = pack(output_dir=tmp_path / "dist")
    bad = tmp_path / "bad.zip"
    shutil.copy(archive, bad)
    entry = _corrupt_an_entry_past_the_middle(bad)
    with pytest.raises((zipfile.BadZipFile, zlib.error)):  # a bad CRC, or deflate data that no longer decodes
        zipfile.ZipFile(bad).extractall(tmp_path / "extracted")  # what plain extraction leaves: a partial bundle
    assert (tmp_path / "extracted" / "zsegan" / MANIFEST).is_file()

    with pytest.raises(InputError, match=f"cannot be unpacked: .*{entry}.*nothing was written") as e:
        unpack(bad, tmp_path / "bundles")
    assert e.value.path == str(bad)
    assert list((tmp_path / "bundles").iterdir()) == []  # no bundle, no hidden partial folder

    bundle = unpack(archive, tmp_path / "bundles")
    assert bundle == tmp_path / "bundles" / "zsegan" and list((tmp_path / "bundles").iterdir()) == [bundle]
    check_complete(bundle)
    for rel in bundle_files(bundle_root()):
        assert (bundle / rel).read_bytes() == (bundle_root() / rel).read_bytes(), rel
    stamp = (bundle / "LICENSE").stat().st_mtime_ns
    assert unpack(archive, tmp_path / "bundles") == bundle  # the same version there: left as it is
    assert (bundle / "LICENSE").stat().st_mtime_ns == stamp


def test_an_unpacking_killed_part_way_leaves_no_bundle_and_the_next_one_finishes(tmp_path):
    archive = pack(output_dir=tmp_path / "dist")
    killed = textwrap.dedent(f"""
        import os, signal, sys, zipfile
        sys.path.insert(0, {str(bundle_root())!r})
        from scripts.ops.pack import unpack
        extract, done = zipfile.ZipFile._extract_member, []
        def extract_then_die(self, *args):
            done.append(extract(self, *args))
            if len(done) == 10:
                os.kill(os.getpid(), signal.SIGKILL)  # as a lost machine or `kill -9` would, no clean-up
            return done[-1]
        zipfile.ZipFile._extract_member = extract_then_die
        unpack({str(archive)!r}, {str(tmp_path / "bundles")!r})
        """)
    run = subprocess.run([sys.executable, "-c", killed], capture_output=True, text=True)
    assert run.returncode == -signal.SIGKILL, run.stderr
    left = list((tmp_path / "bundles").iterdir())
    assert [p.name.startswith(".zsegan.") and p.name.endswith(".partial") for p in left] == [True]  # hidden only
    assert len([p for p in left[0].rglob("*") if p.is_file()]) == 10  # stopped part way
    bundle = unpack(archive, tmp_path / "bundles")
    check_complete(bundle)
    assert (bundle / "models" / "model.pt").is_file()


def test_an_archive_that_is_not_one_bundle_or_a_bundle_there_of_another_kind_is_refused(tmp_path):
    def archive_of(entries: dict[str, bytes]) -> Path:
        path = tmp_path / f"a{len(list(tmp_path.glob('a*.zip')))}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in entries.items():
                zf.writestr(name, data)
        return path

    meta = b'{"version": "9.9.9"}'
    manifest = b'{"files": ["configs/metadata.json"]}'
    cases = {
        "not a zip": (tmp_path / "x.zip", "cannot be read as a zip archive"),
        "two top folders": (archive_of({"a/configs/manifest.json": b"{}", "b/x": b""}), "2 top folders"),
        "outside": (archive_of({f"z/{MANIFEST}": b"{}", "z/../../evil": b""}), "'z/../../evil' would be written"),
        "no manifest": (archive_of({"z/configs/metadata.json": meta}), f"has no z/{MANIFEST}"),
    }
    (tmp_path / "x.zip").write_text("not a zip")
    for case, (path, message) in cases.items():
        with pytest.raises(InputError, match=message):
            unpack(path, tmp_path / "bundles")
        assert not (tmp_path / "bundles").exists(), case

    good = archive_of({f"z/{MANIFEST}": manifest, "z/configs/metadata.json": meta})
    (tmp_path / "bundles" / "z" / "configs").mkdir(parents=True)
    with pytest.raises(InputError, match="is there and is not version 9.9.9 of the bundle"):
        unpack(good, tmp_path / "bundles")  # a folder of that name, not this bundle: never taken for it
    (tmp_path / "bundles" / "z" / MANIFEST).write_bytes(manifest)
    with pytest.raises(InputError, match="incomplete bundle"):
        unpack(good, tmp_path / "bundles")  # a partial one, as MONAI's unpacking leaves: with what to do


def test_unpack_runs_from_inside_the_archive_and_says_one_line_for_a_bad_one(tmp_path):
    archive = pack(output_dir=tmp_path / "dist")
    env = {**os.environ, "PYTHONPATH": f"{archive}/zsegan"}  # the archive's own scripts package: nothing unpacked
    command = [sys.executable, "-m", "scripts.ops.pack", "--unpack"]
    run = subprocess.run([*command, str(archive), "--bundle_dir", "b"], cwd=tmp_path, env=env, capture_output=True)
    assert run.returncode == 0 and run.stdout.decode().strip() == "b/zsegan", run.stderr
    check_complete(tmp_path / "b" / "zsegan")
    (tmp_path / "bad.zip").write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])  # a download cut short
    run = subprocess.run(
        [*command, "bad.zip", "--bundle_dir", "c"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert (
        run.returncode == 2 and run.stderr.startswith("error: bad.zip: cannot be read") and run.stderr.count("\n") == 1
    )
    assert not (tmp_path / "c").exists()
