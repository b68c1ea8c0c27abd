"""``recall serve --processes N``: a supervisor and N worker processes on one port.

The supervisor stays light (no torch, no faiss): it checks the port is free
(a taken port is an error, as with one process), holds it with SO_REUSEPORT
so the workers can share it, starts each worker as a fresh interpreter
(multiprocessing "spawn": nothing of the parent's threads or OpenMP state is
inherited), restarts a worker that dies, and on SIGTERM/SIGINT passes the
signal on and waits for every worker's graceful shutdown. Each worker is a
whole :class:`~recall_core.server.app.RecallServer` with its own sources,
health and metrics (on ``metrics_port + index`` when a port is given).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recall_core.errors import ConfigError
from recall_core.server.peers import WorkerSpec

if TYPE_CHECKING:
    from recall_core.server.app import RecallServer, ServerConfig

RESTART_WINDOW_S = 60.0
MAX_RESTARTS_IN_WINDOW = 5  # a worker crashing this often is broken, not unlucky
STARTUP_TIMEOUT_S = 600.0
log = logging.getLogger("recall.server")


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as reported by itself once its port is bound."""

    index: int
    pid: int
    metrics_port: int | None


class WorkerPool:
    """N :class:`RecallServer` processes sharing one port; ``start()`` then ``serve_forever()``."""

    def __init__(self, project_dir: Path, config: ServerConfig, processes: int) -> None:
        if processes < 1:
            raise ConfigError(f"--processes must be at least 1 (got {processes})")
        self.project_dir = Path(project_dir).resolve()
        self.config = config
        self.processes = processes
        self.port = 0
        self.peers_dir: Path | None = None
        self.workers: dict[int, WorkerInfo] = {}
        self._context = multiprocessing.get_context("spawn")
        self._events: Any = self._context.Queue()
        self._children: dict[int, BaseProcess] = {}
        self._crashes: deque[float] = deque()
        self._holder: socket.socket | None = None
        self._stopping = threading.Event()

    def start(self) -> WorkerPool:
        """Reserve the port, start every worker and wait until each has bound it."""
        from recall_core.project import Project

        Project.load(self.project_dir)  # fail fast on a missing or broken recall.toml
        self._holder, self.port = reserve_port(self.config.host, self.config.port)
        self.peers_dir = Path(tempfile.mkdtemp(prefix="recall-peers-"))  # mode 0700
        try:
            for index in range(self.processes):
                self._spawn(index)
            self._await_workers(time.monotonic() + STARTUP_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        return self

    def serve_forever(self) -> None:
        """Supervise until SIGTERM/SIGINT: restart dead workers, then stop them all gracefully."""
        def on_signal(signum: int, _frame: Any) -> None:
            log.info("signal %d: stopping %d workers", signum, len(self._children))
            self._stopping.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not self._stopping.is_set():
                self._drain_events(0.5)
                self._restart_dead()
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def stop(self) -> None:
        """SIGTERM every worker, wait for their graceful shutdown (then kill), clean up."""
        self._stopping.set()
        for child in self._children.values():
            if child.is_alive() and child.pid is not None:
                _signal(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.grace + self.config.drain + 10.0
        for child in self._children.values():
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                log.warning("worker pid %s did not stop in time: killed", child.pid)
                child.kill()
                child.join(5.0)
        self._children.clear()
        if self._holder is not None:
            self._holder.close()
            self._holder = None
        if self.peers_dir is not None:
            shutil.rmtree(self.peers_dir, ignore_errors=True)

    # ---- workers ----------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        assert self.peers_dir is not None
        metrics_port = self.config.metrics_port
        if metrics_port:  # each worker has its own endpoint: scrape base, base+1, ...
            metrics_port += index
        config = replace(self.config, port=self.port, reuse_port=True, metrics_port=metrics_port,
                         worker=WorkerSpec(index, self.peers_dir, self.processes))
        child = self._context.Process(target=run_worker, name=f"recall-worker-{index}",
                                      args=(self.project_dir, config, self._events), daemon=False)
        child.start()
        self._children[index] = child

    def _await_workers(self, deadline: float) -> None:
        while len(self.workers) < self.processes:
            if time.monotonic() > deadline:
                raise ConfigError(f"the workers did not start within {STARTUP_TIMEOUT_S:.0f} s")
            self._next_event(0.5)
            for index, child in self._children.items():
                if index not in self.workers and not child.is_alive() and self._events.empty():
                    raise ConfigError(f"worker-{index} exited with {child.exitcode} while "
                                      "starting (its log is above)")

    def _next_event(self, timeout: float) -> None:
        """Take one worker report, if one comes within ``timeout`` seconds."""
        try:
            kind, index, payload = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        if kind == "failed":
            raise ConfigError(f"worker-{index} could not start: {payload}")
        pid, metrics_port = payload
        self.workers[index] = WorkerInfo(index, pid, metrics_port)

    def _drain_events(self, timeout: float) -> None:
        try:
            self._next_event(timeout)
        except ConfigError as error:  # a restarted worker that failed: the crash limit decides
            log.error("%s", error)

    def _restart_dead(self) -> None:
        for index, child in list(self._children.items()):
            if child.is_alive() or self._stopping.is_set():
                continue
            now = time.monotonic()
            self._crashes.append(now)
            while self._crashes and now - self._crashes[0] > RESTART_WINDOW_S:
                self._crashes.popleft()
            if len(self._crashes) > MAX_RESTARTS_IN_WINDOW:
                log.error("workers died %d times in %.0f s: giving up", len(self._crashes),
                          RESTART_WINDOW_S)
                self._stopping.set()
                return
            log.warning("worker-%d (pid %s) exited with %s: restarting it", index, child.pid,
                        child.exitcode)
            self.workers.pop(index, None)
            self._spawn(index)


def run_worker(project_dir: Path, config: ServerConfig, events: Any) -> None:
    """Entry point of one worker process: serve until SIGTERM/SIGINT, or until orphaned."""
    from recall_core.server.app import RecallServer, configure_logging

    assert config.worker is not None
    index = config.worker.index
    supervisor = os.getppid()
    configure_logging(config.access_log, f"worker-{index}")
    try:
        server = RecallServer(project_dir, config).start()
    except Exception as error:  # noqa: BLE001 - reported to the supervisor in one line
        events.put(("failed", index, str(error) or type(error).__name__))
        raise SystemExit(1) from None
    events.put(("up", index, (os.getpid(), server.metrics_port)))
    threading.Thread(target=_stop_when_orphaned, args=(server, supervisor), daemon=True,
                     name="recall-orphan-watch").start()
    server.serve_forever()


def _stop_when_orphaned(server: RecallServer, supervisor: int) -> None:
    """A supervisor killed outright cannot stop its workers: they notice and stop themselves,
    so no orphan keeps holding the port."""
    while os.getppid() == supervisor:
        time.sleep(1.0)
    logging.getLogger("recall.server").warning("the supervisor is gone: shutting down")
    server.stop()


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Check ``host:port`` is free and hold it (SO_REUSEPORT) for the workers; 0 = any port.

    The first bind, without SO_REUSEPORT, fails on any holder of the port, including
    another ``--processes`` server; the held socket never listens, so it takes no
    connections away from the workers.
    """
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR ignores connections in TIME_WAIT, never a socket listening on the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bare, port))
        except OSError as error:
            raise ConfigError(f"cannot listen on {host}:{port} ({error.strerror})") from None
        port = probe.getsockname()[1]
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((bare, port))
    except OSError as error:
        holder.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({error.strerror})") from None
    return holder, port


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
