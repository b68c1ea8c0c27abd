"""Training of ``dnc_ebr``: clusters, then the prompted encoder and intent head jointly.

Artifacts written into ``context.workdir``: ``clusters.npy`` (item -> cluster),
``model.pt`` (state_dict of the best validation epoch), ``model.json`` (the
:class:`~recall_plugins.dnc_ebr.model.DncEbrSpec`) and ``training.json``
(per-epoch history and cluster sizes).

Throughput with a prompt: a window's hidden states depend on its task, so one
encoder pass serves one task. ``task_sampling="one"`` gives each window the
cluster of one of its targets (a uniformly drawn position, so a cluster is
chosen in proportion to its share of the window) and trains the positions aimed
at that cluster: the same cost per batch as SASRec, fewer trained positions per
pass. ``"all"`` repeats each window once per cluster among its targets, so every
position trains every epoch at up to K times the cost. Either way a row's pass stops
after its last trained position (causal attention: the same states); a window's
rarer clusters end early, so under ``"all"`` an ml-1m-3k training step measured 42%
faster on one thread (``"one"``: 9%). ``prompt_targets="next_in_task"`` aims every position
of a row at the next item of the row's task instead, so ``"one"`` trains most positions per
pass; with ``intent_input="task_state"`` the intent head reads that same pass.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recall_core.contract import TrainContext
from recall_core.data.dataset import Dataset
from recall_core.native import torch as load_torch
from recall_core.training.batching import SequenceBatch
from recall_core.training.encoders import EncoderSpec
from recall_core.training.faiss_index import IndexSettings
from recall_core.training.loop import fit, loop_settings
from recall_core.training.losses import ClusterSoftmax, Objective
from recall_core.training.samplers import (
    HardEasySampler,
    InClusterSampler,
    PopularitySampler,
    UniformSampler,
)
from recall_core.training.setup import prepare_training
from recall_core.training.validation import full_ranking_validator
from recall_plugins.dnc_ebr.clusters import assign_clusters
from recall_plugins.dnc_ebr.config import DncEbrConfig
from recall_plugins.dnc_ebr.model import DncEbrNet, DncEbrSpec

torch = load_torch()
F = torch.nn.functional
Tensor = torch.Tensor
MODEL_FILE, SPEC_FILE, HISTORY_FILE, CLUSTER_FILE = "model.pt", "model.json", "training.json", "clusters.npy"
Loss = Callable[[Tensor, Tensor, Tensor], Tensor]
PASS_GROUPS = 4
"""Encoder passes a prompted batch is split into, each cut after its rows' last target."""


def make_loss(config: DncEbrConfig, target_counts: np.ndarray, item_cluster: np.ndarray) -> Loss:
    """``loss(user_vectors, positive_ids, item_table)`` for the configured negatives."""
    if config.negatives == "global":
        return Objective.from_config(config, target_counts, item_cluster)
    if config.negatives == "in_cluster" and config.loss == "softmax":
        return ClusterSoftmax(torch.from_numpy(item_cluster), config.temperature)
    sampler: Any = InClusterSampler(item_cluster, seed=config.seed)
    if config.negatives == "mixed":
        easy = (PopularitySampler(target_counts, config.popularity_power, config.seed + 1, shared=False)
                if config.mixed_corpus == "popularity"
                else UniformSampler(len(item_cluster), config.seed + 1, shared=False))
        sampler = HardEasySampler(sampler, easy, config.hard_ratio)
    return Objective(config.loss, sampler, config.num_negatives, config.temperature,
                     config.logq_correction)


def pick_tasks(target_cluster: Tensor, lengths: Tensor, mode: str, num_clusters: int,
               generator: Any) -> tuple[Tensor, Tensor]:
    """Encoder rows for a batch: ``(window index (R,), task (R,))``.

    ``target_cluster`` ``(B, T)``: cluster of each position's target, -1 = none.
    ``one``: R = B, each window's task is the cluster of a uniformly drawn real
    position; ``all``: one row per (window, cluster among its targets).
    """
    batch = len(target_cluster)
    if mode == "one":
        drawn = (torch.rand(batch, generator=generator) * lengths).long()  # (B,) in [0, length)
        drawn = torch.minimum(drawn, (lengths - 1).clamp(min=0))
        return torch.arange(batch), target_cluster[torch.arange(batch), drawn]
    present = torch.zeros(batch, num_clusters + 1, dtype=torch.bool)
    present.scatter_(1, (target_cluster + 1).clamp(min=0), True)  # column 0 = "no target"
    rows, tasks = present[:, 1:].nonzero(as_tuple=True)
    return rows, tasks


