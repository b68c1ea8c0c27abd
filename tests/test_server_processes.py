"""``recall serve --processes N``: workers share the port, a Reload reaches all, signals stop all.

These run the real CLI in a subprocess (the workers are fresh interpreters, so
they load the real plugins: ``popular`` and ``i2i`` on the tiny dataset).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from recall_core.host import make_host
from recall_core.server.app import RecallServer, ServerConfig
from recall_core.server.client import ROWS, RecallClient, RecallServerError, retrieve_request
from recall_core.server.peers import WorkerSpec
from tests.test_server_support import build_project, make_test_host, publish

TOKEN = "s3cret-token"
READY = re.compile(r"on 127\.0\.0\.1:(\d+) with (\d+) worker processes \(pids ([\d, ]+); "
                   r"peer sockets in (\S+)\)")
SOURCES = {"popular": ("popular", {}), "itemcf": ("i2i", {})}


@dataclass
class Served:
    """A running ``recall serve --processes`` and what it printed."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    port: int = 0
    pids: list[int] = field(default_factory=list)
    peers_dir: Path = Path()

    def log(self) -> str:
        return "".join(self.lines)

    def worker(self, index: int, **options: object) -> RecallClient:
        """A client of one worker, through its private socket."""
        return RecallClient(f"unix:{self.peers_dir / f'worker-{index}.sock'}", timeout=10.0,
                            **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_project(tmp_path_factory.mktemp("processes") / "proj", make_host(), SOURCES)


def recall_serve(project: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "RECALL_ADMIN_TOKEN": TOKEN, "RECALL_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "recall_cli.app", "-p", str(project), "serve",
         "--metrics-port", "-1", "--no-access-log", "--grace", "0.5", *args],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)


def start(project: Path, processes: int = 2) -> Served:
    served = Served(recall_serve(project, "--port", "0", "--processes", str(processes)))
    ready = threading.Event()

    def read() -> None:
        assert served.process.stderr is not None
        for line in served.process.stderr:
            served.lines.append(line)
            found = READY.search(line)
            if found:
                served.port = int(found[1])
                served.pids = [int(p) for p in found[3].split(", ")]
                served.peers_dir = Path(found[4])
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    assert ready.wait(120) and served.port, served.log()
    for index in range(processes):
        wait_serving(served, index)
    return served


