"""The ``comirec`` source's hooks (import-light: torch and faiss load on first use).

See :class:`~recall_plugins.comirec.config.ComirecConfig` for the keys and defaults.
Candidates carry ``groups`` = the interest (0..K-1) that produced each item.
"""

from __future__ import annotations

from recall_core.lazy_source import lazy_source_hooks
from recall_plugins.comirec.config import ComirecConfig

KIND = "comirec"

(recall_source_kinds, recall_train, recall_index, recall_load,
 recall_retrieve) = lazy_source_hooks(
    KIND, ComirecConfig,
    "ComiRec multi-interest retrieval: self-attentive (sa) or dynamic-routing "
    "(dr) interests, one search per interest merged by max score, "
    "diversity-controllable aggregation",
    train="recall_plugins.comirec.model:train",
    build="recall_plugins.comirec.model:build",
    load="recall_plugins.comirec.model:load")
