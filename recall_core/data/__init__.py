"""Canonical data: the :class:`Dataset`, its importers and the synthetic generator."""

from __future__ import annotations

from typing import Any

from recall_core.data.dataset import Dataset

__all__ = ["Dataset", "SyntheticConfig", "generate_synthetic"]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``import recall_core.data`` does not pay for pydantic.
    if name == "SyntheticConfig":
        from recall_core.data.synthetic import SyntheticConfig

        return SyntheticConfig
    if name == "generate_synthetic":
        from recall_core.data.synthetic import generate

        return generate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
