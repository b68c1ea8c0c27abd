"""Protobuf wire encoding of ``CandidateColumns``, built from numpy arrays in bulk.

Filling repeated fields through the protobuf Python API costs a Python call
per element list and a conversion per value; at k = 500 with provenance that
is most of a request's response time. The columnar message is designed for
bulk encoding instead: its numeric columns are packed fixed-width fields and
item ids are pre-encoded once per catalogue, so a compiled pass
(:mod:`recall_core.server.wire_kernel`) writes whole batches of it. The bytes
are handed to ``MergeFromString`` (C code), so the result is an ordinary
message, byte-for-byte what the API would have built.

Wire format used (https://protobuf.dev/programming-guides/encoding/): a field
is ``key = field_number << 3 | wire_type`` then, for length-delimited fields
(wire type 2: strings, sub-messages, packed repeated scalars), a varint length
and the payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from recall_core.merged import BatchColumns
    from recall_protos.v1 import recall_pb2 as pb

LENGTH_DELIMITED = 2
# CandidateColumns
ITEM_IDS, SCORES, SOURCES = 1, 2, 3
# SourceColumn
SOURCE_NAME, POSITIONS, RANKS, SOURCE_SCORES, GROUPS = 1, 2, 3, 4, 5
# RetrieveResponse.candidates = 1; in Candidate: item_id = 1 (as CandidateColumns.item_ids,
# so the pre-encoded ids serve both), score = 2 (float), provenance = 3; in SourceHit:
# source = 1, rank = 2 (varint), score = 3 (float), group = 4 (varint)
CANDIDATES = 1
CANDIDATE_SCORE_KEY = b"\x15"  # field 2, wire type 5 (32-bit)
PROVENANCE = 3
HIT_RANK_KEY, HIT_SCORE_KEY, HIT_GROUP_KEY = b"\x10", b"\x1d", b"\x20"


def varint(value: int) -> bytes:
    """The base-128 varint of a non-negative ``value``."""
    if value < _SMALL_LIMIT:  # tags, lengths, ranks: by far the most common
        return _SMALL[value]
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


_SMALL_LIMIT = 0x4000  # every varint of one or two bytes, ready (about 0.6 MB)
_SMALL = [bytes((v,)) if v < 0x80 else bytes((v & 0x7F | 0x80, v >> 7))
          for v in range(_SMALL_LIMIT)]


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | LENGTH_DELIMITED) + varint(len(payload)) + payload


class EncodedIds:
    """A catalogue's item ids pre-encoded as ``item_ids`` entries (done once per catalogue).

    ``entries[i]`` is item i's encoded entry as bytes (for the rows layout); the
    same bytes concatenated in ``blob`` with item i's at ``offsets[i]:offsets[i + 1]``
    feed the compiled columnar encoder.
    """

    def __init__(self, item_ids: Sequence[str]) -> None:
        self.entries = [field(ITEM_IDS, raw.encode("utf-8")) for raw in item_ids]
        self.blob = np.frombuffer(b"".join(self.entries), dtype=np.uint8)
        self.offsets = np.zeros(len(self.entries) + 1, np.int64)
        np.cumsum([len(entry) for entry in self.entries], out=self.offsets[1:])


def candidate_columns(encoded_ids: EncodedIds, items: np.ndarray, scores: np.ndarray,
                      names: Sequence[str], hit: np.ndarray, rank: np.ndarray,
                      score: np.ndarray, group: np.ndarray) -> bytes:
    """A serialised ``CandidateColumns``.

    :param items: dense item ids in merged order; ``scores`` their fused scores.
    :param hit: ``(sources, items)`` bool: source s returned item j, at
        ``rank[s, j]`` with raw score ``score[s, j]`` and group ``group[s, j]``.
    """
    bounds = np.array([0, len(items)], np.int64)
    buffer, _ = _encode(encoded_ids, items, scores, bounds, names, hit, rank, score, group)
    return buffer.tobytes()


def batch_candidate_columns(encoded_ids: EncodedIds, columns: BatchColumns) -> list[bytes]:
    """:func:`candidate_columns` of every row of a merged batch, in one compiled pass."""
    buffer, offsets = _encode(encoded_ids, columns.items, columns.scores, columns.bounds,
                              columns.sources, columns.hit, columns.rank, columns.score,
                              columns.group)
    cuts = offsets.tolist()
    data = buffer.tobytes()
    return [data[lo:hi] for lo, hi in zip(cuts[:-1], cuts[1:])]


def _encode(encoded_ids: EncodedIds, items: np.ndarray, scores: np.ndarray, bounds: np.ndarray,
            names: Sequence[str], hit: np.ndarray, rank: np.ndarray, score: np.ndarray,
            group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from recall_core.server import wire_kernel  # numba: imported on the first response

    heads, head_offsets = _heads(tuple(names))
    return wire_kernel.encode_columns(
        encoded_ids.blob, encoded_ids.offsets, np.ascontiguousarray(items, np.int64),
        np.ascontiguousarray(scores, np.float32), np.ascontiguousarray(bounds, np.int64),
        heads, head_offsets, np.ascontiguousarray(hit, bool),
        np.ascontiguousarray(rank, np.int64), np.ascontiguousarray(score, np.float32),
        np.ascontiguousarray(group, np.int64))


@lru_cache(maxsize=256)
def _heads(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The sources' encoded ``SourceColumn.source`` fields, concatenated, and their offsets."""
    heads = [field(SOURCE_NAME, name.encode("utf-8")) for name in names]
    offsets = np.zeros(len(heads) + 1, np.int64)
    np.cumsum([len(head) for head in heads], out=offsets[1:])
    return np.frombuffer(b"".join(heads), np.uint8), offsets


