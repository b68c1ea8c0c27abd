"""The ``sasrec`` source's hooks (import-light: torch and faiss load on first use).

Every loss and sampler of the training kit is selectable by config; see
:class:`~recall_plugins.sasrec.config.SasrecConfig` for the keys and defaults.
"""

from __future__ import annotations

from recall_core.lazy_source import lazy_source_hooks
from recall_plugins.sasrec.config import SasrecConfig

KIND = "sasrec"

(recall_source_kinds, recall_train, recall_index, recall_load,
 recall_retrieve) = lazy_source_hooks(
    KIND, SasrecConfig,
    "SASRec: causal self-attention user encoder, one vector per user, "
    "exact (or IVF/HNSW) inner-product search",
    train="recall_plugins.sasrec.model:train",
    build="recall_plugins.sasrec.model:build",
    load="recall_plugins.sasrec.model:load")
