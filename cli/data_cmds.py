"""``recall data import`` and ``recall data info``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from recall_cli import common

data_app = typer.Typer(help="Import and inspect the project's dataset.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


@data_app.command("import")
def import_data(
    format_name: Annotated[str, typer.Argument(
        metavar="FORMAT", help="movielens, ml100k, sequences, pairs, csv, synthetic, ...")],
    path: Annotated[Optional[Path], typer.Argument(help="File or folder to read.")] = None,
    ratings: Annotated[Optional[Path], typer.Option(help="movielens: the ratings file.")] = None,
    items: Annotated[Optional[Path], typer.Option(help="The item metadata file.")] = None,
    user_col: Annotated[Optional[str], typer.Option(help="csv: user column.")] = None,
    item_col: Annotated[Optional[str], typer.Option(help="csv: item column.")] = None,
    time_col: Annotated[Optional[str], typer.Option(help="csv: timestamp column.")] = None,
    category_col: Annotated[Optional[str], typer.Option(help="csv: item category column.")] = None,
    rating_col: Annotated[Optional[str], typer.Option(help="csv: rating column.")] = None,
    min_rating: Annotated[Optional[float], typer.Option(help="Drop rows rated below this.")] = None,
    delimiter: Annotated[Optional[str], typer.Option(help="Field delimiter.")] = None,
    header: Annotated[Optional[bool], typer.Option(
        "--header/--no-header", help="csv: whether the first row names the columns.")] = None,
    option: Annotated[Optional[list[str]], typer.Option(
        "--option", "-o", help="Any other format option as key=value (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import a dataset into the project (atomic: the old one stays until the new one is complete)."""
    flags = {"ratings": ratings, "items": items, "user_col": user_col, "item_col": item_col,
             "time_col": time_col, "category_col": category_col, "rating_col": rating_col,
             "min_rating": min_rating, "delimiter": delimiter, "header": header}
    values: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    values.update(common.parse_assignments(option))
    project = common.project()
    dataset, report = _run_importer(format_name, path, values)
    dataset.save(project.dataset_path)
    summary = {"format": format_name, "dataset": dataset.summary(),
               "categories": len(dataset.category_names), "report": report.to_dict()}
    if as_json:
        common.print_json(summary)
        return
    _print_report(summary)


def _run_importer(format_name: str, path: Path | None, values: dict[str, Any]):  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from recall_core.errors import ConfigError, DataError

    importers = common.host().importers
    if format_name not in importers:
        raise ConfigError(f"unknown format {format_name!r} (choose from {', '.join(sorted(importers))})")
    importer = importers[format_name]
    if importer.needs_path and path is None:
        raise ConfigError(f"format {format_name!r} needs a PATH")
    if path is not None and not path.exists():
        raise DataError(f"no such file or folder: {path}")
    try:
        options = importer.options_model.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            raise ConfigError(f"format {format_name!r} has no option {key!r}") from None
        raise ConfigError(f"format {format_name!r}, option {key!r}: {first['msg']}") from None
    with common.progress().task(f"importing {format_name}"):
        return importer.load(path, options)


def _print_report(summary: dict[str, Any]) -> None:
    data, report = summary["dataset"], summary["report"]
    typer.echo(f"imported {data['users']:,} users, {data['items']:,} items, "
               f"{data['interactions']:,} interactions ({summary['categories']} categories)")
    typer.echo(f"rows read {report['rows_read']:,}, kept {report['rows_kept']:,}")
    for reason, count in sorted(report["dropped"].items()):
        typer.echo(f"  dropped {count:,}: {reason}")
    for note in report["notes"]:
        typer.echo(f"  note: {note}")


@data_app.command("info")
def info(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show the size and fingerprint of the project's dataset."""
    dataset = common.dataset(common.project())
    data = {"name": dataset.name, **dataset.summary(), "categories": len(dataset.category_names),
            "fingerprint": dataset.fingerprint}
    if as_json:
        common.print_json(data)
        return
    for key, value in data.items():
        typer.echo(f"{key}: {value}")
