"""Check that the dependency floors of pyproject.toml are the versions tested (issue 16, item 14).

    python tools/floors.py                      # the running Python's installed packages against the floors
    python tools/floors.py --lock tools/floors.txt   # the floors' lock file against the floors

A floor (``numpy>=1.26``) promises that the code works with that version. ``bash run.sh floors`` tests the
promise: it installs ``tools/floors.txt`` (every package at the lowest version that pyproject.toml allows for each
direct dependency, extras included: ``uv pip compile --resolution lowest-direct``, remade by ``bash run.sh floors
lock``) into a fresh environment, runs this check there, then the quick test lane. This check fails when a
direct dependency is not at its declared floor: a floor that cannot be installed with the rest (numpy 1.24 beside
zarr 3.1.1, which needs 1.26) or that the lock no longer matches. torch is the one exception where the machine
offers only a local build of another version (CPU-only CI machines): it is reported, not failed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
UNTESTABLE = {"torch"}  # may be pinned to the machine's local build instead of its floor (run.sh floors says so)


def floors(pyproject: Path) -> dict[str, Version]:
    """Each direct dependency's lower bound (``>=``), extras included; the project's own name is left out."""
    import tomllib  # Python 3.11+, as the floors lane

    project = tomllib.loads(pyproject.read_text()).get("project")
    if not isinstance(project, dict) or "name" not in project:
        raise ValueError(f"{pyproject}: no [project] table with a name")
    lines = list(project["dependencies"]) + [
        r for extra in project.get("optional-dependencies", {}).values() for r in extra
    ]
    found: dict[str, Version] = {}
    for requirement in map(Requirement, lines):
        name = canonicalize_name(requirement.name)
        if name == canonicalize_name(project["name"]):
            continue
        bounds = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        if not bounds:
            raise ValueError(f"{pyproject}: {requirement} has no floor (>=)")
        found[name] = max(bounds + ([found[name]] if name in found else []))
    return found


def locked(lock: Path) -> dict[str, Version]:
    """The ``name==version`` pins of a requirements file (comments and options left out)."""
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==")
            pins[canonicalize_name(name.split("[")[0])] = Version(version.strip())
    return pins


def installed(names) -> dict[str, Version]:
    """The versions installed in the running Python of those of ``names`` that are installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def off_floor(wanted: dict[str, Version], have: dict[str, Version]) -> tuple[list[str], list[str]]:
    """(problems, notes): a direct dependency missing from ``have`` or at another version than its floor is a
    problem; torch at another version (a local build) is a note. 1.26 and 1.26.0 are the same version."""
    problems, notes = [], []
    for name, floor in sorted(wanted.items()):
        version = have.get(name)
        if version is None:
            problems.append(f"{name}: not there (floor {floor})")
        elif Version(version.base_version) != floor:
            line = f"{name}: {version} where its floor is {floor}"
            (notes if name in UNTESTABLE else problems).append(line)
    return problems, notes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--lock", type=Path, help="check this lock file instead of the installed packages")
    args = parser.parse_args(argv)
    try:
        wanted = floors(args.pyproject)
        have = locked(args.lock) if args.lock else installed(wanted)
    except (OSError, ValueError) as e:  # a missing or malformed pyproject.toml or lock file
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.lock:
        wanted = {k: v for k, v in wanted.items() if k not in UNTESTABLE}  # the lock leaves torch to run.sh
    problems, notes = off_floor(wanted, have)
    where = args.lock or "this environment"
    for line in notes:
        print(f"note: {line}: not tested at its floor ({where})")
    if problems:
        print(
            f"error: {where}: direct dependencies not at the floors of {args.pyproject}: {'; '.join(problems)}"
            " (raise the floors to what is tested, or remake the lock: bash run.sh floors lock)",
            file=sys.stderr,
        )
        return 2
    print(f"{len(wanted)} direct dependencies at their floors ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
