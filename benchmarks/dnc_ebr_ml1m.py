"""Benchmark: the sequential-EBR table (sasrec rows, dnc_ebr ablations; arXiv 2302.02657), `paper` protocol.

Rows (as the issue numbers them):

- ``1``: ``sasrec`` with the SASRec paper's objective, BCE + 1 uniform negative;
- ``1f``: row 1 reading the last 50 items (the like-for-like baseline of the 50-item rows);
- ``2``: ``sasrec`` with the kit's strongest objective (its defaults: full softmax);
- ``2f``: row 2 reading the last 50 items (as dnc_ebr does by default);
- ``2s``: ``sasrec`` with the multi-interest sources' loss (sampled softmax, 1,280 shared
  popularity negatives with logQ), at this table's history length;
- ``3``: "SASRec+" — the dnc_ebr machinery without a prompt, mixed negatives
  (``hard_ratio`` from the positive's cluster, the rest uniform), sampled softmax;
- ``3s`` (ours): row 3 with 6sl's encoder settings (50 items, the intent head on the encoder
  state), the like-for-like SASRec+ for the Hadamard rows that read 50 items;
- ``4``: naive multi-task — no prompt, in-cluster negatives only;
- ``5``: prefix-token prompt + in-cluster negatives;
- ``6``: Hadamard prompt ``[s_1⊙t_k, …, s_n⊙t_k]`` + in-cluster negatives (the paper's final);
- ``7`` (ours): the Hadamard prompt on SASRec+'s loss: the first 30 epochs are row 3
  (unprompted, every position; t_k = 1 is the identity), then the prompts are tuned;
- ``4s``, ``5s``, ``6s`` (ours): rows 4, 5 and 6 reading the last 50 items (dnc_ebr's default);
- ``6sa``, ``6sw``, ``6w`` (ours): the Hadamard prompt with every position trained under its
  prompt each epoch (``task_sampling="all"``), after 20 unprompted epochs (6sw), or after 40
  unprompted epochs with one task per window (6w);
- ``4e``, ``6se`` (ours): rows 4s and 6sw with the intent head reading the encoder's
  unprompted state (``intent_input="encoder"``; 4e is dnc_ebr's default config). ``4e1``:
  row 4e with seed 1.
- ``6sl`` (ours): row 6se with the prompts switched on only after 40 epochs (row 4e's best);
  if its best epoch is at most 40, the restored model's prompts are still the identity.
  ``6sl1``: the same with seed 1 (another validation sample, initialisation and batch order).
  ``6slo``: row 6sl with one task per window once the prompts are on (SASRec's cost per
  window). ``6slt``: row 6sl with the intent head on the prompted states (``task_state``).
- ``6n`` (ours): the Hadamard prompt from the start at one encoder pass per window: each
  window draws one task k, every position trains towards the next item of cluster k at or
  after it (``prompt_targets="next_in_task"``), and the intent head reads the prompted states
  (``intent_input="task_state"``). ``6nl``: the same after 40 unprompted epochs (as 6sl);
  ``6nls``: 6nl with a tenth of the learning rate once the prompts are on.
- ``6p`` (ours): per-position Hadamard prompts (``prompt="hadamard_next"``): item s_i scaled
  by the prompt of the cluster of s_(i+1), the last by the task's, so one pass trains every
  position under its own task; ``6pi``: with the item-embedding intent head (one pass in all);
  ``6pl``: 6p after 40 unprompted epochs (as 6sl).

Each dnc_ebr row is trained once and scored with both quotas (the quota is a
retrieval-time setting): ``equal`` (α = 0) and ``intent`` with α chosen on the
validation split from :data:`ALPHAS`. Every row trains on the leave-one-out training
split with early stopping on validation (``recall_train`` with ``context.validation``).
Reported on the test split: Recall@M (= HR@M) at M = 10/20/50 with the quota applied at
each M, NDCG@10, within-cluster Recall@M (the target's cluster only: the paper's Table 3;
for the sasrec rows, sasrec's full ranking restricted to that cluster, with the clusters
dnc_ebr's default config computes), and trained positions per second.

    python benchmarks/dnc_ebr_ml1m.py [--dataset ml-1m-3k|beauty] [--row 6 ...] [--threads 1]
                                      [--set KEY=JSON ...] [--data DIR]

Each row is written to ``benchmarks/results/dnc_ebr_<dataset>/row_<r>.json`` as it
finishes, so rows can run in parallel processes; the table
``benchmarks/results/dnc_ebr_<dataset>.md`` is rebuilt from every row file present.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from benchmarks.sasrec_ml1m import RATINGS, RESULTS, load_ml1m, run_row  # noqa: E402
from recall_core.files import write_text_atomically  # noqa: E402

MS = (10, 20, 50)
ALPHAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
BEAUTY = "amazon-s3rec/Beauty.txt"
SASREC_PAPER = {"loss": "bce", "sampler": "uniform", "num_negatives": 1}
"""Row 1's objective, the SASRec paper's: BCE with one uniform negative."""
SASREC_PLUS = {"prompt": "none", "negatives": "mixed", "hard_ratio": 0.5,
               "loss": "sampled_softmax", "num_negatives": 32}
PROMPTED_50_ALL = {"prompt": "hadamard", "max_len": 50, "task_sampling": "all"}
"""Row 6sa's config: 50 items read, every position trained under its prompt each epoch."""
PROMPTED_ONE_PASS = {"prompt": "hadamard", "max_len": 50, "task_sampling": "one",
                     "prompt_targets": "next_in_task", "intent_input": "task_state"}
