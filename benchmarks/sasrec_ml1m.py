"""Benchmark: the ``sasrec`` rows on ml-1m-3k, `paper` protocol (leave-one-out, full ranking).

Row 1 is the SASRec paper's objective (BCE with one uniform negative per position),
row 2 our strongest configuration (the ``sasrec`` defaults). Both train on the
leave-one-out training split with early stopping on the validation split (the
evaluator's code path: ``recall_train`` with ``context.validation``), and are
scored on both splits by full ranking through the source's own retrieval.

    python benchmarks/sasrec_ml1m.py [--data DIR] [--row 1 --row 2] [--threads 2]

The recorded sasrec rows are those of the sequential-EBR table
(``benchmarks/dnc_ebr_ml1m.py --row 1 --row 2``, which imports this module's helpers);
this script is the sasrec-only runner for exploring configs with ``--set``.

Writes ``benchmarks/results/sasrec_ml1m_3k.{json,md}`` (rows not rerun are kept).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
RATINGS = "ratings.partial_users_1-2999.dat.gz"
KS = (10, 20, 50)
KEEP_ENV = "RECALL_BENCH_KEEP"
"""When set, every row's trained artifacts are copied under this folder (one per title)."""
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "1": ("SASRec paper objective: BCE + 1 uniform negative",
          {"loss": "bce", "sampler": "uniform", "num_negatives": 1}),
    "2": ("strongest sasrec (the defaults)", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("RECALL_DATA", REPO.parent / "shared" / "data")) / "ml-1m")
    parser.add_argument("--row", action="append", dest="rows", choices=sorted(ROWS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a config key of every row run (exploration only)")
    parser.add_argument("--out", default="sasrec_ml1m_3k", help="result file stem")
    args = parser.parse_args()
    if not (args.data / RATINGS).is_file():
        sys.exit(f"skipped: {args.data / RATINGS} not found (set --data or RECALL_DATA)")
    os.environ.setdefault("RECALL_THREADS", str(args.threads))
    sys.path[:0] = [str(REPO)]

    from recall_core.evaluation.protocols import make_split

    started = time.perf_counter()
    dataset = load_ml1m(args.data)
    split = make_split(dataset, "paper")
    import_seconds = time.perf_counter() - started
    overrides = {key: json.loads(value) for key, value in (s.split("=", 1) for s in args.set)}
    out_json = RESULTS / f"{args.out}.json"
    result = json.loads(out_json.read_text()) if out_json.is_file() else {"rows": {}}
    result.update({
        "benchmark": "sasrec on ml-1m-3k, paper protocol (leave-one-out, full ranking)",
        "dataset": dataset.summary(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "threads": args.threads},
        "import_seconds": round(import_seconds, 2),
    })
    for row in args.rows or sorted(ROWS):
        title, config = ROWS[row]
        result["rows"][row] = run_row(title, {**config, **overrides}, split, args.threads)
        RESULTS.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (RESULTS / f"{args.out}.md").write_text(table)
    sys.stdout.write(table)


def load_ml1m(directory: Path):  # type: ignore[no-untyped-def]
    """ml-1m-3k through the ``movielens`` importer, or parsed here while it is absent."""
    from recall_core.host import make_host

    try:
        importer = make_host(load_entry_points=False).importers["movielens"]
    except Exception:  # noqa: BLE001 - no importer plugin yet: parse the file directly
        importer = None
    if importer is not None:
        options = importer.options_model.model_validate(
            {"ratings": directory / RATINGS, "items": directory / "movies.dat"})
        return importer.load(directory, options)[0]
    import numpy as np

    from recall_core.data.dataset import Dataset

    users, items, times = [], [], []
    with gzip.open(directory / RATINGS, "rt", encoding="latin-1") as lines:
        for line in lines:
            user, item, _rating, timestamp = line.rstrip("\n").split("::")
            users.append(user)
            items.append(item)
            times.append(int(timestamp))
    return Dataset.from_raw(np.array(users), np.array(items), np.array(times), name="ml-1m-3k")


def run_row(title: str, values: dict[str, Any], split: Any, threads: int, kind: str = "sasrec",
            extra: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train, index and score one row of source ``kind`` (its plugin alone in the host).

    ``extra(host, handle, config, model_dir)``, called while the artifacts
    exist, returns more fields for the row (e.g. a source's own metrics).
    """
    import importlib

    from recall_core.contract import TrainContext
    from recall_core.evaluation.metrics import ranking_metrics
    from recall_core.host import make_host
    from recall_core.native import retain_freed_memory
    from recall_core.progress import RichProgress

    retain_freed_memory()  # as the recall CLI does: batches reuse freed heap
    plugin = importlib.import_module(f"recall_plugins.{kind}.plugin")
    host = make_host(load_entry_points=False, builtins=False, extra_plugins=[plugin])
    config = host.validate_config(kind, values)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, index_dir = Path(tmp) / "model", Path(tmp) / "index"
        model_dir.mkdir()
        index_dir.mkdir()
        context = TrainContext(model_dir, RichProgress(), threads, validation=split.valid)
        started = time.perf_counter()
        metrics = host.train(kind, config, split.train, context)
        train_seconds = time.perf_counter() - started
        history = json.loads((model_dir / "training.json").read_text())["history"]
        handle = host.index(kind, config, model_dir, index_dir)
        scores = {}
        for name, queries in (("valid", split.valid), ("test", split.test)):
            began = time.perf_counter()
            answer = host.retrieve(kind, handle, queries.queries, max(KS))
            seconds = time.perf_counter() - began
            found = ranking_metrics(answer.items, queries.targets, KS, split.train.num_items)
            scores[name] = {k: round(v, 4) for k, v in found.items() if not k.startswith("Recall")}
            scores[name]["retrieve_seconds"] = round(seconds, 2)
        more = extra(host, handle, config, model_dir) if extra is not None else {}
        keep = os.environ.get(KEEP_ENV)
        if keep:  # the trained artifacts, for re-scoring without retraining
            shutil.copytree(model_dir, Path(keep) / "".join(
                c if c.isalnum() else "_" for c in title).strip("_"), dirs_exist_ok=True)
    return {
        "title": title,
        "config": config.model_dump(mode="json"),
        "valid": scores["valid"],
        "test": scores["test"],
        "best_epoch": metrics["best_epoch"],
        "epochs_run": metrics["epochs_run"],
        "stopped_early": metrics["stopped_early"],
        "train_seconds": round(train_seconds, 1),
        "samples_per_second": metrics["samples_per_second"],
        "positions_per_epoch": metrics["positions_per_epoch"],
        "windows": metrics.get("windows"),
        "validation_curve": [(r["epoch"], r["metrics"].get("HR@10"), r["metrics"].get("NDCG@10"),
                              r["seconds"]) for r in history],
        **more,
    }


def markdown(result: dict[str, Any]) -> str:
    d = result["dataset"]
    lines = [
        f"# {result['benchmark']}",
        "",
        f"{d['users']:,} users, {d['items']:,} items, {d['interactions']:,} interactions; "
        f"{result['machine']['cpus']} CPUs, {result['machine']['threads']} torch threads. "
        "Early stopping on validation NDCG@10 (full ranking); the best epoch is restored.",
        "",
        "| row | what | split | HR@10 | HR@20 | HR@50 | NDCG@10 | best / run epochs | train s | samples/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, r in sorted(result["rows"].items()):
        for split in ("valid", "test"):
            m = r[split]
            lines.append(
                f"| {row} | {r['title']} | {split} | {m['HR@10']:.4f} | {m['HR@20']:.4f} | "
                f"{m['HR@50']:.4f} | {m['NDCG@10']:.4f} | {r['best_epoch']} / {r['epochs_run']} | "
                f"{r['train_seconds']:.0f} | {r['samples_per_second']:,.0f} |")
    lines += ["", "Configs:", ""]
    for row, r in sorted(result["rows"].items()):
        changed = {k: v for k, v in r["config"].items()}
        lines.append(f"- row {row}: `{json.dumps(changed, sort_keys=True)}`")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
