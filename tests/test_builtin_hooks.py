"""The collection hooks (merge policies, importers, CLI commands) through the plugin host."""

from __future__ import annotations

import numpy as np
import typer
from typer.testing import CliRunner

from recall_core import hookimpl
from recall_core.contract import MergePolicy, SourceList
from recall_core.host import make_host


def test_hook_recall_merge_policies_provides_the_builtin_policies() -> None:
    policies = make_host(load_entry_points=False).merge_policies
    assert {"quota", "weighted", "rrf"} <= set(policies)
    lists = [SourceList("a", np.array([1, 2]), np.array([2.0, 1.0])),
             SourceList("b", np.array([2, 3]), np.array([5.0, 4.0]))]
    items, _ = policies["rrf"].fuse(lists, 3, {})
    assert items[0] == 2  # the only item both sources found


def test_hook_recall_merge_policies_accepts_a_plugin_policy() -> None:
    class Reverse:
        @hookimpl
        def recall_merge_policies(self) -> list[MergePolicy]:
            def fuse(lists, k, weights):  # type: ignore[no-untyped-def]
                items = lists[-1].items[:k]
                return items, np.arange(len(items), 0, -1, dtype=np.float64)
            return [MergePolicy("last-source", "the last source only", fuse)]

    policies = make_host(load_entry_points=False, extra_plugins=[Reverse()]).merge_policies
    assert "last-source" in policies and "quota" in policies


def test_hook_recall_dataset_importers_provides_the_formats() -> None:
    importers = make_host(load_entry_points=False).importers
    assert {"movielens", "ml100k", "sequences", "pairs", "csv", "synthetic"} <= set(importers)
    assert importers["synthetic"].needs_path is False


def test_hook_recall_cli_commands_adds_a_command() -> None:
    from recall_cli.app import create_app

    class Hello:
        @hookimpl
        def recall_cli_commands(self, app: typer.Typer) -> None:
            @app.command("hello")
            def hello() -> None:
                """Say hello."""
                typer.echo("hello from a plugin")

    app = create_app(load_plugin_commands=False)
    make_host(load_entry_points=False, extra_plugins=[Hello()]).add_cli_commands(app)
    result = CliRunner().invoke(app, ["hello"])
    assert result.exit_code == 0 and "hello from a plugin" in result.output
