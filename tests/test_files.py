"""Atomic writes: the old content or the new, never a partial file or a stray temporary."""

from __future__ import annotations

from pathlib import Path

import pytest

from recall_core.files import write_text_atomically


def test_writes_and_replaces_without_leaving_a_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "result.json"
    write_text_atomically(target, "old\n")
    write_text_atomically(target, "new\n")
    assert target.read_text(encoding="utf-8") == "new\n"
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


def test_a_failed_write_keeps_the_old_file_and_cleans_up(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "result.json"
    write_text_atomically(target, "old\n")

    def refuse(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("recall_core.files.os.replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomically(target, "new\n")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
