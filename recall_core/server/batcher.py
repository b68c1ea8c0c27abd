"""Concurrent ``Retrieve`` calls with the same merge settings share one engine call.

Sources and the merge are vectorised over a batch (an encoder's forward pass,
a faiss search, the merge's bookkeeping), so answering eight concurrent
requests as one batch of eight costs far less than eight batches of one.

Leader/follower, with no timer: a request that finds nobody working on its key
runs at once with whatever is queued (usually just itself, so an idle server
adds no latency); requests arriving meanwhile queue, and when the running call
ends the first of them leads the next call with everything queued by then.
Batches therefore grow exactly when the server is busy. Answers are identical
to unbatched ones: every query of a batch is merged on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from recall_core.server.errors import DeadlineError


@dataclass(eq=False)
class Slot:
    """One request waiting for (or leading) an engine call."""

    payload: Any
    deadline: float
    """``time.monotonic()`` by which the sources must have answered."""
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    lead: bool = False

    def answer(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


Execute = Callable[[list[Slot], float], None]
"""Runs one batch with a source budget (seconds) and answers every slot."""


class Coalescer:
    """Groups concurrent requests by key into batches of at most ``max_batch``."""

    def __init__(self, max_batch: int = 32) -> None:
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queues: dict[Hashable, list[Slot]] = {}
        self._busy: set[Hashable] = set()

    def submit(self, key: Hashable, slot: Slot, execute: Execute) -> Any:
        """Run ``slot`` (alone or with others of ``key``); its result, or raise its error."""
        with self._lock:
            self._queues.setdefault(key, []).append(slot)
            leader = key not in self._busy
            if leader:
                self._busy.add(key)
        if not leader:
            slot.done.wait()  # bounded: the running batch ends within its source budget
            if slot.lead:
                slot.done.clear()
                leader = True
        if leader:
            self._lead(key, execute)
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _lead(self, key: Hashable, execute: Execute) -> None:
        with self._lock:
            queue = self._queues.pop(key)
            batch, rest = queue[: self.max_batch], queue[self.max_batch:]
            if rest:
                self._queues[key] = rest
        try:
            _run(batch, execute)
        finally:
            with self._lock:
                waiting = self._queues.get(key)
                successor = waiting[0] if waiting else None
                if successor is None:
                    self._busy.discard(key)
                else:
                    successor.lead = True
            if successor is not None:
                successor.done.set()


def _run(batch: list[Slot], execute: Execute) -> None:
    """Answer expired slots with DeadlineError, run the rest under the tightest budget."""
    now = time.monotonic()
    live = []
    for slot in batch:
        if slot.deadline <= now:
            slot.answer(error=DeadlineError("the deadline ran out while the request was queued"))
        else:
            live.append(slot)
    if not live:
        return
    try:
        execute(live, min(slot.deadline for slot in live) - now)
    except BaseException as error:  # noqa: BLE001 - handed to every waiting request
        for slot in live:
            if slot.result is None:
                slot.answer(error=error)
