"""Training, indexing and retrieval of the ``sasrec`` source (loads torch and faiss).

Artifacts (``recall_train``): ``model.pt`` (the encoder's state_dict of the best
validation epoch), ``model.json`` (encoder hyperparameters) and
``training.json`` (per-epoch history). Index (``recall_index``): ``items.faiss``,
the item embeddings in a faiss inner-product index.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recall_core.contract import Candidates, QueryBatch, TrainContext
from recall_core.data.dataset import Dataset
from recall_core.errors import ArtifactError
from recall_core.native import torch as load_torch
from recall_core.training.batching import known_histories, pad_histories
from recall_core.training.encoders import EncoderSpec, SequenceEncoder
from recall_core.training.faiss_index import IndexSettings, ItemIndex
from recall_core.training.inference import SavedGraphs, example_histories, serving_forward
from recall_core.training.loop import fit, loop_settings
from recall_core.training.losses import Objective
from recall_core.training.user_cache import UserVectorCache
from recall_core.training.setup import prepare_training
from recall_core.training.validation import dense_retriever, full_ranking_validator
from recall_plugins.sasrec.config import SasrecConfig

torch = load_torch()
MODEL_FILE, SPEC_FILE, HISTORY_FILE, INDEX_FILE = "model.pt", "model.json", "training.json", "items.faiss"
ENCODE_BATCH = 512


def train(config: SasrecConfig, dataset: Dataset, context: TrainContext) -> dict[str, Any]:
    """Fit the encoder with early stopping and write its artifacts into ``context.workdir``."""
    dataset, validation, windows, batcher, target_counts = prepare_training(config, dataset, context)
    spec = EncoderSpec(dataset.num_items, config.max_len, config.dim, config.layers,
                       config.heads, config.dropout)
    encoder = SequenceEncoder(spec)
    objective = Objective.from_config(config, target_counts)

    def step(batch: Any) -> tuple[Any, int]:
        hidden = encoder(batch.inputs)  # (B, T, d)
        trained = batch.targets >= 0  # (B, T)
        positives = batch.targets[trained]  # (M,)
        return objective(hidden[trained], positives, encoder.item_vectors()), len(positives)

    validate = None
    if validation is not None:
        retrieve = dense_retriever(lambda queries: encode(encoder.encode_last, queries.histories,
                                                          spec),
                                   lambda: encoder.item_vectors().detach().numpy())
        validate = full_ranking_validator(retrieve, validation, dataset.num_items)
    result = fit(encoder, batcher.epoch, step, validate,
                 loop_settings(config, context.threads), context.progress,
                 checkpoint=Path(context.workdir) / MODEL_FILE, num_batches=len(batcher))
    workdir = Path(context.workdir)
    torch.save(encoder.state_dict(), workdir / MODEL_FILE)
    (workdir / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    (workdir / HISTORY_FILE).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    summary = result.to_dict()
    summary.pop("history")
    return {**summary, "windows": len(windows), "positions_per_epoch": windows.num_positions,
            "validation_queries": 0 if validation is None else len(validation)}


def encode(forward: Callable[[Any, Any], Any], histories: Any, spec: EncoderSpec) -> np.ndarray:
    """User vectors ``(Q, d)`` of the last ``max_len`` items of each history.

    ``forward(inputs, lengths)``: the encoder's ``encode_last`` (or its serving trace).
    """
    outputs = []
    for start in range(0, len(histories), ENCODE_BATCH):
        inputs, lengths = pad_histories(histories[start : start + ENCODE_BATCH], spec.max_len,
                                        spec.num_items)
        with torch.inference_mode():
            vectors = forward(torch.from_numpy(inputs), torch.from_numpy(lengths))
        outputs.append(vectors.numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, spec.dim), np.float32)


class SasrecHandle:
    """A loaded ``sasrec`` servable: the encoder (eval mode, no grad) and the item index.

    ``graphs``: where a served handle's compiled user-vector pass keeps its ONNX graph
    (:mod:`recall_core.training.inference`), as ``build`` and ``load`` give; None (a
    validation handle) runs the pass eagerly.
    """

    def __init__(self, encoder: SequenceEncoder, index: ItemIndex, cache_size: int = 0,
                 graphs: SavedGraphs | None = None, precompute: int = 0) -> None:
        self.encoder = encoder.eval().requires_grad_(False)
        self.index = index
        self.spec = encoder.spec
        self.forward = serving_forward(self.encoder, "encode_last", example_histories(
            self.spec.num_items, self.spec.max_len), trace=graphs is not None, graphs=graphs)
        self.num_items = encoder.spec.num_items
        self.user_cache = UserVectorCache(cache_size, self.spec.max_len, precompute)

    def retrieve(self, queries: QueryBatch, k: int) -> Candidates:
        known, rows = known_histories(queries.histories, self.num_items)
        width = max(0, min(k, self.num_items))
        if not (len(rows) and width):
            return Candidates.padding(len(queries), width)
        vectors = self.user_cache.encode(
            [known[i] for i in rows], lambda kept: encode(self.forward, kept, self.spec))
        found = self.index.search(vectors, width, [queries.exclude[i] for i in rows])
        return Candidates.placed(found, rows, len(queries), width)


def load_encoder(artifact_dir: Path) -> SequenceEncoder:
    artifact_dir = Path(artifact_dir)
    try:
        spec = EncoderSpec(**json.loads((artifact_dir / SPEC_FILE).read_text()))
        state = torch.load(artifact_dir / MODEL_FILE, map_location="cpu", weights_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise ArtifactError(f"sasrec artifacts in {artifact_dir} are unreadable: {error}") from None
    encoder = SequenceEncoder(spec)
    encoder.load_state_dict(state)
    return encoder


def index_settings(config: SasrecConfig) -> IndexSettings:
    return IndexSettings(config.index, config.ivf_lists, config.ivf_probe, config.hnsw_m,
                         config.hnsw_ef_search, config.seed)


def build(config: SasrecConfig, artifact_dir: Path, index_dir: Path) -> SasrecHandle:
    """Index the trained item embeddings, persist the index, return the handle."""
    encoder = load_encoder(artifact_dir)
    index = ItemIndex.build(encoder.item_vectors().detach().numpy(), index_settings(config))
    index.save(Path(index_dir) / INDEX_FILE)
    return SasrecHandle(encoder, index, config.user_cache, SavedGraphs(Path(index_dir), write=True),
                        config.precomputed_users)


def load(config: SasrecConfig, artifact_dir: Path, index_dir: Path) -> SasrecHandle:
    """Load the encoder and the persisted index without rebuilding anything."""
    index = ItemIndex.load(Path(index_dir) / INDEX_FILE, index_settings(config))
    return SasrecHandle(load_encoder(artifact_dir), index, config.user_cache,
                        SavedGraphs(Path(index_dir)), config.precomputed_users)
