"""The crawler and the catalog kept in the lake: tables, partitions, schema inference and
evolution, incremental crawls, and what happens with bad or missing input."""

from pathlib import Path

import polars as pl
import pytest

import stockstream as ss
from lake_check import catalog_file, catalog_table


def put(lake: Path, key: str, frame: pl.DataFrame) -> Path:
    """An object as the sink lays them out (Parquet or JSON lines, by the key's suffix)."""
    path = lake / key
    path.parent.mkdir(parents=True, exist_ok=True)
    if key.endswith(".parquet"):
        frame.write_parquet(path)
    else:
        frame.write_ndjson(path)
    return path


def ticks(symbol: str, close, **extra) -> pl.DataFrame:
    return pl.DataFrame({"Index": [symbol], "Close": [close], **{k: [v] for k, v in extra.items()}})


@pytest.fixture
def lake(tmp_path):
    root = tmp_path / "lake"
    put(root, "ticks/date=2021-01-04/part-t-0-0.parquet", ticks("NYA", 1.5))
    put(root, "ticks/date=2021-01-04/part-t-1-0.parquet", ticks("IXIC", 2.5))
    put(root, "ticks/date=2021-01-05/part-t-0-1.parquet", ticks("NYA", 3.5))
    return root


def test_crawl_finds_tables_partitions_and_columns(lake):
    report = ss.crawl(str(lake))
    assert report.tables_created == ["ticks"]
    assert sorted(f for _, f in report.partitions_added) == ["date=2021-01-04", "date=2021-01-05"]
    assert report.columns_added == [("ticks", "Index", "string"), ("ticks", "Close", "double")]
    assert report.objects_read == 3 and report.conflicts == [] and report.skipped == []

    # The catalog is human-readable JSON in the lake itself.
    table = catalog_table(lake, "ticks")
    assert table["format"] == "parquet" and table["location"] == "ticks"
    assert table["partition_keys"] == [{"name": "date", "type": "date"}]
    assert table["partitions"] == [["2021-01-04"], ["2021-01-05"]]

    got = ss.Lake(str(lake)).sql('SELECT date, sum("Close") AS c FROM ticks GROUP BY 1 ORDER BY 1')
    assert got["c"].to_list() == [4.0, 3.5]
    assert got.schema["date"] == pl.Date


def test_symbol_folders_that_look_like_numbers_stay_text(tmp_path):
    root = tmp_path / "lake"
    put(root, "hk/symbol=0700/part-hk-0-0.parquet", ticks("0700", 1.5))
    put(root, "hk/symbol=0005/part-hk-1-0.parquet", ticks("0005", 2.5))
    report = ss.crawl(str(root))
    assert report.conflicts == [] and report.skipped == []
    db = ss.Lake(str(root))
    assert db.sql("SELECT symbol FROM hk ORDER BY symbol")["symbol"].to_list() == ["0005", "0700"]
    # A later symbol that is not a number joins the same text column.
    put(root, "hk/symbol=AAPL/part-hk-2-0.parquet", ticks("AAPL", 3.5))
    assert ss.crawl(str(root)).skipped == []
    got = db.sql("SELECT symbol FROM hk ORDER BY symbol")["symbol"].to_list()
    assert got == ["0005", "0700", "AAPL"]


def test_a_second_crawl_reads_only_new_objects(lake):
    ss.crawl(str(lake))
    again = ss.crawl(str(lake))
    assert (again.objects_read, again.objects_unchanged, again.changed) == (0, 3, False)

    put(lake, "ticks/date=2021-01-06/part-t-0-2.parquet", ticks("NYA", 4.5))
    third = ss.crawl(str(lake))
    assert (third.objects_read, third.objects_unchanged) == (1, 3)
    assert third.partitions_added == [("ticks", "date=2021-01-06")]
    assert third.tables_updated == ["ticks"]

    # A rewritten object (a replay after a crash) is read again.
    put(lake, "ticks/date=2021-01-06/part-t-0-2.parquet", ticks("NYA", 4.5, Volume=10))
    fourth = ss.crawl(str(lake))
    assert fourth.objects_read == 1 and fourth.columns_added == [("ticks", "Volume", "bigint")]


def test_partitions_are_invisible_until_crawled_like_glue(lake):
    ss.crawl(str(lake))
    put(lake, "ticks/date=2021-01-06/part-t-0-2.parquet", ticks("NYA", 4.5))
    db = ss.Lake(str(lake))
    assert db.sql("SELECT count(*) AS n FROM ticks")["n"][0] == 3
    ss.crawl(str(lake))
    assert db.sql("SELECT count(*) AS n FROM ticks")["n"][0] == 4
    # A new object in a known partition is seen at once (listing happens per query).
    put(lake, "ticks/date=2021-01-06/part-t-1-2.parquet", ticks("IXIC", 5.5))
    assert db.sql("SELECT count(*) AS n FROM ticks")["n"][0] == 5


