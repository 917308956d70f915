"""The dependency floors of pyproject.toml are the versions that ``bash run.sh floors`` installs and tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("tomllib")  # Python 3.11+, as the floors lane
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import floors  # noqa: E402


def test_every_floor_of_pyproject_is_the_version_the_floors_lane_installs(capsys):
    """Failed before issue 16's item 14: numpy>=1.24 cannot be installed beside zarr 3.1.1, monai>=1.4 read
    checkpoints with weights_only=False, ignite 0.4.11 does not import on Python 3.11, pillow 10.0 reads 16-bit
    PNGs as int32, ... (tools/floors.txt holds what `uv pip compile --resolution lowest-direct` gave)."""
    assert floors.main(["--lock", str(ROOT / "tools" / "floors.txt")]) == 0, capsys.readouterr().err
    assert set(floors.floors(ROOT / "pyproject.toml")) - floors.UNTESTABLE <= set(
        floors.locked(ROOT / "tools" / "floors.txt")
    )


def test_a_floor_below_what_installs_is_one_error_line_naming_it(tmp_path, capsys):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["numpy>=1.24", "torch>=2.6", "zarr>=3.1.1", "scipy>=1.10"]\n'
        '[project.optional-dependencies]\ndev = ["x[cluster]", "pytest>=7.4"]\ncluster = ["Dask[array]>=2025.5"]\n'
    )
    (tmp_path / "lock.txt").write_text(
        "# a lock\nnumpy==1.26.0\n    # via x\nzarr==3.1.1\nscipy==1.10.0\npytest==7.4.0\ndask==2025.5.0\n"
    )
    args = ["--pyproject", str(tmp_path / "pyproject.toml"), "--lock", str(tmp_path / "lock.txt")]
    assert floors.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "numpy: 1.26.0 where its floor is 1.24" in err[0]
    assert "zarr" not in err[0] and "torch" not in err[0]  # 3.1.1 is 3.1.1; the lock leaves torch to run.sh

    (tmp_path / "lock.txt").write_text("numpy==1.24.0\nzarr==3.1.1\nscipy==1.10.0\npytest==7.4.0\n")
    assert floors.main(args) == 2
    assert "dask: not there (floor 2025.5)" in capsys.readouterr().err
    (tmp_path / "lock.txt").write_text("numpy==1.24.0\nzarr==3.1.1\nscipy==1.10\npytest==7.4.0\ndask==2025.5.0\n")
    assert floors.main(args) == 0  # 1.10 and 1.10.0 are one version


def test_torch_as_a_local_build_of_another_version_is_a_note_not_an_error():
    wanted = {"torch": floors.Version("2.6"), "numpy": floors.Version("1.26")}
    have = {"torch": floors.Version("2.13.0+cpu"), "numpy": floors.Version("1.26.0")}
    assert floors.off_floor(wanted, have) == ([], ["torch: 2.13.0+cpu where its floor is 2.6"])
    have["numpy"] = floors.Version("2.4.6")
    assert floors.off_floor(wanted, have)[0] == ["numpy: 2.4.6 where its floor is 1.26"]


def test_a_dependency_without_a_floor_is_refused(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["numpy"]\n')
    with pytest.raises(ValueError, match="numpy has no floor"):
        floors.floors(tmp_path / "pyproject.toml")
