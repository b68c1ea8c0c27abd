"""Build, start and stop the gRPC server of a project.

The maintenance services are set up apart from the application servicer:
standard health checking (``grpc.health.v1``; NOT_SERVING until every
configured source is loaded, and again from the moment a graceful shutdown
starts) and server reflection, so ``grpcurl`` works without the proto.

Concurrency: a sync grpc server whose handler threads (``workers``) run the
requests; the engine fans each request out to its sources in a pool of its
own. At most ``workers + max_queue`` RPCs are admitted at once; grpc answers
RESOURCE_EXHAUSTED beyond that, so an overload is refused at once instead of
queueing without bound. Sources start loading after the port is bound, so
orchestrators see NOT_SERVING (not a refused connection) while they load.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from recall_core.host import PluginHost
from recall_core.native import limit_torch_threads, retain_freed_memory
from recall_core.server.convert import Limits
from recall_core.server.interceptors import ServerInterceptor
from recall_core.server.metrics import ServerMetrics, start_metrics_http
from recall_core.server.peers import WorkerSpec
from recall_core.server.service import RecallServicer, ServiceConfig
from recall_core.server.state import ServingState, Snapshot
from recall_core.server.warm import Warmer, compile_kernels
from recall_protos.v1 import recall_pb2, recall_pb2_grpc

ADMIN_TOKEN_ENV = "RECALL_ADMIN_TOKEN"
SERVICE_NAME = recall_pb2.DESCRIPTOR.services_by_name["RecallService"].full_name
log = logging.getLogger("recall.server")


def configure_logging(access_log: bool, name: str = "") -> None:
    """The server's log on stderr (``name``, e.g. ``worker-1``, on every line when given),
    the access log on or off, and faiss's import chatter left out."""
    prefix = f"{name} " if name else ""
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s %(levelname)s {prefix}%(name)s %(message)s")
    logging.getLogger("recall.access").disabled = not access_log
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


@dataclass(frozen=True)
class TlsConfig:
    """PEM files; with ``client_ca`` set, clients must present a certificate it signed."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``recall serve`` can set."""

    host: str = "127.0.0.1"
    port: int = 50051
    """0 = any free port (see :attr:`RecallServer.port`)."""
    metrics_port: int | None = None
    """Prometheus ``/metrics`` port; None = no metrics endpoint, 0 = any free port."""
    workers: int = 8
    max_queue: int = 32
    limits: Limits = field(default_factory=Limits)
    source_timeout: float = 1.0
    deadline_reserve: float = 0.002
    admin_token: str | None = None
    """Bearer token for Reload; None = ``$RECALL_ADMIN_TOKEN`` (unset = no token needed)."""
    tls: TlsConfig | None = None
    grace: float = 5.0
    """Seconds in-flight RPCs get to finish on shutdown."""
    drain: float = 0.0
    """Seconds between flipping health to NOT_SERVING and refusing new RPCs on shutdown
    (time for load balancers to notice; 0 in tests, a few seconds behind a balancer)."""
    access_log: bool = True
    max_coalesce: int = 32
    """Most concurrent Retrieves answered by one engine call (1 = each on its own)."""
    torch_threads: int = 1
    """Intra-op threads of each torch call while serving (sources run concurrently already;
    see :func:`recall_core.native.limit_torch_threads`)."""
    warm_users: int = 0
    """After every load/reload, answer up to this many stored users (latest active first) in
    the background so the neural sources' user-vector caches are warm (0 = off)."""
    reuse_port: bool = False
    """Share the port with sibling processes (SO_REUSEPORT). Only ``recall serve --processes``
    sets it; otherwise a taken port is an error, never silently shared."""
    worker: WorkerSpec | None = None
    """Set in a worker of ``recall serve --processes N`` (see :mod:`recall_core.server.peers`)."""
    share_batches_from: int = 16
    """With sibling workers: a BatchRetrieve of at least this many users is split over all the
    workers, computed at once (0 = never split)."""


