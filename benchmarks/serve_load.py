"""Benchmark: `recall serve` under load on loopback (Retrieve, BatchRetrieve, reloads).

Starts its own server on the project (``recall serve`` in a subprocess) unless
``--target HOST:PORT`` names a running one, then runs five bounded phases, each
stopped by a request count and a time limit, whichever comes first:

0. one client, sequential empty calls (``grpc.health.v1`` ``Check``): the floor that
   loopback gRPC sets on this machine, for reading the other figures against;
1. one client, sequential ``Retrieve`` (k = 500): p50/p95/p99 latency;
2. ``--clients`` concurrent clients (processes): QPS and p99;
3. ``BatchRetrieve`` of ``--batch`` users: one client, sequential (users/s, p50/p95/p99),
   then ``--clients`` concurrent clients (users/s and p99), as for ``Retrieve``;
4. the concurrent load again while the server is made to ``Reload`` every source
   ``--reloads`` times (a forced reload: each swaps in freshly loaded artifacts).

Latency is measured in the client around the call (serialisation included), with the
shipped :class:`~recall_core.server.client.RecallClient` (columnar layout, 1 s timeout).
Any failed call counts in ``errors``.

    python benchmarks/serve_load.py --project DIR [--json OUT] [--target HOST:PORT]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SERVER_LOG = Path(os.environ.get("TMPDIR", "/tmp")) / "recall_serve_load_server.log"


def main() -> None:
    args = _parse()
    load_before = [round(x, 2) for x in os.getloadavg()]
    speed_before, handoff_before = _speed_probe(), _handoff_probe()
    users, sources = _project_users(args.project), _configured(args.project)
    server, target, token = _server(args)
    try:
        from recall_core.server.client import RecallClient

        with RecallClient(target, timeout=120, admin_token=token) as admin:
            admin.wait_until_serving(timeout=args.startup_timeout)
            if server is not None and args.processes > 1:
                _wait_for_every_worker(args.startup_timeout)
            served = [{"name": s.name, "kind": s.kind, "version": s.artifact_version,
                       "status": s.status} for s in admin.list_sources()]
        warm_seconds = (_wait_for_warm_up(args.startup_timeout, args.processes)
                        if args.warm_users and server is not None else None)
        result = _run_phases(args, target, token, users)
        result["warm_up_seconds"] = None if warm_seconds is None else round(warm_seconds, 1)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    result.update(config=_config(args, target, sources, served),
                  machine={**_machine(), "loadavg_before": load_before,
                           "speed_probe_ms": {"before": speed_before, "after": _speed_probe()},
                           "handoff_probe_us": {"before": handoff_before,
                                                "after": _handoff_probe()}})
    _write(result, args.json)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=RESULTS / "serve_load.json")
    parser.add_argument("--target", help="HOST:PORT of a running server (default: start one)")
    parser.add_argument("--token", help="admin token of --target (else $RECALL_ADMIN_TOKEN)")
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--no-user-cache", action="store_true",
                        help="start the server with RECALL_USER_CACHE=0 (every request encodes)")
    parser.add_argument("--warm-users", type=int, default=0,
                        help="start the server with --warm-users N (user-vector caches warmed "
                             "for the N latest active users after each load/reload)")
    parser.add_argument("--sources", default="",
                        help="comma-separated subset every request asks for (default: all)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--requests", type=int, default=3000, help="cap per phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="time limit per phase")
    parser.add_argument("--reloads", type=int, default=5)
    parser.add_argument("--workers", type=int, default=8, help="server handler threads")
    parser.add_argument("--processes", type=int, default=0,
                        help="server worker processes (recall serve --processes; 0 = its "
                             "default, one per usable core)")
    parser.add_argument("--connections", type=int, default=1,
                        help="TCP connections per client, used in turn (RecallClient)")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    args = parser.parse_args()
    if not args.processes:  # resolved here so that the results name the count
        from recall_core.native import usable_cpus

        args.processes = usable_cpus()
    return args


# ---- the server --------------------------------------------------------------------------------
def _server(args: argparse.Namespace) -> tuple[subprocess.Popen | None, str, str | None]:
    if args.target:
        return None, args.target, args.token or os.environ.get("RECALL_ADMIN_TOKEN")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "RECALL_ADMIN_TOKEN": token}
    if args.no_user_cache:
        env["RECALL_USER_CACHE"] = "0"
    command = [sys.executable, "-m", "recall_cli.app", "-p", str(args.project), "serve",
               "--port", str(port), "--metrics-port", "-1", "--no-access-log",
               "--workers", str(args.workers), "--warm-users", str(args.warm_users),
               "--processes", str(args.processes)]
    log = open(SERVER_LOG, "w")  # noqa: SIM115 - the server's stderr, read for the warm-up
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    return process, f"127.0.0.1:{port}", token


def _wait_for_warm_up(timeout: float, processes: int) -> float:
    """Seconds until every server process logged that its first cache warm-up ended."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        if SERVER_LOG.read_text().count("cache warm-up") >= processes:
            return time.perf_counter() - began
        time.sleep(0.2)
    raise SystemExit(f"the server did not finish warming in {timeout:.0f} s (see {SERVER_LOG})")