def test_schema_evolution_adds_columns_and_widens_numbers(lake):
    ss.crawl(str(lake))
    put(lake, "ticks/date=2021-01-06/part-t-0-2.parquet", ticks("NYA", 7, Volume=100))
    report = ss.crawl(str(lake))
    assert report.columns_added == [("ticks", "Volume", "bigint")]
    assert report.conflicts == []
    got = ss.Lake(str(lake)).sql('SELECT "Close", "Volume" FROM ticks ORDER BY "Close"')
    assert got.schema["Close"] == pl.Float64
    assert got["Close"].to_list() == [1.5, 2.5, 3.5, 7.0]
    assert got["Volume"].to_list() == [None, None, None, 100]


def test_a_type_conflict_widens_to_text_is_reported_and_select_star_reads_every_file(lake):
    ss.crawl(str(lake))
    put(lake, "ticks/date=2021-01-06/part-t-0-2.parquet", ticks("NYA", "n/a"))
    report = ss.crawl(str(lake))
    [(table, column, existing, found, files)] = report.conflicts
    assert (table, column, existing, found) == ("ticks", "Close", "double", "string")
    assert files[0].endswith("ticks/date=2021-01-04/part-t-0-0.parquet")
    assert files[1].endswith("ticks/date=2021-01-06/part-t-0-2.parquet")
    table = catalog_table(lake, "ticks")
    assert {"name": "Close", "type": "string"} in table["columns"]
    assert table["widened"] == ["Close"]
    # Every object is read, each with its own stored type, as text.
    got = ss.Lake(str(lake)).sql('SELECT * FROM ticks ORDER BY date, "Index"')
    assert got.schema["Close"] == pl.String
    assert got["Close"].to_list() == ["2.5", "1.5", "3.5", "n/a"]
    # Later objects of either type read too, and a filter on the text works.
    put(lake, "ticks/date=2021-01-06/part-t-1-3.parquet", ticks("IXIC", 9.25))
    ss.crawl(str(lake))
    got = ss.Lake(str(lake)).sql('SELECT "Index" FROM ticks WHERE "Close" = \'9.25\'')
    assert got["Index"].to_list() == ["IXIC"]


def test_a_field_whose_type_changes_between_sink_batches_stays_queryable(tmp_path):
    lake = tmp_path / "lake"
    put(lake, "t/part-t-0-0.ndjson", pl.DataFrame({"Index": ["A"], "note": [1]}))
    put(lake, "t/part-t-0-1.ndjson", pl.DataFrame({"Index": ["B"], "note": ["late"]}))
    report = ss.crawl(str(lake))
    assert [(c, e, f) for _, c, e, f, _ in report.conflicts] == [("note", "bigint", "string")]
    got = ss.Lake(str(lake)).sql('SELECT * FROM t ORDER BY "Index"')
    assert got["note"].to_list() == ["1", "late"]


def test_quarantine_catalog_and_temporary_files_are_not_crawled(lake):
    put(lake, "_rejected/ticks/part-t-0-0.json", pl.DataFrame({"error": ["bad"]}))
    put(lake, "ticks/date=2021-01-04/.part-t-0-9.parquet.1.0.tmp", ticks("NYA", 1.0))
    (lake / "ticks/_SUCCESS").write_text("")
    report = ss.crawl(str(lake))
    assert report.tables_created == ["ticks"] and report.objects_read == 3
    assert ss.Lake(str(lake)).sql("SELECT count(*) AS n FROM ticks")["n"][0] == 3


def test_a_corrupt_object_is_skipped_by_name_or_raised(lake):
    bad = lake / "ticks/date=2021-01-05/part-t-1-1.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ss.SchemaError, match="part-t-1-1.parquet"):
        ss.crawl(str(lake), on_error="raise")

    report = ss.crawl(str(lake))
    [(url, why)] = report.skipped
    assert url.endswith("part-t-1-1.parquet") and "Parquet" in why
    # Queries leave the object out rather than fail on it.
    assert ss.Lake(str(lake)).sql("SELECT count(*) AS n FROM ticks")["n"][0] == 3


def test_a_corrupt_object_the_crawler_has_not_seen_fails_the_query_by_name(lake):
    ss.crawl(str(lake))
    (lake / "ticks/date=2021-01-05/part-t-1-1.parquet").write_bytes(b"garbage, not parquet")
    with pytest.raises(ss.SchemaError, match="part-t-1-1.parquet.*crawl"):
        ss.Lake(str(lake)).sql('SELECT sum("Close") FROM ticks')