"""Row 6n's config: the Hadamard prompt at SASRec's cost, one encoder pass per window."""
ROWS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "1": ("sasrec, SASRec paper objective (BCE + 1 uniform negative)", "sasrec",
          SASREC_PAPER),
    "1f": ("sasrec, SASRec paper objective, the last 50 items read (max_len 50)", "sasrec",
           {**SASREC_PAPER, "max_len": 50}),
    "2": ("sasrec, strongest objective (kit defaults: full softmax)", "sasrec", {}),
    "2s": ("sasrec, sampled softmax (1,280 shared popularity negatives, logQ)", "sasrec",
           {"loss": "sampled_softmax", "sampler": "popularity", "num_negatives": 1280}),
    "2f": ("sasrec, strongest objective (full softmax), the last 50 items read (max_len 50)",
           "sasrec", {"max_len": 50}),
    "3": ("SASRec+ (mixed easy/hard negatives)", "dnc_ebr", SASREC_PLUS),
    "3s": ("SASRec+ with row 6sl's encoder settings: the last 50 items, the intent head on the "
           "encoder state", "dnc_ebr", {**SASREC_PLUS, "max_len": 50, "intent_input": "encoder"}),
    "4": ("naive multi-task (in-cluster negatives, no prompt)", "dnc_ebr", {"prompt": "none"}),
    "5": ("prefix prompt + in-cluster negatives", "dnc_ebr",
          {"prompt": "prefix", "task_sampling": "one"}),
    "6": ("Hadamard prompt + in-cluster negatives (paper's final)", "dnc_ebr",
          {"prompt": "hadamard", "task_sampling": "one"}),
    "4s": ("naive multi-task, the last 50 items read (max_len 50)", "dnc_ebr",
           {"prompt": "none", "max_len": 50}),
    "4e": ("naive multi-task, 50 items, the intent head reading the encoder state "
           "(intent_input encoder)", "dnc_ebr",
           {"prompt": "none", "max_len": 50, "intent_input": "encoder"}),
    "4e1": ("row 4e again with seed 1 (how far does a seed move it?)", "dnc_ebr",
            {"prompt": "none", "max_len": 50, "intent_input": "encoder", "seed": 1}),
    "5s": ("prefix prompt + in-cluster negatives, the last 50 items read (max_len 50)",
           "dnc_ebr", {"prompt": "prefix", "max_len": 50, "task_sampling": "one"}),
    "6s": ("Hadamard prompt + in-cluster negatives, the last 50 items read (max_len 50)",
           "dnc_ebr", {"prompt": "hadamard", "max_len": 50, "task_sampling": "one"}),
    "6sa": ("Hadamard prompt + in-cluster negatives, 50 items, every position trained per epoch "
            "(task_sampling all)", "dnc_ebr",
            PROMPTED_50_ALL),
    "6sw": ("Hadamard prompt + in-cluster negatives, 50 items: row 4s's first 20 epochs, then "
            "every position under its prompt (task_sampling all)", "dnc_ebr",
            {**PROMPTED_50_ALL, "prompt_warmup_epochs": 20}),
    "6se": ("row 6sw with the intent head reading the unprompted encoder state "
            "(intent_input encoder)", "dnc_ebr",
            {**PROMPTED_50_ALL, "prompt_warmup_epochs": 20, "intent_input": "encoder"}),
    "6sl": ("row 6se with 40 unprompted epochs first (row 4e's best epoch), then the prompts",
            "dnc_ebr",
            {**PROMPTED_50_ALL, "prompt_warmup_epochs": 40, "intent_input": "encoder"}),
    "6sl1": ("row 6sl again with seed 1 (does its gain reproduce?)", "dnc_ebr",
             {**PROMPTED_50_ALL, "prompt_warmup_epochs": 40, "intent_input": "encoder",
              "seed": 1}),
    "6slt": ("row 6sl with the intent head on the prompted states (intent_input task_state: "
             "no unprompted pass in training or serving)", "dnc_ebr",
             {**PROMPTED_50_ALL, "prompt_warmup_epochs": 40, "intent_input": "task_state"}),
    "6slo": ("row 6sl with one task per window in the prompted epochs (task_sampling one; a "
             "best epoch of at most 40 means the restored prompts are the identity)",
             "dnc_ebr", {"prompt": "hadamard", "max_len": 50, "task_sampling": "one",
                         "prompt_warmup_epochs": 40, "intent_input": "encoder"}),
    "6n": ("Hadamard prompt from the start at one encoder pass per window: one task per window, "
           "every position aimed at the next item of that task's cluster (prompt_targets "
           "next_in_task), the intent head on the prompted states (intent_input task_state)",
           "dnc_ebr", PROMPTED_ONE_PASS),
    "6nl": ("row 6n with 40 unprompted epochs first (as row 6sl)", "dnc_ebr",
            {**PROMPTED_ONE_PASS, "prompt_warmup_epochs": 40}),
    "6nls": ("row 6nl with a tenth of the learning rate after the warm-up (prompt_lr_scale "
             "0.1)", "dnc_ebr",
             {**PROMPTED_ONE_PASS, "prompt_warmup_epochs": 40, "prompt_lr_scale": 0.1}),
    "6p": ("per-position Hadamard prompts (prompt hadamard_next: s_i ⊙ t of s_(i+1)'s cluster, "
           "the last item ⊙ t_k): every position under its task in one pass; 50 items, the "
           "intent head on the encoder state", "dnc_ebr",
           {"prompt": "hadamard_next", "max_len": 50, "intent_input": "encoder"}),
    "6pi": ("row 6p with the intent head on the item embeddings (intent_input items: no "
            "unprompted pass, so one encoder pass per window)", "dnc_ebr",
            {"prompt": "hadamard_next", "max_len": 50, "intent_input": "items"}),
    "6pl": ("row 6p with 40 unprompted epochs first (as row 6sl)", "dnc_ebr",
            {"prompt": "hadamard_next", "max_len": 50, "intent_input": "encoder",
             "prompt_warmup_epochs": 40}),
    "6w": ("Hadamard prompt + in-cluster negatives, prompts after 40 epochs of row 4 (t_k = 1 "
           "start)", "dnc_ebr",
           {"prompt": "hadamard", "prompt_warmup_epochs": 40, "task_sampling": "one"}),
    "7": ("Hadamard prompt on SASRec+: row 3's first 30 epochs, then prompts (mixed negatives)",
          "dnc_ebr", {**SASREC_PLUS, "prompt": "hadamard", "prompt_warmup_epochs": 30,
                      "task_sampling": "one"}),
}
DATASETS = {"ml-1m-3k": {"max_len": 200, "intent_input": "items"},
            "beauty": {"max_len": 50, "dropout": 0.5, "intent_input": "items"}}
