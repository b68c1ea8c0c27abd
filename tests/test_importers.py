"""The built-in dataset formats: parsing, per-reason drop counts, errors, and the real data sets."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from recall_core.contract import DatasetImporter, ImportReport
from recall_core.data.dataset import Dataset
from recall_core.errors import ConfigError, DataError
from recall_core.host import make_host
from recall_plugins import importers

RATINGS = """\
1::10::5::300
1::11::3::100
1::12::4::200
2::10::1::50
2::13::2::60
2::11::x::70
3::10::4::abc
3::12::4
::11::4::80
4::::4::90
4::12::2.5::95
"""
MOVIES = "10::Caf\xe9 (1995)::Comedy|Drama\n11::Two (1996)::Action\n12::Three::(no genres listed)\n"


def load(fmt: str, path: Path | None, **options: object) -> tuple[Dataset, ImportReport]:
    """Import through the hook, exactly as the CLI does (options validated by the model)."""
    importer = formats()[fmt]
    return importer.load(path, importer.options_model.model_validate(options))


def formats() -> dict[str, DatasetImporter]:
    host = make_host(load_entry_points=False, builtins=False, extra_plugins=[importers])
    return host.importers


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def rows(dataset: Dataset) -> list[tuple[str, str]]:
    """(raw user, raw item) per row, in the dataset's (user, time) order."""
    return list(zip(dataset.user_ids[dataset.users].tolist(), dataset.item_ids[dataset.items].tolist()))


def category_of(dataset: Dataset, item: str) -> str | None:
    code = dataset.item_category[dataset.item_index(item)]
    return None if code < 0 else dataset.category_names[code]


# ---- the hook ------------------------------------------------------------------


def test_hook_provides_every_format_with_a_strict_options_model() -> None:
    provided = formats()
    assert set(provided) == {"movielens", "ml100k", "sequences", "pairs", "csv", "synthetic"}
    assert [name for name, fmt in provided.items() if not fmt.needs_path] == ["synthetic"]
    for fmt in provided.values():
        with pytest.raises(ValidationError):
            fmt.options_model.model_validate({"no_such_option": 1})


def test_synthetic_format_generates_without_a_path() -> None:
    dataset, report = load("synthetic", None, users="30", items="20", seed="4")
    assert dataset.num_users == 30 and dataset.name == "synthetic"
    assert report.rows_kept == dataset.num_interactions and not report.dropped


# ---- movielens -----------------------------------------------------------------


@pytest.fixture
def ml_folder(tmp_path: Path) -> Path:
    write(tmp_path / "ml" / "ratings.dat", RATINGS)
    write(tmp_path / "ml" / "movies.dat", MOVIES, encoding="latin-1")
    return tmp_path / "ml"


def test_movielens_counts_each_malformed_row_under_its_reason(ml_folder: Path) -> None:
    dataset, report = load("movielens", ml_folder)
    assert report.dropped == {"wrong_field_count": 1, "empty_user_id": 1, "empty_item_id": 1,
                              "bad_timestamp": 1, "bad_rating": 1}
    assert (report.rows_read, report.rows_kept) == (11, 6)
    assert dataset.summary() == {"users": 3, "items": 4, "interactions": 6}
    # time order within each user, whatever the file order
    assert rows(dataset) == [("1", "11"), ("1", "12"), ("1", "10"), ("2", "10"), ("2", "13"),
                             ("4", "12")]
    assert dataset.name == "ml"


def test_movielens_genres_become_categories_and_ratings_feedback(ml_folder: Path) -> None:
    dataset, report = load("movielens", ml_folder)
    assert category_of(dataset, "10") == "Comedy"  # first genre; Latin-1 file read fine
    assert category_of(dataset, "11") == "Action"
    assert category_of(dataset, "12") is None  # "(no genres listed)"
    assert category_of(dataset, "13") is None  # not in movies.dat: kept ...
    assert any("1 items are not in movies.dat" in note for note in report.notes)  # ... and noted
    assert dataset.feedback is not None and dataset.feedback.dtype == np.float32
    first_user = dict(zip(dataset.item_ids[dataset.sequence(0)], dataset.feedback[:3]))
    assert first_user == {"11": 0.5, "12": 0.75, "10": 1.0}  # (r - 1) / 4


def test_movielens_min_rating_drops_rows_below_it(ml_folder: Path) -> None:
    dataset, report = load("movielens", ml_folder, min_rating=3)
    assert report.dropped["below_min_rating"] == 3
    assert dataset.num_interactions == 3
    assert dataset.feedback.min() == 0.5  # scale stays that of the whole file


