"""Test kit for recall and for third-party source plugins.

``SourceContractTests`` is the reusable contract every source must pass; the
pytest plugin (auto-loaded through the ``pytest11`` entry point) provides the
``recall_host``, ``recall_tiny_dataset`` and ``recall_project`` fixtures.
"""

from recall_core.testing.contract import SourceContractTests
from recall_core.testing.datasets import tiny_dataset

__all__ = ["SourceContractTests", "tiny_dataset"]
