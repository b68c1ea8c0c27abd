"""Suite-wide settings: plain, wide CLI output and no installed third-party plugins."""

from __future__ import annotations

import os
import re
from pathlib import Path

# Typer reads these at import time: no colours, no wrapping in assertions.
os.environ.setdefault("TERMINAL_WIDTH", "200")
os.environ.setdefault("_TYPER_FORCE_DISABLE_TERMINAL", "1")
os.environ.setdefault("NO_COLOR", "1")
os.environ.setdefault("RECALL_THREADS", "2")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def shared_data_dir() -> Path | None:
    """``$RECALL_SHARED_DATA`` or ``../shared/data`` beside the repository, if present."""
    configured = os.environ.get("RECALL_SHARED_DATA")
    candidate = Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    directory = shared_data_dir()
    if directory is None:
        pytest.skip("../shared/data is not available")
    return directory
