"""The compiled columnar encoder against protobuf's own serialiser."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_core.merged import BatchColumns
from recall_core.server import wire
from recall_protos.v1 import recall_pb2 as pb

ITEM_IDS = [f"item-{i}" if i % 7 else f"é{i}" * (1 + i % 50) for i in range(200)]
ENCODED = wire.EncodedIds(ITEM_IDS)


def expected_columns(items: np.ndarray, scores: np.ndarray, names: list[str], hit: np.ndarray,
                     rank: np.ndarray, score: np.ndarray, group: np.ndarray) -> bytes:
    message = pb.CandidateColumns(item_ids=[ITEM_IDS[i] for i in items], scores=scores.tolist())
    for s, name in enumerate(names):
        where = np.flatnonzero(hit[s])
        if where.size == 0:
            continue
        groups = group[s, where]
        message.sources.add(source=name, positions=where.tolist(), ranks=rank[s, where].tolist(),
                            scores=score[s, where].tolist(),
                            groups=groups.tolist() if (groups >= 0).any() else [])
    return message.SerializeToString()


@st.composite
def batches(draw: st.DrawFn) -> tuple:
    rows = draw(st.integers(1, 4))
    lengths = [draw(st.integers(0, 40)) for _ in range(rows)]
    total, names = sum(lengths), ["popular", "i2i", "dnc_ebr"][: draw(st.integers(1, 3))]
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    items = np.concatenate([rng.choice(len(ITEM_IDS), n, replace=False) for n in lengths])
    shape = (len(names), total)
    hit = rng.random(shape) < 0.6
    rank = rng.integers(1, 300_000, shape)  # multi-byte values
    group = np.where(rng.random(shape) < 0.5, rng.integers(-3, 12, shape), -1)
    score = rng.normal(size=shape) * 1e3
    bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return BatchColumns(bounds, items.astype(np.int64), rng.random(total), tuple(names), hit,
                        rank, score, group)


@settings(max_examples=80, deadline=None)
@given(batch=batches())
def test_compiled_columns_are_what_protobuf_writes(batch: BatchColumns) -> None:
    encoded = wire.batch_candidate_columns(ENCODED, batch)
    assert len(encoded) == len(batch.bounds) - 1
    for b, data in enumerate(encoded):
        lo, hi = batch.bounds[b], batch.bounds[b + 1]
        parts = (batch.hit[:, lo:hi], batch.rank[:, lo:hi], batch.score[:, lo:hi],
                 batch.group[:, lo:hi])
        expected = expected_columns(batch.items[lo:hi], batch.scores[lo:hi],
                                    list(batch.sources), *parts)
        assert data == expected
        single = wire.candidate_columns(ENCODED, batch.items[lo:hi], batch.scores[lo:hi],
                                        batch.sources, *parts)
        assert single == expected


@settings(max_examples=40, deadline=None)
@given(batch=batches(), cut=st.integers(0, 4))
def test_row_blocks_encode_and_join_like_the_whole_batch(batch: BatchColumns, cut: int) -> None:
    rows = len(batch.bounds) - 1
    cut = min(cut, rows)
    head, tail = batch.rows(0, cut), batch.rows(cut, rows)
    assert (wire.batch_candidate_columns(ENCODED, head)
            + wire.batch_candidate_columns(ENCODED, tail)) == wire.batch_candidate_columns(
                ENCODED, batch)
    joined = BatchColumns.concat([head, tail])
    for field in ("bounds", "items", "scores", "hit", "rank", "score", "group"):
        np.testing.assert_array_equal(getattr(joined, field), getattr(batch, field))


@settings(max_examples=30, deadline=None)
@given(batch=batches(), request_id=st.sampled_from(["", "req-é7"]))
def test_a_serialized_batch_parses_as_the_message_it_stands_for(batch: BatchColumns,
                                                                 request_id: str) -> None:
    encoded = wire.batch_candidate_columns(ENCODED, batch)
    written, expected = wire.SerializedBatch(), pb.BatchRetrieveResponse()
    for b, columns in enumerate(encoded):
        header = pb.RetrieveResponse(fallback_filled=b, known_user=b % 2 == 0,
                                     request_id=f"r{b}")
        header.sources.add(source="popular", status=pb.SourceReport.OK)
        as_rows = b == 1  # a row-layout response: no detached columns
        if as_rows:
            header.candidates.add(item_id="x", score=1.0)
        written.add(header, None if as_rows else columns)
        expected.responses.add().CopyFrom(header)
        if not as_rows:
            expected.responses[b].columns.MergeFromString(columns)
    written.request_id = expected.request_id = request_id
    assert pb.BatchRetrieveResponse.FromString(written.SerializeToString()) == expected
