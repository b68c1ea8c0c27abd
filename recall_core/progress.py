"""Progress reporting: rich bars on stderr for people, silence for tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class ProgressTask(Protocol):
    def advance(self, amount: float = 1) -> None: ...

    def update(self, *, total: float | None = None, description: str | None = None) -> None: ...


class ProgressReporter(Protocol):
    """What a plugin uses to show long work: ``with progress.task("epoch 1", total=n) as t``."""

    def task(self, description: str, total: float | None = None) -> AbstractContextManager[ProgressTask]: ...

    def log(self, message: str) -> None: ...




class _SilentTask:
    def advance(self, amount: float = 1) -> None:
        pass

    def update(self, *, total: float | None = None, description: str | None = None) -> None:
        pass


class SilentProgress:
    """A reporter that shows nothing (tests, servers, library use)."""

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[ProgressTask]:
        yield _SilentTask()

    def log(self, message: str) -> None:
        pass


class _RichTask:
    def __init__(self, progress, task_id) -> None:  # type: ignore[no-untyped-def]
        self._progress = progress
        self._task_id = task_id

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._task_id, amount)

    def update(self, *, total: float | None = None, description: str | None = None) -> None:
        kwargs = {k: v for k, v in (("total", total), ("description", description)) if v is not None}
        self._progress.update(self._task_id, **kwargs)


class RichProgress:
    """Rich progress bars on stderr (results stay alone on stdout).

    Nested tasks share one live display: rich allows only one at a time.
    """

    def __init__(self) -> None:
        from rich.console import Console

        self._console = Console(stderr=True)
        self._bar = None
        self._depth = 0

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[ProgressTask]:
        if self._bar is None:
            self._bar = self._new_bar()
            self._bar.start()
        self._depth += 1
        task_id = self._bar.add_task(description, total=total)
        try:
            yield _RichTask(self._bar, task_id)
        finally:
            self._bar.remove_task(task_id)
            self._depth -= 1
            if self._depth == 0:
                self._bar.stop()
                self._bar = None

    def _new_bar(self):  # type: ignore[no-untyped-def]
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
        return Progress(*columns, TimeElapsedColumn(), console=self._console, transient=True)

    def log(self, message: str) -> None:
        self._console.print(message, highlight=False)
