"""The documents' promises that a test can hold: the bad-input table names real tests, the README's security advice."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _test_names() -> set[str]:
    return {m for f in (ROOT / "tests").rglob("test_*.py") for m in re.findall(r"^def (test_\w+)", f.read_text(), re.M)}


def test_the_bad_input_table_names_tests_that_exist():
    table = (ROOT / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"\b(test_\w+?)(?:\*|\[|`)", table))
    assert len(named) > 30
    names = _test_names()
    missing = [n for n in named if n not in names and not any(t.startswith(n) for t in names)]
    assert not missing, missing


def test_the_readme_says_what_runs_code_and_binds_servers_to_private_addresses():
    readme = (ROOT / "README.md").read_text()
    security = readme.split("## Security", 1)[1].split("\n## ", 1)[0]
    for phrase in ("`$` expression", "_target_", "overrides", "weights_only=True", "mlflow.pyfunc.load_model",
                   "Dask scheduler", "mlflow server", "torchrun"):  # fmt: skip
        assert phrase in security, phrase
    code, inside = [], False
    for line in readme.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            code.append(line)
    assert code and not [line for line in code if "0.0.0.0" in line]
    servers = [line for line in code if re.search(r"dask (scheduler|worker)|mlflow server", line)]
    assert len(servers) == 3 and all("--host" in line for line in servers), servers
