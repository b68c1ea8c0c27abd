"""A recall project: ``recall.toml`` plus the dataset and artifacts beside it.

The file is the single source of truth for which sources exist and how they
are merged; every command reads it, and the few that change it rewrite it
atomically (temporary file + rename), so a crash never leaves half a config.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from recall_core.errors import ConfigError, ProjectError, UnknownSourceError
from recall_core.files import write_text_atomically

PROJECT_FILE = "recall.toml"
DATASET_DIR = "data/dataset"
ARTIFACTS_DIR = "artifacts"
SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectSection(_Strict):
    """``[project]``: a name and where the canonical dataset lives."""

    name: str = "recall"
    dataset: str = DATASET_DIR


class MergeSection(_Strict):
    """``[merge]``: how the sources' lists become one."""

    policy: str = "quota"
    k: int = Field(default=50, ge=1, le=10_000)
    # The source that fills any shortfall and answers users no other source
    # knows; "" disables the fill (the answer may then be shorter than k).
    fallback: str = "popular"
    weights: dict[str, float] = Field(default_factory=dict)

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, weights: dict[str, float]) -> dict[str, float]:
        bad = [name for name, w in weights.items() if w < 0]
        if bad:
            raise ValueError(f"weights must be >= 0 (got a negative weight for {bad[0]!r})")
        return weights


class EvalSection(_Strict):
    """``[eval]``: the default protocol and cut-offs of ``recall eval``."""

    protocol: str = "paper"
    ks: list[int] = Field(default_factory=lambda: [10, 20, 50])
    seed: int = 0


class SourceEntry(_Strict):
    """``[sources.NAME]``: the kind and its (kind-validated) config."""

    kind: str
    config: dict[str, Any] = Field(default_factory=dict)


class ProjectFile(_Strict):
    """The whole ``recall.toml``."""

    project: ProjectSection = Field(default_factory=ProjectSection)
    merge: MergeSection = Field(default_factory=MergeSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    sources: dict[str, SourceEntry] = Field(default_factory=dict)


class Project:
    """A project directory and its parsed ``recall.toml``."""

    def __init__(self, root: Path, settings: ProjectFile) -> None:
        self.root = root
        self.settings = settings

    # ---- locations ------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / PROJECT_FILE

    @property
    def dataset_path(self) -> Path:
        return self.root / self.settings.project.dataset

    @property
    def artifacts_path(self) -> Path:
        return self.root / ARTIFACTS_DIR

    # ---- life cycle -----------------------------------------------------
    @classmethod
    def init(cls, root: Path, name: str | None = None) -> Project:
        """Create a new project in ``root`` (which may exist but must not hold one)."""
        root = Path(root)
        if (root / PROJECT_FILE).exists():
            raise ProjectError(f"{root / PROJECT_FILE} already exists")
        root.mkdir(parents=True, exist_ok=True)
        settings = ProjectFile(project=ProjectSection(name=name or root.resolve().name))
        project = cls(root, settings)
        project.save()
        return project

    @classmethod
    def load(cls, root: Path) -> Project:
        """Read ``root/recall.toml``; a clear ProjectError when it is missing or invalid."""
        path = Path(root) / PROJECT_FILE
        if not path.is_file():
            raise ProjectError(f"no {PROJECT_FILE} in {root} (create one with `recall init {root}`)")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ProjectError(f"{path} is not valid TOML: {error}") from None
        try:
            settings = ProjectFile.model_validate(raw)
        except ValidationError as error:
            raise ProjectError(f"{path}: {_first_error(error)}") from None
        return cls(Path(root), settings)

    def save(self) -> None:
        """Write ``recall.toml`` atomically."""
        data = self.settings.model_dump(mode="json")
        write_text_atomically(self.config_path, tomli_w.dumps(_drop_none(data)))

    # ---- sources --------------------------------------------------------
    def source(self, name: str) -> SourceEntry:
        try:
            return self.settings.sources[name]
        except KeyError:
            known = ", ".join(self.settings.sources) or "none configured"
            raise UnknownSourceError(f"unknown source {name!r} (sources: {known})") from None

    def add_source(self, name: str, kind: str, config: dict[str, Any]) -> None:
        """Add a source entry (the caller validated ``config`` against the kind)."""
        if not SOURCE_NAME.match(name):
            raise ConfigError(
                f"invalid source name {name!r}: use lowercase letters, digits, '-' or '_', "
                "starting with a letter"
            )
        if name in self.settings.sources:
            raise ConfigError(f"source {name!r} already exists (remove it first)")
        self.settings.sources[name] = SourceEntry(kind=kind, config=config)

    def remove_source(self, name: str) -> SourceEntry:
        entry = self.source(name)
        del self.settings.sources[name]
        self.settings.merge.weights.pop(name, None)
        return entry

    def select_sources(self, names: list[str] | None) -> list[str]:
        """The named sources (validated), or all configured ones in file order."""
        if not names:
            if not self.settings.sources:
                raise ConfigError("no sources configured (add one with `recall add-source`)")
            return list(self.settings.sources)
        for name in names:
            self.source(name)
        return list(dict.fromkeys(names))


def find_project_root(start: Path) -> Path:
    """``start`` itself when it holds ``recall.toml``, else its nearest parent that does."""
    start = start.resolve()
    for candidate in (start, *start.parents):
        if (candidate / PROJECT_FILE).is_file():
            return candidate
    return start


def _drop_none(value: Any) -> Any:
    # TOML has no null: an unset optional key is simply left out.
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    return f"{where}: {first['msg']}"
