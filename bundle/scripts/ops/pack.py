"""Pack the bundle as the archive the MONAI model zoo takes: ``<name>_v<version>.zip`` with one top folder ``<name>/``.

From the bundle folder::

    python -m scripts.ops.pack --output_dir dist      # -> dist/zsegan_v<version>.zip

Only ``configs/``, ``scripts/``, ``models/``, ``docs/`` and ``LICENSE`` go in: never ``data/``, ``runs/``,
Python caches or hidden files. The version is the one in ``configs/metadata.json``. Entries are sorted and
carry a fixed date, so the same bundle always gives the same archive. ``python -m monai.bundle download
--name <name> --url file://<archive> --bundle_dir DIR`` unpacks it into ``DIR/<name>/``.

MONAI's unpacking is not atomic: stopped part way, it leaves a partial folder, which a later download
takes for complete. So the archive's first entry is ``configs/manifest.json``, the list of its files, and
every workflow starts by checking that they are all there (``check_complete``): a partial bundle is an error
that says to delete it and download again.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from scripts.data.atomic import atomic
from scripts.errors import InputError

CONTENT = ("configs", "scripts", "models", "docs", "LICENSE")
MANIFEST = "configs/manifest.json"  # the archive's first entry: the files of the bundle
REQUIRED = ("configs/metadata.json", "models/model.pt", "LICENSE")  # what the zoo needs in every bundle
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry


def bundle_root() -> Path:
    """The folder holding this ``scripts`` package."""
    return Path(__file__).resolve().parents[2]


def bundle_files(root: str | Path) -> list[Path]:
    """The files that make up the bundle at ``root``, relative to it, sorted (no data, runs, caches or hidden files)."""
    root = Path(root)
    for required in REQUIRED:
        if not (root / required).is_file():
            raise InputError(root / required, "missing: a bundle needs it to be packed")
    files = []
    for top in CONTENT:
        path = root / top
        for p in [path] if path.is_file() else sorted(path.rglob("*")):
            rel = p.relative_to(root)
            hidden_or_cache = any(part == "__pycache__" or part.startswith(".") for part in rel.parts)
            if p.is_file() and not hidden_or_cache and p.suffix not in (".pyc", ".pyo") and rel.as_posix() != MANIFEST:
                files.append(rel)
    return files


def check_complete(root: str | Path | None = None) -> None:
    """InputError when a bundle unpacked from an archive (it holds ``MANIFEST``) lacks files the archive held."""
    root = bundle_root() if root is None else Path(root)
    manifest = root / MANIFEST
    if not manifest.is_file():
        return  # not unpacked from an archive of ours (a working copy)
    listed = json.loads(manifest.read_text())["files"]
    missing = [f for f in listed if not (root / f).is_file()]
    if missing:
        raise InputError(
            root, f"is an incomplete bundle ({len(missing)} of its {len(listed)} files missing, e.g. {missing[0]}): "
            "its unpacking stopped part way; delete this folder and download the bundle again",
        )  # fmt: skip


def pack(root: str | Path | None = None, output_dir: str | Path = ".", name: str = "zsegan") -> Path:
    """Write ``<output_dir>/<name>_v<version>.zip`` of the bundle at ``root`` (default: this one); return its path."""
    root = bundle_root() if root is None else Path(root)
    files = bundle_files(root)
    version = json.loads((root / "configs" / "metadata.json").read_text())["version"]
    archive = Path(output_dir) / f"{name}_v{version}.zip"
    manifest = json.dumps({"files": [rel.as_posix() for rel in files]}, indent=1).encode()
    with atomic(archive) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel, content in [(Path(MANIFEST), manifest)] + [(rel, None) for rel in files]:  # the manifest first
            entry = zipfile.ZipInfo(f"{name}/{rel.as_posix()}", date_time=_EPOCH)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16  # rw-r--r--
            zf.writestr(entry, (root / rel).read_bytes() if content is None else content)
    return archive


def main(argv: list[str] | None = None) -> None:
    """``python -m scripts.ops.pack [--output_dir DIR] [--name zsegan]`` (from the bundle folder)."""
    import argparse

    from scripts.errors import install_excepthook

    install_excepthook()
    parser = argparse.ArgumentParser(description="Pack the bundle as a model-zoo archive <name>_v<version>.zip.")
    parser.add_argument("--output_dir", default=".", help="where to write the archive (default: here)")
    parser.add_argument("--name", default="zsegan", help="bundle name: the archive's top folder (default: zsegan)")
    args = parser.parse_args(argv)
    print(pack(output_dir=args.output_dir, name=args.name))


if __name__ == "__main__":
    main()
