"""The training kit shared by every neural source (import-light: modules load torch lazily).

- :mod:`~recall_core.training.config`: ``NeuralConfig``, the shared config keys (no torch).
- :mod:`~recall_core.training.batching`: next-item windows, seeded batches, history padding.
- :mod:`~recall_core.training.samplers`: negative samplers reporting their proposal Q(j).
- :mod:`~recall_core.training.losses`: BCE, sampled softmax (logQ, temperature, accidental
  hits), full softmax, and ``Objective`` (the configured loss with its sampler).
- :mod:`~recall_core.training.encoders`: the causal self-attention (SASRec) encoder, with
  task-prompt hooks, and a causal intent (group) head.
- :mod:`~recall_core.training.loop`: ``fit`` — early stopping, best checkpoint, progress.
- :mod:`~recall_core.training.validation`: full-ranking validation and the hold-out split.
- :mod:`~recall_core.training.faiss_index`: flat / IVF / HNSW item indexes with exclusions.
- :mod:`~recall_core.training.interest_config`: ``MultiInterestConfig`` (comirec, mind; no torch).
- :mod:`~recall_core.training.interests`: ComiRec-SA / -DR and MIND interest extractors, readout.
- :mod:`~recall_core.training.multi_interest`: per-interest search, max-score merge, diversity λ.
- :mod:`~recall_core.training.multi_interest_source`: train / index / serve a multi-interest model.

Import the submodules you need; this package itself imports nothing heavy.
"""
