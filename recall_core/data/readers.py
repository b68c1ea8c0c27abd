"""Vectorised building blocks of the dataset importers.

Files are read whole into memory (gzip transparently), parsed by pyarrow.csv
as string columns, and validated column by column with pyarrow compute, so a
bad row costs a mask bit instead of a Python exception. Every dropped row is
counted in the :class:`~recall_core.contract.ImportReport` under a fixed
reason name (the ``DROP_*`` constants). pyarrow is imported only here.
"""

from __future__ import annotations

import gzip
import io
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recall_core.contract import ImportReport
from recall_core.data.dataset import Dataset
from recall_core.errors import DataError

DROP_FIELD_COUNT = "wrong_field_count"
DROP_EMPTY_USER = "empty_user_id"
DROP_EMPTY_ITEM = "empty_item_id"
DROP_TIMESTAMP = "bad_timestamp"
DROP_RATING = "bad_rating"
DROP_BELOW_MIN = "below_min_rating"
DROP_NO_ITEMS = "no_items"

# pyarrow.csv takes one delimiter character; multi-character delimiters and
# whitespace runs are rewritten to this control character first.
_SEP = "\x1f"
_INT = r"^-?\d{1,18}$"
_FLOAT = r"^-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_TIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d",
)
_DELIMITER_WORDS = {"\\t": "\t", "tab": "\t", "space": " ", "comma": ",", "pipe": "|"}


@dataclass
class Rows:
    """Interaction columns that passed validation (numpy, one entry per row)."""

    users: np.ndarray  # str
    items: np.ndarray  # str
    timestamps: np.ndarray | None = None  # int64; None = file order
    ratings: np.ndarray | None = None  # float64
    rating_range: tuple[float, float] | None = None  # over every valid rating, before min_rating
    categories: np.ndarray | None = None  # str, "" = none


# ---- files -----------------------------------------------------------------