def candidate_rows(encoded_ids: EncodedIds, items: np.ndarray, scores: np.ndarray,
                   names: Sequence[str], hit: np.ndarray, rank: np.ndarray, score: np.ndarray,
                   group: np.ndarray) -> bytes:
    """The serialised ``candidates`` field of a ``RetrieveResponse`` (one Candidate per item).

    Arguments as in :func:`candidate_columns`. Still a Python loop per candidate and per
    provenance entry, but over bytes: several times cheaper than building messages.
    """
    hits: list[list[bytes]] = [[] for _ in range(len(items))]
    rows, positions = np.nonzero(hit)
    heads = [field(SOURCE_NAME, name.encode("utf-8")) + HIT_RANK_KEY for name in names]
    hit_scores = score[rows, positions].astype("<f4").tobytes()
    small, provenance_key = _SMALL, _key(PROVENANCE)
    for t, (s, j, r, g) in enumerate(zip(rows.tolist(), positions.tolist(),
                                         rank[rows, positions].tolist(),
                                         group[rows, positions].tolist())):
        body = b"".join((heads[s], small[r] if r < _SMALL_LIMIT else varint(r), HIT_SCORE_KEY,
                         hit_scores[4 * t: 4 * t + 4], HIT_GROUP_KEY, _int32(g)))
        hits[j].append(provenance_key + small[len(body)] + body)  # a hit is < 100 bytes
    candidate_scores = scores.astype("<f4").tobytes()
    candidate_key, out, entries = _key(CANDIDATES), [], encoded_ids.entries
    for j, item in enumerate(items.tolist()):
        body = b"".join((entries[item], CANDIDATE_SCORE_KEY,
                         candidate_scores[4 * j: 4 * j + 4], *hits[j]))
        out.append(candidate_key + varint(len(body)) + body)
    return b"".join(out)


def _key(number: int) -> bytes:
    return varint(number << 3 | LENGTH_DELIMITED)


@lru_cache(maxsize=4096)
def _int32(value: int) -> bytes:
    """An int32 field's varint: negative values take ten bytes (two's complement, 64 bits)."""
    return varint(value if value >= 0 else value + (1 << 64))


RESPONSES, BATCH_REQUEST_ID, COLUMNS_FIELD = 1, 2, 7  # BatchRetrieveResponse / RetrieveResponse


class SerializedBatch:
    """A ``BatchRetrieveResponse`` written as bytes: each response's small header message
    plus its pre-encoded ``CandidateColumns`` (field 7) spliced in, never parsed back.

    Quacks like the message where the server touches it: a settable ``request_id``
    and ``SerializeToString()`` (the bytes a parser reads as the same message;
    protobuf accepts fields in any order).
    """

    def __init__(self) -> None:
        self.request_id = ""
        self._parts: list[bytes] = []
        self.count = 0

    def add(self, header: pb.RetrieveResponse, columns: bytes | None) -> None:
        """Append one response: ``header`` without columns, then ``columns`` (if any)."""
        head = header.SerializeToString()
        tail = b"" if columns is None else _key(COLUMNS_FIELD) + varint(len(columns))
        size = len(head) + len(tail) + (0 if columns is None else len(columns))
        self._parts += [_key(RESPONSES), varint(size), head, tail]
        if columns is not None:
            self._parts.append(columns)
        self.count += 1

    def add_serialized(self, batch: bytes, count: int) -> None:
        """Append the ``count`` responses of another serialised ``BatchRetrieveResponse``
        (a sibling worker's share); its request id is overridden by ours, written last."""
        self._parts.append(batch)
        self.count += count

    def SerializeToString(self) -> bytes:  # noqa: N802 - the protobuf message method name
        request_id = field(BATCH_REQUEST_ID, self.request_id.encode("utf-8")) if (
            self.request_id) else b""
        return b"".join(self._parts) + request_id
