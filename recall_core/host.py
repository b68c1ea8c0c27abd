"""The plugin host: builds the pluggy manager and dispatches lifecycle calls.

Core code never touches ``pm.hook.*`` directly; it goes through
:class:`PluginHost`, which has one method per hook (tox's facade pattern) and
routes every lifecycle call to the single plugin that owns the source's kind
(``subset_hook_caller``), so install order can never change a result.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from recall_core import PROJECT_NAME, hookspecs
from recall_core.errors import ConfigError, PluginError, UnknownKindError

if TYPE_CHECKING:
    from recall_core.contract import (
        Candidates,
        DatasetImporter,
        MergePolicy,
        QueryBatch,
        SourceConfig,
        SourceKind,
        TrainContext,
    )
    from recall_core.data.dataset import Dataset

BUILTIN_PLUGINS = (
    "recall_plugins.popular",
    "recall_plugins.i2i.plugin",
    "recall_plugins.sasrec.plugin",
    "recall_plugins.comirec.plugin",
    "recall_plugins.mind.plugin",
    "recall_plugins.dnc_ebr.plugin",
    "recall_plugins.importers",
    "recall_plugins.merge_policies",
)
"""Built-in plugin modules, registered through the very same hooks as third-party ones."""

OPTIONAL_BUILTIN_PLUGINS: tuple[str, ...] = ()
"""Built-ins that need an optional dependency; skipped with a warning when it is missing."""

STRICT_ENV = "RECALL_STRICT_PLUGINS"
TRACE_ENV = "RECALL_TRACE_HOOKS"


class PluginLoadWarning(UserWarning):
    """A third-party plugin could not be loaded and was skipped."""


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin came from: the distribution (package) and its version."""

    name: str
    package: str
    version: str


@dataclass(frozen=True)
class KindInfo:
    """An installed source kind with the plugin that owns it."""

    kind: SourceKind
    plugin: object
    origin: PluginInfo


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0", "false", "no")


def _builtin_origin(module_name: str) -> PluginInfo:
    from recall_core import __version__

    return PluginInfo(module_name, "recall", __version__)


