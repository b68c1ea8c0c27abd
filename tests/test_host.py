"""The plugin host: kind ownership, dispatch, validation, guarded discovery."""

from __future__ import annotations

import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recall_core import hookimpl
from recall_core.contract import Candidates, QueryBatch, SourceConfig, SourceKind
from recall_core.errors import ConfigError, PluginError, UnknownKindError
from recall_core.host import PluginLoadWarning, make_host


class EchoConfig(SourceConfig):
    width: int = 2


class EchoPlugin:
    """A fake source that records which hooks ran on it."""

    def __init__(self, kind: str) -> None:
        self.kind_name = kind
        self.calls: list[str] = []

    @hookimpl
    def recall_source_kinds(self) -> list[SourceKind]:
        return [SourceKind(self.kind_name, EchoConfig, "echoes item 0..k")]

    @hookimpl
    def recall_train(self, kind: str, config: SourceConfig, dataset: Any, context: Any) -> dict:
        self.calls.append(f"train:{kind}")
        return {"trained": True}

    @hookimpl
    def recall_index(self, kind: str, config: SourceConfig, artifact_dir: Path, index_dir: Path) -> str:
        self.calls.append(f"index:{kind}")
        return f"handle-{self.kind_name}"

    @hookimpl
    def recall_load(self, kind: str, config: SourceConfig, artifact_dir: Path, index_dir: Path) -> str:
        self.calls.append(f"load:{kind}")
        return f"handle-{self.kind_name}"

    @hookimpl
    def recall_retrieve(self, kind: str, handle: Any, queries: QueryBatch, k: int) -> Candidates:
        self.calls.append(f"retrieve:{kind}")
        items = np.tile(np.arange(k, dtype=np.int64), (len(queries), 1))
        return Candidates(items, -items.astype(np.float32))


def host_with(*plugins: object):  # type: ignore[no-untyped-def]
    return make_host(load_entry_points=False, builtins=False, extra_plugins=plugins)


def test_hook_recall_source_kinds_declares_kinds_with_schema() -> None:
    host = host_with(EchoPlugin("echo"))
    info = host.kind("echo")
    assert info.kind.config_model is EchoConfig
    assert host.validate_config("echo", {"width": 3}).width == 3


def test_unknown_config_key_is_one_clear_line() -> None:
    host = host_with(EchoPlugin("echo"))
    with pytest.raises(ConfigError, match="invalid config for kind 'echo': unknown key 'colour'"):
        host.validate_config("echo", {"colour": "red"})
    with pytest.raises(ConfigError, match="width"):
        host.validate_config("echo", {"width": "wide"})


def test_unknown_kind() -> None:
    with pytest.raises(UnknownKindError, match="nope"):
        host_with(EchoPlugin("echo")).kind("nope")


def test_two_plugins_claiming_one_kind_is_an_error_naming_both() -> None:
    host = host_with(EchoPlugin("echo"), EchoPlugin("echo"))
    with pytest.raises(PluginError, match="claimed by two plugins: local"):
        _ = host.kinds


def test_hook_recall_train_and_lifecycle_dispatch_only_to_the_owner(tmp_path: Path) -> None:
    first, second = EchoPlugin("one"), EchoPlugin("two")
    host = host_with(first, second)
    config = host.validate_config("two", {})
    assert host.train("two", config, None, None) == {"trained": True}
    assert host.index("two", config, tmp_path, tmp_path) == "handle-two"
    assert host.load("two", config, tmp_path, tmp_path) == "handle-two"
    assert first.calls == []
    assert second.calls == ["train:two", "index:two", "load:two"]


def test_hook_recall_index_returns_the_owner_handle(tmp_path: Path) -> None:
    host = host_with(EchoPlugin("echo"))
    assert host.index("echo", host.validate_config("echo", {}), tmp_path, tmp_path) == "handle-echo"


def test_hook_recall_load_returns_the_owner_handle(tmp_path: Path) -> None:
    host = host_with(EchoPlugin("echo"))
    assert host.load("echo", host.validate_config("echo", {}), tmp_path, tmp_path) == "handle-echo"


def test_hook_recall_retrieve_reaches_only_the_owner() -> None:
    first, second = EchoPlugin("one"), EchoPlugin("two")
    host = host_with(first, second)
    queries = QueryBatch.from_histories([np.array([5])])
    answer = host.retrieve("one", "handle-one", queries, 3)
    assert answer.items.tolist() == [[0, 1, 2]]
    assert first.calls == ["retrieve:one"] and second.calls == []


class Typo:
    @hookimpl
    def recall_trian(self) -> None:  # the typo check_pending() exists for
        pass


def test_misspelled_hook_is_dropped_with_a_warning() -> None:
    with pytest.warns(PluginLoadWarning, match="unknown hook 'recall_trian'"):
        host = host_with(Typo(), EchoPlugin("echo"))
    assert list(host.kinds) == ["echo"]


def test_misspelled_hook_fails_loudly_in_strict_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECALL_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="recall_trian"):
        host_with(Typo())


def _install_fake_distribution(site: Path, name: str, module_source: str) -> None:
    """A real (if minimal) installed distribution: dist-info with an entry point."""
    module = f"{name}_plugin"
    (site / f"{module}.py").write_text(textwrap.dedent(module_source), encoding="utf-8")
    dist_info = site / f"{name}-1.2.3.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (dist_info / "entry_points.txt").write_text(f"[recall]\n{name} = {module}\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "site"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    yield directory
    for module in [m for m in sys.modules if m.endswith("_plugin") and m.startswith("fake")]:
        del sys.modules[module]


def test_broken_entry_point_is_skipped_with_one_warning_naming_it(site: Path) -> None:
    _install_fake_distribution(site, "fakebroken", "raise ImportError('missing dependency')\n")
    with pytest.warns(PluginLoadWarning, match="fakebroken.*missing dependency") as caught:
        host = make_host(builtins=False)
    assert len([w for w in caught if issubclass(w.category, PluginLoadWarning)]) == 1
    assert host.kinds == {}


def test_strict_mode_reraises_a_broken_plugin(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_fake_distribution(site, "fakestrict", "raise ImportError('missing dependency')\n")
    monkeypatch.setenv("RECALL_STRICT_PLUGINS", "1")
    with pytest.raises(ImportError, match="missing dependency"):
        make_host(builtins=False)


def test_entry_point_plugin_is_discovered_with_its_package(site: Path) -> None:
    _install_fake_distribution(site, "fakegood", """
        from recall_core import hookimpl
        from recall_core.contract import SourceConfig, SourceKind

        @hookimpl
        def recall_source_kinds():
            return [SourceKind("fakegood-kind", SourceConfig, "a fake")]
    """)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        host = make_host(builtins=False)
    origin = host.kind("fakegood-kind").origin
    assert (origin.package, origin.version) == ("fakegood", "1.2.3")


def test_third_party_hook_typo_is_dropped_not_fatal(site: Path) -> None:
    _install_fake_distribution(site, "faketypo", """
        from recall_core import hookimpl

        @hookimpl
        def recall_retreive():
            pass
    """)
    with pytest.warns(PluginLoadWarning, match="faketypo"):
        host = make_host(builtins=False)
    assert host.kinds == {}
