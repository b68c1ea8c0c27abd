"""Cache warming: answer the most recently active users once, right after a snapshot goes live.

The neural sources memoise user representations per exact history
(:class:`~recall_core.training.user_cache.UserVectorCache`), and a snapshot's
handles start with empty caches. Until a user is asked for, the first request
pays the encoder — for ``dnc_ebr`` that is K task passes. The warmer runs the
stored users through the ordinary serving path (the same request parsing, so
the same history keys; ``k = 1``, so search and merge cost next to nothing) in
a background thread, most recently active first, in batches: the near-line
precomputation production recall layers keep for their active users.

Warming is bounded (``users``), works at most half the time (it rests after
each batch as long as the batch took, so live requests keep the CPUs), stops
as soon as a newer snapshot replaces the one it warms, and never fails the
server: an error is logged and ends the warm-up. Answers do not change — the
caches are exact — only how soon a stored user is served from memory.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from recall_core.contract import Candidates
from recall_core.server import convert
from recall_core.server.convert import Limits
from recall_core.server.state import ServingState, Snapshot
from recall_protos.v1 import recall_pb2 as pb

log = logging.getLogger("recall.server")

WARM_BATCH = 256
"""Users per engine call while warming (large enough to batch the encoders)."""
WARM_DUTY = 0.5
"""Share of the wall time the warm-up may work; it rests for the remainder after each batch."""
WARM_TIMEOUT_S = 60.0
"""Seconds one warming batch may take before its slow sources are given up on."""


def compile_kernels() -> None:
    """Load the merge's and the response encoder's compiled kernels before serving.

    numba compiles on first call (seconds on a machine that never ran them,
    ~0.5 s from its on-disk cache); doing it here, before the health check
    says SERVING, keeps that off the first requests.
    """
    from recall_core.merge import merge_batch
    from recall_core.server.wire import EncodedIds, batch_candidate_columns
    from recall_plugins.merge_policies import POLICIES

    candidates = Candidates(np.array([[0, 1, -1]]), np.array([[1.0, 0.5, -np.inf]]),
                            np.array([[0, -1, -1]]))
    for policy in POLICIES:
        merged = merge_batch({"a": candidates}, policy, 3, {}, [np.array([1], np.int64)],
                             ("a", candidates))
    if merged.columns is not None:  # always, from merge_batch
        batch_candidate_columns(EncodedIds(["x", "y"]), merged.columns)


class Warmer:
    """Warms every new snapshot of ``state`` with up to ``users`` stored users."""

    def __init__(self, state: ServingState, users: int, limits: Limits | None = None,
                 batch: int = WARM_BATCH) -> None:
        self.state = state
        self.users = users
        self.limits = limits or Limits()
        self.batch = batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.warmed = 0
        """Users warmed by the latest (or running) warm-up."""

    def start(self, snapshot: Snapshot) -> None:
        """Stop any running warm-up and warm ``snapshot`` in the background."""
        self.stop()
        if self.users <= 0 or snapshot.engine is None:
            return
        self._stop = threading.Event()
        self.warmed = 0
        self._thread = threading.Thread(target=self._run, args=(snapshot.generation, self._stop),
                                        name="recall-warm", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the running warm-up to end (it does so before its next batch)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, generation: int, stop: threading.Event) -> None:
        started = time.perf_counter()
        try:
            with self.state.use() as snapshot:
                users = snapshot.catalog.recent_users(self.users)
                raw_ids = snapshot.catalog.raw_user_ids
            for begin in range(0, len(users), self.batch):
                batch_started = time.perf_counter()
                if stop.is_set() or not self._warm_batch(
                        generation, [raw_ids[u] for u in users[begin : begin + self.batch]]):
                    return
                self.warmed += min(self.batch, len(users) - begin)
                # Rest as long as the batch took: live requests keep at least half the time.
                stop.wait((time.perf_counter() - batch_started) * (1 / WARM_DUTY - 1))
        except Exception as error:  # noqa: BLE001 - warming must never take the server down
            log.warning("cache warm-up stopped after %d users: %s: %s", self.warmed,
                        type(error).__name__, error)
            return
        log.info("cache warm-up: %d users in %.1f s", self.warmed, time.perf_counter() - started)

    def _warm_batch(self, generation: int, user_ids: list[str]) -> bool:
        """One engine call for ``user_ids``; False when the snapshot was replaced."""
        with self.state.use() as snapshot:
            if snapshot.generation != generation or snapshot.engine is None:
                return False
            queries = [convert.parse_request(pb.RetrieveRequest(user_id=user, k=1), snapshot,
                                             self.limits) for user in user_ids]
            snapshot.engine.retrieve(convert.query_batch(queries), 1, timeout=WARM_TIMEOUT_S)
        return True
