"""Proto ↔ domain: requests become :class:`Query` objects, merged lists become responses.

Validation lives here, at the boundary, so that the engine only ever sees
dense ids and sane numbers: a malformed request raises
:class:`~recall_core.server.errors.InvalidRequestError` (INVALID_ARGUMENT),
an unknown source :class:`~recall_core.errors.UnknownSourceError`
(NOT_FOUND), a source that is configured but not loaded
:class:`~recall_core.errors.NotTrainedError` (FAILED_PRECONDITION). Unknown
item ids in a history are not errors: they are skipped and counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recall_core.contract import QueryBatch
from recall_core.errors import NotTrainedError, UnknownSourceError
from recall_core.merge import MergedBatch, MergedList, Provenance, ProvenanceColumns
from recall_core.parallel import map_ranges, row_ranges
from recall_core.server.errors import InvalidRequestError
from recall_core.server.interceptors import clean_request_id
from recall_core.server import wire
from recall_core.server.state import SERVING, Catalog, Snapshot
from recall_protos.v1 import recall_pb2 as pb

COLUMNS = pb.RetrieveRequest.LAYOUT_COLUMNS


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for."""

    max_k: int = 10_000
    max_history: int = 10_000
    max_exclude: int = 10_000
    max_batch: int = 1_024
    max_id_chars: int = 256


GroupKey = tuple[int, tuple[str, ...] | None, str | None, tuple[tuple[str, float], ...], bool]
"""Queries with equal keys are answered by one engine call: (k, sources, policy, weights, ts)."""


@dataclass(frozen=True)
class Query:
    """One validated request in dense ids."""

    history: np.ndarray
    timestamps: np.ndarray | None
    exclude: np.ndarray
    user: int
    unknown_items: int
    k: int
    sources: tuple[str, ...] | None
    policy: str | None
    weights: tuple[tuple[str, float], ...]
    layout: int
    request_id: str

    @property
    def key(self) -> GroupKey:
        return (self.k, self.sources, self.policy, self.weights, self.timestamps is not None)


def parse_request(request: pb.RetrieveRequest, snapshot: Snapshot, limits: Limits) -> Query:
    """Validate ``request`` against ``snapshot`` and resolve every id."""
    if not 1 <= request.k <= limits.max_k:
        raise InvalidRequestError(f"k must be between 1 and {limits.max_k} (got {request.k})")
    if not request.user_id and not request.history:
        raise InvalidRequestError("empty request: give a user_id, a history, or both")
    catalog = snapshot.catalog
    user = catalog.user_index.get(_check_id(request.user_id, "user_id", limits), -1) \
        if request.user_id else -1
    if request.history:
        history, timestamps, unknown = _given_history(request.history, snapshot, limits)
    elif user >= 0:
        history, timestamps = catalog.history(user)
        unknown = 0
    else:
        history, timestamps, unknown = np.empty(0, np.int64), None, 0
    sources = _sources(request.sources, snapshot, limits)
    if user < 0 and history.size == 0 and snapshot.fallback in snapshot.ready:
        sources = (snapshot.fallback,)  # nothing to personalise from: popularity answers
    return Query(history, timestamps, _exclude(request.exclude_item_ids, snapshot, limits), user,
                 unknown, request.k, sources, _policy(request.merge.policy, snapshot),
                 _weights(request.merge.weights, snapshot), request.layout,
                 clean_request_id(request.request_id))


def _check_id(raw: str, what: str, limits: Limits) -> str:
    if not raw or len(raw) > limits.max_id_chars or not raw.isprintable():
        shown = raw[:40] + ("..." if len(raw) > 40 else "")
        raise InvalidRequestError(f"malformed {what} {shown!r}: ids are 1 to "
                                  f"{limits.max_id_chars} printable characters")
    return raw


def _given_history(events: Sequence[pb.HistoryEvent], snapshot: Snapshot,
                   limits: Limits) -> tuple[np.ndarray, np.ndarray | None, int]:
    if len(events) > limits.max_history:
        raise InvalidRequestError(f"history has {len(events)} events (at most "
                                  f"{limits.max_history})")
    index = snapshot.catalog.item_index
    items: list[int] = []
    stamps: list[int] = []
    for event in events:
        feedback = event.feedback
        if not (math.isfinite(feedback) and 0.0 <= feedback <= 1.0):
            raise InvalidRequestError(f"feedback must be in [0, 1] (got {feedback})")
        item = index.get(_check_id(event.item_id, "history item_id", limits))
        if item is not None:
            items.append(item)
            stamps.append(event.timestamp)
    timestamps = np.array(stamps, np.int64) if any(stamps) else None
    return np.array(items, np.int64), timestamps, len(events) - len(items)


def _exclude(raw_ids: Sequence[str], snapshot: Snapshot, limits: Limits) -> np.ndarray:
    if len(raw_ids) > limits.max_exclude:
        raise InvalidRequestError(f"exclude_item_ids has {len(raw_ids)} ids (at most "
                                  f"{limits.max_exclude})")
    index = snapshot.catalog.item_index
    found = [index.get(_check_id(raw, "exclude item id", limits)) for raw in raw_ids]
    return np.array([item for item in found if item is not None], np.int64)


def _known_source(name: str, snapshot: Snapshot) -> None:
    if name not in snapshot.sources:
        configured = ", ".join(snapshot.sources) or "none"
        raise UnknownSourceError(f"unknown source {name[:80]!r} (sources: {configured})")


