"""Random and malformed requests: the server never crashes and never answers UNKNOWN/INTERNAL."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recall_core.server.app import RecallServer, ServerConfig
from recall_protos.v1 import recall_pb2 as pb
from tests.test_server_support import build_project, make_test_host

SOURCES = {"popular": ("fakepop", {"tag": "popular"}),
           "alpha": ("fake", {"tag": "alpha"}),
           "beta": ("fake", {"tag": "beta", "offset": 3})}
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

ids = st.one_of(st.sampled_from(["u1", "u7", "i3", "i59", "", "nobody", "alpha", "popular"]),
                st.text(max_size=300))
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
events = st.builds(pb.HistoryEvent, item_id=ids,
                   timestamp=st.integers(-(2**63), 2**63 - 1), feedback=floats)
requests = st.builds(
    pb.RetrieveRequest,
    user_id=ids,
    history=st.lists(events, max_size=30),
    k=st.one_of(st.integers(-5, 12_000), st.integers(-(2**31), 2**31 - 1)),
    sources=st.lists(st.one_of(st.sampled_from(list(SOURCES)), ids), max_size=4),
    merge=st.builds(pb.MergeOverrides,
                    policy=st.one_of(st.sampled_from(["", "rrf", "quota", "weighted"]), ids),
                    weights=st.dictionaries(st.one_of(st.sampled_from(list(SOURCES)), ids),
                                            floats, max_size=3)),
    exclude_item_ids=st.lists(ids, max_size=10),
    request_id=ids,
    layout=st.sampled_from([0, 1, 7]),
)


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    host = make_test_host()
    root = build_project(tmp_path_factory.mktemp("fuzz") / "proj", host, SOURCES)
    server = RecallServer(root, ServerConfig(port=0, workers=2, access_log=False), host=host)
    server.start(block_until_loaded=True)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as open_channel:
        yield open_channel
    server.stop()


def call(channel: grpc.Channel, method: str, payload: bytes) -> grpc.StatusCode:
    raw = channel.unary_unary(f"/recall.v1.RecallService/{method}")
    try:
        raw(payload, timeout=10)
    except grpc.RpcError as error:
        assert "Traceback" not in (error.details() or "")
        return error.code()
    return grpc.StatusCode.OK


@FUZZ
@given(request=requests)
def test_random_retrieve_requests(channel: grpc.Channel, request: pb.RetrieveRequest) -> None:
    code = call(channel, "Retrieve", request.SerializeToString())
    assert code not in FORBIDDEN, request
    if 1 <= request.k <= 10_000 and code == grpc.StatusCode.OK:
        assert call(channel, "ListSources", b"") == grpc.StatusCode.OK


@FUZZ
@given(batch=st.lists(requests, max_size=5))
def test_random_batches(channel: grpc.Channel, batch: list[pb.RetrieveRequest]) -> None:
    payload = pb.BatchRetrieveRequest(requests=batch).SerializeToString()
    assert call(channel, "BatchRetrieve", payload) not in FORBIDDEN


@FUZZ
@given(method=st.sampled_from(["Retrieve", "BatchRetrieve", "ListSources", "Reload"]),
       payload=st.binary(max_size=200))
def test_random_bytes(channel: grpc.Channel, method: str, payload: bytes) -> None:
    assert call(channel, method, payload) not in FORBIDDEN
    assert call(channel, "ListSources", b"") == grpc.StatusCode.OK  # still alive