def wait_serving(served: Served, index: int, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with served.worker(index) as client:
                if len(client.retrieve("u1", k=5)) == 5:
                    return
        except (RecallServerError, grpc.RpcError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"worker-{index} never answered:\n{served.log()}")


def stop(served: Served) -> int:
    served.process.send_signal(signal.SIGTERM)
    return served.process.wait(60)


@pytest.fixture
def served(project: Path) -> Iterator[Served]:
    running = start(project)
    yield running
    if running.process.poll() is None:
        stop(running)


def versions(client: RecallClient) -> dict[str, str]:
    return {s.name: s.artifact_version for s in client.list_sources()}


def test_workers_share_the_port_and_each_answers(served: Served) -> None:
    assert len(set(served.pids)) == 2
    with RecallClient(f"127.0.0.1:{served.port}", timeout=10.0) as client:
        assert len(client.retrieve("u3", k=20)) == 20
    answers = []
    for index in (0, 1):
        with served.worker(index) as client:
            answers.append(client.retrieve("u3", k=20).item_ids)
            assert set(versions(client)) == {"popular", "itemcf"}
    assert answers[0] == answers[1]  # same artifacts, same answer, whichever worker


def test_a_reload_reaching_one_worker_reloads_every_worker(project: Path, served: Served) -> None:
    with served.worker(1) as client:
        before = versions(client)["popular"]
    new = publish(project, make_host(), "popular")
    assert new != before
    with served.worker(0) as client, pytest.raises(RecallServerError) as refused:
        client.reload([])  # no token: refused, and nothing forwarded
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    with served.worker(1) as client:
        assert versions(client)["popular"] == before
    with served.worker(0, admin_token=TOKEN) as client:
        response = client.reload([], timeout=60.0)
    assert "popular" in response.reloaded
    for index in (0, 1):
        with served.worker(index) as client:
            assert versions(client)["popular"] == new


def test_a_dead_worker_is_restarted(served: Served) -> None:
    os.kill(served.pids[1], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while "restarting it" not in served.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "worker-1" in served.log() and "restarting it" in served.log()
    wait_serving(served, 1)
    with served.worker(0) as client:
        assert len(client.retrieve("u2", k=5)) == 5


def test_sigterm_stops_every_worker_and_cleans_up(served: Served) -> None:
    assert stop(served) == 0
    assert not any(_running(pid) for pid in served.pids)
    assert not served.peers_dir.exists()


def test_workers_stop_when_the_supervisor_is_killed(served: Served) -> None:
    served.process.kill()
    served.process.wait(10)
    deadline = time.monotonic() + 30
    alive = list(served.pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _running(pid)]
        time.sleep(0.2)
    assert not alive, f"orphaned workers {alive} kept running"


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit is reaped by whoever adopted it, maybe never)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_taken_port_is_one_line_and_a_non_zero_exit(project: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = recall_serve(project, "--port", str(taken.getsockname()[1]),
                               "--processes", "2")
        _, err = process.communicate(timeout=60)
    assert process.returncode != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: cannot listen on 127.0.0.1:"), err
    assert "Traceback" not in err


def test_a_worker_that_cannot_start_is_one_line_and_a_non_zero_exit(project: Path,
                                                                    tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    process = recall_serve(project, "--port", "0", "--processes", "2",
                           "--tls-cert", str(missing), "--tls-key", str(missing))
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: worker-") and "could not start" in lines[-1], err
    assert "missing.pem" in lines[-1] and "Traceback" not in err


# ---- the fan-out itself, in-process (workers of fake sources, a shared peers directory) ------
FAKES = {"popular": ("fakepop", {"tag": "popular"}), "alpha": ("fake", {"tag": "alpha"})}


def fake_workers(roots: list[Path], peers: Path, count: int = 0,
                 **config: object) -> list[RecallServer]:
    """One in-process worker per project root, siblings through ``peers``; ``count`` workers
    in all (default: one per root; more stand for workers that are down)."""
    peers.mkdir(mode=0o700, exist_ok=True)
    settings = {"port": 0, "workers": 2, "grace": 0.2, "access_log": False, **config}
    count = count or len(roots)
    return [RecallServer(root, ServerConfig(**settings, worker=WorkerSpec(index, peers, count)),
                         host=make_test_host()).start(block_until_loaded=True)
            for index, root in enumerate(roots)]  # type: ignore[arg-type]
def test_a_sibling_that_refuses_the_new_artifacts_makes_the_reload_an_error(
        tmp_path: Path) -> None:
    first = build_project(tmp_path / "a", make_test_host(), FAKES)
    second = tmp_path / "b"
    shutil.copytree(first, second)
    peers = tmp_path / "peers"
    peers.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as dead:  # the socket of a worker that died
        dead.bind(str(peers / "worker-2.sock"))
    servers = fake_workers([first, second], peers, count=3)
    try:
        new = publish(first, make_test_host(), "alpha")
        assert publish(second, make_test_host(), "alpha") == new
        model = second / "artifacts" / "alpha" / new / "model" / "order.npy"
        model.write_bytes(model.read_bytes()[:-8] + b"garbage!")
        with RecallClient(f"127.0.0.1:{servers[0].port}", timeout=10.0) as client:
            with pytest.raises(RecallServerError) as caught:
                client.reload()
            assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "worker-1: FAILED_PRECONDITION" in caught.value.message
            assert "corrupt" in caught.value.message
            assert versions(client)["alpha"] == new  # the worker asked did reload
        with RecallClient(f"127.0.0.1:{servers[1].port}", timeout=10.0) as client:
            assert versions(client)["alpha"] == "v0001"  # the refusing sibling kept serving
        fixed = publish(second, make_test_host(), "alpha")
        with RecallClient(f"127.0.0.1:{servers[0].port}", timeout=10.0) as client:
            client.reload()  # the dead worker-2 is logged, not an error
        with RecallClient(f"127.0.0.1:{servers[1].port}", timeout=10.0) as client:
            assert versions(client)["alpha"] == fixed
    finally:
        for server in servers:
            server.stop()


def test_a_client_with_several_connections_uses_each_in_turn(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = build_project(tmp_path / "p", make_test_host(),
                         {"popular": ("fakepop", {"tag": "popular"})})
    server = RecallServer(root, ServerConfig(port=0, workers=2, grace=0.2),
                          host=make_test_host()).start(block_until_loaded=True)
    caplog.set_level(logging.INFO, logger="recall.access")
    try:
        with RecallClient(f"127.0.0.1:{server.port}", timeout=10.0, connections=3) as client:
            for _ in range(6):
                assert len(client.retrieve("u1", k=5)) == 5
    finally:
        server.stop()
    peers = [json.loads(r.getMessage())["peer"] for r in caplog.records
             if r.name == "recall.access" and '"Retrieve"' in r.getMessage()]
    assert len(peers) == 6 and len(set(peers)) == 3  # three connections, two calls each
    assert peers[:3] == peers[3:]


def test_a_large_batch_is_shared_with_the_siblings_and_answered_whole(tmp_path: Path) -> None:
    root = build_project(tmp_path / "p", make_test_host(), FAKES)
    servers = fake_workers([root] * 3, tmp_path / "peers", share_batches_from=8)

    def batches_answered(server: RecallServer) -> float:
        return server.metrics.registry.get_sample_value(
            "recall_requests_total", {"method": "BatchRetrieve", "code": "OK"}) or 0.0

    requests = [retrieve_request(f"u{u}", k=7 + u % 3, request_id=f"r{u}",
                                 layout=ROWS if u == 4 else 0) for u in range(20)]
    try:
        with RecallClient(f"127.0.0.1:{servers[0].port}", timeout=10.0) as client:
            alone = [client.retrieve(f"u{u}", k=7 + u % 3).item_ids for u in range(20)]
            small = client.batch_retrieve(requests[:7])  # under share_batches_from: not shared
            assert [batches_answered(s) for s in servers] == [1, 0, 0]
            shared = client.batch_retrieve(requests)
            assert [batches_answered(s) for s in servers] == [2, 1, 1]
            assert [a.item_ids for a in small] == alone[:7]
            assert [a.item_ids for a in shared] == alone
            assert [a.response.request_id for a in shared] == [f"r{u}" for u in range(20)]
            assert shared[4].response.candidates, "each item keeps its own layout"
            sharer = servers[0]._servicer.sharer  # noqa: SLF001 - its one sharing slot, taken
            assert sharer is not None and sharer.reserve()
            assert [a.item_ids for a in client.batch_retrieve(requests)] == alone
            assert [batches_answered(s) for s in servers] == [3, 1, 1]  # answered alone
            sharer.release()
            with servers[0]._servicer._answering_one():  # noqa: SLF001 - another call here
                assert [a.item_ids for a in client.batch_retrieve(requests)] == alone
            assert [batches_answered(s) for s in servers] == [4, 1, 1]  # busy: not shared
            servers[2].stop()  # a sibling gone: its share is answered here
            assert [a.item_ids for a in client.batch_retrieve(requests)] == alone
            assert [batches_answered(s) for s in servers] == [5, 2, 1]
    finally:
        for server in servers:
            server.stop()


def test_workers_sharing_with_each_other_under_load_never_wait_on_each_other(
        tmp_path: Path) -> None:
    root = build_project(tmp_path / "p", make_test_host(), FAKES)
    servers = fake_workers([root] * 2, tmp_path / "peers", share_batches_from=8, max_queue=64)
    requests = [retrieve_request(f"u{u}", k=10) for u in range(24)]

    def batch(turn: int) -> int:
        port = servers[turn % 2].port
        with RecallClient(f"127.0.0.1:{port}", timeout=20.0) as client:
            return len(client.batch_retrieve(requests))

    try:  # every handler thread of both workers busy with batches that share with the other
        with ThreadPoolExecutor(max_workers=12) as pool:
            assert list(pool.map(batch, range(48))) == [24] * 48
    finally:
        for server in servers:
            server.stop()
