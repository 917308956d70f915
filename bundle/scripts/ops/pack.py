"""Pack the bundle as the archive the MONAI model zoo takes: ``<name>_v<version>.zip`` with one top folder ``<name>/``.

From the bundle folder::

    python -m scripts.ops.pack --output_dir dist      # -> dist/zsegan_v<version>.zip

Only ``configs/``, ``scripts/``, ``models/``, ``docs/`` and ``LICENSE`` go in: never ``data/``, ``runs/``,
Python caches or hidden files. The version is the one in ``configs/metadata.json``. Entries are sorted and
carry a fixed date, so the same bundle always gives the same archive. ``python -m monai.bundle download
--name <name> --url file://<archive> --bundle_dir DIR`` unpacks it into ``DIR/<name>/``.

Unpacking with ``unpack`` (``python -m scripts.ops.pack --unpack <archive> --bundle_dir DIR``, which runs from
inside the archive itself: ``PYTHONPATH=<archive>/<name>``) is atomic: the archive goes into a hidden folder
beside ``DIR/<name>/``, is checked against its manifest, and only then is renamed into place, so an unpacking
that fails or is stopped part way leaves no ``DIR/<name>/`` (at most a hidden ``DIR/.<name>.*.partial``, which
may be deleted). MONAI's own unpacking (``monai.bundle download``) is not ours and is not atomic: stopped part
way, it leaves a partial folder, which a later download takes for complete. So the archive's first entry is
``configs/manifest.json``, the list of its files, and every workflow starts by checking that they are all there
(``check_complete``): a partial bundle is an error that says to delete it and download again.

Both outputs carry ``configs/<name>.json`` beside each ``configs/<name>.yaml``, generated from it (the YAML stays
the source): MONAI's ``load`` builds the network from ``configs/train.json`` only, and the model zoo looks for JSON.

For a pull request to the MONAI model zoo, ``--zoo`` writes the bundle as the zoo's repository holds it::

    python -m scripts.ops.pack --zoo --hosting_url https://example.org/weights --output_dir ~/model-zoo \
        --hosting_dir upload       # -> ~/model-zoo/models/brightfield_zstack_enhancement/, upload/models/model.pt

The zoo takes no file over 1 MB (its pre-commit check): each such file (the weights) is copied to
``--hosting_dir`` for upload instead and listed in the bundle's ``large_files.yml`` with its URL under
``--hosting_url`` and its SHA-256, which ``python -m monai.bundle download_large_files --bundle_path <bundle>``
(and the zoo's CI) fetch and check. No manifest: the zoo packs its own archives.

``--format bioimageio`` writes a BioImage Model Zoo package instead (``scripts/ops/bioimageio.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from scripts.data.atomic import write_zip_atomic
from scripts.errors import InputError

CONTENT = ("configs", "scripts", "models", "docs", "LICENSE")
MANIFEST = "configs/manifest.json"  # the archive's first entry: the files of the bundle
REQUIRED = ("configs/metadata.json", "models/model.pt", "LICENSE")  # what the zoo needs in every bundle
LARGE = 1024 * 1024  # bytes: the zoo's pre-commit refuses files over 1024 KB (check-added-large-files)
LARGE_FILES = "large_files.yml"  # where the zoo's CI and MONAI's download_large_files look for them
ZOO_NAME = "brightfield_zstack_enhancement"  # the bundle's folder in the zoo: models/<ZOO_NAME>/


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


def json_configs(root: str | Path) -> dict[Path, bytes]:
    """``configs/<name>.json`` for each ``configs/<name>.yaml`` of the bundle at ``root``: the same config as JSON."""
    from monai.bundle import ConfigParser  # here: unpacking runs from the archive with the standard library only

    configs = sorted((Path(root) / "configs").glob("*.yaml"))
    return {
        Path("configs")
        / f"{path.stem}.json": (json.dumps(ConfigParser.load_config_file(path), indent=4) + "\n").encode()
        for path in configs
    }


def bundle_entries(root: str | Path) -> dict[Path, bytes | None]:
    """What goes out: each file of ``bundle_files`` (None: read it from ``root``), and the generated JSON configs."""
    entries: dict[Path, bytes | None] = dict.fromkeys(bundle_files(root))
    for rel, content in json_configs(root).items():
        if rel in entries:
            raise InputError(Path(root) / rel, "exists beside its YAML: the JSON configs are generated, delete it")
        entries[rel] = content
    return dict(sorted(entries.items()))


def pack(root: str | Path | None = None, output_dir: str | Path = ".", name: str = "zsegan") -> Path:
    """Write ``<output_dir>/<name>_v<version>.zip`` of the bundle at ``root`` (default: this one); return its path."""
    root = bundle_root() if root is None else Path(root)
    entries = bundle_entries(root)
    version = json.loads((root / "configs" / "metadata.json").read_text())["version"]
    archive = Path(output_dir) / f"{name}_v{version}.zip"
    manifest = json.dumps({"files": [rel.as_posix() for rel in entries]}, indent=1).encode()
    contents = {Path(MANIFEST): manifest, **entries}  # the manifest first
    write_zip_atomic(
        archive,
        {f"{name}/{rel.as_posix()}": (root / rel).read_bytes() if c is None else c for rel, c in contents.items()},
    )
    return archive


def zoo_bundle(
    hosting_url: str,
    root: str | Path | None = None,
    output_dir: str | Path = ".",
    name: str = ZOO_NAME,
    hosting_dir: str | Path | None = None,
) -> Path:
    """Write the bundle at ``root`` as ``<output_dir>/models/<name>/`` for a model-zoo pull request; return it.

    Files over ``LARGE`` are copied to ``hosting_dir`` (default ``<output_dir>/hosting``) under their bundle path,
    to be uploaded so that ``<hosting_url>/<path>`` serves them, and listed in ``large_files.yml``.
    """
    if urlparse(hosting_url).scheme not in ("https", "http", "file"):
        raise InputError(hosting_url, "is not a URL to host large files at (https://..., or file:// for a test)")
    root = bundle_root() if root is None else Path(root)
    target = Path(output_dir) / "models" / name
    if target.exists():
        raise InputError(target, "exists: delete it first (a bundle is written whole or not at all)")
    hosting = Path(output_dir) / "hosting" if hosting_dir is None else Path(hosting_dir)
    entries = bundle_entries(root)
    large = [rel for rel, content in entries.items() if content is None and (root / rel).stat().st_size > LARGE]
    url = hosting_url.rstrip("/")
    listed = [
        {"path": r.as_posix(), "url": f"{url}/{r.as_posix()}", "hash_val": sha256(root / r), "hash_type": "sha256"}
        for r in large
    ]
    tmp = target.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rel, content in entries.items():
            if rel not in large:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes((root / rel).read_bytes() if content is None else content)
        import yaml

        (tmp / LARGE_FILES).write_text(yaml.safe_dump({"large_files": listed}, sort_keys=False))
        for rel in large:
            (hosting / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, hosting / rel)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def sha256(path: Path) -> str:
    """The SHA-256 of a file, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bundle_name(archive: Path, zf: zipfile.ZipFile) -> str:
    """The top folder of an archive of ``pack``'s; InputError when it is not one (entries outside one top folder,
    or reaching out of it, or no manifest and metadata)."""
    names = zf.namelist()
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) != 1 or not all("/" in n for n in names):
        raise InputError(archive, f"is not a bundle archive: its entries lie in {len(tops)} top folders, not one")
    name = tops.pop()
    unsafe = [n for n in names if n.startswith("/") or "\\" in n or ".." in PurePosixPath(n).parts]
    if unsafe:
        raise InputError(archive, f"is not a bundle archive: entry {unsafe[0]!r} would be written outside it")
    for needed in (MANIFEST, "configs/metadata.json"):
        if f"{name}/{needed}" not in names:
            raise InputError(archive, f"is not a bundle archive of scripts.ops.pack: it has no {name}/{needed}")
    return name


