"""The serving memo of user representations: exact answers, bounded size, LRU order."""

from __future__ import annotations

import numpy as np

from recall_core.training.user_cache import UserVectorCache, by_length


class CountingEncoder:
    """A fake encoder: row = [sum, length] of the history; counts the histories it saw."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, histories: list[np.ndarray]) -> np.ndarray:
        self.seen += len(histories)
        return np.array([[h.sum(), len(h)] for h in histories], dtype=np.float32)


def histories(*rows: list[int]) -> list[np.ndarray]:
    return [np.array(r, dtype=np.int64) for r in rows]


def test_cached_rows_equal_fresh_ones_and_skip_the_encoder() -> None:
    encoder, cache = CountingEncoder(), UserVectorCache(10, max_len=5)
    first = cache.encode(histories([1, 2, 3], [4, 5]), encoder)
    again = cache.encode(histories([4, 5], [1, 2, 3], [7]), encoder)
    np.testing.assert_array_equal(again[:2], first[::-1])
    assert encoder.seen == 3 and (cache.hits, cache.misses) == (2, 3)


def test_only_the_suffix_the_encoder_reads_is_the_key() -> None:
    encoder, cache = CountingEncoder(), UserVectorCache(10, max_len=2)
    a = cache.encode(histories([9, 1, 2]), encoder)
    b = cache.encode(histories([8, 1, 2]), encoder)  # same last 2 items: a hit
    np.testing.assert_array_equal(a, b)
    assert encoder.seen == 1 and a[0, 1] == 2, "the encoder got the truncated history"


def test_least_recently_used_histories_are_evicted_at_capacity() -> None:
    encoder, cache = CountingEncoder(), UserVectorCache(2, max_len=5)
    cache.encode(histories([1], [2]), encoder)
    cache.encode(histories([1]), encoder)  # [1] is now the most recent
    cache.encode(histories([3]), encoder)  # evicts [2]
    assert len(cache) == 2
    seen = encoder.seen
    cache.encode(histories([1], [3]), encoder)
    assert encoder.seen == seen
    cache.encode(histories([2]), encoder)
    assert encoder.seen == seen + 1


def test_capacity_zero_always_encodes_and_keeps_nothing() -> None:
    encoder, cache = CountingEncoder(), UserVectorCache(0, max_len=5)
    cache.encode(histories([1, 2]), encoder)
    cache.encode(histories([1, 2]), encoder)
    assert encoder.seen == 2 and len(cache) == 0


def test_returned_rows_are_copies() -> None:
    encoder, cache = CountingEncoder(), UserVectorCache(4, max_len=5)
    rows = cache.encode(histories([1, 2]), encoder)
    rows[:] = -1
    np.testing.assert_array_equal(cache.encode(histories([1, 2]), encoder), [[3, 2]])


def test_the_environment_overrides_every_capacity(monkeypatch) -> None:  # noqa: ANN001
    from recall_core.training.user_cache import CAPACITY_ENV

    monkeypatch.setenv(CAPACITY_ENV, "0")
    encoder, cache = CountingEncoder(), UserVectorCache(100, max_len=5)
    cache.encode(histories([1]), encoder)
    cache.encode(histories([1]), encoder)
    assert cache.capacity == 0 and encoder.seen == 2
    monkeypatch.setenv(CAPACITY_ENV, "3")
    assert UserVectorCache(100, max_len=5).capacity == 3


def test_mixed_lengths_are_encoded_shortest_first_in_padded_chunks() -> None:
    rng = np.random.default_rng(0)
    histories = [rng.integers(0, 50, n) for n in rng.permutation([3, 200, 5, 180] * 10)]
    widths: list[int] = []

    def encode(chunk: list[np.ndarray]) -> np.ndarray:
        widths.append(max(len(h) for h in chunk))  # what one call would pad to
        return np.array([[len(h), h.sum()] for h in chunk], np.float64)

    rows = by_length(histories, encode, chunk=8)
    np.testing.assert_array_equal(rows, [[len(h), h.sum()] for h in histories])  # in order
    assert widths == [3, 5, 180, 200, 200]  # 8 per call, shortest first


def test_similar_lengths_stay_one_call() -> None:
    calls: list[int] = []

    def encode(chunk: list[np.ndarray]) -> np.ndarray:
        calls.append(len(chunk))
        return np.zeros((len(chunk), 1))

    by_length([np.arange(n) for n in [50, 48, 49, 50] * 10], encode, chunk=8)
    assert calls == [40]


def test_chunked_encoder_rows_match_one_padded_call() -> None:
    from recall_core.native import torch as load_torch

    torch = load_torch()
    from recall_core.training.batching import pad_histories
    from recall_core.training.encoders import EncoderSpec, SequenceEncoder

    torch.manual_seed(0)
    spec = EncoderSpec(num_items=60, max_len=40, dim=16)
    encoder = SequenceEncoder(spec).eval()

    def encode(chunk: list[np.ndarray]) -> np.ndarray:
        inputs, lengths = pad_histories(chunk, spec.max_len, spec.num_items)
        with torch.inference_mode():
            return encoder.encode_last(torch.from_numpy(inputs),
                                       torch.from_numpy(lengths)).numpy()

    rng = np.random.default_rng(1)
    histories = [rng.integers(0, 60, n) for n in rng.permutation([2, 40, 7, 35] * 6)]
    np.testing.assert_allclose(by_length(histories, encode, chunk=4), encode(histories),
                               rtol=1e-5, atol=1e-6)
