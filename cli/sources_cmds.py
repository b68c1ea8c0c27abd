"""``recall init``, ``add-source``, ``remove-source`` and ``sources``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from recall_cli import common


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("add-source")(add_source)
    app.command("remove-source")(remove_source)
    app.command("sources")(sources)


def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the project.")],
    name: Annotated[Optional[str], typer.Option(help="Project name (default: folder name).")] = None,
) -> None:
    """Create a project: recall.toml with default merge and evaluation settings."""
    from recall_core.project import Project

    project = Project.init(directory, name)
    typer.echo(f"created {project.config_path}")


def add_source(
    name: Annotated[str, typer.Argument(help="A name for the source, e.g. i2i-swing.")],
    kind: Annotated[str, typer.Option("--kind", "-k", help="The source kind (see `recall sources`).")],
    settings: Annotated[Optional[list[str]], typer.Option(
        "--set", "-s", help="A config value as key=value (repeatable).")] = None,
) -> None:
    """Add a source of KIND, its config validated against the kind's schema."""
    project = common.project()
    values = common.parse_assignments(settings)
    common.host().validate_config(kind, values)
    project.add_source(name, kind, values)
    project.save()
    typer.echo(f"added source {name!r} of kind {kind!r}")


def remove_source(
    name: Annotated[str, typer.Argument(help="The source to remove.")],
    keep_artifacts: Annotated[bool, typer.Option(help="Keep its trained artifacts on disk.")] = False,
) -> None:
    """Remove a source from the project (and, unless asked not to, its artifacts)."""
    from recall_core.artifacts import ArtifactStore

    project = common.project()
    project.remove_source(name)
    project.save()
    if not keep_artifacts:
        ArtifactStore(project.artifacts_path).remove(name)
    typer.echo(f"removed source {name!r}")


def sources(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List configured sources with their status, and the installed source kinds."""
    plugin_host = common.host()
    kinds = [
        {"kind": name, "package": info.origin.package, "version": info.origin.version,
         "description": info.kind.description}
        for name, info in sorted(plugin_host.kinds.items())
    ]
    configured = _configured_statuses(plugin_host)
    if as_json:
        common.print_json({"sources": configured, "kinds": kinds})
        return
    _print_tables(configured, kinds)


def _configured_statuses(plugin_host) -> list[dict]:  # type: ignore[no-untyped-def]
    """Statuses of the project's sources; empty outside a project."""
    from recall_core.errors import RecallError

    try:
        project = common.project()
    except RecallError:
        return []
    try:
        fingerprint = common.dataset(project).fingerprint
    except RecallError:
        fingerprint = None
    manager = common.manager(project, plugin_host)
    rows = []
    for name, entry in project.settings.sources.items():
        status = manager.status(name, entry.kind, entry.config, fingerprint)
        rows.append({"name": name, "kind": entry.kind, "state": status.state,
                     "version": status.version, "detail": status.detail,
                     "config": entry.config})
    return rows


def _print_tables(configured: list[dict], kinds: list[dict]) -> None:
    from rich.table import Table

    if configured:
        table = Table(title="configured sources")
        for column in ("name", "kind", "state", "version", "detail"):
            table.add_column(column)
        for row in configured:
            table.add_row(row["name"], row["kind"], row["state"], row["version"] or "-",
                          row["detail"])
        common.stdout.print(table)
    table = Table(title="installed source kinds")
    for column in ("kind", "package", "version", "description"):
        table.add_column(column)
    for row in kinds:
        table.add_row(row["kind"], row["package"], row["version"], row["description"])
    common.stdout.print(table)
