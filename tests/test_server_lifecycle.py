"""Server life cycle: reload under load, refused artifacts, health, overload, TLS."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from recall_core.project import Project
from recall_core.server.app import RecallServer, ServerConfig, TlsConfig
from recall_core.server.client import RecallClient, RecallServerError, Retrieved
from recall_protos.v1 import recall_pb2 as pb
from tests.test_server_support import (
    build_project,
    faults,  # noqa: F401 - fixture
    make_test_host,
    publish,
    real_popular_available,
    tiny_dataset,
)

SOURCES = {"popular": ("fakepop", {"tag": "popular"}),
           "alpha": ("fake", {"tag": "alpha"}),
           "beta": ("fake", {"tag": "beta", "offset": 3})}


def start(root: Path, **config: object) -> RecallServer:
    settings = {"port": 0, "workers": 4, "grace": 0.5, "access_log": False, **config}
    config = ServerConfig(**settings)  # type: ignore[arg-type]
    server = RecallServer(root, config, host=make_test_host())
    return server.start()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return build_project(tmp_path / "proj", make_test_host(), SOURCES)


@pytest.fixture
def server(project: Path) -> Iterator[RecallServer]:
    running = start(project)
    running.loaded.wait(10)
    yield running
    running.stop()


def connect(server: RecallServer) -> RecallClient:
    return RecallClient(f"127.0.0.1:{server.port}", timeout=5.0)


def versions(answer: Retrieved | list[pb.SourceInfo]) -> dict[str, str]:
    """Source -> artifact version, from a Retrieve answer or a ListSources list."""
    if isinstance(answer, list):
        return {s.name: s.artifact_version for s in answer}
    return {r.source: r.artifact_version for r in answer.response.sources}


# ---- reload -----------------------------------------------------------------------------------
def test_reloads_under_concurrent_load_fail_no_request(project: Path,
                                                       server: RecallServer) -> None:
    host = make_test_host()
    stop = threading.Event()
    errors: list[str] = []
    seen: set[str] = set()

    def hammer(worker: int) -> int:
        done = 0
        with connect(server) as c:
            while not stop.is_set():
                try:
                    answer = c.retrieve(f"u{(worker * 7 + done) % 40}", k=30)
                    assert len(answer) == 30
                    seen.add(versions(answer)["alpha"])
                except Exception as error:  # noqa: BLE001 - every failure is recorded
                    errors.append(repr(error))
                done += 1
        return done

    with ThreadPoolExecutor(4) as pool, connect(server) as admin:
        counts = [pool.submit(hammer, w) for w in range(4)]
        for round_ in range(5):
            time.sleep(0.1)
            expected = publish(project, host, "alpha")
            response = admin.reload()
            assert list(response.reloaded) == ["alpha"], round_
            assert versions(list(response.sources))["alpha"] == expected
        time.sleep(0.1)
        stop.set()
        total = sum(f.result() for f in counts)
    assert errors == [] and total > 50
    assert len(seen) >= 3, f"requests saw versions {sorted(seen)}"
    with connect(server) as c:
        assert versions(c.retrieve("u1", k=5))["alpha"] == "v0006"


def test_in_flight_requests_finish_on_the_old_snapshot(project: Path, server: RecallServer,
                                                       faults: dict) -> None:
    faults["beta"] = 0.4
    with connect(server) as slow, connect(server) as admin:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(slow.retrieve, "u3", k=20)
            time.sleep(0.1)
            publish(project, make_test_host(), "beta")
            admin.reload()
            old = pending.result()
        assert versions(old)["beta"] == "v0001"
        assert {r.status for r in old.response.sources} == {pb.SourceReport.OK}
        faults.clear()
        assert versions(admin.retrieve("u3", k=20))["beta"] == "v0002"


def test_a_corrupt_artifact_is_refused_and_the_old_version_keeps_serving(
        project: Path, server: RecallServer) -> None:
    new = publish(project, make_test_host(), "alpha")
    model = project / "artifacts" / "alpha" / new / "model" / "order.npy"
    model.write_bytes(model.read_bytes()[:-8] + b"garbage!")
    with connect(server) as c:
        with pytest.raises(RecallServerError) as caught:
            c.reload()
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "corrupt" in caught.value.message and "still serving v0001" in caught.value.message
        assert versions(c.list_sources())["alpha"] == "v0001"
        assert versions(c.retrieve("u2", k=10))["alpha"] == "v0001"
        assert c.health() == "SERVING"
        fixed = publish(project, make_test_host(), "alpha")
        assert list(c.reload().reloaded) == ["alpha"]
        assert versions(c.retrieve("u2", k=10))["alpha"] == fixed


def test_an_unindexed_version_is_refused(project: Path, server: RecallServer) -> None:
    publish(project, make_test_host(), "beta", indexed=False)
    with connect(server) as c:
        with pytest.raises(RecallServerError, match="not indexed") as caught:
            c.reload(["beta"])
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert versions(c.list_sources())["beta"] == "v0001"


def test_a_source_that_loads_but_cannot_answer_is_refused(project: Path, server: RecallServer,
                                                           faults: dict) -> None:
    publish(project, make_test_host(), "alpha")
    faults["alpha"] = "fail"
    with connect(server) as c:
        with pytest.raises(RecallServerError, match="failed a test query") as caught:
            c.reload()
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert versions(c.list_sources())["alpha"] == "v0001"
        faults.clear()
        assert list(c.reload().reloaded) == ["alpha"]


def test_a_new_dataset_needs_retrained_sources(project: Path, server: RecallServer) -> None:
    dataset_path = Project.load(project).dataset_path
    tiny_dataset(seed=1).save(dataset_path)
    with connect(server) as c:
        with pytest.raises(RecallServerError, match="another dataset"):
            c.reload()
        assert versions(c.retrieve("u1", k=5))["alpha"] == "v0001"
        host = make_test_host()
        for name in SOURCES:
            publish(project, host, name)
        assert sorted(c.reload().reloaded) == sorted(SOURCES)
        assert versions(c.retrieve("u1", k=5)) == dict.fromkeys(SOURCES, "v0002")


# ---- health, readiness, overload -----------------------------------------------------------------
def test_health_is_not_serving_while_loading_and_after_shutdown_starts(
        project: Path, faults: dict) -> None:
    faults["load_delay"] = 0.3
    server = start(project, drain=0.5)
    try:
        with connect(server) as c:
            assert c.health() == "NOT_SERVING"
            assert c.health("recall.v1.RecallService") == "NOT_SERVING"
            with pytest.raises(RecallServerError) as caught:
                c.retrieve("u1", k=5)
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE
            c.wait_until_serving(timeout=10)
            assert c.retrieve("u1", k=5)
            stopping = threading.Thread(target=server.stop)
            stopping.start()
            time.sleep(0.1)
            assert c.health() == "NOT_SERVING"  # announced before new RPCs are refused
            stopping.join()
    finally:
        server.stop()


def test_an_untrained_source_is_not_ready_until_trained_and_reloaded(tmp_path: Path) -> None:
    host = make_test_host()
    root = build_project(tmp_path / "partial", host, {**SOURCES, "gamma": ("fake", {})},
                         untrained=("gamma",))
    server = start(root)
    server.loaded.wait(10)
    try:
        with connect(server) as c:
            assert c.health() == "NOT_SERVING"
            gamma = {s.name: s for s in c.list_sources()}["gamma"]
            assert gamma.status == "not_ready" and "not trained" in gamma.detail
            with pytest.raises(RecallServerError) as caught:
                c.retrieve("u1", k=5, sources=["gamma"])
            assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
            answer = c.retrieve("u1", k=5)
            reports = {r.source: r.status for r in answer.response.sources}
            assert reports["gamma"] == pb.SourceReport.NOT_READY and len(answer) == 5
            assert list(c.reload().reloaded) == ["gamma"]  # still untrained: not an error
            publish(root, host, "gamma")
            assert list(c.reload().reloaded) == ["gamma"]
            assert c.health() == "SERVING"
            assert len(c.retrieve("u1", k=5, sources=["gamma"])) == 5
    finally:
        server.stop()


def test_overload_is_resource_exhausted(project: Path, faults: dict) -> None:
    server = start(project, workers=1, max_queue=0)
    server.loaded.wait(10)
    faults["alpha"] = 0.4
    try:
        with connect(server) as a, connect(server) as b, ThreadPoolExecutor(1) as pool:
            busy = pool.submit(a.retrieve, "u1", k=5)
            time.sleep(0.1)
            with pytest.raises(RecallServerError) as caught:
                b.retrieve("u2", k=5)
            assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert len(busy.result()) == 5
    finally:
        server.stop()


# ---- TLS -----------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls(project: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = start(project, tls=TlsConfig(cert, key), host="localhost")
    server.loaded.wait(10)
    try:
        with RecallClient(f"localhost:{server.port}", timeout=5,
                          root_certificates=cert.read_bytes()) as secure:
            assert len(secure.retrieve("u1", k=5)) == 5
        with RecallClient(f"localhost:{server.port}", timeout=2) as plain:
            with pytest.raises(RecallServerError) as caught:
                plain.retrieve("u1", k=5)
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


# ---- the command line ----------------------------------------------------------------------
@pytest.mark.skipif(not real_popular_available(), reason="the popular plugin is not written yet")
def test_recall_serve_runs_until_sigterm(tmp_path: Path) -> None:
    import os
    import re
    import signal
    import sys

    root = build_project(tmp_path / "cli", make_test_host(), {"popular": ("popular", {})})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "RECALL_NO_PLUGIN_COMMANDS": "1"}
    command = [sys.executable, "-m", "recall_cli.app", "-p", str(root), "serve", "--port", "0",
               "--metrics-port", "-1", "--grace", "1", "--no-access-log"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = ""
        while "recall: serving" not in line:  # log lines may come first
            line = process.stderr.readline()
            assert line, "recall serve exited early"
        port = re.search(r":(\d+)", line.split(" on ")[-1])
        assert port, line
        with RecallClient(f"127.0.0.1:{port.group(1)}", timeout=5) as c:
            c.wait_until_serving(timeout=60)
            assert len(c.retrieve("u1", k=5)) == 5
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_warming_answers_the_latest_active_users_once_and_stops_on_a_newer_snapshot(
        project: Path) -> None:
    import threading

    from tests.test_server_support import BATCH_SIZES
    from recall_core.server.warm import Warmer

    BATCH_SIZES.clear()
    running = start(project, warm_users=25)
    try:
        assert running.loaded.wait(10)
        running.warmer.join(10)
        assert running.warmer.warmed == 25
        assert 25 in BATCH_SIZES["alpha"] and 25 in BATCH_SIZES["beta"]  # one warm batch each
        catalog = running.state.current.catalog
        recent = catalog.recent_users(3)  # tiny_dataset: user u's timestamps grow with u
        assert [catalog.raw_user_ids[u] for u in recent] == ["u39", "u38", "u37"]
        BATCH_SIZES.clear()
        stale = Warmer(running.state, users=25, batch=5)
        stale._run(running.state.current.generation - 1, threading.Event())
        assert stale.warmed == 0 and not BATCH_SIZES  # a replaced snapshot is not warmed
        with connect(running) as client:  # and it serves as before
            assert len(client.retrieve("u39", k=10)) == 10
    finally:
        running.stop()
