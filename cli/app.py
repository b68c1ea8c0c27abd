"""The ``recall`` command line: an app factory so plugins can add commands and tests get a fresh app."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from recall_cli import common


def create_app(load_plugin_commands: bool = True) -> typer.Typer:
    """Build the Typer app: built-in command groups, then plugin commands."""
    from recall_cli import (
        data_cmds,
        demo_cmd,
        eval_cmd,
        lifecycle_cmds,
        query_cmd,
        scaffold_cmd,
        serve_cmds,
        sources_cmds,
    )

    common.reset_host()
    app = typer.Typer(
        cls=common.RecallGroup,
        name="recall",
        help="recall: a multi-source recall (candidate generation) layer.",
        no_args_is_help=True,
        rich_markup_mode=None,  # errors stay one plain line, never a rich panel
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.callback()(_root)
    for module in (sources_cmds, data_cmds, lifecycle_cmds, eval_cmd, query_cmd,
                   scaffold_cmd, demo_cmd, serve_cmds):
        module.register(app)
    if load_plugin_commands and not os.environ.get("RECALL_NO_PLUGIN_COMMANDS"):
        common.host().add_cli_commands(app)
    return app


def _root(
    project: Annotated[Path, typer.Option(
        "--project", "-p", help="The project directory (holding recall.toml).",
        envvar="RECALL_PROJECT")] = Path("."),
) -> None:
    """recall: a multi-source recall (candidate generation) layer."""
    from recall_core.native import retain_freed_memory

    # The CLI owns its process: training and serving batches reuse freed heap rather than
    # page-fault it back in (a prompted dnc_ebr epoch on 2 threads: 13-17 s -> 10.4 s).
    retain_freed_memory()
    common.STATE.project_dir = project


def main() -> None:
    """Console-script entry point."""
    create_app()(prog_name="recall")


if __name__ == "__main__":
    main()
