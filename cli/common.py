"""What every command shares: the project option, consoles, the host, error translation.

Errors are translated in exactly one place, :class:`RecallGroup.invoke`: a
:class:`~recall_core.errors.RecallError` becomes one ``error: ...`` line on
stderr and exit code 1; an unexpected exception does too (with a hint to set
``RECALL_DEBUG=1`` for the traceback), so users never see a stack trace.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from recall_core.errors import ConfigError, RecallError

if TYPE_CHECKING:
    from recall_core.data.dataset import Dataset
    from recall_core.host import PluginHost
    from recall_core.project import Project
    from recall_core.sources import SourceManager, SourceSpec

DEBUG_ENV = "RECALL_DEBUG"

# Piped output (a file, CI, a pager) gets room for the wide metric tables instead of rich's
# default 80 columns; a terminal keeps its own width.
stdout = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True)


class RecallGroup(TyperGroup):
    """The root command group: translates every error into one line and exit code 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            raise typer.Abort() from None
        except RecallError as error:
            fail(str(error))
        except Exception as error:
            if hasattr(error, "exit_code"):  # click's own usage errors: it prints them
                raise
            if os.environ.get(DEBUG_ENV):
                raise
            fail(f"unexpected {type(error).__name__}: {error} (set {DEBUG_ENV}=1 for the traceback)")


def fail(message: str) -> None:
    """Print one ``error:`` line on stderr and exit with code 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@dataclass
class CliState:
    """Global options, set by the root callback."""

    project_dir: Path = Path(".")


STATE = CliState()


def project() -> Project:
    from recall_core.project import Project

    return Project.load(STATE.project_dir)


_HOST: list[PluginHost] = []


def host() -> PluginHost:
    """The plugin host (built once per process); a skipped plugin is one warning line."""
    import warnings

    from recall_core.host import PluginLoadWarning, make_host

    if not _HOST:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PluginLoadWarning)
            _HOST.append(make_host())
        for warning in caught:
            message = str(warning.message)
            if issubclass(warning.category, PluginLoadWarning):
                typer.echo(f"warning: {message}", err=True)
            else:
                warnings.warn_explicit(message, warning.category, warning.filename, warning.lineno)
    return _HOST[0]


def reset_host() -> None:
    """Forget the cached host (tests install plugins between invocations)."""
    _HOST.clear()


def dataset(current: Project) -> Dataset:
    from recall_core.data.dataset import Dataset

    return Dataset.load(current.dataset_path)


def manager(current: Project, plugin_host: PluginHost) -> SourceManager:
    from recall_core.artifacts import ArtifactStore
    from recall_core.native import thread_count
    from recall_core.sources import SourceManager

    return SourceManager(plugin_host, ArtifactStore(current.artifacts_path), thread_count())


def specs(current: Project, plugin_host: PluginHost, names: list[str] | None) -> list[SourceSpec]:
    """Validated specs of the named (default: all) configured sources."""
    from recall_core.sources import SourceSpec

    chosen = current.select_sources(names)
    result = []
    for name in chosen:
        entry = current.source(name)
        config = plugin_host.validate_config(entry.kind, entry.config)
        result.append(SourceSpec(name, entry.kind, config))
    return result


def parse_assignments(pairs: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; values read as JSON when they parse (numbers, booleans, lists)."""
    values: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value, got {pair!r}")
        values[key.strip()] = parse_value(raw.strip())
    return values


def parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # a bare string such as algorithm=swing


def progress():  # type: ignore[no-untyped-def]
    """A progress reporter drawing rich bars on stderr."""
    from recall_core.progress import RichProgress

    return RichProgress()


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))
