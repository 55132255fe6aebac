"""`pip install .` on its own gives everything the shipped code imports."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWN = {"orchestrator_core", "database", "mixpanel_source", "ui", "pages", "dashboard"}


def _imports(files: list[Path]) -> set[str]:
    found = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_third_party_import_is_a_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    shipped = [
        *(
            p
            for package in ("orchestrator_core", "database", "mixpanel_source", "ui")
            for p in (ROOT / package).rglob("*.py")
        ),
        ROOT / "dashboard.py",
        *(ROOT / "pages").glob("*.py"),
        *(ROOT / "pipelines" / "mixpanel_pipeline").glob("*.py"),
    ]
    third_party = _imports(shipped) - OWN - set(sys.stdlib_module_names)
    by_module = packages_distributions()
    missing = {}
    for module in sorted(third_party):
        distributions = {d.lower().replace("_", "-") for d in by_module.get(module, [module])}
        if not distributions & declared:
            missing[module] = sorted(distributions)
    # altair comes with streamlit, which the dashboard's charts are drawn by
    missing.pop("altair", None)
    assert missing == {}, f"imported but not in pyproject.toml's dependencies: {missing}"


def test_the_test_tools_are_an_extra_and_requirements_installs_both():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {_name(r) for r in project["optional-dependencies"]["test"]} >= {"pytest", "ruff"}
    lines = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines == ["-e .[test]"]
