"""Every built-in source passes the same contract test third-party sources run."""

from __future__ import annotations

from recall_core.testing import SourceContractTests


class TestPopularContract(SourceContractTests):
    kind = "popular"
    load_entry_points = False


class TestPopularDecayedContract(SourceContractTests):
    kind = "popular"
    config = {"half_life_days": 30.0}
    load_entry_points = False


class TestItemCFContract(SourceContractTests):
    kind = "i2i"
    config = {"algorithm": "itemcf"}
    load_entry_points = False


class TestSwingContract(SourceContractTests):
    kind = "i2i"
    config = {"algorithm": "swing"}
    load_entry_points = False
