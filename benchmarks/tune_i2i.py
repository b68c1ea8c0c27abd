"""Tuning tool for the ``popular`` and ``i2i`` sources on ml-1m-3k (`paper` protocol).

Parses ``ratings.partial_users_1-2999.dat.gz`` directly, makes the leave-one-out
split, trains each source on the training part through the plugin hooks, and
prints HR/NDCG@10/20/50 on the validation and test targets with train and
retrieve times. Tune on ``valid`` only; ``test`` is for reporting.

    python benchmarks/tune_i2i.py                         # popular, itemcf, swing (defaults)
    python benchmarks/tune_i2i.py --only itemcf --set window=0 --set triggers=5
    python benchmarks/tune_i2i.py --only swing --sweep max_users_per_item=100,200,400

Needs ``recall_core`` and ``recall_plugins`` importable (installed, or PYTHONPATH).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RATINGS = "ratings.partial_users_1-2999.dat.gz"
KS = (10, 20, 50)
SOURCES: dict[str, tuple[str, dict[str, Any]]] = {
    "popular": ("popular", {}),
    "itemcf": ("i2i", {"algorithm": "itemcf"}),
    "swing": ("i2i", {"algorithm": "swing"}),
}


def load_ml1m(folder: Path) -> Any:
    """ml-1m-3k as a Dataset: ``user::item::rating::timestamp``, every rating an interaction."""
    from recall_core.data.dataset import Dataset

    with gzip.open(folder / RATINGS, "rt") as handle:
        text = handle.read().replace("::", " ")
    table = np.loadtxt(text.splitlines(), dtype=np.int64)
    return Dataset.from_raw(table[:, 0], table[:, 1], table[:, 3], name="ml-1m-3k")


def run_source(host: Any, split: Any, kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """Train and index one source on the split's training part; evaluate valid and test."""
    from recall_core.contract import TrainContext
    from recall_core.evaluation.metrics import ranking_metrics
    from recall_core.progress import SilentProgress

    config = host.validate_config(kind, values)
    with tempfile.TemporaryDirectory() as root:
        model_dir, index_dir = Path(root) / "model", Path(root) / "index"
        model_dir.mkdir()
        index_dir.mkdir()
        started = time.perf_counter()
        metrics = host.train(kind, config, split.train, TrainContext(model_dir, SilentProgress()))
        train_seconds = time.perf_counter() - started
        handle = host.index(kind, config, model_dir, index_dir)
    result: dict[str, Any] = {"train_seconds": round(train_seconds, 2), "train_metrics": metrics}
    for stage in ("valid", "test"):
        queries = getattr(split, stage)
        started = time.perf_counter()
        answer = host.retrieve(kind, handle, queries.queries, max(KS))
        result[f"{stage}_retrieve_seconds"] = round(time.perf_counter() - started, 3)
        scores = ranking_metrics(answer.items, queries.targets, KS, split.train.num_items)
        result[stage] = {key: round(value, 4) for key, value in scores.items()
                         if not key.startswith("Recall")}
    return result


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare string such as swing


def _runs(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any]]]:
    overrides = dict(item.split("=", 1) for item in args.set or [])
    runs = []
    for name in args.only or list(SOURCES):
        kind, base = SOURCES[name]
        values = {**base, **{k: _parse_value(v) for k, v in overrides.items()}}
        if args.sweep and kind == "i2i":
            key, options = args.sweep.split("=", 1)
            runs += [(f"{name} {key}={v}", kind, {**values, key: _parse_value(v)})
                     for v in options.split(",")]
        else:
            runs.append((name, kind, values if kind == "i2i" else base))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("RECALL_DATA", REPO.parent / "shared" / "data"))
                        / "ml-1m")
    parser.add_argument("--only", action="append", choices=list(SOURCES))
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="i2i config override (JSON value), repeatable")
    parser.add_argument("--sweep", metavar="KEY=V1,V2", help="one i2i key over several values")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not (args.data / RATINGS).is_file():
        sys.exit(f"skipped: {args.data / RATINGS} not found (set --data or RECALL_DATA)")

    from recall_core.evaluation.protocols import make_split
    from recall_core.host import make_host

    started = time.perf_counter()
    split = make_split(load_ml1m(args.data), "paper")
    print(f"loaded and split in {time.perf_counter() - started:.1f}s: "
          f"{split.train.summary()} train, {len(split.test)} eval users", flush=True)
    host = make_host(load_entry_points=False)
    results = {}
    for name, kind, values in _runs(args):
        results[name] = outcome = run_source(host, split, kind, values)
        print(_line(name, outcome), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def _line(name: str, outcome: dict[str, Any]) -> str:
    parts = [f"{name:<28} train {outcome['train_seconds']:6.2f}s "
             f"retrieve(test) {outcome['test_retrieve_seconds']:.2f}s"]
    for stage in ("valid", "test"):
        metrics = outcome[stage]
        parts.append(f"  {stage:<5} " + " ".join(
            f"HR@{k} {metrics[f'HR@{k}']:.4f} NDCG@{k} {metrics[f'NDCG@{k}']:.4f}" for k in KS))
    return "\n".join(parts)


if __name__ == "__main__":
    main()
