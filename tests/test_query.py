"""SQL over the lake: results checked against DuckDB reading the same files, partition pruning
checked by counting the objects an S3 server was asked for, and the catalog kept fresh by the
sink while it writes."""

import time
import uuid

import duckdb
import polars as pl
import pytest

import stockstream as ss

GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
DAY = "2021-03-01"


def land_bundled(kafka, lake: str, **sink_options) -> int:
    """The bundled data through Kafka and the sink into `lake` as `date=` folders (a crawl
    makes the table unless `catalog=` is given); returns the record count."""
    sink_options = {"partition_by": "date", "catalog": None, **sink_options}
    topic = f"q-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, 4)
    report = ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV, mode="replay")
    sink = ss.LakeSink(
        kafka.bootstrap_servers,
        topic,
        f"g-{topic}",
        lake,
        table="stock-market",
        **GROUP,
        **sink_options,
    )
    status = sink.run(stop_at_end=True, duration=120)
    assert status.written == report.delivered > 0
    return status.written


@pytest.fixture(scope="module")
def local_lake(kafka, tmp_path_factory):
    lake = tmp_path_factory.mktemp("query") / "lake"
    n = land_bundled(kafka, str(lake))
    report = ss.crawl(str(lake))
    assert report.tables_created == ["stock_market"]
    return lake, n


def duck(lake) -> duckdb.DuckDBPyConnection:
    """DuckDB over the same Parquet files (DuckDB compares names without case, so the `date`
    folders are left out and the `Date` column used)."""
    con = duckdb.connect()
    files = str(lake / "stock-market" / "*" / "*.parquet")
    con.execute(
        "CREATE VIEW stock_market AS SELECT * FROM "
        f"read_parquet('{files}', hive_partitioning=false)"
    )
    return con


def duck_frame(con, query: str) -> pl.DataFrame:
    return con.sql(query).pl()


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("SELECT count(*) AS n FROM stock_market", None),
        (
            'SELECT "Index", avg("Close") AS avg_close, min("Low") AS low, max("High") AS high, '
            'count(*) AS n FROM stock_market GROUP BY "Index" ORDER BY "Index"',
            None,
        ),
        (
            'SELECT count(*) AS n, sum("Volume") AS volume FROM stock_market '
            "WHERE \"Date\" >= '2021-06-01' AND \"Date\" < '2021-07-01'",
            'SELECT count(*) AS n, sum("Volume") AS volume FROM stock_market '
            "WHERE \"Date\" >= DATE '2021-06-01' AND \"Date\" < DATE '2021-07-01'",
        ),
        (
            f'SELECT "Index", "Close" FROM stock_market WHERE date = \'{DAY}\' ORDER BY "Index"',
            f'SELECT "Index", "Close" FROM stock_market WHERE "Date" = DATE \'{DAY}\' '
            'ORDER BY "Index"',
        ),
    ],
    ids=["count", "per-symbol", "time-filter", "partition-filter"],
)
def test_sql_results_match_duckdb_on_the_same_files(local_lake, ours, theirs):
    lake, n = local_lake
    got = ss.Lake(str(lake)).sql(ours)
    want = duck_frame(duck(lake), theirs or ours)
    assert got.height == want.height > 0
    for column in want.columns:
        a, b = got[column], want[column]
        if a.dtype.is_numeric():
            assert (a.cast(pl.Float64) - b.cast(pl.Float64)).abs().max() <= 1e-6 * max(
                1.0, b.cast(pl.Float64).abs().max()
            ), column
        else:
            assert a.to_list() == b.to_list(), column
    if "count" in ours and "GROUP" not in ours and "WHERE" not in ours:
        assert got["n"][0] == n


def test_the_tutorials_athena_queries(local_lake):
    lake, n = local_lake
    db = ss.Lake(str(lake))
    first = db.sql("SELECT * FROM stock_market LIMIT 10")
    assert first.height == 10
    assert {"Index", "Date", "Close", "Adj Close", "CloseUSD", "date"} <= set(first.columns)
    assert first.schema["Date"] == pl.Date and first.schema["date"] == pl.Date
    assert db.sql("SELECT count(*) AS n FROM stock_market")["n"][0] == n


def test_tables_lists_the_catalog(local_lake):
    lake, _ = local_lake
    tables = ss.Lake(str(lake)).tables()
    row = tables.row(0, named=True)
    assert tables.height == 1 and row["table"] == "stock_market"
    assert row["partition_keys"] == "date date"
    assert "Close double" in row["columns"]
    assert row["partitions"] == len(
        {p.parent.name for p in (lake / "stock-market").rglob("*.parquet")}
    )


def test_a_date_filter_reads_only_that_partitions_objects(kafka, s3, bucket):
    """Counted by the S3 server: the objects it was asked for while the query ran."""
    lake = f"s3://{bucket}/lake"
    aws = {"aws": ss.AwsOptions(endpoint_url=s3.endpoint_url)}
    land_bundled(kafka, lake, **aws)
    ss.crawl(lake, **aws)
    keys = [
        o["Key"]
        for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
        if o["Key"].endswith(".parquet")
    ]
    in_day = {k for k in keys if f"/date={DAY}/" in k}
    assert in_day and len(keys) > 10 * len(in_day)

    db = ss.Lake(lake, **aws)
    s3.requests.clear()
    day = db.sql(f'SELECT "Index", "Close" FROM stock_market WHERE date = \'{DAY}\'')
    assert s3.objects_read(bucket) == in_day
    assert day.height > 0

    # The same server sees every object read when there is no partition filter.
    s3.requests.clear()
    everything = db.sql('SELECT count(*) AS n FROM stock_market WHERE "Close" > 0')
    assert s3.objects_read(bucket) == set(keys)
    assert everything["n"][0] > day.height


