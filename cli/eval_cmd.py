"""``recall eval``: full-ranking evaluation of every source and of the merged list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from recall_cli import common


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)


def evaluate(
    protocol: Annotated[Optional[str], typer.Option(
        help="paper (leave-one-out) or comirec (8:1:1 user split); default from recall.toml.")] = None,
    ks: Annotated[Optional[list[int]], typer.Option(
        "--k", help="A cut-off K (repeatable); default from recall.toml.")] = None,
    names: Annotated[Optional[list[str]], typer.Option(
        "--source", help="Evaluate only these sources (repeatable).")] = None,
    policy: Annotated[Optional[str], typer.Option(help="Merge policy override.")] = None,
    split: Annotated[str, typer.Option(help="test, or valid for tuning.")] = "test",
    json_path: Annotated[Optional[Path], typer.Option(
        "--json", help="Also write the results as JSON to this file.")] = None,
) -> None:
    """Train each source on the protocol's training split, then score it and the merge.

    Ranking is over the whole catalogue (never sampled negatives); the merged
    list comes from the same merge code the server runs.
    """
    from recall_core.engine import MergeSettings
    from recall_core.errors import ConfigError
    from recall_core.evaluation.runner import evaluate as run_evaluation

    if split not in ("test", "valid"):
        raise ConfigError(f"--split must be test or valid (got {split!r})")
    project = common.project()
    plugin_host = common.host()
    settings = project.settings
    merge = MergeSettings(policy or settings.merge.policy, dict(settings.merge.weights),
                          settings.merge.fallback or None)
    report = run_evaluation(
        plugin_host, common.dataset(project), common.specs(project, plugin_host, names), merge,
        protocol=protocol or settings.eval.protocol, ks=ks or settings.eval.ks,
        seed=settings.eval.seed, cache_root=project.artifacts_path / "_eval",
        split_name=split, progress=common.progress())
    print_report(report.to_json(), report.ks)
    if json_path is not None:
        write_json_atomically(json_path, report.to_json())


def print_report(data: dict[str, Any], ks: list[int]) -> None:
    """The evaluation as a table on stdout: one row per source, then the merge."""
    from rich.table import Table

    dataset = data["dataset"]
    title = (f"{data['protocol']} protocol, {data['queries']:,} queries, "
             f"{dataset['items']:,} items (full ranking)")
    table = Table(title=title)
    table.add_column("source")
    columns = [f"{m}@{k}" for k in ks for m in ("HR", "NDCG")]
    if data["protocol"] != "paper":  # with one target, Recall@K is HR@K
        columns += [f"Recall@{k}" for k in ks]
    columns.append(f"Coverage@{max(ks)}")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("retrieve s", justify="right")
    rows = [(name, metrics, data["timings"].get(name, {}).get("retrieve_seconds"))
            for name, metrics in data["sources"].items()]
    rows.append(("merged", data["merged"],
                 data["timings"].get("merged", {}).get("retrieve_and_merge_seconds")))
    for name, metrics, seconds in rows:
        cells = [f"{metrics.get(c, float('nan')):.4f}" for c in columns]
        table.add_row(name, *cells, "-" if seconds is None else f"{seconds:.2f}")
    common.stdout.print(table)
    for name, why in data.get("failed", {}).items():
        common.stderr.print(f"warning: source {name} failed: {why}")


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    from recall_core.files import write_text_atomically

    write_text_atomically(path, json.dumps(data, indent=2) + "\n")
