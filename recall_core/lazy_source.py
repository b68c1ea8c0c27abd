"""The lifecycle hooks of a source kind whose implementation loads on first use.

Most sources need torch or faiss, which must not load while ``recall --help``
or ``recall sources`` runs. Their plugin module therefore holds only the
config schema and thin hooks that import the implementation when a lifecycle
call arrives. :func:`lazy_source_hooks` writes those hooks once::

    (recall_source_kinds, recall_train, recall_index, recall_load,
     recall_retrieve) = lazy_source_hooks(
        "mykind", MyConfig, "what it does",
        train="my_package.model:train", build="my_package.model:build",
        load="my_package.model:load")

``train(config, dataset, context)`` returns the training metrics;
``build(config, artifact_dir, index_dir)`` and ``load(...)`` return a handle
whose ``retrieve(queries, k)`` answers with :class:`Candidates`. The hooks
are ordinary ``@hookimpl`` functions (module attributes named after the
hookspecs), so pluggy treats the module like any hand-written plugin.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from recall_core import hookimpl
from recall_core.contract import Candidates, QueryBatch, SourceConfig, SourceKind, TrainContext
from recall_core.data.dataset import Dataset


class SourceHooks(NamedTuple):
    """The five hook functions of one source kind, in the order to unpack them."""

    recall_source_kinds: Callable[[], list[SourceKind]]
    recall_train: Callable[..., dict[str, Any] | None]
    recall_index: Callable[..., Any]
    recall_load: Callable[..., Any]
    recall_retrieve: Callable[..., Candidates | None]


def _resolve(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def lazy_source_hooks(owned_kind: str, config_model: type[SourceConfig], description: str, *,
                      train: str, build: str, load: str) -> SourceHooks:
    """Hooks for ``owned_kind``; ``train``/``build``/``load`` are ``"module:function"`` paths."""

    @hookimpl
    def recall_source_kinds() -> list[SourceKind]:
        return [SourceKind(owned_kind, config_model, description)]

    @hookimpl
    def recall_train(kind: str, config: SourceConfig, dataset: Dataset,
                     context: TrainContext) -> dict[str, Any] | None:
        # The host only calls the owner of a kind; the check keeps a direct call honest.
        return _resolve(train)(config, dataset, context) if kind == owned_kind else None

    @hookimpl
    def recall_index(kind: str, config: SourceConfig, artifact_dir: Path, index_dir: Path) -> Any:
        return _resolve(build)(config, artifact_dir, index_dir) if kind == owned_kind else None

    @hookimpl
    def recall_load(kind: str, config: SourceConfig, artifact_dir: Path, index_dir: Path) -> Any:
        return _resolve(load)(config, artifact_dir, index_dir) if kind == owned_kind else None

    @hookimpl
    def recall_retrieve(kind: str, handle: Any, queries: QueryBatch, k: int) -> Candidates | None:
        return handle.retrieve(queries, k) if kind == owned_kind else None

    return SourceHooks(recall_source_kinds, recall_train, recall_index, recall_load,
                       recall_retrieve)