def test_the_count_grows_while_the_sink_writes_without_a_crawl(kafka, tmp_path):
    """The tutorial's "real-time" Athena demo: the sink registers partitions as it lands them."""
    topic = f"rt-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, 4)
    lake = str(tmp_path / "lake")
    ticks = ss.read_ticks(ss.BUNDLED_CSV)
    sink = ss.LakeSink(
        kafka.bootstrap_servers,
        topic,
        "rt",
        lake,
        table="stock-market",
        catalog="local",
        roll=ss.RollPolicy(idle=0.3),
        **GROUP,
    )
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    counts = []
    with sink:
        sink.start()
        for i, batch in enumerate(
            (ticks.slice(0, 1000), ticks.slice(1000, 1500), ticks.slice(2500))
        ):
            batch.write_csv(tmp_path / f"{i}.csv")
            producer.send_csv(tmp_path / f"{i}.csv", mode="replay")
            expected = sum(counts[-1:]) + batch.height if counts else batch.height
            deadline = time.monotonic() + 30
            while sink.status().written < expected and time.monotonic() < deadline:
                time.sleep(0.1)
            counts.append(ss.Lake(lake).sql("SELECT count(*) AS n FROM stock_market")["n"][0])
    assert counts == [1000, 2500, ticks.height]
    # The sink registered every object it wrote: a crawl finds nothing new to read.
    report = ss.crawl(lake)
    assert report.objects_read == 0 and report.objects_unchanged > 0 and not report.changed


def test_two_sinks_and_a_crawl_at_once_register_every_record(kafka, tmp_path):
    """Concurrent writers of the local catalog: two members of a sink group registering their
    landings and a crawler recording what it read, all at the same time."""
    topic = f"conc-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, 4)
    lake = str(tmp_path / "lake")
    options = dict(
        table="stock-market",
        catalog="local",
        partition_by="symbol",
        roll=ss.RollPolicy(records=50, idle=0.2),
        **GROUP,
    )
    sinks = [ss.LakeSink(kafka.bootstrap_servers, topic, "conc", lake, **options) for _ in "ab"]
    n = 6000
    crawls = 0
    for sink in sinks:
        sink.start()
    try:
        deadline = time.monotonic() + 90
        while not all(s.status().assigned for s in sinks):
            assert time.monotonic() < deadline, [s.status() for s in sinks]
            time.sleep(0.05)
        ss.Producer(kafka.bootstrap_servers, topic).send(ss.TickSource.synthetic(40), limit=n)
        while sum(s.status().written for s in sinks) < n:
            assert time.monotonic() < deadline, [s.status() for s in sinks]
            if (tmp_path / "lake").exists():
                ss.crawl(lake)
                crawls += 1
            time.sleep(0.05)
    finally:
        for sink in sinks:
            sink.stop()
    assert crawls > 0 and all(s.status().written > 0 for s in sinks)
    assert ss.Lake(lake).sql("SELECT count(*) AS n FROM stock_market")["n"][0] == n


def test_sql_errors_name_what_is_wrong(local_lake):
    lake, _ = local_lake
    db = ss.Lake(str(lake))
    with pytest.raises(ss.QueryError, match="(?i)syntax|sql"):
        db.sql("SELEC count(*) FROM stock_market")
    with pytest.raises(ss.QueryError, match="no_such_column"):
        db.sql("SELECT no_such_column FROM stock_market")
    with pytest.raises(ss.QueryError, match="no_such_table.*stock_market") as e:
        db.sql("SELECT * FROM no_such_table")
    assert "crawl" in str(e.value)
    with pytest.raises(ss.ConfigError, match="engine"):
        db.sql("SELECT 1", engine="spark")


def test_sql_reads_only_the_lake_not_files_by_path(local_lake, tmp_path):
    lake, _ = local_lake
    outside = tmp_path / "outside.csv"
    outside.write_text("secret\n42\n")
    db = ss.Lake(str(lake))
    for query in (
        f"SELECT * FROM read_csv('{outside}')",
        f"SELECT * FROM stock_market JOIN read_csv('{outside}') o ON true",
        f"WITH o AS (SELECT * FROM read_csv('{outside}')) SELECT * FROM o",
    ):
        with pytest.raises(ss.QueryError, match="reads outside the lake"):
            db.sql(query)
    # A quoted name that climbs out of the catalog folder is no table either.
    with pytest.raises(ss.QueryError, match="no table"):
        db.sql('SELECT * FROM "../../stock_market"')
    # A string that merely mentions a table function is data, not a read.
    assert db.sql(f"SELECT 'read_csv({outside})' AS t FROM stock_market LIMIT 1").height == 1


def test_a_missing_local_lake_is_not_created(tmp_path):
    with pytest.raises(ss.NotFoundError, match="does not exist"):
        ss.Lake(str(tmp_path / "nowhere"))
    assert not (tmp_path / "nowhere").exists()


def test_cli_crawl_and_query(local_lake, capsys):
    from stockstream.cli import main

    lake, n = local_lake
    assert main(["crawl", str(lake)]) == 0
    out = capsys.readouterr().out
    assert "0 objects read" in out
    assert main(["query", "SELECT count(*) AS n FROM stock_market", "--lake", str(lake)]) == 0
    assert str(n) in capsys.readouterr().out
    assert main(["query", "SELECT nope FROM stock_market", "--lake", str(lake)]) == 1
    assert "QueryError" in capsys.readouterr().err
