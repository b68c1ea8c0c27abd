"""The ``dnc_ebr`` source's hooks (import-light: torch and faiss load on first use).

See :class:`~recall_plugins.dnc_ebr.config.DncEbrConfig` for the keys (clusters,
negatives, prompt, quota) and :mod:`recall_plugins.dnc_ebr.retrieval` for how
the per-cluster lists are merged and scored.
"""

from __future__ import annotations

from recall_core.lazy_source import lazy_source_hooks
from recall_plugins.dnc_ebr.config import DncEbrConfig

KIND = "dnc_ebr"

(recall_source_kinds, recall_train, recall_index, recall_load,
 recall_retrieve) = lazy_source_hooks(
    KIND, DncEbrConfig,
    "divide-and-conquer EBR: K item clusters (item2vec + K-means or "
    "category), in-cluster negatives, per-cluster task prompts, one faiss "
    "index per cluster merged by an intent quota",
    train="recall_plugins.dnc_ebr.train:train",
    build="recall_plugins.dnc_ebr.retrieval:build",
    load="recall_plugins.dnc_ebr.retrieval:load")