def next_in_task(targets: Tensor, target_cluster: Tensor, tasks: Tensor) -> tuple[Tensor, Tensor]:
    """Targets ``(R, T)`` and trained mask ``(R, T)`` under ``prompt_targets="next_in_task"``.

    Under row r's task k, position i aims at the first of its window's targets at or after
    i that lies in cluster k (the next item of k the user reached): every position with a
    later item of k trains, not only those whose very next item is in k.
    """
    length = targets.shape[1]
    positions = torch.arange(length).expand_as(targets)
    upcoming = torch.where(target_cluster == tasks[:, None], positions, length)
    nearest = upcoming.flip(1).cummin(dim=1).values.flip(1)  # first index >= i in task k
    mask = (nearest < length) & (targets >= 0)
    return targets.gather(1, nearest.clamp(max=length - 1)), mask


def prompted_states(net: DncEbrNet, inputs: Tensor, targets: Tensor, tasks: Tensor,
                    mask: Tensor, groups: int = PASS_GROUPS) -> tuple[Tensor, Tensor]:
    """Hidden states ``(M, d)`` of the trained positions (``mask`` ``(R, T)``) under each row's
    task, and their targets ``(M,)``.

    The encoder is causal, so a row's pass can stop after its last trained position: the
    rows, sorted by that length, run in ``groups`` passes, each cut to its longest row.
    Under ``task_sampling="all"`` a window's rows for its rarer clusters often end early,
    which this saves; the states are those of the full-length pass.
    """
    length = mask.shape[1]
    positions = torch.arange(1, length + 1)
    needed = (mask * positions).amax(dim=1)  # (R,) last trained position + 1 (0: none)
    order = needed.argsort(stable=True)
    states, positives = [], []
    for part in order.tensor_split(min(groups, max(1, len(order)))):
        cut = max(1, int(needed[part].max()))
        part_mask = mask[part, :cut]
        states.append(net.hidden(inputs[part, :cut], tasks[part])[part_mask])
        positives.append(targets[part, :cut][part_mask])
    return torch.cat(states), torch.cat(positives)


def make_step(net: DncEbrNet, loss: Loss, item_cluster: np.ndarray, config: DncEbrConfig,
              phase: dict[str, int] | None = None) -> Callable[[SequenceBatch], tuple[Tensor, int]]:
    """The training step: in-task retrieval loss plus the weighted intent cross-entropy.

    ``phase["epoch"]`` (kept current by the caller) switches the prompts on after
    ``config.prompt_warmup_epochs``; before, every position trains the shared encoder.
    """
    cluster = torch.from_numpy(item_cluster)
    generator = torch.Generator().manual_seed(config.seed)
    phase = phase if phase is not None else {"epoch": config.prompt_warmup_epochs + 1}

    def step(batch: SequenceBatch) -> tuple[Tensor, int]:
        trained = batch.targets >= 0  # (B, T)
        target_cluster = torch.where(trained, cluster[batch.targets.clamp(min=0)], -1)
        prompted = net.task_dependent and phase["epoch"] > config.prompt_warmup_epochs
        if prompted and not net.next_prompted:
            return prompted_step(batch, target_cluster)
        # One pass trains every position: unprompted, or (hadamard_next) each position under
        # its own target's cluster as its prompt.
        states = (net.hidden(batch.inputs, target_cluster.clamp(min=0)) if prompted
                  else net.encoder(batch.inputs))  # (B, T, d)
        total = loss(states[trained], batch.targets[trained], net.item_vectors())
        if net.intent is not None:  # prompted states carry the answer: an "encoder" head
            # reads its own unprompted pass
            total = total + intent_loss(net.intent_logits(batch.inputs, None if prompted
                                                          else states), target_cluster)
        return total, int(trained.sum())

    def prompted_step(batch: SequenceBatch, target_cluster: Tensor) -> tuple[Tensor, int]:
        rows, tasks = pick_tasks(target_cluster, batch.lengths, config.task_sampling,
                                 net.spec.num_clusters, generator)
        targets, row_cluster = batch.targets[rows], target_cluster[rows]
        if config.prompt_targets == "next_in_task":
            targets, mask = next_in_task(targets, row_cluster, tasks)
        else:
            mask = row_cluster == tasks[:, None]  # positions aimed at the row's task
        if net.intent_reads_task_state:  # one uncut pass feeds both heads
            hidden = net.hidden(batch.inputs[rows], tasks)
            states, positives = hidden[mask], targets[mask]
            intent = intent_loss(net.intent(hidden), row_cluster)
        else:
            states, positives = prompted_states(net, batch.inputs[rows], targets, tasks, mask)
            # an "encoder" head reads the unprompted state: one more pass
            intent = (intent_loss(net.intent_logits(batch.inputs), target_cluster)
                      if net.intent is not None else 0.0)
        return loss(states, positives, net.item_vectors()) + intent, len(positives)

    def intent_loss(logits: Tensor, target_cluster: Tensor) -> Tensor:
        """The weighted cross-entropy of the cluster logits ``(R, T, K)`` at trained positions."""
        aimed = target_cluster >= 0
        return config.intent_weight * F.cross_entropy(logits[aimed], target_cluster[aimed])

    return step


