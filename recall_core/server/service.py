"""The ``recall.v1.RecallService`` servicer: proto → domain → engine → proto, nothing more.

Handlers raise :class:`~recall_core.errors.RecallError` subclasses and never
touch status codes; the interceptor translates them in one place
(:mod:`recall_core.server.errors`). Every handler works on one snapshot taken
at its start, so a reload in the middle of a request cannot mix versions.

Time budgets: the sources of a request get the client's remaining deadline
minus a reserve for merging and answering (at most ``source_timeout``). A
source still running when its budget ends is reported TIMED_OUT and the
answer degrades; when every source failed because the deadline ran out the
status is DEADLINE_EXCEEDED, otherwise UNAVAILABLE.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from recall_core.engine import DEADLINE, RetrieveResult
from recall_core.errors import AllSourcesFailedError, NotTrainedError
from recall_core.merge import MergedList
from recall_core.server import convert
from recall_core.server.batcher import Coalescer, Slot
from recall_core.server.convert import Limits, Query
from recall_core.server.errors import (
    DeadlineError,
    InvalidRequestError,
    PermissionDeniedError,
    ReloadRefusedError,
    UnauthenticatedError,
)
from recall_core.server.interceptors import annotate, current_request_id
from recall_core.server.metrics import ServerMetrics
from recall_core.server.peers import BatchSharer, WorkerSpec, forward_reload, is_forwarded
from recall_core.server.state import SERVING, ServedSource, ServingState, Snapshot
from recall_core.server.wire import SerializedBatch
from recall_protos.v1 import recall_pb2 as pb
from recall_protos.v1 import recall_pb2_grpc

NO_DEADLINE_S = 1e6  # time_remaining() of a call without a deadline is "forever"
SHARE_TIMEOUT_S = 60.0  # a sibling's share of a batch, when the client set no deadline
RELOAD_TIMEOUT_S = 300.0  # a sibling's reload, when the admin call set no deadline
Report = pb.SourceReport
Share = tuple[int, int]  # a batch's users [start, end)
log = logging.getLogger("recall.server")


@dataclass(frozen=True)
class ServiceConfig:
    """What the servicer needs to know beyond the snapshot."""

    limits: Limits = field(default_factory=Limits)
    source_timeout: float = 1.0
    """Seconds the sources get at most (also when the client sets no deadline)."""
    deadline_reserve: float = 0.002
    """Seconds kept back from the client's deadline for merging and answering."""
    admin_token: str | None = None
    max_coalesce: int = 32
    """Most concurrent Retrieves answered by one engine call (1 = no coalescing)."""
    worker: WorkerSpec | None = None
    """Set in a worker of ``recall serve --processes N``: Reloads are forwarded to its siblings."""
    share_batches_from: int = 16
    """In a worker: a BatchRetrieve of at least this many users is split evenly over it and
    its siblings, all computing at once (0 = never split)."""
    share_slots: int = 4
    """Most handler threads waiting on siblings' shares at once: the others stay free to answer
    the siblings' own shares, so two workers sharing with each other never wait on each other."""