def _wait_for_every_worker(timeout: float) -> None:
    """The port answers from whichever worker a connection lands on: ask each one directly."""
    began = time.perf_counter()
    found = None
    while found is None and time.perf_counter() - began < timeout:
        found = re.search(r"peer sockets in (\S+)\)", SERVER_LOG.read_text())
        time.sleep(0.2)
    if found is None:
        raise SystemExit(f"the server did not list its workers (see {SERVER_LOG})")
    from recall_core.server.client import RecallClient

    for peer in sorted(Path(found[1]).glob("worker-*.sock")):
        with RecallClient(f"unix:{peer}", timeout=10) as worker:
            worker.wait_until_serving(timeout=max(1.0, timeout - (time.perf_counter() - began)))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---- phases ------------------------------------------------------------------------------------
def _run_phases(args: argparse.Namespace, target: str, token: str | None,
                users: list[str]) -> dict[str, Any]:
    plan = {"target": target, "k": args.k, "users": users, "batch": 0,
            "connections": args.connections,
            "sources": [name for name in args.sources.split(",") if name]}
    _worker({**plan, "requests": 200, "seconds": 5.0, "seed": 99})  # warm-up
    empty = _empty_calls(target, count=2000, seconds=args.seconds)
    single = _worker({**plan, "requests": args.requests, "seconds": args.seconds, "seed": 1})
    context = multiprocessing.get_context("spawn")  # never fork a process that holds a channel
    with context.Pool(args.clients) as pool:
        many = _concurrent(pool, plan, args, reloads=0, token=token)
        batch_plan = {**plan, "batch": args.batch, "requests": max(1, args.requests // 10),
                      "seconds": args.seconds, "seed": 2}
        batches = _worker(batch_plan)
        many_batches = _concurrent(pool, batch_plan, args, reloads=0, token=token)
        reloading = _concurrent(pool, plan, args, reloads=args.reloads, token=token)
    errors = sum(part["errors"] for part in (single, many, batches, many_batches, reloading))
    return {
        "empty_call_1_client": {**_percentiles(empty), "requests": len(empty)},
        "retrieve_1_client": {**_percentiles(single["latencies"]),
                              "requests": len(single["latencies"])},
        "retrieve_8_clients": {"qps": round(many["done"] / many["seconds"], 1),
                               **_percentiles(many["latencies"]), "requests": many["done"],
                               "clients": args.clients},
        "batch_retrieve_64": {"users_per_s": round(
            args.batch * len(batches["latencies"]) / batches["seconds"], 1),
            **_percentiles(batches["latencies"]), "batches": len(batches["latencies"]),
            "batch": args.batch},
        "batch_retrieve_64_8_clients": {"users_per_s": round(
            args.batch * many_batches["done"] / many_batches["seconds"], 1),
            **_percentiles(many_batches["latencies"]), "batches": many_batches["done"],
            "batch": args.batch, "clients": args.clients},
        "reload_under_load": {"reloads": reloading["reloads"], "qps": round(
            reloading["done"] / reloading["seconds"], 1), "requests": reloading["done"],
            "failed_requests": reloading["errors"], "reload_ms": reloading["reload_ms"]},
        "errors": errors,
        "error_samples": [*single["samples"], *many["samples"], *batches["samples"],
                          *many_batches["samples"], *reloading["samples"]][:10],
    }


def _concurrent(pool: Any, plan: dict[str, Any], args: argparse.Namespace, reloads: int,
                token: str | None) -> dict[str, Any]:
    """``args.clients`` workers for ``args.seconds``; meanwhile ``reloads`` forced reloads."""
    start = time.time() + 1.0  # every worker starts at once, after its channel is up
    plans = [{**plan, "requests": args.requests, "seconds": args.seconds, "seed": 10 + i,
              "start_at": start} for i in range(args.clients)]
    pending = pool.map_async(_worker, plans)
    reload_ms = _reload_during(plan["target"], token, reloads, start, args.seconds)
    parts = pending.get(timeout=args.seconds * 3 + 60)
    latencies = [x for part in parts for x in part["latencies"]]
    return {"latencies": latencies, "done": len(latencies),
            "seconds": max(part["seconds"] for part in parts),
            "errors": sum(part["errors"] for part in parts), "reloads": len(reload_ms),
            "reload_ms": reload_ms, "samples": [s for part in parts for s in part["samples"]]}


def _reload_during(target: str, token: str | None, count: int, start: float,
                   seconds: float) -> list[float]:
    if count == 0:
        return []
    from recall_core.server.client import RecallClient

    durations = []
    with RecallClient(target, timeout=120, admin_token=token) as admin:
        names = [s.name for s in admin.list_sources()]
        for i in range(count):
            time.sleep(max(0.0, start + seconds * (i + 0.5) / count - time.time()))
            began = time.perf_counter()
            admin.reload(names)  # named: reloaded even though nothing new was published
            durations.append(round((time.perf_counter() - began) * 1000, 1))
    return durations


def _worker(plan: dict[str, Any]) -> dict[str, Any]:
    """One client: sequential calls until the count or the time limit; latencies in ms."""
    import random

    from recall_core.server.client import RecallClient, retrieve_request

    rng = random.Random(plan["seed"])
    asked = plan.get("sources") or ()
    latencies: list[float] = []
    errors, samples = 0, []
    with RecallClient(plan["target"], timeout=1.0,
                      connections=plan.get("connections", 1)) as client:
        client.wait_until_serving(timeout=60)
        time.sleep(max(0.0, plan.get("start_at", 0.0) - time.time()))
        began = time.perf_counter()
        stop = began + plan["seconds"]
        while len(latencies) + errors < plan["requests"] and time.perf_counter() < stop:
            users = [rng.choice(plan["users"]) for _ in range(max(1, plan["batch"]))]
            t0 = time.perf_counter()
            try:
                if plan["batch"]:
                    client.batch_retrieve([retrieve_request(u, k=plan["k"], sources=asked)
                                           for u in users], timeout=10.0)
                else:
                    client.retrieve(users[0], k=plan["k"], sources=asked)
            except Exception as error:  # noqa: BLE001 - a benchmark counts every failure
                errors += 1
                samples.append(str(error)[:200])
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
        seconds = time.perf_counter() - began
    return {"latencies": latencies, "errors": errors, "samples": samples[:3],
            "seconds": seconds}


def _empty_calls(target: str, count: int, seconds: float) -> list[float]:
    """Latencies (ms) of sequential health checks: gRPC's own cost, no recall work."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    latencies: list[float] = []
    with grpc.insecure_channel(target) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        request = health_pb2.HealthCheckRequest()
        for _ in range(100):
            check(request, timeout=1.0)  # connection and first-call costs
        stop = time.perf_counter() + seconds
        while len(latencies) < count and time.perf_counter() < stop:
            t0 = time.perf_counter()
            check(request, timeout=1.0)
            latencies.append((time.perf_counter() - t0) * 1000)
    return latencies


def _percentiles(latencies: list[float]) -> dict[str, float]:
    import numpy as np

    if not latencies:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    p50, p95, p99 = np.percentile(np.array(latencies), [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3),
            "p99_ms": round(float(p99), 3)}


# ---- context and output --------------------------------------------------------------------------
def _project_users(project_dir: Path) -> list[str]:
    from recall_core.data.dataset import Dataset
    from recall_core.project import Project

    return Dataset.load(Project.load(project_dir).dataset_path).user_ids.tolist()


def _configured(project_dir: Path) -> dict[str, str]:
    from recall_core.project import Project

    return {name: s.kind for name, s in Project.load(project_dir).settings.sources.items()}


def _config(args: argparse.Namespace, target: str, sources: dict[str, str],
            served: list[dict[str, str]]) -> dict[str, Any]:
    return {"project": str(args.project), "target": target, "own_server": not args.target,
            "k": args.k, "clients": args.clients, "batch": args.batch,
            "asked_sources": args.sources or "all", "user_cache": not args.no_user_cache,
            "warm_users": args.warm_users,
            "requests_cap": args.requests, "seconds_per_phase": args.seconds,
            "server_workers": args.workers, "server_processes": args.processes,
            "client_connections": args.connections, "sources": sources, "served": served,
            "layout": "columns", "client_timeout_s": 1.0, "serving_runtime": _runtime()}


def _runtime() -> str:
    """How the server runs the encoders: ``$RECALL_SERVING_RUNTIME`` as the server reads it."""
    from recall_core.training.inference import serving_runtime

    return serving_runtime()


def _machine() -> dict[str, Any]:
    """Where it ran; the load average says how much other work shared the CPUs."""
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def _speed_probe() -> float:
    """Milliseconds of a fixed single-threaded workload (numpy selection and a Python loop,
    like a source's top-k and the glue around it), median of five: this VM's speed drifts
    by a quarter within minutes, so a run's figures are read against the probe's."""
    import numpy as np

    values = np.random.default_rng(0).standard_normal((64, 3615)).astype(np.float32)
    times = []
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(10):
            np.partition(values, 3115, axis=1)
        sum(i * i for i in range(100_000))
        times.append(time.perf_counter() - began)
    return round(1000 * sorted(times)[2], 2)


def _write(result: dict[str, Any], path: Path) -> None:
    from recall_core.files import write_text_atomically

    write_text_atomically(path, json.dumps(result, indent=2) + "\n")
    write_text_atomically(path.with_suffix(".md"), _markdown(result))
    print(json.dumps({key: result[key] for key in (
        "retrieve_1_client", "retrieve_8_clients", "batch_retrieve_64",
        "batch_retrieve_64_8_clients", "errors")}, indent=2))


def _markdown(r: dict[str, Any]) -> str:
    empty, one, many, batch, reload_ = (r["empty_call_1_client"], r["retrieve_1_client"],
                                        r["retrieve_8_clients"], r["batch_retrieve_64"],
                                        r["reload_under_load"])
    c = r["config"]
    sources = ", ".join(f"{name} ({kind})" for name, kind in c["sources"].items())
    sources += "; user-vector cache " + ("on" if c.get("user_cache", True) else "off")
    if c.get("asked_sources", "all") != "all":
        sources += f"; every request asks for {c['asked_sources']} (the fallback always answers)"
    runtime = c.get("serving_runtime", "trace" if c.get("traced_encoders", True) else "eager")
    sources += {"onnx": "; encoders in ONNX Runtime",
                "trace": "; encoders traced (RECALL_SERVING_RUNTIME=trace)",
                "eager": "; encoders served eagerly (RECALL_SERVING_RUNTIME=eager)"}[runtime]
    if c.get("warm_users"):
        sources += (f"; server started with --warm-users {c['warm_users']} (phases began after "
                    f"its first warm-up, {r.get('warm_up_seconds')} s; every reload warms again)")
    return "\n".join([
        "# `recall serve` load benchmark (loopback)", "",
        f"Project `{c['project']}`, sources: {sources}; k = {c['k']}; columnar responses; "
        f"{_processes(c)}server workers {c['server_workers']}; {r['machine']['cpus']} CPUs "
        f"(load average "
        f"{r['machine']['loadavg_before'][0]} before, {r['machine']['loadavg_1_5_15'][0]} "
        f"after){_probe(r['machine'])}; {r['machine']['date']}.", "",
        "| phase | figure |", "|---|---|",
        f"| empty call (health Check), 1 client: this machine's gRPC floor | p50 "
        f"{empty['p50_ms']} ms, p99 {empty['p99_ms']} ms ({empty['requests']} calls) |",
        f"| Retrieve, 1 client | p50 {one['p50_ms']} ms, p95 {one['p95_ms']} ms, "
        f"p99 {one['p99_ms']} ms ({one['requests']} requests) |",
        f"| Retrieve, {many['clients']} clients | {many['qps']} req/s, p50 {many['p50_ms']} ms, "
        f"p99 {many['p99_ms']} ms |",
        f"| BatchRetrieve of {batch['batch']}, 1 client | {batch['users_per_s']} users/s, "
        f"p50 {batch['p50_ms']} ms, p99 {batch['p99_ms']} ms |",
        *_batches_line(r.get("batch_retrieve_64_8_clients")),
        f"| {reload_['reloads']} forced reloads under {many['clients']}-client load | "
        f"{reload_['failed_requests']} failed of {reload_['requests']} requests; reloads took "
        f"{reload_['reload_ms']} ms |",
        f"| errors (all phases) | {r['errors']} |", "",
        "Regenerate: `python benchmarks/serve_load.py --project DIR`.", ""])


def _batches_line(many: dict[str, Any] | None) -> list[str]:
    """The concurrent BatchRetrieve row (absent from results made before it was measured)."""
    if not many:
        return []
    return [f"| BatchRetrieve of {many['batch']}, {many['clients']} clients | "
            f"{many['users_per_s']} users/s, p50 {many['p50_ms']} ms, p99 {many['p99_ms']} ms |"]


def _handoff_probe() -> float:
    """Microseconds a task takes to reach a pool thread and its result to come back (median
    of 2,000 after a warm-up): the server hands every request between threads several times,
    and this VM's wake-ups vary from day to day while its single-thread speed need not."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        for _ in range(200):
            pool.submit(int).result()
        times = []
        for _ in range(2000):
            began = time.perf_counter()
            pool.submit(int).result()
            times.append(time.perf_counter() - began)
    return round(1e6 * sorted(times)[len(times) // 2], 1)


def _probe(machine: dict[str, Any]) -> str:
    probe, handoff = machine.get("speed_probe_ms"), machine.get("handoff_probe_us")
    text = (f"; host speed probe {probe['before']} ms before, {probe['after']} ms after (a fixed "
            "single-threaded workload: lower is faster)" if probe else "")
    if handoff:
        text += (f"; thread hand-off probe {handoff['before']} µs before, {handoff['after']} µs "
                 "after (a pool task's round trip)")
    return text


def _processes(c: dict[str, Any]) -> str:
    processes, connections = c.get("server_processes", 1), c.get("client_connections", 1)
    text = (f"`recall serve --processes {processes}` (SO_REUSEPORT: the kernel spreads the "
            "clients' connections over the processes), " if processes > 1 else "")
    if connections > 1:
        text += f"{connections} connections per client used in turn, "
    return text


if __name__ == "__main__":
    main()