def train(config: DncEbrConfig, dataset: Dataset, context: TrainContext) -> dict[str, Any]:
    """Cluster the items, fit the model with early stopping, write the artifacts."""
    from recall_plugins.dnc_ebr.retrieval import DncEbrHandle, build_indexes

    torch.set_num_threads(config.threads or context.threads)
    dataset, validation, windows, batcher, target_counts = prepare_training(config, dataset, context)
    began = time.perf_counter()
    item_cluster = assign_clusters(config, dataset)
    cluster_seconds = time.perf_counter() - began
    spec = DncEbrSpec(
        EncoderSpec(dataset.num_items, config.max_len, config.dim, config.layers, config.heads,
                    config.dropout, prefix_tokens=int(config.prompt == "prefix")),
        int(item_cluster.max()) + 1, config.prompt, config.intent_weight > 0, config.temperature,
        config.intent_input)
    net = DncEbrNet(spec)
    if net.next_prompted:
        net.set_clusters(item_cluster)
    phase = {"epoch": 0}
    settings = loop_settings(config, context.threads, patience_from=config.prompt_warmup_epochs)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr, betas=settings.betas,
                                 weight_decay=settings.weight_decay)

    def batches(epoch: int) -> Any:
        phase["epoch"] = epoch  # the step reads it: prompts switch on after the warm-up
        if config.prompt_warmup_epochs and epoch == config.prompt_warmup_epochs + 1:
            for group in optimizer.param_groups:  # the tuning's own step size
                group["lr"] = config.lr * config.prompt_lr_scale
        return batcher.epoch(epoch)

    step = make_step(net, make_loss(config, target_counts, item_cluster), item_cluster, config,
                     phase)
    validate = None
    if validation is not None:
        flat = IndexSettings("flat")
        retrieve = lambda queries, k: DncEbrHandle(  # noqa: E731 - rebuilt per round: follows training
            net, item_cluster, build_indexes(net, item_cluster, flat), config.quota,
            config.alpha).retrieve(queries, k)
        validate = full_ranking_validator(retrieve, validation, dataset.num_items)
    workdir = Path(context.workdir)
    # The warm-up's rounds never count towards patience (loop_settings above): stopping inside
    # it would leave the prompts untried (an ml-1m-3k run with 40 warm-up epochs stopped at 34).
    result = fit(net, batches, step, validate, settings, context.progress,
                 checkpoint=workdir / MODEL_FILE, num_batches=len(batcher), optimizer=optimizer)
    sizes = np.bincount(item_cluster).tolist()
    np.save(workdir / CLUSTER_FILE, item_cluster)
    torch.save(net.state_dict(), workdir / MODEL_FILE)
    (workdir / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    history = {**result.to_dict(), "cluster_sizes": sizes, "cluster_seconds": round(cluster_seconds, 2)}
    (workdir / HISTORY_FILE).write_text(json.dumps(history, indent=2) + "\n")
    summary = result.to_dict()
    summary.pop("history")
    return {**summary, "windows": len(windows), "positions_per_epoch": windows.num_positions,
            "clusters": len(sizes), "cluster_sizes": sizes,
            "cluster_seconds": round(cluster_seconds, 2),
            "validation_queries": 0 if validation is None else len(validation)}
