"""``recall demo``: the whole path on embedded synthetic data, in about a minute."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated

import typer

from recall_cli import common

DEMO_MARKER = ".recall-demo"
# The neural sources are kept small (one block, short histories, a few epochs) so the demo
# stays near a minute on two cores; their benchmark settings are in benchmarks/.
SMALL_ENCODER = {"dim": 32, "max_len": 50, "layers": 1, "epochs": 6, "patience": 2}
DEMO_SOURCES: tuple[tuple[str, str, dict], ...] = (
    ("popular", "popular", {}),
    ("itemcf", "i2i", {"algorithm": "itemcf"}),
    ("swing", "i2i", {"algorithm": "swing"}),
    ("sasrec", "sasrec", SMALL_ENCODER),
    ("dnc_ebr", "dnc_ebr", {**SMALL_ENCODER, "cluster_by": "category"}),
)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    directory: Annotated[Path, typer.Option(
        "--dir", help="Where to build the demo project (recreated on every run).")] = Path("recall-demo"),
    users: Annotated[int, typer.Option(min=20, help="Synthetic users.")] = 2000,
    items: Annotated[int, typer.Option(min=20, help="Synthetic items.")] = 1000,
    k: Annotated[int, typer.Option("--k", min=1, help="Candidates in the example query.")] = 10,
) -> None:
    """Generate data, add sources, train, index, query one user and evaluate — end to end."""
    from recall_core.project import Project

    started = time.perf_counter()
    project = _fresh_project(directory)
    common.STATE.project_dir = project.root
    plugin_host = common.host()
    dataset = _import_synthetic(project, plugin_host, users, items)
    for name, kind, config in DEMO_SOURCES:
        plugin_host.validate_config(kind, config)
        project.add_source(name, kind, config)
    project.save()
    project = Project.load(project.root)
    _train_and_index(project, plugin_host, dataset)
    _query_example(project, plugin_host, dataset, k)
    _evaluate(project, plugin_host, dataset)
    common.stderr.print(f"demo finished in {time.perf_counter() - started:.1f} s; "
                        f"project in {project.root} (try `recall -p {project.root} sources`)")


def _fresh_project(directory: Path):  # type: ignore[no-untyped-def]
    from recall_core.errors import ProjectError
    from recall_core.project import Project

    if directory.exists():
        if not (directory / DEMO_MARKER).exists() and any(directory.iterdir()):
            raise ProjectError(f"{directory} exists and is not a demo project; choose --dir")
        shutil.rmtree(directory)
    project = Project.init(directory, name="demo")
    (directory / DEMO_MARKER).write_text("created by `recall demo`; safe to delete\n")
    return project


def _import_synthetic(project, plugin_host, users: int, items: int):  # type: ignore[no-untyped-def]
    importer = plugin_host.importers["synthetic"]
    options = importer.options_model.model_validate({"users": users, "items": items})
    dataset, _ = importer.load(None, options)
    dataset.save(project.dataset_path)
    typer.echo(f"synthetic data: {dataset.num_users:,} users, {dataset.num_items:,} items, "
               f"{dataset.num_interactions:,} interactions, {len(dataset.category_names)} categories")
    return dataset


def _train_and_index(project, plugin_host, dataset) -> None:  # type: ignore[no-untyped-def]
    manager = common.manager(project, plugin_host)
    progress = common.progress()
    for spec in common.specs(project, plugin_host, None):
        version = manager.train(spec, dataset, progress)
        manager.index(spec, dataset, progress)
        typer.echo(f"trained and indexed {spec.name} ({spec.kind}) {version.version} in "
                   f"{version.manifest['metrics']['wall_seconds']:.2f} s")


def _query_example(project, plugin_host, dataset, k: int) -> None:  # type: ignore[no-untyped-def]
    from recall_cli.query_cmd import build_query, describe, print_candidates
    from recall_core.engine import engine_for_project

    engine, dataset = engine_for_project(project, plugin_host)
    user = str(dataset.user_ids[0])
    try:
        result = engine.retrieve(build_query(dataset, user, None, None), k)
    finally:
        engine.close()
    print_candidates(describe(dataset, result, user))


def _evaluate(project, plugin_host, dataset) -> None:  # type: ignore[no-untyped-def]
    from recall_cli.eval_cmd import print_report
    from recall_core.engine import MergeSettings
    from recall_core.evaluation.runner import evaluate

    settings = project.settings
    merge = MergeSettings(settings.merge.policy, dict(settings.merge.weights),
                          settings.merge.fallback or None)
    report = evaluate(plugin_host, dataset, common.specs(project, plugin_host, None), merge,
                      protocol="paper", ks=settings.eval.ks, cache_root=project.artifacts_path / "_eval",
                      progress=common.progress())
    print_report(report.to_json(), report.ks)
