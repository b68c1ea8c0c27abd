"""The gRPC server end to end on a loopback port: answers, status codes, degradation, metrics.

Reload, health and overload live in ``test_server_lifecycle.py``; random and
malformed requests in ``test_server_fuzz.py``.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from recall_core.server.app import RecallServer, ServerConfig
from recall_core.server.client import (
    COLUMNS,
    ROWS,
    RecallClient,
    RecallServerError,
    retrieve_request,
)
from recall_protos.v1 import recall_pb2 as pb
from tests.test_server_support import (
    FAULTS,
    build_project,
    faults,  # noqa: F401 - fixture
    make_test_host,
    real_popular_available,
    tiny_dataset,
)

TOKEN = "s3cret-token"
SOURCES = {"popular": ("fakepop", {"tag": "popular"}),
           "alpha": ("fake", {"tag": "alpha"}),
           "beta": ("fake", {"tag": "beta", "offset": 3})}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecallServer]:
    host = make_test_host()
    root = build_project(tmp_path_factory.mktemp("server") / "main", host, SOURCES)
    config = ServerConfig(port=0, metrics_port=0, workers=4, max_queue=16, source_timeout=0.5,
                          admin_token=TOKEN, grace=0.5, access_log=False)
    running = RecallServer(root, config, host=host).start(block_until_loaded=True)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: RecallServer) -> Iterator[RecallClient]:
    with RecallClient(f"127.0.0.1:{server.port}", timeout=5.0, admin_token=TOKEN) as c:
        yield c


def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(RecallServerError) as caught:
        call()
    assert "Traceback" not in caught.value.message and "File \"" not in caught.value.message
    return caught.value.code


def history_of(user: str) -> list[str]:
    dataset = tiny_dataset()
    return [str(dataset.item_ids[i]) for i in dataset.sequence(dataset.user_index(user))]


# ---- answers ------------------------------------------------------------------------------------
def test_known_user_gets_merged_candidates_with_provenance(client: RecallClient) -> None:
    answer = client.retrieve("u3", k=25, request_id="req-1")
    assert len(answer) == 25 and len(set(answer.item_ids)) == 25
    assert not set(answer.item_ids) & set(history_of("u3")), "the history is excluded"
    assert answer.response.known_user and answer.response.request_id == "req-1"
    assert all(hits for hits in answer.provenance)
    found = {h.source for hits in answer.provenance for h in hits}
    assert {"alpha", "beta"} <= found
    alpha_groups = [h.group for hits in answer.provenance for h in hits if h.source == "alpha"]
    assert alpha_groups and all(0 <= g < 3 for g in alpha_groups)
    reports = {r.source: r for r in answer.response.sources}
    assert set(reports) == set(SOURCES)
    assert all(r.status == pb.SourceReport.OK and r.artifact_version == "v0001"
               for r in reports.values())


def test_rows_and_columns_layouts_carry_the_same_answer(client: RecallClient) -> None:
    rows = client.retrieve("u5", k=40, layout=ROWS)
    columns = client.retrieve("u5", k=40, layout=COLUMNS)
    assert rows.response.candidates and not rows.response.columns.item_ids
    assert columns.response.columns.item_ids and not columns.response.candidates
    assert rows.item_ids == columns.item_ids
    assert rows.scores == pytest.approx(columns.scores)
    assert rows.provenance == columns.provenance
    # 40 > what alpha and beta offer (20 each, overlapping): popular fills, credited once.
    assert rows.response.fallback_filled > 0
    for hits in rows.provenance:
        names = [h.source for h in hits]
        assert len(names) == len(set(names))


def test_unknown_user_without_history_gets_popularity(client: RecallClient) -> None:
    answer = client.retrieve("nobody", k=10)
    assert not answer.response.known_user and len(answer) == 10
    assert {h.source for hits in answer.provenance for h in hits} == {"popular"}
    assert [r.source for r in answer.response.sources] == ["popular"]


def test_explicit_history_serves_anonymous_users_and_counts_unknown_items(
        client: RecallClient) -> None:
    answer = client.retrieve(history=["i4", "no-such-item", ("i9", 1700000000, 0.5), "zzz"],
                             k=15)
    assert answer.response.unknown_history_items == 2
    assert not {"i4", "i9"} & set(answer.item_ids)
    assert "alpha" in {h.source for hits in answer.provenance for h in hits}
    stored = client.retrieve("u1", history=["i4", "i9"], k=15)  # a given history replaces it
    assert stored.item_ids == answer.item_ids and stored.response.known_user


def test_exclusions_and_source_subsets_and_overrides(client: RecallClient) -> None:
    base = client.retrieve("u2", k=10, sources=["alpha"])
    assert {h.source for hits in base.provenance for h in hits} <= {"alpha", "popular"}
    excluded = client.retrieve("u2", k=10, sources=["alpha"],
                               exclude=base.item_ids[:3] + ["not-an-item"])
    assert not set(base.item_ids[:3]) & set(excluded.item_ids)
    for policy in ("rrf", "weighted", "quota"):
        answer = client.retrieve("u2", k=10, policy=policy, weights={"beta": 2.0, "alpha": 0.5})
        assert len(answer) == 10


def test_batch_retrieve_answers_like_single_calls(client: RecallClient) -> None:
    requests = [retrieve_request(f"u{u}", k=12, request_id=f"b{u}") for u in range(6)]
    requests += [retrieve_request("ghost-user", k=5),  # fallback-only group
                 retrieve_request("u7", k=30, layout=ROWS)]
    answers = client.batch_retrieve(requests)
    assert [len(a) for a in answers] == [12] * 6 + [5, 30]
    for u in range(6):
        single = client.retrieve(f"u{u}", k=12)
        assert answers[u].item_ids == single.item_ids
        assert answers[u].response.request_id == f"b{u}"
    assert answers[-1].response.candidates, "each item keeps its own layout"
    assert code_of(lambda: client.batch_retrieve([])) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(RecallServerError, match=r"requests\[1\]: k must be"):
        client.batch_retrieve([retrieve_request("u1", k=5), retrieve_request("u1", k=0)])


def test_list_sources(client: RecallClient) -> None:
    sources = {s.name: s for s in client.list_sources()}
    assert set(sources) == set(SOURCES)
    alpha = sources["alpha"]
    assert (alpha.kind, alpha.status, alpha.artifact_version) == ("fake", "serving", "v0001")
    assert alpha.num_items == 60 and alpha.plugin_package == "local"


# ---- status codes -------------------------------------------------------------------------
@pytest.mark.parametrize(("fields", "code"), [
    ({"user_id": "u1", "k": 0}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"user_id": "u1", "k": 10_001}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"user_id": "u1", "k": -5}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"k": 10}, grpc.StatusCode.INVALID_ARGUMENT),  # neither user nor history
    ({"user_id": "u1\x00", "k": 10}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"user_id": "x" * 300, "k": 10}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"history": [""], "k": 10}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"history": [("i1", 0, 7.0)], "k": 10}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"user_id": "u1", "k": 10, "policy": "magic"}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"user_id": "u1", "k": 10, "weights": {"alpha": -1.0}}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"user_id": "u1", "k": 10, "weights": {"alpha": float("nan")}},
     grpc.StatusCode.INVALID_ARGUMENT),
    ({"user_id": "u1", "k": 10, "sources": ["nope"]}, grpc.StatusCode.NOT_FOUND),
    ({"user_id": "u1", "k": 10, "weights": {"nope": 1.0}}, grpc.StatusCode.NOT_FOUND),
])
def test_bad_requests_get_precise_codes(client: RecallClient, fields: dict,
                                        code: grpc.StatusCode) -> None:
    user = fields.pop("user_id", "")
    assert code_of(lambda: client.retrieve(user, **fields)) == code


def test_a_message_that_does_not_parse_is_invalid_argument(server: RecallServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        raw = channel.unary_unary("/recall.v1.RecallService/Retrieve")
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=5)  # a string field longer than the message
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_errors_carry_the_request_id(client: RecallClient) -> None:
    with pytest.raises(RecallServerError) as caught:
        client.retrieve("u1", k=0, request_id="trace-me")
    assert caught.value.request_id == "trace-me"


# ---- degradation ---------------------------------------------------------------------------------
def test_a_failing_source_degrades_the_answer(client: RecallClient, faults: dict) -> None:
    faults["alpha"] = "fail"
    answer = client.retrieve("u4", k=30)
    assert len(answer) == 30
    reports = {r.source: r for r in answer.response.sources}
    assert reports["alpha"].status == pb.SourceReport.FAILED
    assert "injected failure" in reports["alpha"].detail
    assert reports["beta"].status == pb.SourceReport.OK
    assert "alpha" not in {h.source for hits in answer.provenance for h in hits}
    assert answer.failed.keys() == {"alpha"}


def test_a_slow_source_times_out_within_the_clients_deadline(client: RecallClient,
                                                             faults: dict) -> None:
    import time

    faults["beta"] = 2.0
    started = time.perf_counter()
    answer = client.retrieve("u4", k=30, timeout=0.4)  # the server's own cap is 0.5 s
    assert time.perf_counter() - started < 0.4
    reports = {r.source: r for r in answer.response.sources}
    assert reports["beta"].status == pb.SourceReport.TIMED_OUT
    assert 200 < reports["beta"].latency_ms < 400, "the budget came from the deadline"
    assert reports["alpha"].status == pb.SourceReport.OK and len(answer) == 30


def test_every_source_failing_is_unavailable(client: RecallClient, faults: dict) -> None:
    faults.update(alpha="fail", beta="fail", popular="fail")
    assert code_of(lambda: client.retrieve("u4", k=10)) == grpc.StatusCode.UNAVAILABLE


def test_a_deadline_that_runs_out_is_deadline_exceeded(client: RecallClient,
                                                        faults: dict) -> None:
    faults.update(alpha=0.5, beta=0.5, popular=0.5)
    assert code_of(lambda: client.retrieve("u4", k=10, timeout=0.1)) == \
        grpc.StatusCode.DEADLINE_EXCEEDED
    assert code_of(lambda: client.retrieve("u4", k=10, timeout=0.001)) == \
        grpc.StatusCode.DEADLINE_EXCEEDED


# ---- admin, metrics, reflection ---------------------------------------------------------------
def test_reload_needs_the_admin_token(server: RecallServer, client: RecallClient) -> None:
    target = f"127.0.0.1:{server.port}"
    with RecallClient(target, timeout=5) as anonymous:
        assert code_of(anonymous.reload) == grpc.StatusCode.UNAUTHENTICATED
    with RecallClient(target, timeout=5, admin_token="wrong") as intruder:
        assert code_of(intruder.reload) == grpc.StatusCode.PERMISSION_DENIED
    response = client.reload()
    assert list(response.reloaded) == []  # nothing new was published
    assert code_of(lambda: client.reload(["nope"])) == grpc.StatusCode.NOT_FOUND


def test_metrics_endpoint_counts_requests_and_source_latency(server: RecallServer,
                                                             client: RecallClient) -> None:
    client.retrieve("u1", k=5)
    with pytest.raises(RecallServerError):
        client.retrieve("u1", k=0)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                timeout=5) as page:
        text = page.read().decode()
    assert 'recall_requests_total{code="OK",method="Retrieve"}' in text
    assert 'recall_requests_total{code="INVALID_ARGUMENT",method="Retrieve"}' in text
    assert 'recall_source_seconds_bucket{le="0.005",source="alpha"}' in text
    assert 'recall_source_serving{source="alpha",version="v0001"} 1.0' in text
    assert "recall_candidates_returned_count" in text


def test_reflection_lists_the_service(server: RecallServer) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    names = {s.name for s in answer.list_services_response.service}
    assert {"recall.v1.RecallService", "grpc.health.v1.Health"} <= names


def test_the_cli_reload_command_talks_to_the_server(server: RecallServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from recall_cli.app import create_app

    monkeypatch.setenv("RECALL_ADMIN_TOKEN", TOKEN)
    result = CliRunner().invoke(create_app(load_plugin_commands=False),
                                ["reload", "--server", f"127.0.0.1:{server.port}", "alpha"])
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output and "reloaded" in result.output
    monkeypatch.setenv("RECALL_ADMIN_TOKEN", "wrong")
    result = CliRunner().invoke(create_app(load_plugin_commands=False),
                                ["reload", "--server", f"127.0.0.1:{server.port}"])
    assert result.exit_code == 1 and "PERMISSION_DENIED" in result.output


def test_access_log_lines_are_json_with_the_request_id(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    import json
    import logging

    host = make_test_host()
    root = build_project(tmp_path / "logged", host, SOURCES)
    running = RecallServer(root, ServerConfig(port=0), host=host).start(block_until_loaded=True)
    try:
        with caplog.at_level(logging.INFO, logger="recall.access"), \
                RecallClient(f"127.0.0.1:{running.port}", timeout=5) as c:
            c.retrieve("u1", k=7, request_id="log-me")
            with pytest.raises(RecallServerError):
                c.retrieve("u1", k=7, sources=["nope"], request_id="log-me-too")
    finally:
        running.stop()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "recall.access"]
    by_id = {line["request_id"]: line for line in lines}
    assert by_id["log-me"]["code"] == "OK" and by_id["log-me"]["candidates"] == 7
    assert by_id["log-me"]["method"] == "Retrieve" and by_id["log-me"]["ms"] > 0
    assert by_id["log-me-too"]["code"] == "NOT_FOUND"


@pytest.mark.skipif(not real_popular_available(), reason="the popular plugin is not written yet")
def test_the_real_popular_source_is_the_fallback(tmp_path: Path) -> None:
    host = make_test_host()
    root = build_project(tmp_path / "pop", host, {"popular": ("popular", {}),
                                                  "alpha": ("fake", {"tag": "alpha"})})
    running = RecallServer(root, ServerConfig(port=0, access_log=False), host=host)
    running.start(block_until_loaded=True)
    try:
        with RecallClient(f"127.0.0.1:{running.port}", timeout=5) as c:
            cold = c.retrieve("stranger", k=10)
            assert len(cold) == 10 and {r.source for r in cold.response.sources} == {"popular"}
            # 60 items less u1's 12 leaves 48; ``fake`` gives at most 20, popular fills the rest
            warm = c.retrieve("u1", k=40)
            assert len(warm) == 40 and warm.response.fallback_filled > 0
    finally:
        running.stop()


assert FAULTS is not None  # the switches the ``faults`` fixture clears


# ---- the CLI as a client --------------------------------------------------------------------
def test_recall_query_with_server_asks_the_running_server(server: RecallServer,
                                                          client: RecallClient) -> None:
    from tests.test_cli import run

    printed = json.loads(run(None, "query", "u3", "--k", "12", "--json",
                             "--server", f"127.0.0.1:{server.port}"))
    direct = client.retrieve("u3", k=12)
    assert [c["item"] for c in printed["candidates"]] == direct.item_ids
    assert printed["versions"] and set(printed["versions"]) <= set(SOURCES)
    assert all(c["sources"] for c in printed["candidates"])
    table = run(None, "query", "u3", "--k", "5", "--server", f"127.0.0.1:{server.port}")
    assert direct.item_ids[0] in table


def test_recall_query_with_server_reports_errors_in_one_line(server: RecallServer) -> None:
    from tests.test_cli import run

    target = f"127.0.0.1:{server.port}"
    output = run(None, "query", "u3", "--source", "nope", "--server", target, code=1)
    assert "nope" in output
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    run(None, "query", "u3", "--timeout", "0.5", "--server", f"127.0.0.1:{free}", code=1)
