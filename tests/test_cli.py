"""The CLI end to end on a small synthetic project, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recall_cli.app import create_app
from tests.conftest import strip_ansi


def run(project: Path | None, *args: str, code: int = 0) -> str:
    prefix = ["-p", str(project)] if project is not None else []
    result = CliRunner().invoke(create_app(), [*prefix, *args])
    output = strip_ansi(result.output)
    assert result.exit_code == code, f"{args} -> {result.exit_code}\n{output}\n{result.exception!r}"
    if code:
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, output
        assert "Traceback" not in output
    return output


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "proj"
    run(None, "init", str(root))
    run(root, "data", "import", "synthetic", "-o", "users=150", "-o", "items=90", "-o", "seed=3")
    run(root, "add-source", "popular", "--kind", "popular")
    run(root, "add-source", "swing", "--kind", "i2i", "--set", "algorithm=swing")
    run(root, "add-source", "itemcf", "--kind", "i2i", "--set", "algorithm=itemcf")
    return root


def test_sources_lists_configured_and_installed(project: Path) -> None:
    data = json.loads(run(project, "sources", "--json"))
    assert {s["name"]: s["state"] for s in data["sources"]} == {
        "popular": "untrained", "swing": "untrained", "itemcf": "untrained"}
    kinds = {k["kind"]: k["package"] for k in data["kinds"]}
    assert kinds["i2i"] == "recall" and kinds["popular"] == "recall"


def test_every_command_keeps_freed_heap_for_its_batches(project: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import recall_core.native

    calls: list[int] = []
    monkeypatch.setattr(recall_core.native, "retain_freed_memory", lambda: calls.append(1) or True)
    run(project, "sources", "--json")
    assert calls == [1]


def test_train_index_query_eval(project: Path, tmp_path: Path) -> None:
    run(project, "train")
    states = {s["name"]: s["state"] for s in json.loads(run(project, "sources", "--json"))["sources"]}
    assert set(states.values()) == {"trained"}
    run(project, "query", "u0", "--k", "5", code=1)  # not indexed yet: one clear line
    run(project, "index")
    user = json.loads(run(project, "data", "info", "--json"))
    assert user["users"] == 150
    answer = json.loads(run(project, "query", _first_user(project), "--k", "7", "--json"))
    assert len(answer["candidates"]) == 7
    for candidate in answer["candidates"]:
        assert candidate["sources"], "every candidate carries its provenance"
    out = tmp_path / "eval.json"
    run(project, "eval", "--k", "5", "--k", "10", "--json", str(out))
    report = json.loads(out.read_text())
    assert report["protocol"] == "paper"
    assert set(report["sources"]) == {"popular", "swing", "itemcf"}
    assert {"HR@5", "Recall@10", "NDCG@10"} <= set(report["merged"])
    assert report["dataset"]["users"] == 150


def _first_user(project: Path) -> str:
    from recall_core.data.dataset import Dataset

    return str(Dataset.load(project / "data" / "dataset").user_ids[0])


@pytest.mark.parametrize("args, message", [
    (("add-source", "x", "--kind", "nope"), "unknown source kind 'nope'"),
    (("add-source", "x", "--kind", "i2i", "--set", "colour=red"), "unknown key 'colour'"),
    (("add-source", "x", "--kind", "i2i", "--set", "neighbours=many"), "neighbours"),
    (("add-source", "x", "--kind", "i2i", "--set", "novalue"), "expected key=value"),
    (("remove-source", "ghost"), "unknown source 'ghost'"),
    (("train", "ghost"), "unknown source 'ghost'"),
    (("data", "import", "movielens", "/no/such/folder"), "no such file or folder"),
    (("data", "import", "parquet-magic", "x"), "unknown format"),
    (("query", "no-such-user"), "unknown user"),
    (("eval", "--protocol", "sampled"), "unknown protocol"),
])
def test_bad_input_is_one_line_and_exit_1(project: Path, args: tuple[str, ...], message: str) -> None:
    output = run(project, *args, code=1)
    assert message in output


def test_untrained_source_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "p"
    run(None, "init", str(root))
    run(root, "data", "import", "synthetic", "-o", "users=40", "-o", "items=30")
    run(root, "add-source", "popular", "--kind", "popular")
    assert "not trained" in run(root, "query", "u0", code=1)
    output = run(root, "index", code=1)
    assert "not trained" in output


def test_outside_a_project(tmp_path: Path) -> None:
    assert "recall init" in run(tmp_path, "train", code=1)


def test_remove_source(project: Path) -> None:
    run(project, "add-source", "extra", "--kind", "popular")
    run(project, "remove-source", "extra")
    names = [s["name"] for s in json.loads(run(project, "sources", "--json"))["sources"]]
    assert "extra" not in names


@pytest.mark.slow
def test_demo_runs_the_whole_path_on_synthetic_data(tmp_path: Path) -> None:
    from recall_cli.demo_cmd import DEMO_SOURCES

    output = run(None, "demo", "--dir", str(tmp_path / "demo"), "--users", "150",
                 "--items", "80", "--k", "5")
    assert "candidates for user" in output and "paper protocol" in output
    for name, kind, _ in DEMO_SOURCES:
        assert f"trained and indexed {name} ({kind})" in output
    evaluated = [line.split("│")[1].strip() for line in output.splitlines()
                 if line.startswith("│") and "0." in line]
    assert {name for name, _, _ in DEMO_SOURCES} | {"merged"} <= set(evaluated)
    again = run(None, "demo", "--dir", str(tmp_path / "demo"), "--users", "150", "--items", "80")
    assert "candidates for user" in again, "a second run recreates the demo project"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("not a demo")
    run(None, "demo", "--dir", str(tmp_path / "mine"), code=1)
