"""Protobuf wire encoding of ``CandidateColumns``, built from numpy arrays in bulk.

Filling repeated fields through the protobuf Python API costs a Python call
per element list and a conversion per value; at k = 500 with provenance that
is most of a request's response time. The columnar message is designed for
bulk encoding instead: its numeric columns are packed fixed-width fields, so
each is one ``ndarray.tobytes()``, and item ids are pre-encoded once per
catalogue. The bytes are handed to ``MergeFromString`` (C code), so the
result is an ordinary message, byte-for-byte what the API would have built.

Wire format used (https://protobuf.dev/programming-guides/encoding/): a field
is ``key = field_number << 3 | wire_type`` then, for length-delimited fields
(wire type 2: strings, sub-messages, packed repeated scalars), a varint length
and the payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from operator import itemgetter

import numpy as np

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


def encode_item_ids(item_ids: Sequence[str]) -> list[bytes]:
    """Each item id as a ready ``CandidateColumns.item_ids`` entry (done once per catalogue)."""
    return [field(ITEM_IDS, raw.encode("utf-8")) for raw in item_ids]


def _join_ids(encoded_ids: list[bytes], items: np.ndarray) -> bytes:
    if items.size == 0:
        return b""
    if items.size == 1:
        return encoded_ids[int(items[0])]
    return b"".join(itemgetter(*items.tolist())(encoded_ids))  # one C loop


def _packed(number: int, data: bytes) -> bytes:
    return field(number, data) if data else b""


def candidate_columns(encoded_ids: list[bytes], items: np.ndarray, scores: np.ndarray,
                      names: Sequence[str], hit: np.ndarray, rank: np.ndarray,
                      score: np.ndarray, group: np.ndarray) -> bytes:
    """A serialised ``CandidateColumns``.

    :param items: dense item ids in merged order; ``scores`` their fused scores.
    :param hit: ``(sources, items)`` bool: source s returned item j, at
        ``rank[s, j]`` with raw score ``score[s, j]`` and group ``group[s, j]``.
    """
    parts = [_join_ids(encoded_ids, items),
             _packed(SCORES, scores.astype("<f4").tobytes())]
    # Every source's columns at once, cut per source afterwards (numpy calls cost more
    # than the work at this size).
    rows, positions = np.nonzero(hit)
    bounds = np.searchsorted(rows, np.arange(len(names) + 1)).tolist()
    blobs = [positions.astype("<u4").tobytes(), rank[rows, positions].astype("<u4").tobytes(),
             score[rows, positions].astype("<f4").tobytes()]
    groups = group[rows, positions]
    with_group = np.concatenate(([0], np.cumsum(groups >= 0)))[bounds]
    grouped = (with_group[1:] > with_group[:-1]).tolist()  # the source reports any group
    group_blob = groups.astype("<i4").tobytes()
    for s, name in enumerate(names):
        lo, hi = bounds[s] * 4, bounds[s + 1] * 4
        if lo == hi:
            continue
        parts.append(field(SOURCES, b"".join((
            field(SOURCE_NAME, name.encode("utf-8")),
            *(_packed(number, blob[lo:hi])
              for number, blob in zip((POSITIONS, RANKS, SOURCE_SCORES), blobs)),
            _packed(GROUPS, group_blob[lo:hi]) if grouped[s] else b""))))
    return b"".join(parts)


def candidate_rows(encoded_ids: list[bytes], items: np.ndarray, scores: np.ndarray,
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
    candidate_key, out = _key(CANDIDATES), []
    for j, item in enumerate(items.tolist()):
        body = b"".join((encoded_ids[item], CANDIDATE_SCORE_KEY,
                         candidate_scores[4 * j: 4 * j + 4], *hits[j]))
        out.append(candidate_key + varint(len(body)) + body)
    return b"".join(out)


def _key(number: int) -> bytes:
    return varint(number << 3 | LENGTH_DELIMITED)


@lru_cache(maxsize=4096)
def _int32(value: int) -> bytes:
    """An int32 field's varint: negative values take ten bytes (two's complement, 64 bits)."""
    return varint(value if value >= 0 else value + (1 << 64))
