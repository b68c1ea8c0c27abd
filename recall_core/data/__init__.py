"""Canonical data: the :class:`Dataset`, its importers and the synthetic generator."""

from recall_core.data.dataset import Dataset

__all__ = ["Dataset"]
