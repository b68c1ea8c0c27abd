"""Built-in dataset formats for ``recall data import FORMAT PATH``.

``movielens`` (ML-1M style ``::`` files), ``ml100k``, ``sequences`` (one line
per user), ``pairs`` (one ``user item`` per line), ``csv`` (column mapping;
parquet too) and ``synthetic`` (the seeded generator, no PATH). Each format's
options model holds exactly the CLI flags it accepts. Parsing lives in
:mod:`recall_core.data.readers`; this module knows the file layouts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict

from recall_core import hookimpl
from recall_core.contract import DatasetImporter, ImportReport
from recall_core.data.dataset import Dataset
from recall_core.data.synthetic import SyntheticConfig, generate
from recall_core.errors import ConfigError, DataError

if TYPE_CHECKING:
    from recall_core.data.readers import Rows

# ml-100k's genre order, used when u.genre is absent.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)
_NO_GENRE = "(no genres listed)"  # newer MovieLens releases' placeholder


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MovieLensOptions(_Options):
    """PATH is the folder (``ratings*.dat[.gz]`` + ``movies.dat``) or the ratings file."""

    ratings: Path | None = None
    items: Path | None = None
    min_rating: float | None = None


class ML100KOptions(_Options):
    """PATH is the ml-100k folder (``u.data`` + ``u.item``) or ``u.data`` itself."""

    items: Path | None = None
    min_rating: float | None = None


class SequenceOptions(_Options):
    """Options of ``sequences`` and ``pairs``; ``delimiter`` None splits on whitespace.

    ``items`` is an optional ``item category`` file (same delimiter).
    """

    delimiter: str | None = None
    items: Path | None = None


class CsvOptions(_Options):
    """Column mapping; without a header, columns are named by 0-based index ("0", "1", ...)."""

    user_col: str = "user"
    item_col: str = "item"
    time_col: str | None = None
    category_col: str | None = None
    rating_col: str | None = None
    min_rating: float | None = None
    delimiter: str = ","
    header: bool = True


@hookimpl
def recall_dataset_importers() -> list[DatasetImporter]:
    """The built-in dataset formats."""
    return [
        DatasetImporter("movielens", "MovieLens ::-separated ratings (ML-1M/10M) with movies.dat "
                        "genres as categories", MovieLensOptions, load_movielens),
        DatasetImporter("ml100k", "MovieLens 100K (u.data + u.item genres)", ML100KOptions,
                        load_ml100k),
        DatasetImporter("sequences", "one line per user: `user item1 item2 ...`, time-ordered",
                        SequenceOptions, load_sequences),
        DatasetImporter("pairs", "one `user item` pair per line, file order = time order",
                        SequenceOptions, load_pairs),
        DatasetImporter("csv", "CSV (or .parquet) with column mapping flags", CsvOptions, load_csv),
        DatasetImporter("synthetic", "seeded synthetic data with clusters, multi-interest users "
                        "and drift", SyntheticConfig, load_synthetic, needs_path=False),
    ]


# ---- synthetic ---------------------------------------------------------------


def load_synthetic(path: Path | None, options: SyntheticConfig) -> tuple[Dataset, ImportReport]:
    """Generate the synthetic dataset (``path`` is ignored)."""
    dataset = generate(options)
    report = ImportReport(rows_read=dataset.num_interactions, rows_kept=dataset.num_interactions)
    report.notes.append(f"generated with seed {options.seed}")
    return dataset, report


# ---- MovieLens ---------------------------------------------------------------


def load_movielens(path: Path | None, options: MovieLensOptions) -> tuple[Dataset, ImportReport]:
    """Import ``UserID::MovieID::Rating::Timestamp`` ratings; first genre = category."""
    ratings = _resolve(options.ratings, path) or _find_ratings(path)
    items = _resolve(options.items, path) or _beside(ratings, path, "movies.dat")
    return _import_ratings("movielens", path, ratings, "::", items, "movies.dat", _read_movies,
                           options.min_rating)


def _import_ratings(
    fmt: str, path: Path | None, ratings: Path, delimiter: str, items: Path | None,
    items_name: str, read_items: Callable[[Path, ImportReport], dict[str, str]],
    min_rating: float | None,
) -> tuple[Dataset, ImportReport]:
    """``user item rating timestamp`` rows plus a metadata file that gives categories."""
    from recall_core.data import readers

    report = ImportReport()
    table = readers.read_delimited(ratings, report, names=["user", "item", "rating", "time"],
                                   delimiter=delimiter)
    rows = readers.clean_rows(table, report, time="time", rating="rating", min_rating=min_rating)
    categories = read_items(items, report) if items else {}
    dataset = readers.build_dataset(rows, report, source=ratings,
                                    name=_dataset_name(ratings, path), item_categories=categories,
                                    meta=_meta(fmt, ratings, items))
    _note_metadata(dataset, categories, report, items, items_name)
    return dataset, report


def _find_ratings(path: Path | None) -> Path:
    if path is None:
        raise ConfigError("movielens needs PATH or --ratings")
    if not path.is_dir():
        return path
    found = sorted(p for pattern in ("ratings*.dat", "ratings*.dat.gz") for p in path.glob(pattern))
    if not found:
        raise DataError(f"{path}: no ratings*.dat or ratings*.dat.gz file (pass --ratings)")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataError(f"{path}: several ratings files ({names}); choose one with --ratings")
    return found[0]


def _read_movies(path: Path, report: ImportReport) -> dict[str, str]:
    """``MovieID::Title::Genres`` -> {movie id: first genre} ("" when it has none)."""
    from recall_core.data import readers

    categories: dict[str, str] = {}
    malformed = 0
    for line in readers.read_lines(path):
        fields = line.split("::")
        if len(fields) < 3 or not fields[0].strip():
            malformed += 1
            continue
        genre = fields[-1].split("|")[0].strip()
        categories[fields[0].strip()] = "" if genre == _NO_GENRE else genre
    if malformed:
        report.notes.append(f"{path.name}: {malformed:,} malformed lines skipped")
    return categories


# ---- ml-100k -----------------------------------------------------------------


def load_ml100k(path: Path | None, options: ML100KOptions) -> tuple[Dataset, ImportReport]:
    """Import tab-separated ``u.data``; the first flagged genre of ``u.item`` is the category."""
    ratings = _need(path, "ml100k")
    ratings = ratings / "u.data" if ratings.is_dir() else ratings
    items = _resolve(options.items, path) or _beside(ratings, path, "u.item")
    return _import_ratings("ml100k", path, ratings, "\t", items, "u.item", _read_ml100k_items,
                           options.min_rating)


def _read_ml100k_items(path: Path, report: ImportReport) -> dict[str, str]:
    """``id|title|date|video date|url|19 genre flags`` -> {id: first flagged genre}."""
    from recall_core.data import readers

    genres = _ml100k_genres(path.with_name("u.genre"))
    categories: dict[str, str] = {}
    malformed = 0
    for line in readers.read_lines(path):
        fields = line.split("|")
        if len(fields) < 5 + len(genres) or not fields[0].strip():
            malformed += 1
            continue
        flags = [flag.strip() == "1" for flag in fields[-len(genres):]]
        categories[fields[0].strip()] = genres[flags.index(True)] if any(flags) else ""
    if malformed:
        report.notes.append(f"{path.name}: {malformed:,} malformed lines skipped")
    return categories


def _ml100k_genres(path: Path) -> tuple[str, ...]:
    """Genre names by flag index from ``u.genre`` (``name|index``), else the standard list."""
    from recall_core.data import readers

    if not path.is_file():
        return ML100K_GENRES
    pairs = [line.rsplit("|", 1) for line in readers.read_lines(path)]
    try:
        by_index = {int(index): name for name, index in pairs}
    except ValueError:
        return ML100K_GENRES
    if sorted(by_index) != list(range(len(by_index))):
        return ML100K_GENRES
    return tuple(by_index[i] for i in range(len(by_index)))


# ---- sequences and pairs -------------------------------------------------------


def load_sequences(path: Path | None, options: SequenceOptions) -> tuple[Dataset, ImportReport]:
    """Import ``user item1 item2 ...`` lines; items are in time order (rows = lines)."""
    from recall_core.data import readers

    source = readers.require_file(_need(path, "sequences"))
    delimiter = readers.normalise_delimiter(options.delimiter)
    report = ImportReport()
    users: list[str] = []
    lengths: list[int] = []
    items: list[str] = []
    for line in readers.read_lines(source):
        fields = line.split(delimiter)
        if delimiter is not None:
            fields = [field.strip() for field in fields]
        report.rows_read += 1
        reason = _bad_sequence(fields)
        if reason:
            report.drop(reason)
            continue
        users.append(fields[0])
        lengths.append(len(fields) - 1)
        items.extend(fields[1:])
    rows = readers.Rows(users=np.repeat(np.array(users, dtype=object), lengths),
                        items=np.array(items, dtype=object))
    report.notes.append(f"{len(items):,} interactions from {len(users):,} user lines")
    dataset = _finish_sequences(rows, report, source, options, "sequences")
    report.rows_kept = len(users)  # rows are lines here
    return dataset, report


def _bad_sequence(fields: list[str]) -> str | None:
    from recall_core.data import readers

    if not fields[0]:
        return readers.DROP_EMPTY_USER
    if len(fields) < 2:
        return readers.DROP_NO_ITEMS
    if not all(fields[1:]):
        return readers.DROP_EMPTY_ITEM
    return None


def load_pairs(path: Path | None, options: SequenceOptions) -> tuple[Dataset, ImportReport]:
    """Import ``user item`` lines; file order is time order."""
    from recall_core.data import readers

    source = readers.require_file(_need(path, "pairs"))
    report = ImportReport()
    table = readers.read_delimited(source, report, names=["user", "item"],
                                   delimiter=options.delimiter)
    rows = readers.clean_rows(table, report)
    return _finish_sequences(rows, report, source, options, "pairs"), report


def _finish_sequences(rows: Rows, report: ImportReport, source: Path,
                      options: SequenceOptions, fmt: str) -> Dataset:
    """The dataset of sequence-like rows, with categories from the optional ``items`` file."""
    from recall_core.data import readers

    categories: dict[str, str] = {}
    items = _resolve(options.items, source.parent)
    if items:
        categories, malformed = readers.read_item_categories(items, options.delimiter)
        if malformed:
            report.notes.append(f"{items.name}: {malformed:,} malformed lines skipped")
    dataset = readers.build_dataset(rows, report, source=source, name=source.stem,
                                    item_categories=categories, meta=_meta(fmt, source, items))
    if items:
        _note_metadata(dataset, categories, report, items, items.name)
    return dataset


# ---- csv / parquet -------------------------------------------------------------


def load_csv(path: Path | None, options: CsvOptions) -> tuple[Dataset, ImportReport]:
    """Import a CSV (or ``.parquet``) file through the column mapping in ``options``."""
    from recall_core.data import readers

    source = readers.require_file(_need(path, "csv"))
    if options.min_rating is not None and options.rating_col is None:
        raise ConfigError("csv: min_rating needs rating_col")
    report = ImportReport()
    if source.suffix == ".parquet":
        table = readers.read_parquet_strings(source, report)
    else:
        table = readers.read_delimited(source, report, names=None, delimiter=options.delimiter,
                                       header=options.header, quoted=True)
    mapping = {role: _column(table.column_names, getattr(options, f"{role}_col"), source)
               for role in ("user", "item", "time", "rating", "category")}
    rows = readers.clean_rows(table, report, min_rating=options.min_rating, **mapping)
    dataset = readers.build_dataset(rows, report, source=source, name=source.stem,
                                    meta=_meta("csv", source, None))
    return dataset, report


def _column(names: list[str], wanted: str | None, source: Path) -> str | None:
    """The table column ``wanted`` names: a header name or a 0-based index."""
    if wanted is None:
        return None
    if wanted in names:
        return wanted
    if wanted.isdigit() and int(wanted) < len(names):
        return names[int(wanted)]
    raise DataError(f"{source}: no column {wanted!r} (columns: {', '.join(names) or 'none'})")


# ---- shared helpers --------------------------------------------------------------


def _need(path: Path | None, fmt: str) -> Path:
    if path is None:
        raise ConfigError(f"{fmt} needs PATH")
    return path


def _resolve(option: Path | None, base: Path | None) -> Path | None:
    """An explicit file option: as given, or relative to the PATH folder; must exist."""
    from recall_core.data import readers

    if option is None:
        return None
    option = Path(option)
    if not option.is_absolute() and not option.exists() and base is not None:
        folder = base if base.is_dir() else base.parent
        if (folder / option).exists():
            option = folder / option
    return readers.require_file(option)


def _beside(data_file: Path, path: Path | None, name: str) -> Path | None:
    """The metadata file ``name`` in PATH (a folder) or next to the data file, if present."""
    for folder in (path if path is not None and path.is_dir() else None, data_file.parent):
        if folder is not None and (folder / name).is_file():
            return folder / name
    return None


def _note_metadata(dataset: Dataset, categories: dict[str, str], report: ImportReport,
                   items: Path | None, expected: str) -> None:
    from recall_core.data import readers

    if items is None:
        report.notes.append(f"no {expected} found: items have no category")
    else:
        readers.note_uncategorised(dataset, categories, report, items)


def _dataset_name(data_file: Path, path: Path | None) -> str:
    folder = path if path is not None and path.is_dir() else data_file.parent
    return folder.name or data_file.stem


def _meta(fmt: str, data_file: Path, items: Path | None) -> dict[str, str]:
    meta = {"format": fmt, "source": str(data_file)}
    if items is not None:
        meta["items"] = str(items)
    return meta