def _version(metadata: bytes | str | None) -> str | None:
    """The bundle version in the text of a ``configs/metadata.json``, or None when there is none."""
    try:
        return str(json.loads(metadata)["version"]) if metadata is not None else None
    except (ValueError, KeyError, TypeError):
        return None


def unpack(archive: str | Path, bundle_dir: str | Path = ".") -> Path:
    """Unpack ``archive`` (one of ``pack``'s) into ``<bundle_dir>/<name>/``, all or nothing; return that folder.

    The entries go into a hidden folder beside it, are checked against the manifest, and only then is the bundle
    renamed into place (``os.rename``, atomic on one file system): an unpacking that fails or is stopped part way
    leaves no ``<bundle_dir>/<name>/``. The same version already there, complete, is left as it is. InputError for
    an archive that cannot be read or is not one bundle, and for a partial bundle or another version already there.
    """
    archive, bundle_dir = Path(archive), Path(bundle_dir)
    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as e:
        raise InputError(archive, f"cannot be read as a zip archive ({e})") from None
    with zf:
        name = _bundle_name(archive, zf)
        version = _version(zf.read(f"{name}/configs/metadata.json"))
        target = bundle_dir / name
        if not target.exists():
            bundle_dir.mkdir(parents=True, exist_ok=True)
            partial = bundle_dir / f".{name}.{secrets.token_hex(4)}.partial"
            entry = ""
            try:
                for info in zf.infolist():  # entry by entry, to name the one that is corrupt
                    entry = info.filename
                    zf.extract(info, partial)
                check_complete(partial / name)
                os.rename(partial / name, target)  # fails when another unpacking put a bundle there meanwhile
            except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # a corrupt entry (CRC) or a truncated one
                raise InputError(
                    archive, f"cannot be unpacked: entry {entry}: {e}; nothing was written into {bundle_dir}"
                ) from None
            except OSError as e:
                if not target.is_dir():
                    raise InputError(archive, f"cannot be unpacked into {bundle_dir}: {e}") from None
            finally:
                shutil.rmtree(partial, ignore_errors=True)
    check_complete(target)  # there before (or put there by another unpacking): a partial one is an error
    metadata = target / "configs" / "metadata.json"
    if not (target / MANIFEST).is_file() or _version(metadata.read_text() if metadata.is_file() else None) != version:
        raise InputError(target, f"is there and is not version {version} of the bundle: delete it, or unpack elsewhere")
    return target