class RecallServer:
    """One project served over gRPC: ``start()``, then ``stop()`` or ``serve_forever()``."""

    def __init__(self, project_dir: Path, config: ServerConfig | None = None,
                 host: PluginHost | None = None) -> None:
        from recall_core.host import make_host

        self.config = config or ServerConfig()
        self.metrics = ServerMetrics()
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self.state = ServingState(Path(project_dir), host or make_host(),
                                  engine_workers=self.config.workers, on_change=self._on_change)
        self.warmer = Warmer(self.state, self.config.warm_users, self.config.limits)
        self.port = 0
        self.metrics_port: int | None = None
        self.loaded = threading.Event()
        self.load_error: BaseException | None = None
        self._server: grpc.Server | None = None
        self._servicer: RecallServicer | None = None
        self._metrics_httpd: Any = None
        self._stopped = threading.Event()

    @property
    def admin_token(self) -> str | None:
        return self.config.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None

    def start(self, block_until_loaded: bool = False) -> RecallServer:
        """Bind the port, start serving (NOT_SERVING) and load the sources in the background."""
        from recall_core.project import Project

        Project.load(self.state.project_dir)  # fail fast on a missing or broken recall.toml
        retain_freed_memory()  # a server owns its process: batches reuse freed heap
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self._server = self._build_server()
        address = f"{self.config.host}:{self.config.port}"
        self.port = self._bind(address)
        if self.config.worker is not None:
            self._bind_peer_socket(self.config.worker)
        self._server.start()
        if self.config.metrics_port is not None:
            self._metrics_httpd, self.metrics_port = start_metrics_http(
                self.metrics, self.config.metrics_port, self.config.host)
        if not self.admin_token and self.config.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("no admin token (set %s): anyone who reaches %s can call Reload",
                        ADMIN_TOKEN_ENV, address)
        loader = threading.Thread(target=self._load, name="recall-load", daemon=True)
        loader.start()
        if block_until_loaded:
            self.loaded.wait()
        return self

    def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING at once, finish in-flight RPCs, then close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        if self.config.drain > 0:
            time.sleep(self.config.drain)
        if self._server is not None:
            self._server.stop(self.config.grace if grace is None else grace).wait()
        if self._servicer is not None:
            self._servicer.close()
        if self._metrics_httpd is not None:
            self._metrics_httpd.shutdown()
            self._metrics_httpd.server_close()
        self.warmer.stop()
        self.state.close()

    def serve_forever(self) -> None:
        """Block until SIGTERM or SIGINT (or :meth:`stop`), then shut down gracefully."""
        requested = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("signal %d: shutting down (grace %.1f s)", signum, self.config.grace)
            requested.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not requested.wait(0.5) and not self._stopped.is_set():
                pass
            self.stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # ---- internals ----------------------------------------------------------------------------
    def _build_server(self) -> grpc.Server:
        config = self.config
        servicer = RecallServicer(self.state, self.metrics, ServiceConfig(
            config.limits, config.source_timeout, config.deadline_reserve, self.admin_token,
            config.max_coalesce, config.worker, config.share_batches_from,
            share_slots=max(1, config.workers // 2)))
        self._servicer = servicer
        server = grpc.server(
            ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="recall-rpc"),
            interceptors=[ServerInterceptor(self.metrics, config.access_log)],
            maximum_concurrent_rpcs=config.workers + config.max_queue,
            options=[("grpc.so_reuseport", int(config.reuse_port))])
        recall_pb2_grpc.add_RecallServiceServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        return server

    def _bind(self, address: str) -> int:
        assert self._server is not None
        tls = self.config.tls
        if tls is None:
            port = self._server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(tls.key.read_bytes(), tls.cert.read_bytes())],
                root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
                require_client_auth=tls.client_ca is not None)
            port = self._server.add_secure_port(address, credentials)
        if port == 0:
            from recall_core.errors import ConfigError

            raise ConfigError(f"cannot listen on {address} (in use, or not a local address)")
        return port

    def _bind_peer_socket(self, worker: WorkerSpec) -> None:
        """Listen on the worker's private Unix socket too (its siblings forward Reloads there)."""
        assert self._server is not None
        worker.socket.unlink(missing_ok=True)  # left by the worker this one replaces
        if self._server.add_insecure_port(worker.address) == 0:
            from recall_core.errors import ConfigError

            raise ConfigError(f"cannot listen on {worker.address}")

    def _load(self) -> None:
        try:
            compile_kernels()
            snapshot = self.state.load()
            limit_torch_threads(self.config.torch_threads)  # torch is loaded by now (if used)
            if not snapshot.all_serving:
                log.warning("not every source is loaded: health stays NOT_SERVING until a "
                            "successful Reload")
        except BaseException as error:  # noqa: BLE001 - reported through load_error and the log
            self.load_error = error
            log.error("loading the sources failed: %s", error)
        finally:
            self.loaded.set()

    def _on_change(self, snapshot: Snapshot) -> None:
        self.metrics.served({name: s.version for name, s in snapshot.sources.items()
                             if s.status == "serving"})
        status = (health_pb2.HealthCheckResponse.SERVING if snapshot.all_serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        if not self._stopped.is_set():
            self._set_health(status)
            self.warmer.start(snapshot)

    def _set_health(self, status: int) -> None:
        self.health.set("", status)
        self.health.set(SERVICE_NAME, status)
