"""Coalescing of concurrent Retrieves: batches form under load, answers stay per request."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from recall_core.server.app import RecallServer, ServerConfig
from recall_core.server.batcher import Coalescer, Slot
from recall_core.server.client import RecallClient
from recall_core.server.errors import DeadlineError
from tests.test_server_support import (
    BATCH_SIZES,
    build_project,
    faults,  # noqa: F401 - fixture
    make_test_host,
)


def later(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def test_an_idle_coalescer_runs_a_request_at_once_and_alone() -> None:
    batches: list[list[int]] = []

    def execute(slots: list[Slot], budget: float) -> None:
        batches.append([s.payload for s in slots])
        for slot in slots:
            slot.answer(slot.payload * 10)

    coalescer = Coalescer()
    assert coalescer.submit("k", Slot(1, later()), execute) == 10
    assert coalescer.submit("k", Slot(2, later()), execute) == 20
    assert batches == [[1], [2]]


def test_requests_arriving_during_a_call_share_the_next_one() -> None:
    batches: list[list[int]] = []
    first_running = threading.Event()
    release = threading.Event()

    def execute(slots: list[Slot], budget: float) -> None:
        batches.append(sorted(s.payload for s in slots))
        if slots[0].payload == 0:
            first_running.set()
            release.wait(5)
        for slot in slots:
            slot.answer(-slot.payload)

    coalescer = Coalescer(max_batch=3)
    with ThreadPoolExecutor(6) as pool:
        head = pool.submit(coalescer.submit, "k", Slot(0, later()), execute)
        first_running.wait(5)
        rest = [pool.submit(coalescer.submit, "k", Slot(i, later()), execute) for i in (1, 2, 3, 4)]
        time.sleep(0.1)  # all four are queued behind the running call
        release.set()
        assert head.result() == 0 and [f.result() for f in rest] == [-1, -2, -3, -4]
    assert batches[0] == [0]
    assert sorted(len(b) for b in batches[1:]) == [1, 3]  # max_batch splits the queue
    assert sorted(x for b in batches[1:] for x in b) == [1, 2, 3, 4]


def test_errors_reach_every_member_and_expired_requests_are_refused() -> None:
    def execute(slots: list[Slot], budget: float) -> None:
        raise RuntimeError("engine down")

    coalescer = Coalescer()
    with pytest.raises(RuntimeError, match="engine down"):
        coalescer.submit("k", Slot(1, later()), execute)
    with pytest.raises(DeadlineError):
        coalescer.submit("k", Slot(1, time.monotonic() - 1), execute)
    assert not coalescer._busy and not coalescer._queues  # nothing left behind


def test_concurrent_requests_answer_exactly_like_sequential_ones(tmp_path: Path,
                                                                 faults: dict) -> None:
    host = make_test_host()
    root = build_project(tmp_path / "p", host, {"popular": ("fakepop", {"tag": "popular"}),
                                                "alpha": ("fake", {"tag": "alpha"})})
    server = RecallServer(root, ServerConfig(port=0, workers=8, access_log=False), host=host)
    server.start(block_until_loaded=True)
    try:
        with RecallClient(f"127.0.0.1:{server.port}", timeout=5) as client:
            users = [f"u{u}" for u in range(40)] + ["stranger"]
            expected = {u: client.retrieve(u, k=35).item_ids for u in users}
            faults["alpha"] = 0.01  # a source that takes a moment: queues form behind it
            BATCH_SIZES.clear()
            with ThreadPoolExecutor(8) as pool:
                got = dict(zip(users * 3, pool.map(lambda u: client.retrieve(u, k=35).item_ids,
                                                   users * 3)))
        assert got == expected
        assert max(BATCH_SIZES["alpha"]) > 1, "concurrent requests were coalesced"
    finally:
        server.stop()
