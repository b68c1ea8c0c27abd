"""A model-agnostic training loop with early stopping on full-ranking validation.

The loop knows nothing about the model: it gets a ``step`` (batch -> loss and
the number of samples it trained), a per-epoch batch iterator and a
``validate`` function (-> metrics such as ``HR@10`` / ``NDCG@10``). It runs
Adam, validates every ``eval_every`` epochs, keeps (in memory and on disk) the
state of the best validation round, stops after ``patience`` rounds without
improvement, and restores the best state at the end.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recall_core.native import torch as load_torch
from recall_core.progress import ProgressReporter, SilentProgress

torch = load_torch()
Tensor = torch.Tensor
Step = Callable[[Any], tuple[Tensor, int]]
"""One training step's forward pass: batch -> (scalar loss, samples in the batch)."""


@dataclass(frozen=True)
class LoopSettings:
    epochs: int = 200
    patience: int = 5  # validation rounds without improvement before stopping
    eval_every: int = 1
    monitor: str = "NDCG@10"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)  # SASRec's Adam betas
    grad_clip: float | None = None  # max gradient norm; None = no clipping
    threads: int | None = None  # torch.set_num_threads; None = leave as is
    seed: int = 0
    time_budget_s: float | None = None  # stop after the epoch that crosses it
    patience_from: int = 0
    """Rounds up to this epoch never count towards ``patience`` (a training phase that must
    run in full, such as dnc_ebr's unprompted warm-up before its prompts switch on)."""


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    samples: int
    seconds: float
    samples_per_second: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    best_epoch: int
    best_metrics: dict[str, float]
    epochs_run: int
    stopped_early: bool
    stop_reason: str  # "patience" | "time_budget" | "epochs"
    train_seconds: float
    samples_per_second: float
    history: list[EpochRecord]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the per-epoch history included)."""
        out = asdict(self)
        out["train_seconds"] = round(self.train_seconds, 2)
        out["samples_per_second"] = round(self.samples_per_second, 1)
        return out


def fit(module: Any, batches: Callable[[int], Iterable[Any]], step: Step,
        validate: Callable[[], dict[str, float]] | None, settings: LoopSettings,
        progress: ProgressReporter | None = None, checkpoint: Path | None = None,
        num_batches: int | None = None, optimizer: Any = None) -> TrainResult:
    """Train ``module`` and leave it in the state of its best validation round.

    ``batches(epoch)`` yields that epoch's batches; ``step(batch)`` returns the
    loss to minimise; ``validate()`` (run in eval mode under ``no_grad``) returns
    metrics containing ``settings.monitor``. Without ``validate`` every epoch
    runs and the last state is kept. ``checkpoint``: the best state is also
    written there (``torch.save`` of the state_dict).
    """
    progress = progress or SilentProgress()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    optimizer = optimizer or torch.optim.Adam(module.parameters(), lr=settings.lr,
                                              betas=settings.betas,
                                              weight_decay=settings.weight_decay)
    history: list[EpochRecord] = []
    best = _Best(settings.monitor)
    started = time.perf_counter()
    total_samples, stale, stop_reason = 0, 0, "epochs"
    for epoch in range(1, settings.epochs + 1):
        record = _train_epoch(module, optimizer, batches(epoch), step, settings, progress,
                              epoch, num_batches)
        total_samples += record.samples
        history.append(record)
        if validate is not None and (epoch % settings.eval_every == 0 or epoch == settings.epochs):
            record.metrics = _validate(module, validate)
            if best.update(epoch, record.metrics, module):
                stale = 0
                if checkpoint is not None:
                    torch.save(best.state, checkpoint)
            elif epoch > settings.patience_from:
                stale += 1
        progress.log(_describe(record, settings.monitor, best))
        if stale >= settings.patience:
            stop_reason = "patience"
            break
        if settings.time_budget_s and time.perf_counter() - started > settings.time_budget_s:
            stop_reason = "time_budget"
            break
    elapsed = time.perf_counter() - started
    if best.state is not None:
        module.load_state_dict(best.state)
    module.eval()
    return TrainResult(
        best_epoch=best.epoch or len(history), best_metrics=best.metrics,
        epochs_run=len(history), stopped_early=stop_reason == "patience",
        stop_reason=stop_reason, train_seconds=elapsed,
        samples_per_second=total_samples / max(sum(r.seconds for r in history), 1e-9),
        history=history)


class _Best:
    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.value = -math.inf
        self.epoch = 0
        self.metrics: dict[str, float] = {}
        self.state: dict[str, Any] | None = None

    def update(self, epoch: int, metrics: dict[str, float], module: Any) -> bool:
        if self.monitor not in metrics:
            raise KeyError(f"validation returned no {self.monitor!r} (got {sorted(metrics)})")
        if metrics[self.monitor] <= self.value:
            return False
        self.value, self.epoch, self.metrics = metrics[self.monitor], epoch, dict(metrics)
        self.state = copy.deepcopy(module.state_dict())
        return True


def _train_epoch(module: Any, optimizer: Any, batches: Iterable[Any], step: Step,
                 settings: LoopSettings, progress: ProgressReporter, epoch: int,
                 num_batches: int | None) -> EpochRecord:
    module.train()
    loss_sum, samples, steps = 0.0, 0, 0
    began = time.perf_counter()
    with progress.task(f"epoch {epoch}", total=num_batches) as task:
        for batch in batches:
            loss, batch_samples = step(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip:
                torch.nn.utils.clip_grad_norm_(module.parameters(), settings.grad_clip)
            optimizer.step()
            loss_sum += float(loss.detach())
            samples += batch_samples
            steps += 1
            task.advance()
    seconds = time.perf_counter() - began
    return EpochRecord(epoch, loss_sum / max(steps, 1), samples, round(seconds, 3),
                       round(samples / max(seconds, 1e-9), 1))


def _validate(module: Any, validate: Callable[[], dict[str, float]]) -> dict[str, float]:
    module.eval()
    with torch.no_grad():
        metrics = validate()
    return {name: round(float(value), 6) for name, value in metrics.items()}


def _describe(record: EpochRecord, monitor: str, best: _Best) -> str:
    text = (f"epoch {record.epoch}: loss {record.loss:.4f}, "
            f"{record.samples_per_second:,.0f} samples/s, {record.seconds:.1f}s")
    if record.metrics:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in record.metrics.items() if k.endswith(("@10", "@50")))
        text += f"; valid {shown} (best {monitor} {best.value:.4f} @ epoch {best.epoch})"
    return text


def loop_settings(config: Any, threads: int | None = None, **overrides: Any) -> LoopSettings:
    """LoopSettings from a :class:`~recall_core.training.config.NeuralConfig`.

    ``threads`` (the project's budget) applies when the config leaves ``threads`` unset.
    """
    values = dict(
        epochs=config.epochs, patience=config.patience, eval_every=config.eval_every,
        monitor=config.monitor, lr=config.lr, weight_decay=config.weight_decay,
        grad_clip=config.grad_clip, threads=config.threads or threads, seed=config.seed,
        time_budget_s=None if config.time_budget_minutes is None else 60 * config.time_budget_minutes)
    values.update(overrides)
    return LoopSettings(**values)
