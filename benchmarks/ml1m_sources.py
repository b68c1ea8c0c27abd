"""Benchmark: popular and both i2i algorithms on ml-1m-3k (or Beauty), `paper` protocol, full ranking.

Imports ``../shared/data/ml-1m`` (ratings.partial_users_1-2999.dat.gz + movies.dat) through the
``movielens`` importer, trains each source on the leave-one-out training split (the same
code path as ``recall eval``), and writes the metric table, the training times and the
evaluation times to ``benchmarks/results/ml1m_3k_paper.{json,md}``.

    python benchmarks/ml1m_sources.py [--data DIR] [--k 10 --k 20 --k 50] [--dataset beauty]

``--dataset beauty`` reads ``../shared/data/amazon-s3rec/Beauty.txt`` (``sequences``
importer) and writes ``benchmarks/results/beauty_paper_sources.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SOURCES = (
    ("popular", "popular", {}),
    ("itemcf", "i2i", {"algorithm": "itemcf"}),
    ("swing", "i2i", {"algorithm": "swing"}),
)
RATINGS = "ratings.partial_users_1-2999.dat.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="the data folder (default: ../shared/data/ml-1m, or the Beauty "
                             "file with --dataset beauty)")
    parser.add_argument("--dataset", choices=("ml-1m-3k", "beauty"), default="ml-1m-3k")
    parser.add_argument("--k", type=int, action="append", dest="ks")
    parser.add_argument("--split", default="test", choices=("test", "valid"))
    args = parser.parse_args()
    ks = args.ks or [10, 20, 50]

    from recall_core.engine import MergeSettings
    from recall_core.evaluation.runner import evaluate
    from recall_core.host import make_host
    from recall_core.progress import RichProgress
    from recall_core.sources import SourceSpec

    host = make_host(load_entry_points=False)
    started = time.perf_counter()
    dataset, report = _load(host, args.dataset, args.data)
    import_seconds = time.perf_counter() - started
    specs = [SourceSpec(name, kind, host.validate_config(kind, cfg)) for name, kind, cfg in SOURCES]
    with tempfile.TemporaryDirectory() as cache:
        evaluated = evaluate(host, dataset, specs, MergeSettings(policy="quota"), protocol="paper",
                             ks=ks, cache_root=Path(cache), split_name=args.split,
                             progress=RichProgress())
        train_seconds = _train_seconds(Path(cache))
    result = {
        "benchmark": f"{args.dataset}, paper protocol (leave-one-out, full ranking)",
        "split": args.split,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "threads": os.environ.get("RECALL_THREADS", "default")},
        "import_seconds": round(import_seconds, 2),
        "import_report": report.to_dict(),
        "configs": {spec.name: spec.config.model_dump(mode="json") for spec in specs},
        "train_seconds": train_seconds,
        **evaluated.to_json(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.split == "test" else f"_{args.split}"
    stem = ("ml1m_3k_paper" if args.dataset == "ml-1m-3k" else "beauty_paper_sources") + suffix
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = _markdown(result, ks)
    (RESULTS / f"{stem}.md").write_text(table)
    sys.stdout.write(table)


def _load(host, name: str, data: Path | None):  # type: ignore[no-untyped-def]
    """ml-1m-3k through the ``movielens`` importer, or Beauty through ``sequences``."""
    shared = REPO.parent / "shared" / "data"
    if name == "ml-1m-3k":
        folder = data or shared / "ml-1m"
        importer = host.importers["movielens"]
        options = importer.options_model.model_validate(
            {"ratings": folder / RATINGS, "items": folder / "movies.dat"})
        return importer.load(folder, options)
    path = data or shared / "amazon-s3rec" / "Beauty.txt"
    importer = host.importers["sequences"]
    return importer.load(path, importer.options_model.model_validate({}))


def _train_seconds(cache: Path) -> dict[str, float]:
    """Training time per source, read back from the manifests the evaluator wrote."""
    seconds = {}
    for manifest in cache.glob("*/*/v*/manifest.json"):
        data = json.loads(manifest.read_text())
        metrics = data["metrics"]
        seconds[data["source"]] = metrics.get("train_seconds", metrics["wall_seconds"])
    return seconds


def _markdown(result: dict, ks: list[int]) -> str:
    columns = [f"{m}@{k}" for k in ks for m in ("HR", "NDCG")] + [f"Coverage@{max(ks)}"]
    lines = [
        f"# {result['benchmark']} — {result['split']} split",
        "",
        f"{result['dataset']['users']:,} users, {result['dataset']['items']:,} items, "
        f"{result['dataset']['interactions']:,} interactions; {result['queries']:,} queries; "
        f"{result['machine']['cpus']} CPUs.",
        "",
        "| source | " + " | ".join(columns) + " | train s | retrieve s |",
        "|---" * (len(columns) + 3) + "|",
    ]
    for name, metrics in result["sources"].items():
        timing = result["timings"].get(name, {})
        lines.append(f"| {name} | " + " | ".join(f"{metrics[c]:.4f}" for c in columns)
                     + f" | {result['train_seconds'].get(name, float('nan')):.2f}"
                     + f" | {timing.get('retrieve_seconds', float('nan')):.2f} |")
    merged = result["merged"]
    lines.append("| merged (quota) | " + " | ".join(f"{merged[c]:.4f}" for c in columns)
                 + f" | - | {result['timings']['merged']['retrieve_and_merge_seconds']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
