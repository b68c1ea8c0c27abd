"""Meta-tests (datasette style): every hook is documented and has a test."""

from __future__ import annotations

import inspect
import re

import pytest

from recall_core import hookspecs
from tests.conftest import REPO_ROOT

HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
               if name.startswith("recall_"))


def test_there_are_hooks() -> None:
    assert {"recall_train", "recall_index", "recall_retrieve", "recall_source_kinds"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook: str) -> None:
    docs = (REPO_ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
    assert f"## `{hook}`" in docs, f"docs/hooks.md has no section for {hook}"
    assert inspect.getdoc(getattr(hookspecs, hook)), f"{hook} has no docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook: str) -> None:
    pattern = re.compile(rf"def test_hook_{hook}\w*\(")
    tests = [p for p in (REPO_ROOT / "tests").glob("test_*.py") if p.name != "test_hooks_meta.py"]
    assert any(pattern.search(p.read_text(encoding="utf-8")) for p in tests), (
        f"no test named test_hook_{hook}* under tests/")