def test_ndjson_tables(tmp_path):
    lake = tmp_path / "lake"
    put(lake, "raw/symbol=NYA/part-r-0-0.json", pl.DataFrame({"Close": [1, 2], "Date": ["a", "b"]}))
    put(lake, "raw/symbol=%5EGSPC/part-r-0-2.json", pl.DataFrame({"Close": [2.5], "Date": ["c"]}))
    report = ss.crawl(str(lake))
    assert {c for _, c, _ in report.columns_added} == {"Close", "Date"}
    table = catalog_table(lake, "raw")
    assert table["format"] == "ndjson"
    # Integers in one object, a float in another: the column is a double.
    assert {"name": "Close", "type": "double"} in table["columns"]
    # Folder values are unescaped in the catalog, as Hive does.
    assert ["^GSPC"] in table["partitions"]
    got = ss.Lake(str(lake)).sql('SELECT symbol, sum("Close") AS c FROM raw GROUP BY 1 ORDER BY 1')
    assert got.rows() == [("NYA", 3.0), ("^GSPC", 2.5)]


def test_an_empty_lake_gives_empty_results_not_crashes(tmp_path):
    lake = tmp_path / "lake"
    lake.mkdir()
    report = ss.crawl(str(lake))
    assert not report.changed and report.objects_read == 0
    db = ss.Lake(str(lake))
    assert db.tables().height == 0
    with pytest.raises(ss.QueryError, match="no tables yet"):
        db.sql("SELECT count(*) FROM stock_market")
    with pytest.raises(ss.NotFoundError, match="ticks"):
        ss.crawl(str(lake), table="ticks")


def test_a_table_whose_objects_are_gone_is_empty(lake):
    ss.crawl(str(lake))
    for f in (lake / "ticks").rglob("*.parquet"):
        f.unlink()
    got = ss.Lake(str(lake)).sql('SELECT "Index", "Close", date FROM ticks')
    assert got.height == 0 and got.columns == ["Index", "Close", "date"]


def test_crawl_one_table_and_other_databases(lake):
    put(lake, "other/part-o-0-0.parquet", ticks("NYA", 1.0))
    report = ss.crawl(str(lake), table="ticks", database="markets")
    assert report.tables_created == ["ticks"]
    assert ss.Lake(str(lake), database="markets").tables()["table"].to_list() == ["ticks"]
    assert ss.Lake(str(lake)).tables().height == 0


def test_bad_options_are_config_errors(lake):
    with pytest.raises(ss.ConfigError, match="on_error"):
        ss.crawl(str(lake), on_error="ignore")
    with pytest.raises(ss.ConfigError, match="catalog"):
        ss.Lake(str(lake), catalog="hive")
    with pytest.raises(ss.ConfigError, match="s3"):
        ss.Lake(str(lake), catalog="glue")
    with pytest.raises(ss.ConfigError, match="database"):
        ss.crawl(str(lake), database="../outside")
    assert not (lake.parent / "outside").exists()


def test_a_damaged_catalog_file_is_named(lake):
    ss.crawl(str(lake))
    damaged = catalog_file(lake, "ticks")
    damaged.write_text("{ not json")
    with pytest.raises(ss.SchemaError, match=damaged.name):
        ss.Lake(str(lake)).sql("SELECT * FROM ticks")


def test_an_unpartitioned_table(tmp_path):
    lake = tmp_path / "lake"
    for i in range(3):
        put(lake, f"flat/stock_market_{i}.json", ticks("NYA", float(i)))
    report = ss.crawl(str(lake))
    assert report.tables_created == ["flat"] and report.partitions_added == [("flat", "")]
    assert ss.Lake(str(lake)).sql('SELECT sum("Close") AS c FROM flat')["c"][0] == 3.0


def test_a_table_of_only_corrupt_objects_is_reported_not_created(tmp_path):
    lake = tmp_path / "lake"
    (lake / "broken").mkdir(parents=True)
    (lake / "broken/part-b-0-0.parquet").write_bytes(b"not parquet")
    report = ss.crawl(str(lake))
    assert report.tables_created == [] and report.skipped[0][0].endswith("part-b-0-0.parquet")


def test_timestamps_in_other_units_read_as_the_catalogs(tmp_path):
    lake = tmp_path / "lake"
    at = pl.datetime(2021, 1, 4, 9, 30)
    for unit, name in (("us", "a"), ("ns", "b"), ("ms", "c")):
        frame = pl.select(Index=pl.lit("NYA"), Time=at.dt.cast_time_unit(unit))
        put(lake, f"t/part-{name}.parquet", frame)
    report = ss.crawl(str(lake))
    assert ("t", "Time", "timestamp") in report.columns_added
    got = ss.Lake(str(lake)).sql('SELECT "Time" FROM t')
    assert got.schema["Time"] == pl.Datetime("us") and got["Time"].n_unique() == 1