def test_movielens_reads_gzip_and_explicit_files(ml_folder: Path, tmp_path: Path) -> None:
    plain, _ = load("movielens", ml_folder)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "ratings.partial.dat.gz").write_bytes(gzip.compress(RATINGS.encode()))
    (other / "movies.dat").write_bytes((ml_folder / "movies.dat").read_bytes())
    found, _ = load("movielens", other)
    explicit, _ = load("movielens", None, ratings=other / "ratings.partial.dat.gz",
                       items=ml_folder / "movies.dat")
    relative, _ = load("movielens", other, ratings="ratings.partial.dat.gz")
    assert plain.fingerprint == found.fingerprint == explicit.fingerprint == relative.fingerprint


def test_movielens_without_movies_dat_has_no_categories(tmp_path: Path) -> None:
    dataset, report = load("movielens", write(tmp_path / "r" / "ratings.dat", RATINGS))
    assert (dataset.item_category == -1).all() and dataset.category_names == ()
    assert any("no movies.dat" in note for note in report.notes)


@pytest.mark.parametrize("setup,message", [
    (lambda root: root / "absent", "no such file: {root}/absent"),
    (lambda root: root, "{root}: no ratings*.dat"),
    (lambda root: write(root / "ratings.dat", "a::b\n::x::1::2\n").parent, "no usable rows"),
])
def test_movielens_errors_name_the_path(tmp_path: Path, setup, message: str) -> None:  # noqa: ANN001
    with pytest.raises(DataError) as error:
        load("movielens", setup(tmp_path))
    assert message.format(root=tmp_path) in str(error.value)
    assert "\n" not in str(error.value)


def test_movielens_several_ratings_files_or_a_missing_option_file(ml_folder: Path) -> None:
    write(ml_folder / "ratings.old.dat", RATINGS)
    with pytest.raises(DataError, match="several ratings files"):
        load("movielens", ml_folder)
    with pytest.raises(DataError, match="no such file: .*nope.dat"):
        load("movielens", ml_folder, ratings="ratings.dat", items="nope.dat")


# ---- ml-100k -------------------------------------------------------------------


def test_ml100k_reads_u_data_and_the_first_flagged_genre(tmp_path: Path) -> None:
    flags = ["0"] * 19
    action = flags.copy()
    action[1] = action[5] = "1"
    write(tmp_path / "u.data", "1\t7\t4\t10\n1\t8\t5\t5\n2\t9\t1\t7\n2\tx7\tbad\t8\n3\t7\t4\n")
    write(tmp_path / "u.item", "7|Caf\xe9|01-Jan-1995||url|" + "|".join(action) + "\n"
          "8|None|01-Jan-1995||url|" + "|".join(flags) + "\n8|short\n", encoding="latin-1")
    dataset, report = load("ml100k", tmp_path)
    assert report.dropped == {"bad_rating": 1, "wrong_field_count": 1}
    assert rows(dataset) == [("1", "8"), ("1", "7"), ("2", "9")]
    assert category_of(dataset, "7") == "Action"  # standard genre list without u.genre
    assert category_of(dataset, "8") is None
    assert any("u.item: 1 malformed" in note for note in report.notes)
    assert any("1 items are not in u.item" in note for note in report.notes)
    write(tmp_path / "u.genre", "\n".join(f"g{i}|{i}" for i in range(19)) + "\n")
    assert category_of(load("ml100k", tmp_path / "u.data")[0], "7") == "g1"


# ---- sequences and pairs ---------------------------------------------------------


def test_sequences_keep_line_order_and_count_bad_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "seq.txt", "u1 5 3 9\n\nu2\t3  4\nu3\n  u4 9\n")
    dataset, report = load("sequences", path)
    assert rows(dataset) == [("u1", "5"), ("u1", "3"), ("u1", "9"), ("u2", "3"), ("u2", "4"),
                             ("u4", "9")]
    assert report.dropped == {"no_items": 1}
    assert (report.rows_read, report.rows_kept) == (4, 3)
    assert dataset.name == "seq"


def test_sequences_with_a_delimiter_and_an_item_category_file(tmp_path: Path) -> None:
    path = write(tmp_path / "seq.csv", "a,1,2\nb, 2 ,3\nc,1,,2\n")
    write(tmp_path / "cats.csv", "1,red\n2,blue\n9,green\nbroken\n")
    dataset, report = load("sequences", path, delimiter=",", items="cats.csv")
    assert rows(dataset) == [("a", "1"), ("a", "2"), ("b", "2"), ("b", "3")]
    assert report.dropped == {"empty_item_id": 1}
    assert [category_of(dataset, item) for item in ("1", "2", "3")] == ["red", "blue", None]
    assert any("1 items are not in cats.csv" in note for note in report.notes)
    assert any("cats.csv: 1 malformed" in note for note in report.notes)


