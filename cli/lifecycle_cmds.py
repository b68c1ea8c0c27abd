"""``recall train`` and ``recall index``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from recall_cli import common


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("index")(index)


def train(
    names: Annotated[Optional[list[str]], typer.Argument(
        metavar="[NAME]...", help="Sources to train (default: all).")] = None,
    and_index: Annotated[bool, typer.Option(
        "--index/--no-index", help="Also build the index of each trained source.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Train sources on the project's dataset and publish new artifact versions."""
    project = common.project()
    plugin_host = common.host()
    dataset = common.dataset(project)
    manager = common.manager(project, plugin_host)
    progress = common.progress()
    results = {}
    for spec in common.specs(project, plugin_host, names):
        version = manager.train(spec, dataset, progress)
        if and_index:
            manager.index(spec, dataset, progress)
        results[spec.name] = {"version": version.version, "metrics": version.manifest["metrics"]}
        if not as_json:
            seconds = version.manifest["metrics"].get("wall_seconds")
            typer.echo(f"trained {spec.name} ({spec.kind}) -> {version.version} in {seconds:.2f} s"
                       + (" (indexed)" if and_index else ""))
    if as_json:
        common.print_json(results)


def index(
    names: Annotated[Optional[list[str]], typer.Argument(
        metavar="[NAME]...", help="Sources to index (default: all).")] = None,
) -> None:
    """Build the servable index of each source's current artifact version."""
    import time

    project = common.project()
    plugin_host = common.host()
    manager = common.manager(project, plugin_host)
    dataset, progress = common.dataset(project), common.progress()
    for spec in common.specs(project, plugin_host, names):
        started = time.perf_counter()
        loaded = manager.index(spec, dataset, progress)
        typer.echo(f"indexed {spec.name} ({spec.kind}) {loaded.version} "
                   f"in {time.perf_counter() - started:.2f} s")
