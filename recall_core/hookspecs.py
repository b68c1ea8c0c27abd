"""Hook specifications of recall: the whole plugin contract.

A plugin is any module or object with functions marked ``@hookimpl`` whose
names match the specs below. Built-in sources use exactly these hooks.

The three lifecycle hooks (``recall_train``, ``recall_index``,
``recall_retrieve``, plus ``recall_load``) are never broadcast: the core calls
them only on the single plugin that declared the source's kind in
``recall_source_kinds``, so install order can never change a result. They are
marked ``firstresult`` because there is exactly one implementation in the call.
Always call hooks with keyword arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from recall_core import hookspec

if TYPE_CHECKING:
    import typer

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


@hookspec
def recall_source_kinds() -> list[SourceKind]:
    """Declare the source kinds this plugin provides.

    Called once when the plugin host starts. Each :class:`SourceKind` names the
    kind, its pydantic config schema (unknown keys rejected) and a one-line
    description. A kind claimed by two plugins is an error naming both.

    :return: the kinds this plugin owns; the lifecycle hooks below are called
        on this plugin for every source of these kinds.
    """


@hookspec(firstresult=True)
def recall_train(
    kind: str, config: SourceConfig, dataset: Dataset, context: TrainContext
) -> dict[str, Any] | None:
    """Fit a source of ``kind`` on ``dataset`` and write its artifacts.

    Called only on the plugin owning ``kind``, by ``recall train`` and by the
    evaluator (on the protocol's training split).

    :param kind: the source kind (a plugin may own several).
    :param config: a validated instance of the kind's config schema.
    :param dataset: the training interactions; dense ids.
    :param context: ``context.workdir`` is an empty directory for the artifacts;
        also progress reporting, thread count and an optional validation split.
    :return: training metrics (JSON-serialisable) recorded in the manifest.
    """


@hookspec(firstresult=True)
def recall_index(kind: str, config: SourceConfig, artifact_dir: Path, index_dir: Path) -> Any:
    """Build the servable of a trained source, persist it, and return it loaded.

    Called only on the plugin owning ``kind``, by ``recall index``.

    :param artifact_dir: the (read-only) directory ``recall_train`` filled.
    :param index_dir: an empty directory for the index files (faiss indexes,
        neighbour tables); the core checksums and publishes it.
    :return: a handle object that ``recall_retrieve`` accepts. A handle may
        expose ``num_items`` (int) for ``ListSources``, and ``user_cache`` (a
        :class:`~recall_core.training.user_cache.UserVectorCache`): ``recall
        index`` then precomputes the stored users' rows into ``index_dir`` and
        every load attaches them (:mod:`recall_core.training.user_table`).
    """


@hookspec(firstresult=True)
def recall_load(kind: str, config: SourceConfig, artifact_dir: Path, index_dir: Path) -> Any:
    """Load a persisted servable without rebuilding it (server start, reload).

    Called only on the plugin owning ``kind``. Must return a handle that
    answers exactly as the one ``recall_index`` returned.
    """


@hookspec(firstresult=True)
def recall_retrieve(kind: str, handle: Any, queries: QueryBatch, k: int) -> Candidates:
    """Answer a batch of queries with at most ``k`` scored candidates each.

    Called only on the plugin owning ``kind``, from the evaluator and the
    serving path alike. Rows are sorted by descending score and never contain
    an item of ``queries.exclude[i]``; ids are dense item indices.
    """


@hookspec
def recall_merge_policies() -> list[MergePolicy]:
    """Provide merge policies (quota, weighted fusion, RRF, ...).

    Called once at start-up; each policy is selectable by name in
    ``recall.toml`` ``[merge] policy`` and per request. Names must be unique.
    A policy's ``fuse`` answers one query; an optional ``fuse_batch`` answers a
    whole batch at once (see :class:`~recall_core.contract.MergePolicy`) and is
    preferred by the merge when present.
    """


@hookspec
def recall_dataset_importers() -> list[DatasetImporter]:
    """Provide dataset formats for ``recall data import FORMAT PATH``.

    Called once at start-up; names must be unique across plugins.
    """


@hookspec
def recall_cli_commands(app: typer.Typer) -> None:
    """Add commands or command groups to the ``recall`` CLI.

    Called once while the Typer app is built; register with ``app.command()``
    or ``app.add_typer()``.
    """
