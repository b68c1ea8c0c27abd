"""Precomputed user rows: the table's lookups, the cache in front of it, and ``recall index``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recall_core.artifacts import ArtifactStore
from recall_core.contract import QueryBatch
from recall_core.errors import ArtifactError
from recall_core.host import make_host
from recall_core.sources import SourceManager
from recall_core.training.user_cache import UserVectorCache
from recall_core.training.user_table import KEYS_FILE, ROWS_FILE, UserTable
from tests.test_user_cache import CountingEncoder, histories


def digest(high: int, low: int) -> bytes:
    return high.to_bytes(8, "big") + low.to_bytes(8, "big")


def test_a_saved_table_finds_every_key_it_holds_and_no_other(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    recorded = {rng.bytes(16): rng.normal(size=3).astype(np.float32) for _ in range(200)}
    assert UserTable.save(tmp_path, recorded) == 200
    table = UserTable.open(tmp_path)
    assert table is not None and len(table) == 200
    keys = list(recorded)
    positions = table.find([*keys, rng.bytes(16)])
    assert positions[-1] == -1
    for key, at in zip(keys, positions):
        np.testing.assert_array_equal(table.rows[at], recorded[key])


def test_digests_sharing_a_high_half_are_told_apart(tmp_path: Path) -> None:
    # Extremes of the unsigned range too: the halves compare as numbers, not as signed ints.
    lows = {3: 30.0, 1: 10.0, 2**64 - 1: 99.0}  # low half -> the row's label
    recorded = {digest(7, low): np.array([label], np.float32) for low, label in lows.items()}
    recorded[digest(2**64 - 1, 0)] = np.array([-1], np.float32)
    UserTable.save(tmp_path, recorded)
    table = UserTable.open(tmp_path)
    assert table is not None
    asked = [digest(7, 2**64 - 1), digest(7, 1), digest(7, 2), digest(2**64 - 1, 0),
             digest(2**64 - 1, 1), digest(0, 0)]
    found = [float(table.rows[at][0]) if at >= 0 else None for at in table.find(asked)]
    assert found == [99.0, 10.0, None, -1.0, None, None]


def test_an_index_without_a_table_opens_none_and_a_broken_one_is_an_artifact_error(
        tmp_path: Path) -> None:
    assert UserTable.open(tmp_path) is None
    (tmp_path / KEYS_FILE).write_bytes(b"not numpy")
    (tmp_path / ROWS_FILE).write_bytes(b"")
    with pytest.raises(ArtifactError, match="user table"):
        UserTable.open(tmp_path)


def recorded_table(tmp_path: Path, *rows: list[int], max_len: int = 5) -> UserTable:
    """A table holding what a recording cache encoded for ``rows``."""
    cache = UserVectorCache(0, max_len)
    with cache.recording() as recorded:
        cache.encode(histories(*rows), CountingEncoder())
    UserTable.save(tmp_path, recorded)
    table = UserTable.open(tmp_path)
    assert table is not None
    return table


def test_the_cache_answers_from_the_table_and_encodes_only_the_rest(tmp_path: Path) -> None:
    table = recorded_table(tmp_path, [1, 2, 3], [4, 5])
    encoder, cache = CountingEncoder(), UserVectorCache(10, max_len=5)
    cache.attach(table)
    rows = cache.encode(histories([4, 5], [9], [1, 2, 3]), encoder)
    np.testing.assert_array_equal(rows, [[9, 2], [9, 1], [6, 3]])
    assert encoder.seen == 1 and cache.table_hits == 2 and len(cache) == 1
    rows[:] = 0  # the caller's copy: the table is read-only and unchanged
    np.testing.assert_array_equal(cache.encode(histories([4, 5]), encoder), [[9, 2]])


def test_the_table_serves_even_with_the_memo_off(tmp_path: Path) -> None:
    table = recorded_table(tmp_path, [1, 2])
    encoder, cache = CountingEncoder(), UserVectorCache(0, max_len=5)
    cache.attach(table)
    cache.encode(histories([1, 2], [3]), encoder)
    assert encoder.seen == 1 and cache.table_hits == 1 and len(cache) == 0


def test_the_table_is_keyed_by_the_suffix_the_encoder_reads(tmp_path: Path) -> None:
    table = recorded_table(tmp_path, [7, 1, 2], max_len=2)
    encoder, cache = CountingEncoder(), UserVectorCache(0, max_len=2)
    cache.attach(table)
    np.testing.assert_array_equal(cache.encode(histories([8, 1, 2]), encoder), [[3, 2]])
    assert encoder.seen == 0


def test_recording_keeps_every_row_whatever_the_capacity() -> None:
    encoder, cache = CountingEncoder(), UserVectorCache(1, max_len=5)
    with cache.recording() as recorded:
        cache.encode(histories([1], [2], [3]), encoder)
        cache.encode(histories([1]), encoder)
    assert len(recorded) == 3 and len(cache) == 1
    cache.encode(histories([4]), encoder)
    assert len(recorded) == 3, "recording ended with the block"


FAST = {"dim": 16, "max_len": 20, "epochs": 1, "batch_size": 32, "layers": 1, "patience": 1}


@pytest.mark.parametrize("precomputed", [0, 40])
def test_recall_index_precomputes_stored_users_and_answers_do_not_change(
        tmp_path: Path, precomputed: int) -> None:
    from recall_core.data.synthetic import SyntheticConfig, generate
    from recall_plugins.sasrec import plugin as sasrec_plugin

    host = make_host(load_entry_points=False, builtins=False, extra_plugins=[sasrec_plugin])
    manager = SourceManager(host, ArtifactStore(tmp_path / "artifacts"), threads=1)
    dataset = generate(SyntheticConfig(users=60, items=50, seed=3))
    spec = manager.spec("seq", "sasrec", {**FAST, "precomputed_users": precomputed})
    manager.train(spec, dataset)
    indexed = manager.index(spec, dataset)
    assert (indexed.handle.user_cache.table is not None) == bool(precomputed)
    index_dir = manager.store.current("seq").index_dir
    assert (index_dir / KEYS_FILE).is_file() == bool(precomputed)
    loaded = manager.load(spec)  # checksums cover the table
    cache = loaded.handle.user_cache
    assert (cache.table is not None) == bool(precomputed)
    if precomputed:
        assert len(cache.table) == 40, "the 40 most recently active users"

    users = dataset.recent_users(60)
    queries = QueryBatch.from_histories([dataset.sequence(u) for u in users], users)
    served = host.retrieve("sasrec", loaded.handle, queries, 10)
    version = manager.store.current("seq")
    plain = host.load("sasrec", loaded.spec.config, version.model_dir, index_dir)  # no table:
    assert plain.user_cache.table is None  # the core attaches it, not the plugin
    fresh = host.retrieve("sasrec", plain, queries, 10)
    np.testing.assert_array_equal(served.items, fresh.items)
    np.testing.assert_allclose(served.scores, fresh.scores, rtol=1e-5, atol=1e-6)
    assert cache.table_hits == (40 if precomputed else 0) and cache.misses == 60 - cache.table_hits
