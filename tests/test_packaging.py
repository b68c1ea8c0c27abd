"""Packaging: every package folder ships in the wheel under its namespaced import name."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folder_to_name = {folder: name for name, folder in setuptools["package-dir"].items()}
    found = set()
    for folder, name in folder_to_name.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder).parts
            if "__pycache__" not in relative:
                found.add(".".join((name, *relative)))
    missing = found - set(setuptools["packages"])
    assert not missing, f"package folders missing from pyproject's packages: {sorted(missing)}"
    stale = set(setuptools["packages"]) - found
    assert not stale, f"pyproject lists packages that do not exist: {sorted(stale)}"
