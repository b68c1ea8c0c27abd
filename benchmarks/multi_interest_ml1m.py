"""Benchmark: the multi-interest sources (comirec-sa, comirec-dr, mind) on ml-1m-3k.

Parts (``--part``, repeatable; default all):

- ``paper``: leave-one-out, full ranking, HR@10/20/50 and NDCG@10 of the three
  sources, training samples/second, and comirec-sa's single-user retrieval
  latency (one user per call, K = 4, median over 1,000 users, in-process);
- ``comirec``: the ComiRec protocol (users split 8:1:1, history = first 80%,
  targets = the rest): Recall/HR/NDCG@20,50, plus the controllability table of
  comirec-sa (λ in {0, 0.05, 0.1, 0.25}: Recall@50 and Diversity@50);
- ``interests``: comirec-sa with K in {1, 2, 4, 8} (paper protocol);
- ``genres`` (no training): what a Diversity@50 figure asks of a list on this catalogue —
  each primary genre's share of the items, how concentrated the comirec protocol test
  users' targets are in their own top genres, and the diversity a +50% figure needs
  against the most any 50-item list can reach.

Categories: the ``movielens`` importer keeps each movie's *first* genre of
``movies.dat`` as its category; the diversity term uses that. Diversity@50 is
reported twice: over that primary genre (the share of item pairs of a list with
different genres) and over the full genre sets (the share of pairs sharing no genre).

    python benchmarks/multi_interest_ml1m.py [--data DIR] [--part paper] [--threads 2]
        [--set KEY=JSON ...] [--only ROW ...] [--dataset beauty]

Writes ``benchmarks/results/multi_interest_ml1m_3k.{json,md}`` (parts not rerun are kept);
``--dataset beauty`` runs the ``paper`` part on Amazon Beauty
(``amazon-s3rec/Beauty.txt`` beside ``--data``) into ``multi_interest_beauty.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from sasrec_ml1m import RATINGS, load_ml1m, run_row  # noqa: E402 - the shared helpers
from recall_core.files import write_text_atomically  # noqa: E402

SOURCES: dict[str, tuple[str, dict[str, Any]]] = {
    "comirec-sa": ("comirec", {"variant": "sa"}),
    "comirec-dr": ("comirec", {"variant": "dr"}),
    "mind": ("mind", {}),
}
SAME_LOSS_SASREC = ("sasrec", {"loss": "sampled_softmax", "sampler": "popularity",
                               "num_negatives": 1280, "max_len": 20})
"""The single-vector baseline with the multi-interest sources' loss and history length
(sampled softmax, 1,280 shared popularity negatives with logQ, the last 20 items)."""
LAMBDAS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 1e6)
"""The ComiRec paper's λ grid, then larger ones: 1e6 is "categories first" (each pick
goes to the least-used category; score only breaks ties), the diversity ceiling of the
candidate pool the aggregation chooses from."""
POOL = 4
"""The wider greedy pool of the λ table's second half: 4k candidates per interest
(``diversity_pool = 4``; the first half is the reference's k per interest)."""
INTEREST_COUNTS = (1, 2, 4, 8)
COMIREC_KS = (20, 50)
LATENCY_USERS = 1000
PARTS = ("paper", "comirec", "interests", "genres")
LIST_LENGTH = 50  # Diversity@50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("RECALL_DATA", REPO.parent / "shared" / "data")) / "ml-1m")
    parser.add_argument("--part", action="append", dest="parts", choices=PARTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a config key of every row run (e.g. a smaller budget)")
    parser.add_argument("--out", default="multi_interest_ml1m_3k", help="result file stem")
    parser.add_argument("--dataset", choices=("ml-1m-3k", "beauty"), default="ml-1m-3k")
    parser.add_argument("--only", action="append", default=[], metavar="ROW",
                        help="run only these rows of the parts (e.g. mind, 'sasrec (same loss)', "
                        "4); the part's other rows already on file are kept")
    args = parser.parse_args()
    os.environ.setdefault("RECALL_THREADS", str(args.threads))
    overrides = {key: json.loads(value) for key, value in (s.split("=", 1) for s in args.set)}
    if args.dataset == "beauty":
        from dnc_ebr_ml1m import load_dataset

        if set(args.parts or PARTS) != {"paper"}:
            sys.exit("--dataset beauty runs the paper part only (Beauty.txt has no categories)")
        dataset, genres = load_dataset("beauty", args.data.parent), None
        args.out = "multi_interest_beauty" if args.out == parser.get_default("out") else args.out
    else:
        if not (args.data / RATINGS).is_file():
            sys.exit(f"skipped: {args.data / RATINGS} not found (set --data or RECALL_DATA)")
        dataset = load_ml1m(args.data)
        genres = genre_matrix(args.data / "movies.dat", dataset)
    out_json = RESULTS / f"{args.out}.json"
    result = json.loads(out_json.read_text()) if out_json.is_file() else {}
    result.update({
        "benchmark": f"multi-interest sources on {args.dataset} (full ranking)",
        "dataset": dataset.summary(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "threads": args.threads},
        "overrides": overrides,
    })
    run = {"threads": args.threads, "overrides": overrides,
           "date": time.strftime("%Y-%m-%d %H:%M %z")}
    for part in args.parts or PARTS:
        rows = PART_RUNNERS[part](dataset, genres, overrides, args.threads, set(args.only))
        result[part] = {**result.get(part, {}), **{n: {**r, "run": run} for n, r in rows.items()}}
        RESULTS.mkdir(parents=True, exist_ok=True)
        write_text_atomically(out_json, json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    write_text_atomically(RESULTS / f"{args.out}.md", table)
    sys.stdout.write(table)


def genre_matrix(movies: Path, dataset: Any) -> np.ndarray | None:
    """Bool ``(N, G)``: every genre of each item (movies.dat lists several), None without the file."""
    if not movies.is_file():
        return None
    genres_of: dict[str, list[str]] = {}
    for line in movies.read_text(encoding="latin-1").splitlines():
        fields = line.split("::")
        if len(fields) >= 3:
            genres_of[fields[0].strip()] = [g for g in fields[-1].strip().split("|") if g]
    names = sorted({g for gs in genres_of.values() for g in gs})
    column = {name: j for j, name in enumerate(names)}
    matrix = np.zeros((dataset.num_items, len(names)), dtype=bool)
    for item, raw in enumerate(dataset.item_ids.tolist()):
        for genre in genres_of.get(raw, []):
            matrix[item, column[genre]] = True
    return matrix


def genre_set_diversity(items: np.ndarray, genres: np.ndarray, k: int) -> float:
    """Mean over lists of the share of item pairs that share no genre."""
    values = []
    for row in items[:, :k]:
        row = row[row >= 0]
        if len(row) < 2:
            continue
        sets = genres[row].astype(np.float32)
        overlap = (sets @ sets.T) > 0  # (n, n): the two items share a genre
        values.append(1.0 - (overlap.sum() - len(row)) / (len(row) * (len(row) - 1)))
    return float(np.mean(values)) if values else 0.0


def latency(host: Any, kind: str, handle: Any, queries: Any, k: int) -> dict[str, float]:
    """Single-user retrieval latency (ms): one query per call, in-process."""
    from recall_core.contract import QueryBatch

    single = [QueryBatch([queries.histories[i]], [queries.exclude[i]], queries.users[i : i + 1])
              for i in range(min(LATENCY_USERS, len(queries)))]
    host.retrieve(kind, handle, single[0], k)  # warm-up
    timings = []
    for query in single:
        began = time.perf_counter()
        host.retrieve(kind, handle, query, k)
        timings.append(time.perf_counter() - began)
    ms = 1000 * np.asarray(timings)
    return {"users": len(ms), "median_ms": round(float(np.median(ms)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3)}


def latency_extra(split: Any) -> Any:
    """Extra fields of comirec-sa's paper row: latency at k = 50 / 500, λ = 0 / 0.1."""
    from recall_core.training.multi_interest import AggregationSettings

    def extra(host: Any, handle: Any, config: Any, model_dir: Path) -> dict[str, Any]:
        plain = handle.aggregation
        found = {}
        for lam in (0.0, 0.1):
            handle.aggregation = AggregationSettings(lam, plain.categories)
            for k in (50, 500):
                found[f"k={k}, lambda={lam}"] = latency(host, "comirec", handle,
                                                        split.test.queries, k)
        handle.aggregation = plain
        return {"latency": found}

    return extra


def comirec_extra(split: Any, genres: np.ndarray | None, kind: str, sweep: bool) -> Any:
    """Recall/HR/NDCG@20,50 on the test users; with ``sweep`` the λ table too."""
    from recall_core.evaluation.metrics import ranking_metrics
    from recall_core.training.multi_interest import AggregationSettings, category_diversity

    queries, targets, n = split.test.queries, split.test.targets, split.train.num_items

    def extra(host: Any, handle: Any, config: Any, model_dir: Path) -> dict[str, Any]:
        answer = host.retrieve(kind, handle, queries, max(COMIREC_KS))
        metrics = ranking_metrics(answer.items, targets, COMIREC_KS, n)
        out: dict[str, Any] = {"comirec_test": {k: round(v, 4) for k, v in metrics.items()}}
        if sweep:
            plain, rows = handle.aggregation, {}
            for pool, lam in [(1, lam) for lam in LAMBDAS] + [(POOL, lam) for lam in LAMBDAS[1:]]:
                handle.aggregation = AggregationSettings(lam, plain.categories, pool)
                found = host.retrieve(kind, handle, queries, 50).items
                rows[str(lam) if pool == 1 else f"{lam}, pool {pool}k"] = {
                    "Recall@50": round(ranking_metrics(found, targets, [50], n)["Recall@50"], 4),
                    "Diversity@50 (primary genre)": round(
                        category_diversity(found, plain.categories, 50), 4),
                    "Diversity@50 (genre sets)": None if genres is None else round(
                        genre_set_diversity(found, genres, 50), 4)}
            handle.aggregation = plain
            out["controllability"] = rows
        return out

    return extra


def run_paper(dataset: Any, genres: Any, overrides: dict, threads: int,
              only: set[str]) -> dict[str, Any]:
    from recall_core.evaluation.protocols import make_split

    split = make_split(dataset, "paper")
    rows = {}
    for name, (kind, values) in {**SOURCES, "sasrec (same loss)": SAME_LOSS_SASREC}.items():
        if only and name not in only:
            continue
        extra = latency_extra(split) if name == "comirec-sa" else None
        rows[name] = run_row(name, {**values, **overrides}, split, threads, kind, extra)
    return rows


def run_comirec(dataset: Any, genres: Any, overrides: dict, threads: int,
                only: set[str]) -> dict[str, Any]:
    from recall_core.evaluation.protocols import make_split

    split = make_split(dataset, "comirec")
    rows = {}
    for name, (kind, values) in SOURCES.items():
        if only and name not in only:
            continue
        extra = comirec_extra(split, genres, kind, sweep=name == "comirec-sa")
        rows[name] = run_row(name, {**values, **overrides}, split, threads, kind, extra)
    return rows


def run_interests(dataset: Any, genres: Any, overrides: dict, threads: int,
                  only: set[str]) -> dict[str, Any]:
    from recall_core.evaluation.protocols import make_split

    split = make_split(dataset, "paper")
    return {str(k): run_row(f"comirec-sa K={k}", {"variant": "sa", "interests": k, **overrides},
                            split, threads, "comirec")
            for k in INTEREST_COUNTS if not only or str(k) in only}


def run_genres(dataset: Any, genres: Any, overrides: dict, threads: int,
               only: set[str]) -> dict[str, Any]:
    """The genre statistics behind the Diversity@50 figure (comirec protocol test users)."""
    from recall_core.evaluation.protocols import make_split

    category = np.asarray(dataset.item_category, np.int64)
    known = category[category >= 0]
    count = int(known.max()) + 1
    shares = np.bincount(known, minlength=count) / len(known)
    top_shares = {depth: [] for depth in (1, 2, 3)}
    for targets in make_split(dataset, "comirec").test.targets:
        held = np.sort(np.bincount(category[targets][category[targets] >= 0],
                                   minlength=count))[::-1]
        for depth, found in top_shares.items():
            found.append(held[:depth].sum() / max(1, held.sum()))
    names = list(dataset.category_names) or [str(c) for c in range(count)]
    return {"catalogue": {"genres": count, "item_share": {
                names[c]: round(float(shares[c]), 4) for c in np.argsort(-shares)},
                "max_diversity@50": round(best_spread_diversity(count, LIST_LENGTH), 4)},
            "targets_in_top_genres": {str(depth): round(float(np.mean(found)), 4)
                                      for depth, found in top_shares.items()}}


def best_spread_diversity(categories: int, length: int, top: int | None = None) -> float:
    """Diversity of a ``length``-item list over ``categories`` categories spread as evenly as
    possible — with ``top`` items in one of them, when given (the others spread evenly)."""
    others, rest = (categories, length) if top is None else (categories - 1, length - top)
    per, extra = divmod(rest, others)
    same = extra * (per + 1) * per + (others - extra) * per * (per - 1)
    if top is not None:
        same += top * (top - 1)
    return 1.0 - same / (length * (length - 1))


def most_in_one_genre(target: float, categories: int, length: int = LIST_LENGTH) -> int:
    """The most items of one category a ``length``-item list may hold and still reach
    Diversity ``target`` (with every other item spread evenly over the other categories)."""
    return max((top for top in range(1, length + 1)
                if best_spread_diversity(categories, length, top) >= target), default=0)


PART_RUNNERS = {"paper": run_paper, "comirec": run_comirec, "interests": run_interests,
                "genres": run_genres}


def markdown(result: dict[str, Any]) -> str:
    d = result["dataset"]
    lines = [f"# {result['benchmark']}", "",
             f"{d['users']:,} users, {d['items']:,} items, {d['interactions']:,} interactions; "
             f"{result['machine']['cpus']} CPUs. Early stopping on validation NDCG@10 (full "
             "ranking); the best epoch is restored. *run*: torch threads and config overrides "
             "of the row's run (rows were run at different times).", ""]
    if "paper" in result:
        lines += ["## paper protocol (leave-one-out), test", "",
                  "| source | HR@10 | HR@20 | HR@50 | NDCG@10 | best / run epochs | train s | samples/s "
                  "| run |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [_paper_line(name, r) for name, r in result["paper"].items()]
        latency_rows = result["paper"].get("comirec-sa", {}).get("latency", {})
        if latency_rows:
            lines += ["", "Single-user retrieval latency, comirec-sa K=4 (one user per call, "
                      "in-process, 1,000 test users):", "", "| setting | median ms | p90 ms |",
                      "|---|---|---|"]
            lines += [f"| {s} | {v['median_ms']} | {v['p90_ms']} |" for s, v in latency_rows.items()]
    if "comirec" in result:
        lines += ["", "## comirec protocol (8:1:1 users, first 80% history), test", "",
                  "| source | Recall@20 | HR@20 | NDCG@20 | Recall@50 | HR@50 | NDCG@50 | train s |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in result["comirec"].items():
            m = r["comirec_test"]
            lines.append(f"| {name} | " + " | ".join(
                f"{m[f'{x}@{k}']:.4f}" for k in COMIREC_KS for x in ("Recall", "HR", "NDCG"))
                + f" | {r['train_seconds']:.0f} |")
        sweep = result["comirec"].get("comirec-sa", {}).get("controllability", {})
        if sweep:
            lines += ["", "Controllability (comirec-sa, comirec protocol test users):", "",
                      "| λ (pool) | Recall@50 | Diversity@50 (primary genre) | Diversity@50 (genre sets) |",
                      "|---|---|---|---|"]
            lines += [f"| {lam} | {v['Recall@50']:.4f} | {v['Diversity@50 (primary genre)']:.4f} | "
                      f"{v['Diversity@50 (genre sets)']} |" for lam, v in sweep.items()]
    if "genres" in result:
        lines += _genre_lines(result["genres"], result.get("comirec", {}))
    if "interests" in result:
        lines += ["", "## comirec-sa by interest count K (paper protocol), test", "",
                  "| K | HR@10 | HR@20 | HR@50 | NDCG@10 | best / run epochs | train s | samples/s "
                  "| run |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [_paper_line(k, r) for k, r in result["interests"].items()]
    return "\n".join(lines) + "\n"


def _genre_lines(found: dict[str, Any], comirec: dict[str, Any]) -> list[str]:
    """What the +50% Diversity@50 figure asks, from the ``genres`` part (and the λ = 0 row)."""
    catalogue, targets = found["catalogue"], found["targets_in_top_genres"]
    shares = ", ".join(f"{name} {share:.1%}" for name, share in catalogue["item_share"].items())
    lines = ["", "## What Diversity@50 can reach on this catalogue (`--part genres`)", "",
             f"Primary genres ({catalogue['genres']}), share of the items: {shares}. A "
             f"{LIST_LENGTH}-item list spread as evenly as possible over every genre has "
             f"Diversity@50 {catalogue['max_diversity@50']:.4f}.", "",
             "Share of a comirec-protocol test user's held-out targets in the user's own top "
             "1, 2 and 3 primary genres (mean over users): " + ", ".join(
                 f"{targets[depth]:.1%}" for depth in ("1", "2", "3")) + "."]
    plain = comirec.get("comirec-sa", {}).get("controllability", {}).get("0.0")
    if plain:
        base = plain["Diversity@50 (primary genre)"]
        need = 1.5 * base
        top = most_in_one_genre(need, catalogue["genres"])
        lines += ["", f"From λ = 0's Diversity@50 {base:.4f}, +50% is {need:.4f}: "
                  f"{need / catalogue['max_diversity@50']:.0%} of the even-spread maximum. A list "
                  f"reaching it holds at most {top} items of any one genre even when the other "
                  f"{LIST_LENGTH - top} cover all {catalogue['genres'] - 1} other genres evenly "
                  "(the rarest included)."]
    return lines


def _paper_line(name: str, r: dict[str, Any]) -> str:
    m = r["test"]
    return (f"| {name} | {m['HR@10']:.4f} | {m['HR@20']:.4f} | {m['HR@50']:.4f} | "
            f"{m['NDCG@10']:.4f} | {r['best_epoch']} / {r['epochs_run']} | "
            f"{r['train_seconds']:.0f} | {r['samples_per_second']:,.0f} | {_run(r)} |")


def _run(r: dict[str, Any]) -> str:
    run = r["run"]
    return f"{run['threads']} thr, `{json.dumps(run['overrides'])}`"


if __name__ == "__main__":
    main()
