"""Prometheus metrics of one server, in a registry of its own.

A registry per server (not the global default) lets tests run several
servers in one process and lets an embedding application mount ours where
it wants. :func:`start_metrics_http` exposes it on a port.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0)
CANDIDATE_BUCKETS = (0, 10, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


@dataclass
class ServerMetrics:
    """Every metric the server records; children are cached (``labels()`` is not free)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("recall_requests", "RPCs handled, by method and status code.",
                                ["method", "code"], registry=r)
        self.request_seconds = Histogram("recall_request_seconds", "RPC latency in the server.",
                                         ["method"], buckets=LATENCY_BUCKETS, registry=r)
        self.inflight = Gauge("recall_inflight_requests", "RPCs being handled now.", registry=r)
        self.source_seconds = Histogram("recall_source_seconds",
                                        "Latency of one source's answer to one engine call.",
                                        ["source"], buckets=LATENCY_BUCKETS, registry=r)
        self.source_outcomes = Counter("recall_source_outcomes",
                                       "Source answers by outcome (ok, timed_out, failed).",
                                       ["source", "outcome"], registry=r)
        self.candidates = Histogram("recall_candidates_returned", "Candidates per answered query.",
                                    buckets=CANDIDATE_BUCKETS, registry=r)
        self.fallback_filled = Counter("recall_fallback_filled",
                                       "Candidates that only the fallback source provided.",
                                       registry=r)
        self.unknown_history_items = Counter("recall_unknown_history_items",
                                             "History item ids the catalogue did not know.",
                                             registry=r)
        self.reloads = Counter("recall_reloads", "Reloads by result (ok, refused).", ["result"],
                               registry=r)
        self.source_serving = Gauge("recall_source_serving",
                                    "1 for every source serving, by artifact version.",
                                    ["source", "version"], registry=r)
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, method: str, code: str, seconds: float) -> None:
        self._child(self.requests, method, code).inc()
        self._child(self.request_seconds, method).observe(seconds)

    def source(self, name: str, outcome: str, seconds: float | None) -> None:
        self._child(self.source_outcomes, name, outcome).inc()
        if seconds is not None:
            self._child(self.source_seconds, name).observe(seconds)

    def served(self, versions: dict[str, str]) -> None:
        """Replace the serving gauge with ``source -> version`` of the new snapshot."""
        self.source_serving.clear()
        for name, version in versions.items():
            self.source_serving.labels(name, version).set(1)


def start_metrics_http(metrics: ServerMetrics, port: int, addr: str) -> tuple[Any, int]:
    """Serve ``/metrics`` on ``addr:port`` (0 = any free port); returns (server, bound port)."""
    httpd, _thread = start_http_server(port, addr=addr, registry=metrics.registry)
    return httpd, int(httpd.server_port)
