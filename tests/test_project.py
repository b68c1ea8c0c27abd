"""recall.toml: creation, validation, atomic rewrite."""

from __future__ import annotations

from pathlib import Path

import pytest

from recall_core.errors import ConfigError, ProjectError, UnknownSourceError
from recall_core.project import Project, find_project_root


def test_init_then_load_round_trip(tmp_path: Path) -> None:
    project = Project.init(tmp_path / "p", name="shop")
    project.add_source("swing", "i2i", {"algorithm": "swing", "neighbours": 50})
    project.settings.merge.weights["swing"] = 2.0
    project.save()
    again = Project.load(tmp_path / "p")
    assert again.settings.project.name == "shop"
    assert again.source("swing").config == {"algorithm": "swing", "neighbours": 50}
    assert again.settings.merge.weights == {"swing": 2.0}
    assert not list((tmp_path / "p").glob(".*.tmp")), "no temporary file may be left behind"


def test_init_refuses_an_existing_project(tmp_path: Path) -> None:
    Project.init(tmp_path)
    with pytest.raises(ProjectError, match="already exists"):
        Project.init(tmp_path)


def test_missing_project_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="recall init"):
        Project.load(tmp_path)


@pytest.mark.parametrize("text, message", [
    ("[merge]\npolicy = 'quota'\ncolour = 1\n", "unknown key 'merge.colour'"),
    ("[merge]\nk = 0\n", "merge.k"),
    ("[merge.weights]\na = -1.0\n", "negative weight"),
    ("[sources.x]\nconfig = {}\n", "sources.x.kind"),
    ("not toml at all [", "not valid TOML"),
])
def test_invalid_files_give_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "recall.toml").write_text(text)
    with pytest.raises(ProjectError, match=message) as error:
        Project.load(tmp_path)
    assert "\n" not in str(error.value)


def test_source_names_and_duplicates(tmp_path: Path) -> None:
    project = Project.init(tmp_path)
    project.add_source("pop", "popular", {})
    with pytest.raises(ConfigError, match="already exists"):
        project.add_source("pop", "popular", {})
    with pytest.raises(ConfigError, match="invalid source name"):
        project.add_source("Bad Name", "popular", {})
    with pytest.raises(UnknownSourceError, match="unknown source 'nope'"):
        project.remove_source("nope")
    assert project.select_sources(None) == ["pop"]


def test_find_project_root_walks_up(tmp_path: Path) -> None:
    Project.init(tmp_path)
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert find_project_root(tmp_path / "a" / "b") == tmp_path.resolve()