class PluginHost:
    """Typed facade over the pluggy manager with one method per hook."""

    def __init__(self, pm: pluggy.PluginManager, origins: dict[int, PluginInfo]) -> None:
        self.pm = pm
        self._origins = origins
        self._callers: dict[tuple[int, str], Any] = {}

    # ---- discovery -------------------------------------------------------
    def origin(self, plugin: object) -> PluginInfo:
        return self._origins.get(id(plugin), PluginInfo(repr(plugin), "unknown", ""))

    @cached_property
    def kinds(self) -> dict[str, KindInfo]:
        """Every installed source kind; two plugins claiming one kind is an error."""
        found: dict[str, KindInfo] = {}
        for impl in self.pm.hook.recall_source_kinds.get_hookimpls():
            for kind in impl.function() or []:
                info = KindInfo(kind, impl.plugin, self.origin(impl.plugin))
                if kind.name in found:
                    first = found[kind.name].origin
                    raise PluginError(
                        f"source kind {kind.name!r} is claimed by two plugins: "
                        f"{first.package} ({first.name}) and {info.origin.package} ({info.origin.name})"
                    )
                found[kind.name] = info
        return dict(sorted(found.items()))

    def kind(self, name: str) -> KindInfo:
        try:
            return self.kinds[name]
        except KeyError:
            known = ", ".join(self.kinds) or "none"
            raise UnknownKindError(f"unknown source kind {name!r} (installed: {known})") from None

    def validate_config(self, kind: str, values: dict[str, Any]) -> SourceConfig:
        """Validate raw config values against the kind's schema (one-line errors)."""
        from pydantic import ValidationError

        model = self.kind(kind).kind.config_model
        try:
            return model.model_validate(values)
        except ValidationError as error:
            raise ConfigError(_one_line_validation_error(kind, error)) from None

    @cached_property
    def merge_policies(self) -> dict[str, MergePolicy]:
        return self._unique_by_name(self.pm.hook.recall_merge_policies, "merge policy")

    @cached_property
    def importers(self) -> dict[str, DatasetImporter]:
        return self._unique_by_name(self.pm.hook.recall_dataset_importers, "dataset format")

    def _unique_by_name(self, hook: Any, what: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        owners: dict[str, PluginInfo] = {}
        for impl in hook.get_hookimpls():
            for entry in impl.function() or []:
                origin = self.origin(impl.plugin)
                if entry.name in found:
                    raise PluginError(
                        f"{what} {entry.name!r} is provided by two plugins: "
                        f"{owners[entry.name].package} and {origin.package}"
                    )
                found[entry.name], owners[entry.name] = entry, origin
        return dict(sorted(found.items()))

    # ---- lifecycle dispatch (exactly one plugin per call) -----------------
    def _owner_call(self, kind: str, hook_name: str) -> Any:
        plugin = self.kind(kind).plugin
        key = (id(plugin), hook_name)
        if key not in self._callers:
            others = [p for p in self.pm.get_plugins() if p is not plugin]
            self._callers[key] = self.pm.subset_hook_caller(hook_name, remove_plugins=others)
        impls = self._callers[key].get_hookimpls()
        if not impls:
            origin = self.origin(plugin)
            raise PluginError(f"plugin {origin.name} ({origin.package}) declares kind {kind!r} "
                              f"but does not implement {hook_name}")
        return self._callers[key]

    def train(self, kind: str, config: SourceConfig, dataset: Dataset,
              context: TrainContext) -> dict[str, Any]:
        call = self._owner_call(kind, "recall_train")
        return call(kind=kind, config=config, dataset=dataset, context=context) or {}

    def index(self, kind: str, config: SourceConfig, artifact_dir: Path, index_dir: Path) -> Any:
        call = self._owner_call(kind, "recall_index")
        return call(kind=kind, config=config, artifact_dir=artifact_dir, index_dir=index_dir)

    def load(self, kind: str, config: SourceConfig, artifact_dir: Path, index_dir: Path) -> Any:
        call = self._owner_call(kind, "recall_load")
        return call(kind=kind, config=config, artifact_dir=artifact_dir, index_dir=index_dir)

    def retrieve(self, kind: str, handle: Any, queries: QueryBatch, k: int) -> Candidates:
        call = self._owner_call(kind, "recall_retrieve")
        return call(kind=kind, handle=handle, queries=queries, k=k)

    def add_cli_commands(self, app: Any) -> None:
        self.pm.hook.recall_cli_commands(app=app)


def _one_line_validation_error(kind: str, error: Any) -> str:
    parts = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "config"
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown key {key!r}")
        else:
            parts.append(f"{key}: {item['msg']}")
    return f"invalid config for kind {kind!r}: " + "; ".join(parts)


def _register(pm: pluggy.PluginManager, plugin: object, info: PluginInfo,
              origins: dict[int, PluginInfo]) -> None:
    if pm.is_registered(plugin):
        return
    name = info.name
    if pm.get_plugin(name) is not None:  # two local objects of one class, e.g. in tests
        name = f"{name}-{id(plugin):x}"
    pm.register(plugin, name=name)
    origins[id(plugin)] = info


def _load_entry_points(pm: pluggy.PluginManager, origins: dict[int, PluginInfo]) -> None:
    """Load third-party plugins one by one so one broken package cannot brick the CLI."""
    for entry_point in metadata.entry_points(group=PROJECT_NAME):
        dist = entry_point.dist
        package = dist.metadata["Name"] if dist else "unknown package"
        version = dist.version if dist else ""
        try:
            if pm.get_plugin(entry_point.name) is not None:
                raise PluginError(f"plugin name {entry_point.name!r} is already registered")
            plugin = entry_point.load()
            _register(pm, plugin, PluginInfo(entry_point.name, package, version), origins)
        except Exception as error:  # noqa: BLE001 - any failure of foreign code is guarded
            if _strict():
                raise
            warnings.warn(
                f"recall: skipped plugin {entry_point.name!r} from {package}: "
                f"{type(error).__name__}: {error}",
                PluginLoadWarning,
                stacklevel=2,
            )


def make_host(
    load_entry_points: bool = True,
    extra_plugins: Iterable[object] = (),
    builtins: bool = True,
) -> PluginHost:
    """Build a fresh plugin host (never at import time).

    Order follows tox: third-party entry points, then built-ins, then
    ``extra_plugins`` (tests register small fakes this way), then
    ``check_pending()`` so a misspelled hook name fails loudly.
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    origins: dict[int, PluginInfo] = {}
    if load_entry_points:
        _load_entry_points(pm, origins)
    if builtins:
        for module_name in BUILTIN_PLUGINS:
            _register(pm, importlib.import_module(module_name), _builtin_origin(module_name), origins)
        for module_name in OPTIONAL_BUILTIN_PLUGINS:
            _register_optional(pm, module_name, origins)
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        _register(pm, plugin, PluginInfo(name, "local", ""), origins)
    _check_pending(pm, origins)
    if os.environ.get(TRACE_ENV):
        pm.trace.root.setwriter(lambda message: print(message, end="", file=sys.stderr))
        pm.enable_tracing()
    return PluginHost(pm, origins)


def _check_pending(pm: pluggy.PluginManager, origins: dict[int, PluginInfo]) -> None:
    """Reject hooks no spec knows (typos); a broken third-party plugin is dropped, not fatal."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as error:
            info = origins.get(id(error.plugin))
            if info is None or info.package == "recall" or _strict():
                raise PluginError(f"plugin {error.plugin!r}: {error}") from None
            pm.unregister(error.plugin)
            warnings.warn(f"recall: skipped plugin {info.name!r} from {info.package}: {error}",
                          PluginLoadWarning, stacklevel=3)


def _register_optional(pm: pluggy.PluginManager, module_name: str,
                       origins: dict[int, PluginInfo]) -> None:
    try:
        module: ModuleType = importlib.import_module(module_name)
    except ImportError as error:
        if _strict():
            raise
        warnings.warn(f"recall: built-in plugin {module_name} unavailable: {error}",
                      PluginLoadWarning, stacklevel=2)
        return
    _register(pm, module, _builtin_origin(module_name), origins)