class RecallServicer(recall_pb2_grpc.RecallServiceServicer):
    """Answers the four RPCs from the current :class:`Snapshot`."""

    def __init__(self, state: ServingState, metrics: ServerMetrics,
                 config: ServiceConfig | None = None) -> None:
        self.state = state
        self.metrics = metrics
        self.config = config or ServiceConfig()
        self.coalescer = Coalescer(self.config.max_coalesce)
        worker = self.config.worker
        self.sharer = (BatchSharer(worker, self.config.share_batches_from,
                                   self.config.share_slots) if worker is not None else None)
        self._answering = 0  # Retrieve and BatchRetrieve calls in progress in this process
        self._answering_lock = threading.Lock()

    # ---- RPCs -----------------------------------------------------------------------------
    def Retrieve(self, request: pb.RetrieveRequest,
                 context: grpc.ServicerContext) -> pb.RetrieveResponse:
        with self._answering_one(), self.state.use() as snapshot:
            query = convert.parse_request(request, snapshot, self.config.limits)
            budget = self._budget(context)
            if self.config.max_coalesce > 1:
                merged, reports = self._coalesced(snapshot, query, budget)
            else:
                result, reports = self._run(snapshot, [query], budget)
                merged = result.merged.lists[0]
            response = pb.RetrieveResponse()
            self._fill(response, merged, query, reports, snapshot)
        annotate(k=query.k, candidates=_count(response), known_user=query.user >= 0,
                 unknown_history_items=query.unknown_items)
        return response

    def BatchRetrieve(self, request: pb.BatchRetrieveRequest,
                      context: grpc.ServicerContext) -> pb.BatchRetrieveResponse:
        limits = self.config.limits
        if not request.requests:
            raise InvalidRequestError("empty batch: give at least one request")
        if len(request.requests) > limits.max_batch:
            raise InvalidRequestError(f"batch has {len(request.requests)} requests (at most "
                                      f"{limits.max_batch})")
        with self._answering_one(), self.state.use() as snapshot:
            queries = [_parse_item(r, i, snapshot, limits) for i, r in enumerate(request.requests)]
            (start, end), pending = self._share(request, len(queries), context)
            try:
                # Written as bytes: the columnar answers go out as encoded, never parsed back.
                answer = SerializedBatch()
                candidates = self._answer_into(answer, snapshot, queries[start:end], context)
                for (start, end), future in pending:
                    try:
                        answer.add_serialized(future.result(), end - start)
                    except grpc.RpcError as error:  # the sibling is down or late: answer here
                        log.info("batch share %d-%d answered here (sibling: %s)", start, end,
                                 error.code().name)
                        candidates += self._answer_into(answer, snapshot, queries[start:end],
                                                        context)
            finally:
                if pending and self.sharer is not None:
                    self.sharer.release()
        annotate(batch=len(queries), candidates=candidates, shared=len(pending))
        return answer  # type: ignore[return-value] - serialises like the message

    def ListSources(self, request: pb.ListSourcesRequest,
                    context: grpc.ServicerContext) -> pb.ListSourcesResponse:
        with self.state.use() as snapshot:
            return pb.ListSourcesResponse(
                sources=[source_info(s) for s in snapshot.sources.values()])

    def Reload(self, request: pb.ReloadRequest,
               context: grpc.ServicerContext) -> pb.ReloadResponse:
        self._require_admin(context)
        try:
            snapshot, reloaded = self.state.reload(list(request.sources) or None)
        except Exception:
            self.metrics.reloads.labels("refused").inc()
            raise
        self.metrics.reloads.labels("ok").inc()
        annotate(reloaded=reloaded, generation=snapshot.generation)
        worker = self.config.worker
        if worker is not None and not is_forwarded(context.invocation_metadata()):
            self._forward_reload(worker, request, context)
        return pb.ReloadResponse(sources=[source_info(s) for s in snapshot.sources.values()],
                                 reloaded=reloaded)

    # ---- retrieval --------------------------------------------------------------------------
    def _answer_into(self, answer: SerializedBatch, snapshot: Snapshot, queries: list[Query],
                     context: grpc.ServicerContext) -> int:
        """Answer ``queries`` here and append them to ``answer``; returns the candidates."""
        headers = [pb.RetrieveResponse() for _ in queries]
        columns, counts = self._answer(snapshot, queries, headers, context)
        for header, encoded in zip(headers, columns):
            answer.add(header, encoded)
        return sum(counts)

    @contextmanager
    def _answering_one(self) -> Iterator[None]:
        with self._answering_lock:
            self._answering += 1
        try:
            yield
        finally:
            with self._answering_lock:
                self._answering -= 1

    def _share(self, request: pb.BatchRetrieveRequest, size: int,
               context: grpc.ServicerContext) -> tuple[Share, list[tuple[Share, Any]]]:
        """This worker's part of a batch, and the sibling workers' parts, already sent.

        Only a worker answering nothing else shares: when calls overlap, every process
        has work of its own, and a share would only add its transfer to a busy sibling.
        """
        sharer = self.sharer
        if (sharer is None or is_forwarded(context.invocation_metadata())
                or self._answering > 1):
            return (0, size), []
        (mine, *theirs), siblings = sharer.shares(size)
        if not siblings or not sharer.reserve():  # every sharing slot waits already: answer here
            return (0, size), []
        remaining = _deadline_left(context)
        timeout = SHARE_TIMEOUT_S if remaining is None else remaining
        request_id = current_request_id()
        pending = [((start, end), sharer.send(
            path, pb.BatchRetrieveRequest(requests=request.requests[start:end],
                                          request_id=request_id), timeout))
            for (start, end), path in zip(theirs, siblings)]
        return mine, pending

    def close(self) -> None:
        """Close the channels to sibling workers (if any)."""
        if self.sharer is not None:
            self.sharer.close()

    def _answer(self, snapshot: Snapshot, queries: Sequence[Query],
                responses: Sequence[pb.RetrieveResponse], context: grpc.ServicerContext
                ) -> tuple[list[bytes | None], list[int]]:
        """Fill ``responses`` (in request order) but for their columns; queries sharing
        merge settings form one engine batch, and each batch gets what is left of the
        deadline. Returns each response's serialised ``CandidateColumns`` (None for the
        row layout, filled in place) and its candidate count."""
        groups: dict[convert.GroupKey, list[int]] = defaultdict(list)
        for i, query in enumerate(queries):
            groups[query.key].append(i)
        columns: list[bytes | None] = [None] * len(queries)
        counts = [0] * len(queries)
        for members in groups.values():
            group = [queries[i] for i in members]
            result, reports = self._run(snapshot, group, self._budget(context))
            targets = [responses[i] for i in members]
            detached = convert.fill_responses(targets, result.merged, group, snapshot.catalog)
            for i, response, merged, query, encoded in zip(
                    members, targets, result.merged.lists, group, detached):
                self._finish(response, merged, query, reports)
                columns[i], counts[i] = encoded, len(merged.items)
        return columns, counts

    def _coalesced(self, snapshot: Snapshot, query: Query,
                   budget: float) -> tuple[MergedList, list[Report]]:
        """Answer ``query`` in one engine call with concurrent queries of the same key."""
        def execute(slots: list[Slot], seconds: float) -> None:
            result, reports = self._run(snapshot, [slot.payload for slot in slots], seconds)
            for slot, merged in zip(slots, result.merged.lists):
                slot.answer((merged, reports))

        slot = Slot(query, time.monotonic() + budget)
        return self.coalescer.submit((snapshot.generation, query.key), slot, execute)

    def _run(self, snapshot: Snapshot, group: list[Query],
             budget: float) -> tuple[RetrieveResult, list[Report]]:
        """One engine call for queries sharing a group key."""
        first = group[0]
        if snapshot.engine is None:
            reasons = "; ".join(f"{s.name}: {s.detail}" for s in snapshot.sources.values())
            raise NotTrainedError(f"no source is loaded ({reasons or 'none configured'})")
        started = time.perf_counter()
        try:
            result = snapshot.engine.retrieve(
                convert.query_batch(group), first.k, sources=first.sources,
                weights=dict(first.weights) or None, policy=first.policy, timeout=budget)
        except AllSourcesFailedError as error:
            deadline_bound = budget < 0.9 * self.config.source_timeout  # not the server cap
            if deadline_bound and time.perf_counter() - started >= 0.9 * budget:
                raise DeadlineError(f"the deadline ran out before any source answered ({error})"
                                    ) from None
            raise
        return result, self._reports(snapshot, first.sources, result, budget)

    def _fill(self, response: pb.RetrieveResponse, merged: MergedList, query: Query,
              reports: list[Report], snapshot: Snapshot) -> None:
        convert.fill_response(response, merged, query, snapshot.catalog)
        self._finish(response, merged, query, reports)

    def _finish(self, response: pb.RetrieveResponse, merged: MergedList, query: Query,
                reports: list[Report]) -> None:
        """Per-source reports and metrics of a filled response."""
        response.sources.extend(reports)
        self.metrics.candidates.observe(len(merged.items))
        if merged.fallback_count:
            self.metrics.fallback_filled.inc(merged.fallback_count)
        if query.unknown_items:
            self.metrics.unknown_history_items.inc(query.unknown_items)

    def _budget(self, context: grpc.ServicerContext) -> float:
        """Seconds the sources may take: the client's deadline less a reserve, capped."""
        remaining = _deadline_left(context)
        cap = self.config.source_timeout
        if remaining is None:
            return cap
        budget = remaining - max(self.config.deadline_reserve, 0.1 * remaining)
        if budget <= 0:
            raise DeadlineError(f"the deadline leaves no time for the sources "
                                f"({remaining * 1000:.1f} ms left)")
        return min(budget, cap)

    def _reports(self, snapshot: Snapshot, chosen: tuple[str, ...] | None,
                 result: RetrieveResult, budget: float) -> list[Report]:
        """Per-source status of one engine call (and its metrics)."""
        asked = list(chosen) if chosen else list(snapshot.ready)
        if snapshot.fallback in snapshot.ready and snapshot.fallback not in asked:
            asked.append(snapshot.fallback)  # type: ignore[arg-type]
        reports = []
        for name in asked:
            version = snapshot.sources[name].version
            if name in result.seconds:
                seconds = result.seconds[name]
                reports.append(Report(source=name, status=Report.OK, latency_ms=seconds * 1e3,
                                      artifact_version=version))
                self.metrics.source(name, "ok", seconds)
                continue
            reason = result.failed.get(name, "no answer")
            timed_out = reason == DEADLINE
            reports.append(Report(source=name, status=Report.TIMED_OUT if timed_out
                                  else Report.FAILED, latency_ms=budget * 1e3 if timed_out else 0,
                                  artifact_version=version, detail=reason[:500]))
            self.metrics.source(name, "timed_out" if timed_out else "failed",
                                budget if timed_out else None)
        if not chosen:
            reports.extend(Report(source=s.name, status=Report.NOT_READY, detail=s.detail[:500])
                           for s in snapshot.sources.values() if s.status != SERVING)
        if result.failed:
            annotate(failed=sorted(result.failed))
        return reports

    # ---- admin ------------------------------------------------------------------------------
    def _forward_reload(self, worker: WorkerSpec, request: pb.ReloadRequest,
                        context: grpc.ServicerContext) -> None:
        """Reload the sibling worker processes too; a refusal by any of them is an error."""
        remaining = _deadline_left(context)
        timeout = RELOAD_TIMEOUT_S if remaining is None else remaining
        result = forward_reload(worker, request, _metadata_value(context, "authorization"),
                                timeout)
        annotate(siblings_reloaded=len(result.reloaded), siblings_unreachable=result.unreachable)
        if result.refused:
            raise ReloadRefusedError(
                f"worker-{worker.index} reloaded, but {len(result.refused)} sibling worker(s) "
                f"did not (they keep their old versions): {'; '.join(result.refused)}")

    def _require_admin(self, context: grpc.ServicerContext) -> None:
        """Check the bearer token when one is configured (constant-time comparison)."""
        token = self.config.admin_token
        if not token:
            return
        presented = _metadata_value(context, "authorization") or ""
        if not presented:
            raise UnauthenticatedError("this admin call needs 'authorization: Bearer <token>' "
                                       "metadata")
        scheme, _, value = presented.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                                 token.encode()):
            raise PermissionDeniedError("the admin token is not valid")


def _deadline_left(context: grpc.ServicerContext) -> float | None:
    """Seconds left before the client's deadline; None when the call has none."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining >= NO_DEADLINE_S else remaining


def _metadata_value(context: grpc.ServicerContext, key: str) -> str | None:
    """The last text value of ``key`` in the call's metadata."""
    found = None
    for name, value in context.invocation_metadata() or ():
        if name == key and isinstance(value, str):
            found = value
    return found


def _parse_item(request: pb.RetrieveRequest, index: int, snapshot: Snapshot,
                limits: Limits) -> Query:
    """A batch item; its errors name its position."""
    try:
        return convert.parse_request(request, snapshot, limits)
    except Exception as error:
        error.args = (f"requests[{index}]: {error}",)
        raise


def _count(response: pb.RetrieveResponse) -> int:
    return len(response.candidates) or len(response.columns.item_ids)


def source_info(source: ServedSource) -> pb.SourceInfo:
    """The ``ListSources`` view of one served source."""
    return pb.SourceInfo(name=source.name, kind=source.kind, plugin_package=source.plugin_package,
                         plugin_version=source.plugin_version, artifact_version=source.version,
                         num_items=source.num_items, status=source.status, detail=source.detail)
