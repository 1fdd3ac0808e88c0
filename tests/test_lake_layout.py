"""The lake's shape: folders chosen from the data and recorded once per table, objects of a
healthy size on the tutorial's own kind of dataset, and results equal to DuckDB's."""

import sys
import uuid
from pathlib import Path

import duckdb
import pytest

import stockstream as ss

sys.path.insert(0, str(Path(__file__).parent.parent / "benches"))
from datasets import tutorial_daily  # noqa: E402

GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


def group_id():
    return f"lake-{uuid.uuid4().hex[:8]}"


def test_the_tutorials_daily_dataset_lands_in_few_objects_and_queries_like_duckdb(
    kafka, topic, tmp_path
):
    csv = tmp_path / "indexProcessed.csv"
    rows = tutorial_daily(csv)
    assert rows > 100_000
    report = ss.Producer(kafka.bootstrap_servers, topic).send_csv(csv)
    assert report.delivered == rows and report.dropped_by_broker == 0
    lake = tmp_path / "lake"
    # Every default: auto folders, the local catalog.
    status = ss.LakeSink(kafka.bootstrap_servers, topic, group_id(), str(lake)).run(
        stop_at_end=True
    )
    assert status.written == rows

    db = ss.Lake(str(lake))
    tables = db.tables().to_dicts()
    assert [t["table"] for t in tables] == [topic.replace("-", "_")]
    assert tables[0]["partitioning"].startswith("auto: no time folders"), tables[0]
    files = db.files()
    on_disk = [p for p in lake.rglob("*.parquet") if not p.name.startswith(".")]
    assert len(on_disk) == files.height <= 300, (len(on_disk), files.height)

    # No crawl needed: the sink registered the table. Results equal DuckDB's on the files.
    name = tables[0]["table"]
    urls = files["url"].to_list()
    duck = duckdb.connect()
    count = duck.sql(f"SELECT count(*) AS n FROM read_parquet({urls})").pl()["n"][0]
    ours = db.sql(f"SELECT count(*) AS n FROM {name}", live=False)
    assert ours["n"][0] == count == rows
    expected = duck.sql(
        f'SELECT "Index", avg("Close") AS avg_close, min("Date") AS first, count(*) AS n '
        f"FROM read_parquet({urls}) GROUP BY 1 ORDER BY 1"
    ).pl()
    got = db.sql(
        f'SELECT "Index", avg("Close") AS avg_close, min("Date") AS first, count(*) AS n '
        f"FROM {name} GROUP BY 1 ORDER BY 1"
    )
    assert got["Index"].to_list() == expected["Index"].to_list()
    assert got["n"].to_list() == expected["n"].to_list()
    assert got["first"].to_list() == expected["first"].to_list()
    for a, b in zip(got["avg_close"], expected["avg_close"]):
        assert a == pytest.approx(b, rel=1e-12)
    # Every row once.
    dupes = db.sql(f'SELECT "Index", "Date", count(*) AS n FROM {name} GROUP BY 1, 2 HAVING n > 1')
    assert dupes.height == 0


def intraday(kafka, topic, seconds, symbols=4, start="2021-03-01 09:30:00"):
    source = ss.TickSource.synthetic(symbols, start=start, interval=1.0)
    report = ss.Producer(kafka.bootstrap_servers, topic).send(source, limit=symbols * seconds)
    assert report.delivered == symbols * seconds and report.dropped_by_broker == 0
    return report.delivered


def folder_keys(lake, table):
    """The `key=` names of every data object's folders, as a set of tuples."""
    keys = set()
    for p in (lake / table).rglob("*.parquet"):
        if p.name.startswith("."):
            continue
        parts = p.relative_to(lake / table).parent.parts
        keys.add(tuple(part.split("=", 1)[0] for part in parts if "=" in part))
    return keys


def test_an_intraday_stream_gets_date_folders_and_keeps_them_across_restarts_and_members(
    kafka, topic, tmp_path
):
    lake = tmp_path / "lake"
    gid = group_id()
    # Four symbols ticking every second for three hours of event time.
    sent = intraday(kafka, topic, 3 * 3600)
    ss.LakeSink(kafka.bootstrap_servers, topic, gid, str(lake), **GROUP).run(stop_at_end=True)
    table = ss.Lake(str(lake)).tables().to_dicts()[0]
    assert table["partition_keys"] == "date date", table
    assert table["partitioning"].startswith("auto: date"), table
    assert folder_keys(lake, topic) == {("date",)}

    # Asking for other folders on an existing table is refused, naming the recorded ones.
    with pytest.raises(ss.ConfigError, match=r"partitioned by \["):
        ss.LakeSink(kafka.bootstrap_servers, topic, gid, str(lake), partition_by="date,hour")

    # Two members of a new group on a new table decide once between them.
    other = f"{topic}-copy"
    gid2 = group_id()
    members = [
        ss.LakeSink(kafka.bootstrap_servers, topic, gid2, str(lake), table=other, **GROUP)
        for _ in range(2)
    ]
    for m in members:
        m.start(stop_at_end=True)
    for m in members:
        assert m.wait(timeout=120)
        m.stop()
    copied = sent
    # A restart (auto) follows the recorded scheme, even for data that alone would suggest
    # another (a few ticks three months later).
    sent += intraday(kafka, topic, 30, symbols=1, start="2021-06-01 00:00:00")
    ss.LakeSink(kafka.bootstrap_servers, topic, gid, str(lake), **GROUP).run(stop_at_end=True)
    assert folder_keys(lake, topic) == {("date",)}
    assert folder_keys(lake, other) == {("date",)}
    db = ss.Lake(str(lake))
    for name, expected in ((topic, sent), (other, copied)):
        n = db.sql(f"SELECT count(*) AS n FROM {name.replace('-', '_')}", live=False)["n"][0]
        assert n == expected, name


def test_partition_by_accepts_auto_with_symbol_and_refuses_nonsense(kafka, topic, tmp_path):
    sent = intraday(kafka, topic, 600, symbols=3)
    lake = tmp_path / "lake"
    ss.LakeSink(
        kafka.bootstrap_servers, topic, group_id(), str(lake), partition_by=["symbol", "auto"]
    ).run(stop_at_end=True)
    assert folder_keys(lake, topic) == {("symbol", "date")}
    db = ss.Lake(str(lake))
    table = db.tables().to_dicts()[0]
    # Symbols are strings whatever they look like.
    assert table["partition_keys"] == "symbol string, date date", table
    n = db.sql(f"SELECT count(*) AS n FROM {topic.replace('-', '_')}", live=False)["n"][0]
    assert n == sent
    for bad in (["auto", "date"], ["auto", "auto"]):
        with pytest.raises(ss.ConfigError, match="auto"):
            ss.LakeSink(kafka.bootstrap_servers, topic, group_id(), str(lake), partition_by=bad)
