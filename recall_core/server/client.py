"""``RecallClient``: the Python client of ``recall.v1.RecallService``.

Every call passes a timeout (the client's default unless given), so a stuck
server can never hang a caller. A failed call raises
:class:`RecallServerError` (a :class:`~recall_core.errors.RecallError`, so the
CLI prints it as one line) carrying the status code, the server's message and
its request id. Retrieve asks for the columnar layout by default (cheapest on
both ends); :class:`Retrieved` reads either layout the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from recall_core.errors import RecallError
from recall_protos.v1 import recall_pb2 as pb
from recall_protos.v1 import recall_pb2_grpc

COLUMNS = pb.RetrieveRequest.LAYOUT_COLUMNS
ROWS = pb.RetrieveRequest.LAYOUT_ROWS
HistoryLike = str | tuple[str, int] | tuple[str, int, float] | pb.HistoryEvent
_CHANNEL_OPTIONS = (("grpc.max_receive_message_length", 256 << 20),)  # BatchRetrieve of k=500


class RecallServerError(RecallError):
    """A call failed: ``code`` is the grpc status code, ``request_id`` the server's id."""

    def __init__(self, code: grpc.StatusCode, message: str, request_id: str = "") -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Hit:
    """One source's opinion of one candidate."""

    source: str
    rank: int
    score: float
    group: int = -1


