"""The ``mind`` source's hooks (import-light: torch and faiss load on first use).

See :class:`~recall_plugins.mind.config.MindConfig` for the keys and defaults.
Candidates carry ``groups`` = the interest (0..K-1) that produced each item.
"""

from __future__ import annotations

from recall_core.lazy_source import lazy_source_hooks
from recall_plugins.mind.config import MindConfig

KIND = "mind"

(recall_source_kinds, recall_train, recall_index, recall_load,
 recall_retrieve) = lazy_source_hooks(
    KIND, MindConfig,
    "MIND multi-interest retrieval: behaviour-to-interest dynamic routing with "
    "an adaptive interest count, label-aware attention in training, one "
    "search per interest merged by max score",
    train="recall_plugins.mind.model:train",
    build="recall_plugins.mind.model:build",
    load="recall_plugins.mind.model:load")
