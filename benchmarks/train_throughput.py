"""Benchmark: training throughput of the sequential-EBR rows, measured side by side.

The rows of ``dnc_ebr_ml1m.py`` were trained on different days, and this shared
two-core VM's speed drifts by a third or more between sessions, so their throughput
columns cannot be compared with each other. This script trains short runs of the
chosen rows in interleaved rounds (row A, row B, …, then again), so every row sees the
same machine, and reports each row's speed against row 1's.

A row's *trained positions* are the (history, next item) samples it fits: the paper's
samples. *Windows* are the training sequences read per epoch. A prompted row runs its
prompts from the first epoch here (``prompt_warmup_epochs`` is set to 0): a warm-up's
epochs are the unprompted row's, so what is measured is the prompted epoch's cost.
Each run trains ``--epochs`` epochs and keeps the last one's time (the first pays
one-off costs); validation is excluded from the times.

    python benchmarks/train_throughput.py [--dataset ml-1m-3k|beauty] [--row 1 --row 6s ...]
                                          [--epochs 2] [--rounds 2] [--threads 2]

Writes ``benchmarks/results/train_throughput_<dataset>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from benchmarks.dnc_ebr_ml1m import (  # noqa: E402
    DATASETS,
    ROWS,
    load_dataset,
    row_arguments,
    sasrec_keys,
)
from recall_core.files import write_text_atomically  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
DEFAULT_ROWS = ("1", "1f", "4s", "4e", "6s", "6sa", "6sl", "6p", "6pi")
"""Row 1 and its 50-item twin, the unprompted dnc_ebr rows, the paper's Hadamard schedule
(one task per window), the every-task schedule (6sa; 6sl's prompted epochs) and the
per-position prompts (6p; 6pi without the encoder intent head's extra pass)."""
VALIDATION_USERS = 200  # validated once, after the last epoch; only so that training runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    row_arguments(parser)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (the last is timed)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved runs of every row")
    args = parser.parse_args()
    os.environ.setdefault("RECALL_THREADS", str(args.threads))
    rows = args.rows or list(DEFAULT_ROWS)
    if "1" not in rows:
        rows.insert(0, "1")  # the reference every ratio is taken against
    result = measure(args, rows)
    stem = RESULTS / f"train_throughput_{args.dataset}"
    write_text_atomically(stem.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    write_text_atomically(stem.with_suffix(".md"), table)
    sys.stdout.write(table)


def measure(args: argparse.Namespace, rows: list[str]) -> dict[str, Any]:
    """Every row's timed epochs over ``args.rounds`` interleaved rounds, and the summary."""
    from recall_core.evaluation.protocols import make_split
    from recall_core.native import retain_freed_memory

    retain_freed_memory()  # as the recall CLI and the other benchmarks do
    dataset = load_dataset(args.dataset, args.data)
    split = make_split(dataset, "paper")
    runs: dict[str, list[dict[str, Any]]] = {row: [] for row in rows}
    began = time.strftime("%Y-%m-%d %H:%M:%S %z")
    for round_number in range(1, args.rounds + 1):
        for row in rows:
            runs[row].append(timed_run(row, args, split))
            last = runs[row][-1]
            print(f"round {round_number} row {row}: {last['seconds']:.1f} s, "
                  f"{last['positions'] / last['seconds']:,.0f} positions/s", file=sys.stderr)
    summary = {row: _summary(found) for row, found in runs.items()}
    reference = summary["1"]
    for found in summary.values():
        found["positions_vs_row_1"] = round(found["positions_per_s"] / reference["positions_per_s"], 3)
    return {"dataset": args.dataset, "epochs_per_run": args.epochs, "rounds": args.rounds,
            "threads": args.threads, "started": began,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "rows": {row: {"title": ROWS[row][0], "config": config_of(row, args.dataset, args.epochs),
                           **summary[row], "runs": runs[row]} for row in rows}}


def config_of(row: str, dataset: str, epochs: int) -> dict[str, Any]:
    """The row's benchmark config, shortened to ``epochs`` and prompted from the start."""
    _, kind, config = ROWS[row]
    values = {**DATASETS[dataset], **config, "epochs": epochs, "eval_every": epochs,
              "patience": epochs}
    if kind == "sasrec":
        return {key: value for key, value in values.items() if key in sasrec_keys()}
    values.pop("prompt_lr_scale", None)  # a warm-up's setting; the speed does not depend on it
    return {**values, "prompt_warmup_epochs": 0}


def timed_run(row: str, args: argparse.Namespace, split: Any) -> dict[str, Any]:
    """Train ``row`` for ``args.epochs`` epochs; its last epoch's seconds and counts."""
    import importlib

    from recall_core.contract import TrainContext
    from recall_core.evaluation.protocols import EvalQueries
    from recall_core.host import make_host
    from recall_core.progress import SilentProgress

    kind = ROWS[row][1]
    plugin = importlib.import_module(f"recall_plugins.{kind}.plugin")
    host = make_host(load_entry_points=False, builtins=False, extra_plugins=[plugin])
    config = host.validate_config(kind, config_of(row, args.dataset, args.epochs))
    few = EvalQueries(split.valid.queries.slice(0, VALIDATION_USERS),
                      split.valid.targets[:VALIDATION_USERS])
    with tempfile.TemporaryDirectory() as workdir:
        context = TrainContext(Path(workdir), SilentProgress(), args.threads, validation=few)
        metrics = host.train(kind, config, split.train, context)
        history = json.loads((Path(workdir) / "training.json").read_text())["history"]
    last = history[-1]
    return {"seconds": last["seconds"], "positions": last["samples"], "windows": metrics["windows"]}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = statistics.median(run["seconds"] for run in runs)
    positions = statistics.median(run["positions"] for run in runs)
    windows = runs[0]["windows"]
    return {"epoch_seconds": round(seconds, 2), "positions_per_epoch": int(positions),
            "windows_per_epoch": windows, "positions_per_s": round(positions / seconds, 1),
            "windows_per_s": round(windows / seconds, 1)}


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    lines = [f"# Training throughput side by side ({result['dataset']}, {result['threads']} "
             "threads)", "",
             f"Every row trained {result['epochs_per_run']} epochs per run, the last one timed, "
             f"in {result['rounds']} interleaved rounds ({result['started']} to "
             f"{result['finished']}); medians over the rounds. Prompted rows are prompted from "
             "the first epoch (a warm-up's epochs cost what the unprompted row's do). Trained "
             "positions are the (history, next item) samples fitted, the unit compared with "
             "row 1; windows are the sequences read, which depend on `max_len` (row 1 reads "
             "200 items, the others 50), so they are not compared across rows.", "",
             "| row | what | epoch s | trained positions / epoch | positions/s | vs row 1 | "
             "windows/s |", "|---|---|---|---|---|---|---|"]
    for row, r in rows.items():
        lines.append(f"| {row} | {r['title']} | {r['epoch_seconds']:.1f} | "
                     f"{r['positions_per_epoch']:,} | {r['positions_per_s']:,.0f} | "
                     f"{r['positions_vs_row_1']:.2f} | {r['windows_per_s']:,.0f} |")
    lines += ["", "Regenerate: `python benchmarks/train_throughput.py` (options in its docstring)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