class Retrieved:
    """A Retrieve answer, read the same way whichever layout the server used."""

    def __init__(self, response: pb.RetrieveResponse) -> None:
        self.response = response

    @property
    def item_ids(self) -> list[str]:
        if self.response.candidates:
            return [c.item_id for c in self.response.candidates]
        return list(self.response.columns.item_ids)

    @property
    def scores(self) -> list[float]:
        if self.response.candidates:
            return [c.score for c in self.response.candidates]
        return list(self.response.columns.scores)

    @property
    def provenance(self) -> list[list[Hit]]:
        """Per candidate, every source that returned it."""
        if self.response.candidates:
            return [[Hit(h.source, h.rank, h.score, h.group) for h in c.provenance]
                    for c in self.response.candidates]
        hits: list[list[Hit]] = [[] for _ in self.response.columns.item_ids]
        for column in self.response.columns.sources:
            groups = list(column.groups) or [-1] * len(column.positions)
            for position, rank, score, group in zip(column.positions, column.ranks,
                                                    column.scores, groups):
                hits[position].append(Hit(column.source, rank, score, group))
        return hits

    @property
    def failed(self) -> dict[str, str]:
        """Sources that timed out, failed or were not ready, with why."""
        return {r.source: pb.SourceReport.Status.Name(r.status).lower() + (
            f": {r.detail}" if r.detail else "")
            for r in self.response.sources if r.status != pb.SourceReport.OK}

    def __len__(self) -> int:
        return len(self.response.candidates) or len(self.response.columns.item_ids)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (the shape ``recall query --json`` prints)."""
        r = self.response
        return {
            "k": len(self),
            "candidates": [
                {"rank": i + 1, "item": item, "score": round(score, 6),
                 "sources": [{"source": h.source, "rank": h.rank, "score": round(h.score, 6),
                              "group": h.group} for h in hits]}
                for i, (item, score, hits) in enumerate(zip(self.item_ids, self.scores,
                                                            self.provenance))],
            "fallback_filled": r.fallback_filled, "failed": self.failed,
            "unknown_history_items": r.unknown_history_items, "known_user": r.known_user,
            "request_id": r.request_id,
            "versions": {s.source: s.artifact_version for s in r.sources if s.artifact_version},
        }


def retrieve_request(user_id: str = "", *, history: Iterable[HistoryLike] = (), k: int = 50,
                     sources: Sequence[str] = (), policy: str = "",
                     weights: Mapping[str, float] | None = None, exclude: Sequence[str] = (),
                     request_id: str = "", layout: int = COLUMNS) -> pb.RetrieveRequest:
    """Build a ``RetrieveRequest`` (for :meth:`RecallClient.batch_retrieve` too)."""
    return pb.RetrieveRequest(
        user_id=user_id, history=[_event(h) for h in history], k=k, sources=list(sources),
        merge=pb.MergeOverrides(policy=policy, weights=dict(weights or {})),
        exclude_item_ids=list(exclude), request_id=request_id, layout=layout)


def _event(item: HistoryLike) -> pb.HistoryEvent:
    if isinstance(item, pb.HistoryEvent):
        return item
    if isinstance(item, str):
        return pb.HistoryEvent(item_id=item)
    return pb.HistoryEvent(item_id=item[0], timestamp=item[1],
                           feedback=item[2] if len(item) > 2 else 0.0)  # type: ignore[misc]


class RecallClient:
    """Channels to one server; use as a context manager or call :meth:`close`.

    ``connections > 1`` opens that many TCP connections and spreads the retrieval
    calls over them in turn: a server of several processes sharing one port
    (``recall serve --processes N``) gets each *connection* on one process, so a
    client with one connection keeps one process busy however many there are.
    """

    def __init__(self, target: str, *, timeout: float = 1.0, admin_token: str | None = None,
                 root_certificates: bytes | None = None, tls: bool = False,
                 options: Sequence[tuple[str, Any]] = (), connections: int = 1) -> None:
        if connections < 1:
            raise ValueError(f"connections must be at least 1 (got {connections})")
        self.target = target
        self.timeout = timeout
        self.admin_token = admin_token
        channel_options = [*_CHANNEL_OPTIONS, *options]
        if connections > 1:  # channels alike would share one connection through the global pool
            channel_options.append(("grpc.use_local_subchannel_pool", 1))
        credentials = (grpc.ssl_channel_credentials(root_certificates=root_certificates)
                       if tls or root_certificates is not None else None)
        self.channels = [grpc.secure_channel(target, credentials, options=channel_options)
                         if credentials is not None
                         else grpc.insecure_channel(target, options=channel_options)
                         for _ in range(connections)]
        self.channel = self.channels[0]
        self._stubs = [recall_pb2_grpc.RecallServiceStub(c) for c in self.channels]
        self.stub = self._stubs[0]
        self._turn = itertools.count()  # next() is atomic under the GIL: safe across threads
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def __enter__(self) -> RecallClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for channel in self.channels:
            channel.close()

    # ---- calls --------------------------------------------------------------------------------
    def retrieve(self, user_id: str = "", *, timeout: float | None = None,
                 **fields: Any) -> Retrieved:
        """Merged candidates for one user; ``fields`` as in :func:`retrieve_request`."""
        request = retrieve_request(user_id, **fields)
        return Retrieved(self._call(self._next_stub().Retrieve, request, timeout))

    def batch_retrieve(self, requests: Sequence[pb.RetrieveRequest], *,
                       timeout: float | None = None) -> list[Retrieved]:
        """Many users in one call (build the requests with :func:`retrieve_request`)."""
        response = self._call(self._next_stub().BatchRetrieve,
                              pb.BatchRetrieveRequest(requests=list(requests)), timeout)
        return [Retrieved(r) for r in response.responses]

    def list_sources(self, *, timeout: float | None = None) -> list[pb.SourceInfo]:
        return list(self._call(self.stub.ListSources, pb.ListSourcesRequest(), timeout).sources)

    def reload(self, names: Sequence[str] = (), *,
               timeout: float | None = 120.0) -> pb.ReloadResponse:
        """Admin: load newly published artifacts (all sources, or ``names``) and swap them in."""
        metadata = ((("authorization", f"Bearer {self.admin_token}"),) if self.admin_token
                    else None)
        return self._call(self.stub.Reload, pb.ReloadRequest(sources=list(names)), timeout,
                          metadata)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """``SERVING``, ``NOT_SERVING`` or ``SERVICE_UNKNOWN``."""
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service),
                              timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_serving(self, timeout: float = 30.0) -> None:
        """Block until health says SERVING (RecallServerError DEADLINE_EXCEEDED otherwise)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                if self.health(timeout=max(0.05, min(1.0, left))) == "SERVING":
                    return
            except RecallServerError:
                pass
            if left <= 0:
                raise RecallServerError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                        f"{self.target} was not SERVING within {timeout:.0f} s")
            time.sleep(min(0.05, max(left, 0)))

    def _next_stub(self) -> recall_pb2_grpc.RecallServiceStub:
        return self._stubs[next(self._turn) % len(self._stubs)]

    def _call(self, method: Any, request: Any, timeout: float | None,
              metadata: Any = None) -> Any:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout,
                          metadata=metadata)
        except grpc.RpcError as error:
            raise _server_error(error) from None


def _server_error(error: grpc.RpcError) -> RecallServerError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    request_id = ""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:
        status = None
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            request_id = info.metadata.get("request_id", "")
    return RecallServerError(code, message or "", request_id)
