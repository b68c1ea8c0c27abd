"""recall: a multi-source recall (candidate generation) layer.

``from recall_core import hookimpl`` is all a plugin needs to take part.
This module stays import-light (no torch, faiss or pyarrow) so that
``recall --help`` is fast.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

PROJECT_NAME = "recall"
"""pluggy project name and entry-point group of third-party plugins."""

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
hookspec = pluggy.HookspecMarker(PROJECT_NAME)

__all__ = ["PROJECT_NAME", "__version__", "hookimpl", "hookspec"]