"""Per-dataset config defaults (``--set`` overrides them). ml-1m-3k pins the 200 items every
row without its own ``max_len`` was measured with (dnc_ebr's own default became 50 after
those rows); both pin the item-embedding intent head every row but 4e and 6se was measured
with (the default became ``"encoder"`` after them); the prompted rows but 6sa and 6sw pin
``task_sampling="one"``, the default they were measured with."""


def row_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that pick the data, the rows and the threads (shared with
    ``train_throughput.py``)."""
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("RECALL_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="ml-1m-3k")
    parser.add_argument("--row", action="append", dest="rows", choices=list(ROWS))
    parser.add_argument("--threads", type=int, default=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    row_arguments(parser)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a config key of every row run (keys sasrec lacks are "
                             "dropped for the sasrec rows)")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table")
    args = parser.parse_args()
    os.environ.setdefault("RECALL_THREADS", str(args.threads))
    rows_dir = RESULTS / f"dnc_ebr_{args.dataset}"
    if not args.table_only:
        run_rows(args, rows_dir)
    table = markdown(args.dataset, load_rows(rows_dir))
    (RESULTS / f"dnc_ebr_{args.dataset}.md").write_text(table)
    sys.stdout.write(table)


def run_rows(args: argparse.Namespace, rows_dir: Path) -> None:
    from recall_core.evaluation.protocols import make_split

    dataset = load_dataset(args.dataset, args.data)
    split = make_split(dataset, "paper")
    overrides = {key: json.loads(value) for key, value in (s.split("=", 1) for s in args.set)}
    rows_dir.mkdir(parents=True, exist_ok=True)
    for row in args.rows or list(ROWS):
        title, kind, config = ROWS[row]
        values = {**DATASETS[args.dataset], **config, **overrides}
        if kind == "sasrec":
            values = {k: v for k, v in values.items() if k in sasrec_keys()}
            extra = lambda *a: sasrec_within_cluster(*a, split=split)  # noqa: E731
        else:
            extra = lambda *a: dnc_metrics(*a, split=split)  # noqa: E731
        result = {**run_row(title, values, split, args.threads, kind, extra), "kind": kind,
                  "dataset": dataset.summary(),
                  "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                              "threads": args.threads, "loadavg_after": os.getloadavg()}}
        write_text_atomically(rows_dir / f"row_{row}.json", json.dumps(result, indent=2) + "\n")


def load_rows(rows_dir: Path) -> dict[str, dict[str, Any]]:
    found = {p.stem.removeprefix("row_"): json.loads(p.read_text())
             for p in sorted(rows_dir.glob("row_*.json"))}
    return {row: found[row] for row in ROWS if row in found}


def sasrec_keys() -> set[str]:
    from recall_plugins.sasrec.config import SasrecConfig

    return set(SasrecConfig.model_fields)


def load_dataset(name: str, data: Path):  # type: ignore[no-untyped-def]
    """ml-1m-3k (``movielens`` importer) or Amazon Beauty (``sequences`` importer)."""
    if name == "ml-1m-3k":
        if not (data / "ml-1m" / RATINGS).is_file():
            sys.exit(f"skipped: {data / 'ml-1m' / RATINGS} not found (set --data or RECALL_DATA)")
        return load_ml1m(data / "ml-1m")
    path = data / BEAUTY
    if not path.is_file():
        sys.exit(f"skipped: {path} not found (set --data or RECALL_DATA)")
    from recall_core.host import make_host

    importer = make_host(load_entry_points=False).importers["sequences"]
    return importer.load(path, importer.options_model.model_validate({}))[0]


def _hits(ranked: Any, target: Any, m: int) -> float:
    return round(float((ranked[:, :m] == target[:, None]).any(1).mean()), 4)


def dnc_metrics(host: Any, handle: Any, config: Any, model_dir: Path, *, split: Any) -> dict[str, Any]:
    """Test Recall@M under the equal and the intent quota (α tuned on validation), within-cluster."""
    import numpy as np

    item_cluster = np.load(Path(model_dir) / "clusters.npy")
    lists = {name: handle.cluster_lists(getattr(split, name).queries, max(MS))
             for name in ("valid", "test")}
    targets = {name: np.array([t[0] for t in getattr(split, name).targets], np.int64)
               for name in ("valid", "test")}

    def quota_recall(name: str, quota: str, alpha: float) -> dict[str, float]:
        handle.quota, handle.alpha = quota, alpha
        return {f"Recall@{m}": _hits(handle.merge(lists[name], m).items, targets[name], m)
                for m in MS}

    tuned = max(ALPHAS, key=lambda a: quota_recall("valid", "intent", a)["Recall@20"])
    test_target = targets["test"]
    own = lists["test"].items[np.arange(len(test_target)), item_cluster[test_target]]
    training = json.loads((Path(model_dir) / "training.json").read_text())
    return {"quota_recall": {"equal": quota_recall("test", "equal", 0.0),
                             "intent": quota_recall("test", "intent", tuned),
                             "score": quota_recall("test", "score", 0.0)},
            "alpha": tuned,
            "within_cluster_recall": {f"Recall@{m}": _hits(own, test_target, m) for m in MS},
            "clusters": len(training["cluster_sizes"]), "cluster_sizes": training["cluster_sizes"]}


def sasrec_within_cluster(host: Any, handle: Any, config: Any, model_dir: Path, *,
                          split: Any) -> dict[str, Any]:
    """Within-cluster Recall@M of a sasrec row: its ranking restricted to the target's cluster."""
    import numpy as np

    from recall_plugins.dnc_ebr.clusters import assign_clusters
    from recall_plugins.dnc_ebr.config import DncEbrConfig

    item_cluster = assign_clusters(DncEbrConfig(), split.train)
    queries, target = split.test.queries, np.array([t[0] for t in split.test.targets], np.int64)
    ranked = host.retrieve("sasrec", handle, queries, split.train.num_items).items
    same = (ranked >= 0) & (item_cluster[ranked.clip(min=0)] == item_cluster[target][:, None])
    order = np.argsort(~same, axis=1, kind="stable")  # the target cluster's items first, in order
    own = np.where(np.take_along_axis(same, order, 1), np.take_along_axis(ranked, order, 1), -1)
    return {"within_cluster_recall": {f"Recall@{m}": _hits(own, target, m) for m in MS}}


