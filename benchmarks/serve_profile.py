"""Benchmark: where a served ``BatchRetrieve`` spends its CPU, part by part, in-process.

Loads the project the way ``recall serve`` does (one :class:`ServingState`), then for
``--batches`` batches of ``--batch`` stored users (k = 500, columnar layout) times, on one
thread and one after another:

* ``parse``: the request protobuf turned into queries (history look-up included), and
  ``gather``: those gathered into one engine batch (each query's exclusion set built);
* every source's ``retrieve`` on the batch, cold (user-vector caches and precomputed
  tables off) and warm (the same batch a second time, so the caches hold every user);
* ``merge``: the quota merge of every source's list plus the popularity fill;
* ``encode``: the merged batch written into response headers and columnar bytes, and
  ``serialize``: the response's bytes assembled (as the server's ``BatchRetrieve`` does).

The sum is the CPU one batch costs when nothing runs in parallel; ``users_per_cpu_s`` is
what one core could answer at that cost. Medians over the batches.

    python benchmarks/serve_profile.py --project DIR [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def main() -> None:
    args = _parse()
    # One thread everywhere, so the parts' costs add up to the batch's CPU.
    os.environ["RECALL_THREADS"] = "1"
    from recall_core.host import make_host
    from recall_core.native import retain_freed_memory
    from recall_core.server.state import ServingState
    from recall_core.server.warm import compile_kernels

    compile_kernels()
    retain_freed_memory()  # as recall serve does
    state = ServingState(args.project, make_host(), engine_workers=1)
    snapshot = state.load()
    try:
        timings = _profile(snapshot, args)
    finally:
        state.close()
    result = _summary(timings, args, snapshot)
    _write(result, args.json)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=RESULTS / "serve_profile.json")
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def _profile(snapshot: Any, args: argparse.Namespace) -> dict[str, list[float]]:
    import numpy as np

    rng = np.random.default_rng(args.seed)
    users = snapshot.catalog.raw_user_ids
    timings: dict[str, list[float]] = {}
    for batch in range(args.batches + 1):
        chosen = [users[i] for i in rng.choice(len(users), args.batch, replace=False)]
        parts = _one_batch(snapshot, chosen, args.k)
        if batch == 0:
            continue  # a warm-up: first calls pay one-off costs
        for name, seconds in parts.items():
            timings.setdefault(name, []).append(seconds)
    return timings


def _one_batch(snapshot: Any, users: list[str], k: int) -> dict[str, float]:
    from recall_protos.v1 import recall_pb2 as pb
    from recall_core.merge import merge_batch
    from recall_core.server import convert
    from recall_core.server.service import _parse_item
    from recall_core.server.convert import Limits

    engine = snapshot.engine
    request = pb.BatchRetrieveRequest(requests=[
        pb.RetrieveRequest(user_id=u, k=k, layout=pb.RetrieveRequest.LAYOUT_COLUMNS) for u in users])
    parts: dict[str, float] = {}
    queries = _timed(parts, "parse", lambda: [
        _parse_item(r, i, snapshot, Limits()) for i, r in enumerate(request.requests)])
    batch = _timed(parts, "gather", lambda: convert.query_batch(queries))
    answers = {}
    for name, source in engine.sources.items():
        handle = source.handle
        _timed(parts, f"{name} cold", lambda: _without_cache(handle, lambda: engine.host.retrieve(
            source.spec.kind, handle, batch, k)))
        answers[name] = _timed(parts, f"{name} warm", lambda: engine.host.retrieve(
            source.spec.kind, handle, batch, k))
    fallback = engine.settings.fallback
    chosen = {n: c for n, c in answers.items()}
    policy = engine.policies[engine.settings.policy]
    merged = _timed(parts, "merge", lambda: merge_batch(
        chosen, policy, k, dict(engine.settings.weights), batch.exclude,
        fallback=(fallback, answers[fallback]) if fallback else None))
    headers = [pb.RetrieveResponse() for _ in queries]
    columns = _timed(parts, "encode", lambda: convert.fill_responses(
        headers, merged, queries, snapshot.catalog))
    _timed(parts, "serialize", lambda: _serialized(headers, columns).SerializeToString())
    return parts


def _serialized(headers: list[Any], columns: list[bytes | None]) -> Any:
    """The response bytes as the server writes them (:class:`SerializedBatch`)."""
    from recall_core.server.wire import SerializedBatch

    answer = SerializedBatch()
    for header, encoded in zip(headers, columns):
        answer.add(header, encoded)
    return answer


def _without_cache(handle: Any, call: Callable[[], Any]) -> Any:
    """``call()`` with the handle's user-vector cache emptied and its precomputed table set
    aside (so it encodes)."""
    cache = getattr(handle, "user_cache", None)
    if cache is None:
        return call()
    cache.clear()
    table, cache.table = cache.table, None
    try:
        return call()
    finally:
        cache.table = table


def _timed(parts: dict[str, float], name: str, call: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    value = call()
    parts[name] = time.perf_counter() - started
    return value


def _summary(timings: dict[str, list[float]], args: argparse.Namespace, snapshot: Any
             ) -> dict[str, Any]:
    ms = {name: round(1000 * statistics.median(values), 3) for name, values in timings.items()}
    common = ("parse", "gather", "merge", "encode", "serialize")
    cold = sum(v for n, v in ms.items() if n.endswith(" cold") or n in common)
    warm = sum(v for n, v in ms.items() if n.endswith(" warm") or n in common)
    return {"batch": args.batch, "k": args.k, "batches": args.batches, "median_ms": ms,
            "total_cold_ms": round(cold, 2), "total_warm_ms": round(warm, 2),
            "users_per_cpu_s_cold": round(1000 * args.batch / cold, 1),
            "users_per_cpu_s_warm": round(1000 * args.batch / warm, 1),
            "sources": {n: s.spec.kind for n, s in snapshot.engine.sources.items()},
            "project": str(args.project)}


def _write(result: dict[str, Any], path: Path) -> None:
    from recall_core.files import write_text_atomically

    write_text_atomically(path, json.dumps(result, indent=2) + "\n")
    write_text_atomically(path.with_suffix(".md"), _markdown(result))
    print(json.dumps(result, indent=2))


def _markdown(r: dict[str, Any]) -> str:
    ms = r["median_ms"]
    sources = ", ".join(f"{name} ({kind})" for name, kind in r["sources"].items())
    lines = [
        "# Where a BatchRetrieve's CPU goes (in-process, one thread, parts one after another)",
        "",
        f"Project `{r['project']}`: {sources}. Batches of {r['batch']} stored users, "
        f"k = {r['k']}, columnar layout; medians over {r['batches']} batches. *cold*: the "
        "user-vector caches emptied and the precomputed user tables set aside first (every "
        "neural source encodes); *warm*: the same batch again.",
        "",
        "| part | cold ms | warm ms |",
        "|---|---|---|",
    ]
    for name in r["sources"]:
        lines.append(f"| {name} | {ms[name + ' cold']} | {ms[name + ' warm']} |")
    for part in ("parse", "gather", "merge", "encode", "serialize"):
        lines.append(f"| {part} | {ms[part]} | {ms[part]} |")
    lines += [f"| **total** | **{r['total_cold_ms']}** | **{r['total_warm_ms']}** |",
              f"| users per CPU-second | {r['users_per_cpu_s_cold']} | "
              f"{r['users_per_cpu_s_warm']} |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
