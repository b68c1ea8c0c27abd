"""``recall query``: merged candidates for one user, with provenance."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import numpy as np
import typer

from recall_cli import common


def register(app: typer.Typer) -> None:
    app.command("query")(query)


def query(
    user: Annotated[str, typer.Argument(help="The user's raw id (as in the imported data).")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="How many candidates.")] = 20,
    history: Annotated[Optional[str], typer.Option(
        help="Comma-separated raw item ids to use as the history instead of the stored one "
             "(also serves users the dataset does not know).")] = None,
    exclude: Annotated[Optional[str], typer.Option(
        help="Comma-separated raw item ids never to return.")] = None,
    names: Annotated[Optional[list[str]], typer.Option(
        "--source", help="Ask only these sources (repeatable).")] = None,
    policy: Annotated[Optional[str], typer.Option(help="Merge policy override.")] = None,
    server: Annotated[Optional[str], typer.Option(
        help="Ask a running `recall serve` at HOST:PORT instead of loading the project here.",
        envvar="RECALL_SERVER")] = None,
    timeout: Annotated[float, typer.Option(min=0.001, help="With --server: deadline in seconds.")
                       ] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Retrieve merged candidates for USER from every trained, indexed source.

    Without --server the project's sources are loaded in this process (the same
    engine and merge the server runs); with --server the shipped gRPC client asks
    a running server, and the answer also names each source's artifact version.
    """
    if server is not None:
        answer = _ask_server(server, user, k, history, exclude, names, policy, timeout)
    else:
        answer = _ask_locally(user, k, history, exclude, names, policy)
    if as_json:
        common.print_json(answer)
    else:
        print_candidates(answer)


def _split_ids(raw: str | None) -> list[str]:
    return [part.strip() for part in (raw or "").split(",") if part.strip()]


def _ask_server(server: str, user: str, k: int, history: str | None, exclude: str | None,
                names: list[str] | None, policy: str | None, timeout: float) -> dict[str, Any]:
    from recall_core.server.client import RecallClient

    with RecallClient(server, timeout=timeout) as client:
        answer = client.retrieve(user, history=_split_ids(history), k=k, sources=names or (),
                                 policy=policy or "", exclude=_split_ids(exclude))
    return {"user": user, **answer.as_dict()}


def _ask_locally(user: str, k: int, history: str | None, exclude: str | None,
                 names: list[str] | None, policy: str | None) -> dict[str, Any]:
    from recall_core.engine import engine_for_project

    project = common.project()
    engine, dataset = engine_for_project(project, common.host())
    try:
        queries = build_query(dataset, user, history, exclude)
        result = engine.retrieve(queries, k, sources=names, policy=policy)
    finally:
        engine.close()
    return describe(dataset, result, user)


def build_query(dataset, user: str, history: str | None, exclude: str | None):  # type: ignore[no-untyped-def]
    """A one-query batch: stored (or given) history, with history and excludes excluded."""
    from recall_core.contract import QueryBatch
    from recall_core.errors import UnknownUserError

    def items(raw: str | None) -> np.ndarray:
        return np.array([dataset.item_index(i) for i in _split_ids(raw)], np.int64)

    if history is not None:
        try:
            user_index = dataset.user_index(user)
        except UnknownUserError:  # an unknown user is fine when the caller brings the history
            user_index = -1
        sequence = items(history)
    else:
        user_index = dataset.user_index(user)
        sequence = dataset.sequence(user_index).astype(np.int64)
    return QueryBatch.from_histories([sequence], np.array([user_index]), [items(exclude)])


def describe(dataset, result, user: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The JSON-ready answer: items by raw id, fused score, every contributing source."""
    merged = result.merged.lists[0]
    candidates = []
    for rank, (item, score, sources) in enumerate(
            zip(merged.items, merged.scores, merged.provenance), start=1):
        category = int(dataset.item_category[item])
        candidates.append({
            "rank": rank,
            "item": str(dataset.item_ids[item]),
            "score": round(float(score), 6),
            "category": dataset.category_names[category] if category >= 0 else None,
            "sources": [{"source": p.source, "rank": p.rank, "score": round(float(p.score), 6),
                         "group": p.group} for p in sources],
        })
    return {"user": user, "k": len(candidates), "candidates": candidates,
            "fallback_filled": merged.fallback_count, "failed": result.failed}


def print_candidates(answer: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"candidates for user {answer['user']}")
    for column, justify in (("#", "right"), ("item", "left"), ("category", "left"),
                            ("score", "right"), ("provenance (source #rank: raw score)", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for c in answer["candidates"]:
        provenance = ", ".join(f"{p['source']} #{p['rank']}: {p['score']:.4g}" for p in c["sources"])
        table.add_row(str(c["rank"]), c["item"], c.get("category") or "-", f"{c['score']:.4f}",
                      provenance)
    common.stdout.print(table)
    for name, why in answer["failed"].items():
        common.stderr.print(f"warning: source {name} failed: {why}")