def _sources(names: Sequence[str], snapshot: Snapshot, limits: Limits) -> tuple[str, ...] | None:
    if not names:
        return None
    for name in names:
        _known_source(_check_id(name, "source name", limits), snapshot)
        served = snapshot.sources[name]
        if served.status != SERVING:
            raise NotTrainedError(f"source {name!r} is not ready: {served.detail}")
    return tuple(dict.fromkeys(names))


def _policy(name: str, snapshot: Snapshot) -> str | None:
    if not name:
        return None
    policies = snapshot.engine.policies if snapshot.engine is not None else {}
    if name not in policies:
        raise InvalidRequestError(f"unknown merge policy {name[:80]!r} (available: "
                                  f"{', '.join(sorted(policies))})")
    return name


def _weights(weights: dict[str, float], snapshot: Snapshot) -> tuple[tuple[str, float], ...]:
    for name, weight in weights.items():
        _known_source(name, snapshot)
        if not (math.isfinite(weight) and weight >= 0):
            raise InvalidRequestError(f"weight of source {name!r} must be a number >= 0 "
                                      f"(got {weight})")
    return tuple(sorted(weights.items()))


def query_batch(queries: Sequence[Query]) -> QueryBatch:
    """One engine batch from queries sharing a group key."""
    timestamps = ([q.timestamps for q in queries]  # type: ignore[misc]
                  if queries[0].timestamps is not None else None)
    return QueryBatch.from_histories([q.history for q in queries],
                                     np.array([q.user for q in queries], np.int64),
                                     [q.exclude for q in queries], timestamps)


# ---- responses ------------------------------------------------------------------------------
def fill_responses(responses: Sequence[pb.RetrieveResponse], merged: MergedBatch,
                   queries: Sequence[Query], catalog: Catalog) -> list[bytes | None]:
    """:func:`fill_response` for every query of one merged batch, but for the columns.

    A columnar response gets its header only, and its serialised ``CandidateColumns``
    is returned (``None`` for row-layout responses, filled in place), for the caller
    to write the response bytes itself (:class:`~recall_core.server.wire.SerializedBatch`):
    parsing the columns into the message only for gRPC to write them out again was a
    sixth of a large ``BatchRetrieve``'s serial time. The columns of the whole batch
    are encoded at once, in row blocks on several cores.
    """
    bulk: list[bytes] | None = None
    if merged.blocks and any(query.layout == COLUMNS for query in queries):
        bulk = _encoded_columns(merged, catalog)
    detached: list[bytes | None] = [None] * len(queries)
    for b, (response, merged_list, query) in enumerate(zip(responses, merged.lists, queries)):
        if bulk is not None and query.layout == COLUMNS:
            _fill_header(response, merged_list, query)
            detached[b] = bulk[b]
        else:
            fill_response(response, merged_list, query, catalog)
    return detached


def _encoded_columns(merged: MergedBatch, catalog: Catalog) -> list[bytes]:
    """Every row's serialised columns, encoded in row blocks on several cores at once (the
    encoder releases the GIL): the merge's own blocks when it ran in several (each is
    contiguous, so none is copied or joined first), else even slices of its one block."""
    if len(merged.blocks) == 1:
        whole = merged.blocks[0]
        blocks = [whole.rows(lo, hi) for lo, hi in row_ranges(len(merged.lists))]
    else:
        blocks = list(merged.blocks)
    parts = map_ranges(lambda at, _: wire.batch_candidate_columns(
        catalog.encoded_item_ids, blocks[at]), [(at, at + 1) for at in range(len(blocks))])
    return [encoded for part in parts for encoded in part]


def _fill_header(response: pb.RetrieveResponse, merged: MergedList, query: Query) -> None:
    response.fallback_filled = merged.fallback_count
    response.unknown_history_items = query.unknown_items
    response.known_user = query.user >= 0
    response.request_id = query.request_id


def fill_response(response: pb.RetrieveResponse, merged: MergedList, query: Query,
                  catalog: Catalog) -> None:
    """Write ``merged`` into ``response`` in the layout the query asked for."""
    _fill_header(response, merged, query)
    names, hit, rank, score, group = _provenance_columns(merged)
    if query.layout == COLUMNS:
        response.columns.MergeFromString(wire.candidate_columns(
            catalog.encoded_item_ids, merged.items, merged.scores, names, hit, rank, score,
            group))
    else:
        response.MergeFromString(wire.candidate_rows(
            catalog.encoded_item_ids, merged.items, merged.scores, names, hit, rank, score,
            group))


def _provenance_columns(merged: MergedList) -> tuple[list[str], np.ndarray, np.ndarray,
                                                     np.ndarray, np.ndarray]:
    """``(names, hit, rank, score, group)``, one row per source name."""
    provenance = merged.provenance
    if isinstance(provenance, ProvenanceColumns):
        return list(provenance.sources), *provenance.columns()
    return _columns_from_entries(provenance, len(merged.items))


def _columns_from_entries(provenance: Sequence[Sequence[Provenance]], n: int
                          ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    names = list(dict.fromkeys(p.source for entries in provenance for p in entries))
    shape = (len(names), n)
    hit, rank = np.zeros(shape, bool), np.zeros(shape, np.int64)
    score, group = np.full(shape, np.nan), np.full(shape, -1, np.int64)
    for j, entries in enumerate(provenance):
        for p in entries:
            s = names.index(p.source)
            hit[s, j], rank[s, j], score[s, j], group[s, j] = True, p.rank, p.score, p.group
    return names, hit, rank, score, group