def require_file(path: Path, what: str = "file") -> Path:
    """``path`` if it is an existing file, else a one-line :class:`DataError`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no such {what}: {path}")
    if not path.is_file():
        raise DataError(f"{path} is a folder; expected a {what}")
    return path


def read_text_bytes(path: Path) -> bytes:
    """The bytes of ``path`` as UTF-8 (gunzipped; Latin-1 files transcoded)."""
    data = require_file(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise DataError(f"{path}: not a valid gzip file ({error})") from None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        # MovieLens metadata is ISO-8859-1; any byte string is valid Latin-1.
        data = data.decode("latin-1").encode("utf-8")
    return data.replace(b"\r\n", b"\n")


def read_lines(path: Path) -> list[str]:
    """The non-blank lines of a (small) text file, stripped."""
    text = read_text_bytes(path).decode("utf-8")
    return [line.strip() for line in text.split("\n") if line.strip()]


def normalise_delimiter(delimiter: str | None) -> str | None:
    """Accept what a shell user types: ``\\t``, ``tab``, ``space``; None = whitespace."""
    if delimiter is None or delimiter == "":
        return None
    return _DELIMITER_WORDS.get(delimiter.lower(), delimiter)


def read_delimited(
    path: Path, report: ImportReport, *, names: list[str] | None, delimiter: str | None,
    header: bool = False, quoted: bool = False,
) -> pa.Table:
    """Parse a delimited text file into string columns.

    ``names`` fixes the expected columns (rows with another field count are
    dropped as ``wrong_field_count``); with ``names=None`` they come from the
    header row, or are ``f0, f1, ...`` without one. ``delimiter=None`` splits
    on runs of spaces and tabs. Sets ``report.rows_read``.
    """
    data, delimiter = _single_char_delimited(read_text_bytes(path), normalise_delimiter(delimiter))
    if not data.strip():
        raise DataError(f"{path}: the file is empty")
    bad = [0]

    def skip_invalid(_row: object) -> str:
        bad[0] += 1
        return "skip"

    read_options = pacsv.ReadOptions(
        column_names=names, autogenerate_column_names=names is None and not header,
        skip_rows=1 if header and names is not None else 0)
    parse_options = pacsv.ParseOptions(
        delimiter=delimiter, quote_char='"' if quoted else False, invalid_row_handler=skip_invalid)
    column_names = names or _column_names(data, read_options, parse_options)
    convert = pacsv.ConvertOptions(column_types={name: pa.string() for name in column_names},
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    try:
        table = pacsv.read_csv(io.BytesIO(data), read_options, parse_options, convert)
    except pa.ArrowInvalid as error:
        raise DataError(f"{path}: cannot parse ({str(error).splitlines()[0]})") from None
    report.rows_read += table.num_rows + bad[0]
    report.drop(DROP_FIELD_COUNT, bad[0])
    return table


def _single_char_delimited(data: bytes, delimiter: str | None) -> tuple[bytes, str]:
    if delimiter is None:
        data = re.sub(rb"[ \t]+", _SEP.encode(), data)
        return re.sub(rb"(?m)^\x1f|\x1f$", b"", data), _SEP
    if len(delimiter) > 1:
        return data.replace(delimiter.encode(), _SEP.encode()), _SEP
    return data, delimiter


def _column_names(data: bytes, read_options: pacsv.ReadOptions,
                  parse_options: pacsv.ParseOptions) -> list[str]:
    """Column names from the header (or the first row's width) without parsing the body."""
    # A handler of its own: rows this first block skips must not be counted twice.
    parse_options = pacsv.ParseOptions(delimiter=parse_options.delimiter,
                                       quote_char=parse_options.quote_char,
                                       invalid_row_handler=lambda _row: "skip")
    try:
        with pacsv.open_csv(io.BytesIO(data), read_options, parse_options) as reader:
            return list(reader.schema.names)
    except (pa.ArrowInvalid, StopIteration):
        return []


def read_parquet_strings(path: Path, report: ImportReport) -> pa.Table:
    """A parquet file with every column cast to string (for the column-mapped importer)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(require_file(path))
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{path}: cannot read parquet ({error})") from None
    report.rows_read += table.num_rows
    strings = [pc.cast(table[name], pa.string()) for name in table.column_names]
    return pa.table(dict(zip(table.column_names, strings)))


# ---- validation ------------------------------------------------------------


def clean_rows(
    table: pa.Table, report: ImportReport, *, user: str = "user", item: str = "item",
    time: str | None = None, rating: str | None = None, category: str | None = None,
    min_rating: float | None = None,
) -> Rows:
    """Validate the mapped columns of ``table``; drop bad rows, counted per reason.

    A row is counted once, under the first check it fails: empty user id,
    empty item id, bad timestamp, bad rating, rating below ``min_rating``.
    """
    users = pc.utf8_trim_whitespace(table[user])
    items = pc.utf8_trim_whitespace(table[item])
    keep = np.ones(table.num_rows, bool)
    keep = _apply(keep, _non_empty(users), DROP_EMPTY_USER, report)
    keep = _apply(keep, _non_empty(items), DROP_EMPTY_ITEM, report)
    timestamps = ratings = None
    if time is not None:
        timestamps, valid = parse_timestamps(table[time])
        keep = _apply(keep, valid, DROP_TIMESTAMP, report)
    rating_range = None
    if rating is not None:
        ratings, valid = parse_floats(table[rating])
        keep = _apply(keep, valid, DROP_RATING, report)
        if keep.any():
            rating_range = (float(ratings[keep].min()), float(ratings[keep].max()))
        if min_rating is not None:
            keep = _apply(keep, ratings >= min_rating, DROP_BELOW_MIN, report)
    categories = None
    if category is not None:
        categories = _strings(pc.utf8_trim_whitespace(table[category]))[keep]
    return Rows(
        users=_strings(users)[keep], items=_strings(items)[keep],
        timestamps=None if timestamps is None else timestamps[keep],
        ratings=None if ratings is None else ratings[keep], rating_range=rating_range,
        categories=categories)


def _apply(keep: np.ndarray, valid: np.ndarray, reason: str, report: ImportReport) -> np.ndarray:
    report.drop(reason, int(np.count_nonzero(keep & ~valid)))
    return keep & valid


def _non_empty(column: pa.ChunkedArray) -> np.ndarray:
    return pc.greater(pc.utf8_length(column), 0).to_numpy(zero_copy_only=False)


def _strings(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _number_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    # pyarrow's casts reject a leading "+"; spreadsheets write one.
    return pc.replace_substring_regex(pc.utf8_trim_whitespace(column), r"^\+", "")


def parse_floats(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """``(values, valid)``: decimal numbers parse, anything else is invalid (value NaN)."""
    text = _number_text(column)
    valid = pc.match_substring_regex(text, _FLOAT).to_numpy(zero_copy_only=False)
    values = np.full(len(text), np.nan)
    values[valid] = pc.cast(text.filter(pa.array(valid)), pa.float64()).to_numpy()
    return values, valid


def parse_timestamps(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """``(seconds, valid)``: integers, decimals (floored) or ISO-8601 date-times (as UTC)."""
    text = _number_text(column)
    values = np.zeros(len(text), np.int64)
    valid = pc.match_substring_regex(text, _INT).to_numpy(zero_copy_only=False)
    values[valid] = pc.cast(text.filter(pa.array(valid)), pa.int64()).to_numpy()
    if valid.all():
        return values, valid
    decimals, is_decimal = parse_floats(text)
    is_decimal &= ~valid & (np.abs(np.nan_to_num(decimals)) < 2**62)
    values[is_decimal] = np.floor(decimals[is_decimal]).astype(np.int64)
    valid |= is_decimal
    for fmt in _TIME_FORMATS:
        rest = np.flatnonzero(~valid)
        if len(rest) == 0:
            break
        parsed = pc.strptime(text.take(pa.array(rest)), format=fmt, unit="s", error_is_null=True)
        ok = pc.is_valid(parsed).to_numpy(zero_copy_only=False)
        seconds = pc.cast(parsed.filter(pa.array(ok)), pa.int64()).to_numpy()
        values[rest[ok]] = seconds
        valid[rest[ok]] = True
    return values, valid


# ---- result ----------------------------------------------------------------


def build_dataset(
    rows: Rows, report: ImportReport, *, source: Path, name: str,
    item_categories: dict[str, str] | None = None, meta: dict | None = None,
) -> Dataset:
    """The :class:`Dataset` of the kept rows; :class:`DataError` if none is left.

    Ratings become the ``feedback`` column scaled to [0, 1] (min-max over the
    file's valid ratings, unless they already lie in [0, 1]).
    """
    if len(rows.users) == 0:
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in report.dropped.items())
        raise DataError(f"{source}: no usable rows" + (f" (dropped: {reasons})" if reasons else ""))
    feedback = None
    if rows.ratings is not None:
        feedback = scale_ratings(rows.ratings, rows.rating_range, report)
    categories = dict(item_categories or {})
    if rows.categories is not None:
        categories.update(first_category_per_item(rows.items, rows.categories))
    report.rows_kept = len(rows.users)
    dataset = Dataset.from_raw(rows.users, rows.items, rows.timestamps,
                               item_categories=categories, name=name, feedback=feedback)
    return replace(dataset, meta=dict(meta or {}))


def scale_ratings(ratings: np.ndarray, rating_range: tuple[float, float] | None,
                  report: ImportReport) -> np.ndarray:
    """Ratings as float32 feedback in [0, 1]; the mapping is noted in the report.

    The scale is the range of every valid rating in the file, so a ``min_rating``
    filter does not change what a given rating maps to.
    """
    low, high = rating_range or (float(ratings.min()), float(ratings.max()))
    if low >= 0.0 and high <= 1.0:
        return ratings.astype(np.float32)
    if high == low:
        report.notes.append(f"every rating is {low:g}: feedback set to 1")
        return np.ones(len(ratings), np.float32)
    report.notes.append(f"ratings {low:g}..{high:g} kept as feedback (r - {low:g}) / {high - low:g}")
    return ((ratings - low) / (high - low)).astype(np.float32)


def read_item_categories(path: Path, delimiter: str | None) -> tuple[dict[str, str], int]:
    """An ``item category`` file: ``({item: category}, malformed line count)``."""
    report = ImportReport()
    table = read_delimited(path, report, names=["item", "category"], delimiter=delimiter)
    items = pc.utf8_trim_whitespace(table["item"])
    listed = _non_empty(items)
    ids = _strings(items)[listed]
    categories = dict.fromkeys(ids.tolist(), "")  # listed without a category: no note later
    categories.update(first_category_per_item(
        ids, _strings(pc.utf8_trim_whitespace(table["category"]))[listed]))
    return categories, report.rows_read - len(ids)


def first_category_per_item(items: np.ndarray, categories: np.ndarray) -> dict[str, str]:
    """Each item's first non-empty category in file order."""
    labelled = categories != ""
    unique, first = np.unique(items[labelled], return_index=True)
    return dict(zip(unique.tolist(), categories[labelled][first].tolist()))


def note_uncategorised(dataset: Dataset, categories: dict[str, str], report: ImportReport,
                       metadata: Path) -> None:
    """Note how many of the dataset's items the metadata file does not list (they are kept)."""
    missing = sum(1 for item in dataset.item_ids.tolist() if item not in categories)
    if missing:
        report.notes.append(f"{missing:,} items are not in {metadata.name} (kept, no category)")