def main(argv: list[str] | None = None) -> None:
    """``python -m scripts.ops.pack [--output_dir DIR] [--name N]``, ``... --zoo --hosting_url URL``, ``...
    --format bioimageio`` (from the bundle folder), or ``... --unpack ARCHIVE [--bundle_dir DIR]``."""
    import argparse

    from scripts.errors import install_excepthook

    install_excepthook()
    parser = argparse.ArgumentParser(
        description="Pack the bundle as a model-zoo archive <name>_v<version>.zip, or unpack one atomically."
    )
    parser.add_argument("--output_dir", default=".", help="where to write the archive (default: here)")
    parser.add_argument("--name", default=None, help=f"bundle name (default: zsegan; with --zoo, {ZOO_NAME})")
    parser.add_argument("--zoo", action="store_true", help="write <output_dir>/models/<name>/ for a model-zoo PR")
    parser.add_argument(
        "--format", choices=("monai", "bioimageio"), default="monai",
        help="bioimageio: a BioImage Model Zoo package, <name>_v<version>.bioimageio.zip, instead",
    )  # fmt: skip
    parser.add_argument("--hosting_url", help="with --zoo: the URL under which the large files will be served")
    parser.add_argument(
        "--hosting_dir", help="with --zoo: where to copy the large files (default: <output_dir>/hosting)"
    )
    parser.add_argument("--unpack", metavar="ARCHIVE", help="unpack this archive into <bundle_dir>/<name>/ instead")
    parser.add_argument("--bundle_dir", default=".", help="where --unpack puts the bundle's folder (default: here)")
    args = parser.parse_args(argv)
    if args.unpack:
        print(unpack(args.unpack, args.bundle_dir))
    elif args.format == "bioimageio":
        from scripts.ops.bioimageio import bioimageio_package  # torch, ONNX: not for every workflow's check_complete

        if args.zoo:
            raise InputError("--zoo", "is for the MONAI model zoo: leave it out with --format bioimageio")
        print(bioimageio_package(bundle_root(), args.output_dir, args.name or "zsegan"))
    elif not args.zoo:
        print(pack(output_dir=args.output_dir, name=args.name or "zsegan"))
    elif args.hosting_url is None:
        raise InputError("--hosting_url", "missing: --zoo needs the URL under which the large files will be served")
    else:
        print(zoo_bundle(args.hosting_url, None, args.output_dir, args.name or ZOO_NAME, args.hosting_dir))


if __name__ == "__main__":
    main()
