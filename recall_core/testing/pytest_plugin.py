"""pytest plugin shipped with recall (entry point ``pytest11``): shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from recall_core.data.dataset import Dataset
from recall_core.host import PluginHost, make_host
from recall_core.testing.datasets import tiny_dataset


@pytest.fixture
def recall_host() -> PluginHost:
    """A host with the built-in plugins only: installed third-party plugins never leak in."""
    return make_host(load_entry_points=False)


@pytest.fixture(scope="session")
def recall_tiny_dataset() -> Dataset:
    """The small seeded synthetic dataset the contract tests use."""
    return tiny_dataset()


@pytest.fixture
def recall_project(tmp_path: Path, recall_tiny_dataset: Dataset):  # type: ignore[no-untyped-def]
    """A fresh project in a temporary directory with the tiny dataset imported."""
    from recall_core.project import Project

    project = Project.init(tmp_path / "project", name="test")
    recall_tiny_dataset.save(project.dataset_path)
    return project
