"""``recall new-plugin``: the scaffolded package renders, passes the contract, and installs.

The slow test builds and installs the generated package for real (pip, no
network) and runs it in fresh interpreters, so discovery goes through the
package's actual ``recall`` entry point, not a mock of ``importlib.metadata``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from recall_core.host import PluginHost, make_host
from recall_core.testing import SourceContractTests
from tests.test_cli import run

INPROCESS_KIND = "scaffolded"
INSTALLED_KIND = "next-item-demo"


def scaffold(directory: Path, name: str) -> tuple[Path, str]:
    """Run ``recall new-plugin``; returns the package directory and the command's output."""
    output = run(None, "new-plugin", name, "--dir", str(directory))
    return directory / f"recall-{name}", output


def test_new_plugin_writes_an_installable_package(tmp_path: Path) -> None:
    package, output = scaffold(tmp_path, "next-item")
    module = package / "src" / "recall_next_item"
    expected = {"pyproject.toml", "README.md", "tests/test_contract.py",
                "src/recall_next_item/__init__.py", "src/recall_next_item/plugin.py"}
    assert {str(p.relative_to(package)) for p in package.rglob("*") if p.is_file()} == expected
    pyproject = (package / "pyproject.toml").read_text()
    assert 'name = "recall-next-item"' in pyproject
    assert '[project.entry-points.recall]\nnext-item = "recall_next_item.plugin"' in pyproject
    plugin_source = (module / "plugin.py").read_text()
    assert 'KIND = "next-item"' in plugin_source
    assert "class NextItemConfig(SourceConfig)" in plugin_source
    for path in package.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")  # every placeholder became valid Python
    test_source = (package / "tests" / "test_contract.py").read_text()
    assert "class TestNextItemContract(SourceContractTests)" in test_source
    assert 'kind = "next-item"' in test_source
    assert "pip install -e" in output and "pytest" in output
    assert not list(tmp_path.glob(".recall-*")), "the staging directory must be gone"


@pytest.mark.parametrize("name", ["Upper", "1st", "with space", "dash-", "a--b", "dot.ted"])
def test_invalid_name_is_one_line_error(tmp_path: Path, name: str) -> None:
    output = run(None, "new-plugin", name, "--dir", str(tmp_path), code=1)
    assert "invalid plugin name" in output
    assert not any(tmp_path.iterdir()), "nothing is written for a bad name"


def test_existing_target_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "recall-taken").mkdir()
    output = run(None, "new-plugin", "taken", "--dir", str(tmp_path), code=1)
    assert "already exists" in output


def test_name_of_an_installed_kind_is_refused(tmp_path: Path) -> None:
    output = run(None, "new-plugin", "popular", "--dir", str(tmp_path), code=1)
    assert "already provided by recall" in output


# ---- the generated source passes the contract in-process (no install needed) ------------
@pytest.fixture(scope="module")
def scaffolded_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The generated ``plugin.py``, imported straight from the scaffolded tree."""
    package, _ = scaffold(tmp_path_factory.mktemp("inprocess"), INPROCESS_KIND)
    path = package / "src" / f"recall_{INPROCESS_KIND}" / "plugin.py"
    name = f"recall_{INPROCESS_KIND}_plugin"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic and dataclasses resolve annotations through it
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


class TestScaffoldedSourceContract(SourceContractTests):
    """The example source itself keeps the contract (fast; the slow test proves discovery)."""

    kind = INPROCESS_KIND
    config = {"successors": 20, "recent": 2}
    load_entry_points = False

    @pytest.fixture
    def contract_host(self, scaffolded_plugin: ModuleType) -> PluginHost:
        return make_host(load_entry_points=False, extra_plugins=(scaffolded_plugin,))


# ---- the real thing: pip install, entry-point discovery, the package's own tests ----------
def _import_roots() -> list[str]:
    """The sys.path entries this process imports recall from (a checkout or an install)."""
    import recall_cli
    import recall_core
    import recall_plugins

    roots = [str(Path(m.__file__).parent.parent) for m in (recall_core, recall_cli, recall_plugins)]
    return list(dict.fromkeys(roots))


def _isolated_env(site: Path) -> dict[str, str]:
    """The environment of the subprocesses: recall importable, the plugin only in ``site``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    inherited = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(site), *_import_roots(), *inherited])
    env["RECALL_STRICT_PLUGINS"] = "1"  # a plugin that fails to load fails loudly, not a warning
    return env


def _check(command: list[str], cwd: Path, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, (
        f"{' '.join(command)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.slow
def test_installed_package_is_discovered_and_passes_contract(tmp_path: Path) -> None:
    package, _ = scaffold(tmp_path, INSTALLED_KIND)
    site = tmp_path / "site"
    started = time.perf_counter()
    # A real build and install of the generated pyproject; recall itself is not reinstalled.
    _check([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
            "--no-index", "--disable-pip-version-check", "-q", "--target", str(site),
            str(package)], cwd=tmp_path)
    installed = time.perf_counter()
    env = _isolated_env(site)

    listed = _check([sys.executable, "-m", "recall_cli.app", "sources", "--json"],
                    cwd=tmp_path, env=env)
    kinds = {k["kind"]: k for k in json.loads(listed.stdout)["kinds"]}
    assert INSTALLED_KIND in kinds, listed.stdout + listed.stderr
    assert kinds[INSTALLED_KIND]["package"] == f"recall-{INSTALLED_KIND}"

    # The package's own tests, under its own config: --rootdir keeps recall's pyproject out.
    tested = _check([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                     "--rootdir", str(package), str(package / "tests")], cwd=package, env=env)
    contract = "tests/test_contract.py::TestNextItemDemoContract::"
    for test in ("test_kind_is_declared_with_a_strict_schema",
                 "test_history_and_exclusions_are_never_returned",
                 "test_reloaded_artifacts_answer_identically"):
        assert f"PASSED {contract}{test}" in tested.stdout, tested.stdout
    print(f"install {installed - started:.1f}s, "
          f"discover + contract {time.perf_counter() - installed:.1f}s")
