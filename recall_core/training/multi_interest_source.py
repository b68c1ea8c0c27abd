"""Train, index and serve a :class:`~recall_core.training.interests.MultiInterestModel`.

The ``comirec`` and ``mind`` plugins differ only in the
:class:`~recall_core.training.interests.InterestSpec` they build and the
readout power; everything else is here.

Artifacts (``train``): ``model.pt`` (state_dict of the best validation epoch),
``model.json`` (the spec), ``training.json`` (per-epoch history) and
``categories.npy`` (item -> category used by the diversity term). Index
(``build``): ``items.faiss``, the item embeddings in an inner-product index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from recall_core.contract import Candidates, QueryBatch, TrainContext
from recall_core.data.dataset import Dataset
from recall_core.errors import ArtifactError
from recall_core.native import torch as load_torch
from recall_core.training.batching import SequenceBatch, known_histories, pad_histories
from recall_core.training.faiss_index import IndexSettings, ItemIndex
from recall_core.training.inference import SavedGraphs, example_histories, serving_forward
from recall_core.training.interest_config import MultiInterestConfig
from recall_core.training.interests import InterestSpec, MultiInterestModel, readout
from recall_core.training.loop import fit, loop_settings
from recall_core.training.losses import Objective
from recall_core.training.multi_interest import AggregationSettings, search_interests
from recall_core.training.user_cache import UserVectorCache
from recall_core.training.setup import prepare_training
from recall_core.training.validation import full_ranking_validator

torch = load_torch()
MODEL_FILE, SPEC_FILE, HISTORY_FILE = "model.pt", "model.json", "training.json"
CATEGORY_FILE, INDEX_FILE = "categories.npy", "items.faiss"
ENCODE_BATCH = 512
KMEANS_ITERATIONS = 20


def prefix_ends(batch: SequenceBatch, positions: int | None) -> Any:
    """``(B, P)`` last position of every trained prefix (-1 = none).

    None trains every position with a target; an int samples that many per
    window from the global (seeded) torch generator.
    """
    trained = batch.targets >= 0  # (B, T)
    columns = torch.arange(trained.shape[1]).expand_as(trained)
    if positions is None or positions >= trained.shape[1]:
        return torch.where(trained, columns, -1)
    keys = torch.rand(trained.shape).masked_fill(~trained, -1.0)
    chosen = keys.topk(positions, dim=1).indices  # (B, P)
    picked = trained.gather(1, chosen)
    return torch.where(picked, chosen, -1).sort(dim=1).values


def train(config: MultiInterestConfig, spec: InterestSpec, power: float, dataset: Dataset,
          context: TrainContext) -> dict[str, Any]:
    """Fit the model with early stopping and write its artifacts into ``context.workdir``."""
    dataset, validation, windows, batcher, target_counts = prepare_training(config, dataset, context)
    model = MultiInterestModel(spec)
    objective = Objective.from_config(config, target_counts)

    def step(batch: SequenceBatch) -> tuple[Any, int]:
        ends = prefix_ends(batch, config.train_positions)  # (B, P)
        interests, valid = model.prefix_interests(batch.inputs, ends)  # (B, P, K, d), (B, P, K)
        used = ends >= 0
        positives = batch.targets.gather(1, ends.clamp(min=0))[used]  # (M,)
        table = model.item_vectors()
        vectors = readout(interests[used], valid[used], table[positives], power)  # (M, d)
        return objective(vectors, positives, table), len(positives)

    validate = None
    if validation is not None:
        def retrieve(queries: QueryBatch, k: int) -> Candidates:
            index = ItemIndex.build(model.item_vectors().detach().numpy(), IndexSettings())
            return MultiInterestHandle(model, index, AggregationSettings()).retrieve(queries, k)

        validate = full_ranking_validator(retrieve, validation, dataset.num_items)
    workdir = Path(context.workdir)
    result = fit(model, batcher.epoch, step, validate, loop_settings(config, context.threads),
                 context.progress, checkpoint=workdir / MODEL_FILE, num_batches=len(batcher))
    torch.save(model.state_dict(), workdir / MODEL_FILE)
    (workdir / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    (workdir / HISTORY_FILE).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    categories = item_categories(config, dataset, model.item_vectors().detach().numpy())
    np.save(workdir / CATEGORY_FILE, categories)
    summary = result.to_dict()
    summary.pop("history")
    return {**summary, "windows": len(windows), "positions_per_epoch": windows.num_positions,
            "validation_queries": 0 if validation is None else len(validation),
            "categories": int(categories.max(initial=-1) + 1)}


def item_categories(config: MultiInterestConfig, dataset: Dataset,
                    item_vectors: np.ndarray) -> np.ndarray:
    """Item -> category ``(N,)`` int64 for the diversity term (see ``config.categories``)."""
    labels = np.asarray(dataset.item_category, dtype=np.int64)
    use_dataset = config.categories == "dataset" or (
        config.categories == "auto" and (labels >= 0).mean() >= 0.5)
    if not use_dataset:
        # Imported lazily: the K-means lives with dnc_ebr's clusters (one implementation).
        from recall_plugins.dnc_ebr.clusters import kmeans_labels

        warm = np.bincount(dataset.items, minlength=dataset.num_items) > 0
        labels = kmeans_labels(item_vectors, warm, config.category_clusters, KMEANS_ITERATIONS,
                               config.seed)
    return np.where(labels < 0, labels.max(initial=-1) + 1, labels)  # uncategorised: one more


class MultiInterestHandle:
    """A servable multi-interest source: the model, the item index and the aggregation."""

    def __init__(self, model: MultiInterestModel, index: ItemIndex,
                 aggregation: AggregationSettings, cache_size: int = 0,
                 graphs: SavedGraphs | None = None, precompute: int = 0) -> None:
        self.model, self.index, self.aggregation = model, index, aggregation
        self.spec = model.spec
        # Served handles (given where their graphs live) compile the forward: GIL-free, less
        # per-call overhead. A validation handle, rebuilt every round while the weights
        # train, runs it eagerly.
        self.forward = serving_forward(model, "forward", example_histories(
            self.spec.num_items, self.spec.max_len), trace=graphs is not None, graphs=graphs)
        self.user_cache = UserVectorCache(cache_size, self.spec.max_len, precompute)

    def cached_interests(self, histories: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`interests` through the serving cache (rows: K·d vector values, then K mask bits)."""
        def encode(kept: list[np.ndarray]) -> np.ndarray:
            vectors, valid = self.interests(kept)
            return np.concatenate([vectors.reshape(len(kept), -1), valid.astype(np.float32)], 1)

        rows = self.user_cache.encode(histories, encode)  # (Q, K·d + K)
        width = self.spec.interests * self.spec.dim
        vectors = rows[:, :width].reshape(len(rows), self.spec.interests, self.spec.dim)
        return vectors, rows[:, width:] > 0.5

    def interests(self, histories: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Interests ``(Q, K, d)`` and mask ``(Q, K)`` of the last ``max_len`` known items."""
        vectors, masks = [], []
        for start in range(0, len(histories), ENCODE_BATCH):
            inputs, lengths = pad_histories(histories[start : start + ENCODE_BATCH],
                                            self.spec.max_len, self.spec.num_items)
            with torch.inference_mode():
                found, valid = self.forward(torch.from_numpy(inputs), torch.from_numpy(lengths))
            vectors.append(found.numpy())
            masks.append(valid.numpy())
        return np.concatenate(vectors), np.concatenate(masks)

    def retrieve(self, queries: QueryBatch, k: int) -> Candidates:
        known, rows = known_histories(queries.histories, self.spec.num_items)
        width = max(0, min(k, self.spec.num_items))
        if not (len(rows) and width):
            return Candidates.padding(len(queries), width, grouped=True)
        interests, valid = self.cached_interests([known[i] for i in rows])
        found = search_interests(self.index, interests, valid, width,
                                 [queries.exclude[i] for i in rows], self.aggregation)
        return Candidates.placed(found, rows, len(queries), width, grouped=True)


def index_settings(config: MultiInterestConfig) -> IndexSettings:
    return IndexSettings(config.index, config.ivf_lists, config.ivf_probe, config.hnsw_m,
                         config.hnsw_ef_search, config.seed)


def load_model(artifact_dir: Path) -> tuple[MultiInterestModel, np.ndarray]:
    """The trained model (eval mode, no grad) and the item categories."""
    artifact_dir = Path(artifact_dir)
    try:
        spec = InterestSpec(**json.loads((artifact_dir / SPEC_FILE).read_text()))
        state = torch.load(artifact_dir / MODEL_FILE, map_location="cpu", weights_only=True)
        categories = np.load(artifact_dir / CATEGORY_FILE)
    except (OSError, ValueError, TypeError) as error:
        raise ArtifactError(f"multi-interest artifacts in {artifact_dir} are unreadable: "
                            f"{error}") from None
    model = MultiInterestModel(spec)
    model.load_state_dict(state)
    return model.eval().requires_grad_(False), categories


def _aggregation(config: MultiInterestConfig, categories: np.ndarray) -> AggregationSettings:
    return AggregationSettings(config.diversity_lambda, categories, config.diversity_pool)


def build(config: MultiInterestConfig, artifact_dir: Path, index_dir: Path) -> MultiInterestHandle:
    """Index the trained item embeddings, persist the index, return the handle."""
    model, categories = load_model(artifact_dir)
    index = ItemIndex.build(model.item_vectors().numpy(), index_settings(config))
    index.save(Path(index_dir) / INDEX_FILE)
    return MultiInterestHandle(model, index, _aggregation(config, categories), config.user_cache,
                               SavedGraphs(Path(index_dir), write=True), config.precomputed_users)


def load(config: MultiInterestConfig, artifact_dir: Path, index_dir: Path) -> MultiInterestHandle:
    """Load the model and the persisted index without rebuilding anything."""
    model, categories = load_model(artifact_dir)
    index = ItemIndex.load(Path(index_dir) / INDEX_FILE, index_settings(config))
    return MultiInterestHandle(model, index, _aggregation(config, categories), config.user_cache,
                               SavedGraphs(Path(index_dir)), config.precomputed_users)

