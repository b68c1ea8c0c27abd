"""Sibling worker processes of one ``recall serve --processes N``.

Python answers one request at a time per process (the GIL), so a multi-core
machine serves more with several processes sharing the port (SO_REUSEPORT:
the kernel spreads connections over them). Each worker also listens on a
private Unix socket in a directory only its user can read; a ``Reload`` that
reaches one worker is applied there and then forwarded to every sibling
through those sockets, so one admin call reloads the whole server.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import grpc

from recall_protos.v1 import recall_pb2 as pb
from recall_protos.v1 import recall_pb2_grpc

FANOUT_HEADER = "x-recall-fanout"
"""Set on forwarded calls, so the sibling that receives one does not forward it again."""
BATCH_METHOD = "/recall.v1.RecallService/BatchRetrieve"
log = logging.getLogger("recall.server")


@dataclass(frozen=True)
class WorkerSpec:
    """Which worker this process is, of how many, and where its siblings listen."""

    index: int
    peers_dir: Path
    count: int

    @property
    def socket(self) -> Path:
        return self._socket(self.index)

    @property
    def address(self) -> str:
        return f"unix:{self.socket}"

    def siblings(self) -> list[Path]:
        """Every other worker's socket, whether that worker is up now or not."""
        return [self._socket(i) for i in range(self.count) if i != self.index]

    def _socket(self, index: int) -> Path:
        return self.peers_dir / f"worker-{index}.sock"


class BatchSharer:
    """Sends shares of a large ``BatchRetrieve`` to the sibling workers, so every process
    computes a part at the same time; their answers come back as bytes, never parsed
    (repeated fields of concatenated messages concatenate)."""

    def __init__(self, spec: WorkerSpec, min_batch: int, slots: int) -> None:
        self.spec = spec
        self.min_batch = min_batch
        self._slots = threading.BoundedSemaphore(max(1, slots))
        self._calls: dict[Path, tuple[grpc.Channel, Any]] = {}
        self._lock = threading.Lock()

    def shares(self, size: int) -> tuple[list[tuple[int, int]], list[Path]]:
        """Split ``size`` users into contiguous (start, end) shares: the first for this
        worker, one for each sibling; only this worker's share when the batch is small."""
        siblings = self.spec.siblings() if self.min_batch and size >= self.min_batch else []
        parts = len(siblings) + 1
        bounds = [size * i // parts for i in range(parts + 1)]
        return list(zip(bounds[:-1], bounds[1:])), siblings

    def reserve(self) -> bool:
        """Take a sharing slot if one is free (never waits); :meth:`release` gives it back."""
        return self._slots.acquire(blocking=False)

    def release(self) -> None:
        self._slots.release()

    def send(self, path: Path, request: pb.BatchRetrieveRequest, timeout: float) -> grpc.Future:
        """Start the sibling's share; ``result()`` gives its serialised response."""
        metadata = ((FANOUT_HEADER, str(self.spec.index)),)
        return self._call(path).future(request, timeout=timeout, metadata=metadata)

    def close(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, {}
        for channel, _ in calls.values():
            channel.close()

    def _call(self, path: Path) -> Any:
        with self._lock:
            known = self._calls.get(path)
            if known is None:
                channel = grpc.insecure_channel(
                    f"unix:{path}", options=[("grpc.max_receive_message_length", 256 << 20)])
                call = channel.unary_unary(
                    BATCH_METHOD, request_serializer=pb.BatchRetrieveRequest.SerializeToString,
                    response_deserializer=bytes)  # kept as bytes: spliced into our answer
                known = self._calls[path] = (channel, call)
            return known[1]


@dataclass(frozen=True)
class FanOutResult:
    """What the siblings said: the ones reloaded, the ones down, the ones that refused."""

    reloaded: list[str]
    unreachable: list[str]
    refused: list[str]


def is_forwarded(metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
    return any(key == FANOUT_HEADER for key, _ in metadata or ())


def forward_reload(spec: WorkerSpec, request: pb.ReloadRequest, authorization: str | None,
                   timeout: float) -> FanOutResult:
    """Send ``request`` to every sibling at once and sort their answers.

    A sibling that cannot be reached is down (its supervisor restarts it, and a
    fresh worker loads the latest published artifacts anyway), so it is logged,
    not an error; a sibling that refuses the artifacts is an error for the caller.
    """
    siblings = spec.siblings()
    if not siblings:
        return FanOutResult([], [], [])
    metadata = [(FANOUT_HEADER, str(spec.index))]
    if authorization:
        metadata.append(("authorization", authorization))
    with ThreadPoolExecutor(max_workers=len(siblings), thread_name_prefix="recall-fanout") as pool:
        answers = list(pool.map(lambda path: _reload_one(path, request, metadata, timeout),
                                siblings))
    result = FanOutResult([], [], [])
    for path, error in zip(siblings, answers):
        name = path.stem
        if error is None:
            result.reloaded.append(name)
        elif error.code() == grpc.StatusCode.UNAVAILABLE:
            log.warning("reload: %s is not reachable (%s); it loads the latest artifacts when "
                        "it starts", name, error.details())
            result.unreachable.append(name)
        else:
            result.refused.append(f"{name}: {error.code().name}: {error.details()}")
    return result


def _reload_one(path: Path, request: pb.ReloadRequest, metadata: list[tuple[str, str]],
                timeout: float) -> grpc.RpcError | None:
    # A fresh channel, not the batch sharer's cached one: a cached channel to a sibling that
    # was restarting may still be in reconnect back-off and fail fast, and a live sibling
    # skipped here would keep serving old versions. Reloads are rare; the connect is cheap.
    with grpc.insecure_channel(f"unix:{path}") as channel:
        try:
            recall_pb2_grpc.RecallServiceStub(channel).Reload(request, metadata=metadata,
                                                              timeout=timeout)
        except grpc.RpcError as error:
            return error
    return None