def median_epoch_rate(r: dict[str, Any]) -> float:
    """Trained positions/s of the median epoch: robust to epochs slowed by other work on
    the machine, which pull the mean down (the curve holds each epoch's training seconds)."""
    import numpy as np

    seconds = [row[3] for row in r["validation_curve"]]
    per_epoch = r["samples_per_second"] * sum(seconds) / len(seconds)
    return per_epoch / float(np.median(seconds))


def _median_cell(r: dict[str, Any]) -> str:
    # A warm-up row trains every position early and a share later: no single per-epoch count.
    return "–" if r["config"].get("prompt_warmup_epochs") else f"{median_epoch_rate(r):,.0f}"


def windows_rate(r: dict[str, Any]) -> float:
    """Training windows (sequence samples) per second of the median epoch: every row reads
    every window once per epoch, whatever share of its positions it trains."""
    import numpy as np

    return r["windows"] / float(np.median([row[3] for row in r["validation_curve"]]))


def markdown(dataset: str, rows: dict[str, dict[str, Any]]) -> str:
    lines = [f"# Sequential EBR on {dataset}: sasrec rows and dnc_ebr ablations "
             "(paper protocol: leave-one-out, full ranking, test split)", ""]
    if rows:
        any_row = next(iter(rows.values()))
        d, machine = any_row["dataset"], any_row["machine"]
        lines += [f"{d['users']:,} users, {d['items']:,} items, {d['interactions']:,} interactions; "
                  f"{machine['cpus']} CPUs (threads: each row's own, see the column). Early "
                  "stopping on validation NDCG@10 (best epoch restored). R@M = HR@M with the quota "
                  "applied at M; α of the intent quota tuned on validation; in-cluster R@M: the "
                  "ground-truth item's cluster only (the paper's Table 3). Throughput: *trained "
                  "positions* counts the targets a row trains on (a prompted row trains, per "
                  "pass, only the positions aimed at the window's drawn task); *windows* counts "
                  "the training sequences read, the unit of the paper's samples/s.", ""]
    lines += ["| row | what | quota (α) | R@10 | R@20 | R@50 | NDCG@10 | in-cluster R@10 | R@20 | "
              "R@50 | best / run epochs | train s | threads | trained positions/s (mean, median "
              "epoch) | windows/s (median epoch) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row, r in rows.items():
        within = [r.get("within_cluster_recall", {}).get(f"Recall@{m}") for m in MS]
        variants = ([("equal (0)", r["quota_recall"]["equal"]),
                     (f"intent ({r['alpha']})", r["quota_recall"]["intent"])]
                    + ([("none (score: by log-probability)", r["quota_recall"]["score"])]
                       if "score" in r["quota_recall"] else [])
                    if "quota_recall" in r else
                    [("–", {f"Recall@{m}": r["test"][f"HR@{m}"] for m in MS})])
        for label, recall in variants:
            cells = [recall[f"Recall@{m}"] for m in MS] + [r["test"]["NDCG@10"]] + within
            shown = " | ".join("–" if v is None else f"{v:.4f}" for v in cells)
            lines.append(f"| {row} | {r['title']} | {label} | {shown} | {r['best_epoch']} / "
                         f"{r['epochs_run']} | {r['train_seconds']:.0f} | "
                         f"{r['machine']['threads']} | {r['samples_per_second']:,.0f}, "
                         f"{_median_cell(r)} | {windows_rate(r):,.0f} |")
    lines += ["", "NDCG@10 of a dnc_ebr row is that of the merge in its config (`quota`, "
              "`alpha`), which also drove early stopping. Configs:", ""]
    lines += [f"- row {row}: `{json.dumps(r['config'], sort_keys=True)}`" for row, r in rows.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