def test_pairs_use_file_order_as_time(tmp_path: Path) -> None:
    path = write(tmp_path / "pairs.txt", "u2 b\nu1\ta\nu2  a\nu1 c extra\nu1\n\nu1 b\n")
    dataset, report = load("pairs", path)
    assert rows(dataset) == [("u1", "a"), ("u1", "b"), ("u2", "b"), ("u2", "a")]
    assert report.dropped == {"wrong_field_count": 2}
    assert (report.rows_read, report.rows_kept) == (6, 4)


# ---- csv / parquet -------------------------------------------------------------


def test_csv_maps_columns_and_parses_times(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", 'uid,vid,when,kind,stars\n'
                 'a,1,2021-01-02T00:00:00,"news, local",4\n'
                 'a,2,1609459200,sport,5\n'
                 'b,1,1609459200.9,,3\n'
                 'b,3,yesterday,sport,4\n'
                 'c,3,2021-01-01,sport,oops\n'
                 'c,4,2021-01-01\n'
                 'd,4,2021-01-03 10:00:00,sport,1\n')
    dataset, report = load("csv", path, user_col="uid", item_col="vid", time_col="when",
                           category_col="kind", rating_col="stars", min_rating=2)
    assert report.dropped == {"bad_timestamp": 1, "bad_rating": 1, "wrong_field_count": 1,
                              "below_min_rating": 1}
    assert rows(dataset) == [("a", "2"), ("a", "1"), ("b", "1")]
    assert dataset.timestamps.tolist() == [1609459200, 1609545600, 1609459200]
    assert category_of(dataset, "1") == "news, local" and category_of(dataset, "2") == "sport"


def test_csv_without_header_addresses_columns_by_index(tmp_path: Path) -> None:
    path = write(tmp_path / "log.tsv", "x\t9\t1\n\ty\t2\nz\t8\t0\n")
    dataset, report = load("csv", path, user_col="1", item_col="0", time_col="2",
                           delimiter="\\t", header=False)
    assert rows(dataset) == [("8", "z"), ("9", "x")]
    assert report.dropped == {"empty_item_id": 1}


def test_csv_unknown_column_and_option_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item\na,1\n")
    with pytest.raises(DataError, match=r"no column 'when' \(columns: user, item\)"):
        load("csv", path, time_col="when")
    with pytest.raises(ConfigError, match="min_rating needs rating_col"):
        load("csv", path, min_rating=3)
    assert load("csv", path)[0].num_interactions == 1


def test_csv_reads_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"user": [1, 1, 2], "item": ["p", "q", "p"], "ts": [5, 3, 1]}),
                   tmp_path / "log.parquet")
    dataset, _ = load("csv", tmp_path / "log.parquet", time_col="ts")
    assert rows(dataset) == [("1", "q"), ("1", "p"), ("2", "p")]


def test_an_imported_dataset_survives_save_and_load(ml_folder: Path, tmp_path: Path) -> None:
    dataset, _ = load("movielens", ml_folder)
    dataset.save(tmp_path / "saved")
    loaded = Dataset.load(tmp_path / "saved")
    assert loaded.fingerprint == dataset.fingerprint and loaded.meta["format"] == "movielens"


# ---- the real data sets (../shared/data) ----------------------------------------


@pytest.mark.data
def test_real_ml1m_3k_imports_with_the_documented_counts(shared_data: Path) -> None:
    folder = shared_data / "ml-1m"
    if not (folder / "ratings.partial_users_1-2999.dat.gz").is_file():
        pytest.skip("ml-1m-3k is not in the shared data folder")
    dataset, report = load("movielens", folder)  # its speed: benchmarks/ml1m_sources.py
    assert dataset.summary() == {"users": 2999, "items": 3615, "interactions": 487650}
    assert report.dropped == {} and report.rows_read == 487650
    assert len(dataset.category_names) == 18 and (dataset.item_category >= 0).all()
    assert dataset.timestamps.min() == 970620734 and dataset.timestamps.max() == 1046388675


@pytest.mark.data
def test_real_ml100k_imports_with_the_documented_counts(shared_data: Path) -> None:
    folder = shared_data / "ml-100k"
    if not (folder / "u.data").is_file():
        pytest.skip("ml-100k is not in the shared data folder")
    dataset, report = load("ml100k", folder)
    assert dataset.summary() == {"users": 943, "items": 1682, "interactions": 100000}
    assert report.dropped == {} and len(dataset.category_names) == 19


@pytest.mark.data
def test_real_beauty_sequences_import_with_the_documented_counts(shared_data: Path) -> None:
    path = shared_data / "amazon-s3rec" / "Beauty.txt"
    if not path.is_file():
        pytest.skip("Amazon Beauty is not in the shared data folder")
    dataset, _ = load("sequences", path)
    assert dataset.summary() == {"users": 22363, "items": 12101, "interactions": 198502}
