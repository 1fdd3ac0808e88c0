"""Iceberg tables: what a sink lands, pyiceberg and Polars read back as the topic held it."""

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone

import polars as pl
import pytest
from confluent_kafka import Producer
from pyiceberg.catalog.sql import SqlCatalog

import stockstream as ss
from conftest import end_offsets, lake_sink
from lake_check import assert_exactly_once

TICKS = ["Index", "Date", "Open", "High", "Low", "Close", "Adj Close", "Volume", "CloseUSD"]
GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


def load_table(lake, table, database="stock_market"):
    """The table as pyiceberg opens it from the lake's catalog (a topic's table is named as
    its Hive table would be: ``ticks-1`` is ``ticks_1``)."""
    catalog = SqlCatalog(
        "stockstream", uri=f"sqlite:///{lake}/catalog.db", warehouse=f"file://{lake}"
    )
    return catalog.load_table(f"{database}.{table.replace('-', '_')}")


def bundled_ticks():
    """The bundled CSV as the table should hold it: dates as dates."""
    ticks = ss.read_ticks(ss.BUNDLED_CSV).select(TICKS)
    return ticks.with_columns(pl.col("Date").str.to_date()).sort("Index", "Date")


def test_a_sink_lands_an_iceberg_table_pyiceberg_and_polars_read_exactly_once(
    kafka, topic, tmp_path
):
    report = ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV)
    lake = tmp_path / "lake"
    sink = lake_sink(kafka, topic, lake, table_format="iceberg", kafka_metadata=True, **GROUP)
    status = sink.run(stop_at_end=True, duration=120)
    assert status.written == report.delivered and status.rejected == 0

    table = load_table(lake, topic)
    rows = pl.from_arrow(table.scan().to_arrow())
    assert rows.height == report.delivered
    ends = {p: hi for p, (_, hi) in end_offsets(kafka.bootstrap_servers, topic).items()}
    assert_exactly_once(rows, ends)
    assert rows.select(TICKS).sort("Index", "Date").equals(bundled_ticks())
    # The snapshot says where each Kafka partition resumes.
    summary = table.current_snapshot().summary
    assert int(summary["total-records"]) == report.delivered
    assert '"next"' in summary["stockstream.landed"]
    # Polars reads the same table by field id.
    scanned = pl.scan_iceberg(table).select(pl.len(), pl.col("Close").sum()).collect()
    assert scanned.row(0) == (rows.height, pytest.approx(rows["Close"].sum()))

    # A new group lands nothing twice: it resumes where the table ends.
    again = lake_sink(kafka, topic, lake, table_format="iceberg", kafka_metadata=True, **GROUP)
    status = again.run(stop_at_end=True, duration=120)
    landed = {p: end for p, end in ends.items() if end > 0}
    assert status.written == 0 and status.resumed == landed
    assert load_table(lake, topic).scan().to_arrow().num_rows == report.delivered


@pytest.mark.parametrize(
    "options, message",
    [
        ({"table_format": "delta"}, 'table_format "delta" is not supported'),
        ({"table_format": "iceberg", "format": "ndjson"}, "Iceberg table holds Parquet"),
        ({"table_format": "iceberg", "catalog": None}, "an Iceberg table needs a catalog"),
        ({"catalog_uri": "/tmp/c.db"}, "catalog_uri names an Iceberg catalog"),
    ],
)
def test_an_iceberg_sink_it_cannot_build_is_refused_saying_why(
    kafka, topic, tmp_path, options, message
):
    with pytest.raises(ss.ConfigError, match=message):
        lake_sink(kafka, topic, tmp_path / "lake", **options)


def land(kafka, topic, lake, **options):
    """Lands all of ``topic`` into ``lake`` with a new group; the sink's status."""
    sink = lake_sink(kafka, topic, lake, **GROUP, **options)
    return sink.run(stop_at_end=True, duration=120)


def test_lake_sql_reads_an_iceberg_table_beside_a_hive_one_and_joins_across(kafka, topic, tmp_path):
    report = ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV)
    lake = tmp_path / "lake"
    land(kafka, topic, lake, table="ice", table_format="iceberg")
    land(kafka, topic, lake, table="hive", catalog="local")
    db = ss.Lake(str(lake))
    # A crawl finds the Hive table's folder, and leaves the Iceberg one to its snapshots.
    db.crawl()
    tables = db.tables().select("table", "table_format").sort("table")
    assert tables.rows() == [("hive", "hive"), ("ice", "iceberg")]
    with pytest.raises(ss.StockstreamError, match="ice is an Iceberg table"):
        db.crawl("ice")

    count = db.sql("SELECT count(*) AS n, sum(Close) AS s FROM ice")
    expected = pl.from_arrow(load_table(lake, "ice").scan().to_arrow())
    assert count["n"][0] == expected.height == report.delivered
    assert count["s"][0] == pytest.approx(expected["Close"].sum())
    joined = db.sql(
        'SELECT count(*) AS n FROM ice i JOIN hive h ON i."Index" = h."Index" '
        'AND i."Date" = h."Date"'
    )
    assert joined["n"][0] == report.delivered
    # A filter on a column is answered from the files whose bounds allow it.
    day = db.sql('SELECT "Index", Close FROM ice WHERE "Date" = \'2021-05-31\'')
    reference = expected.filter(pl.col("Date") == pl.date(2021, 5, 31))
    assert sorted(day["Close"]) == sorted(reference["Close"])
    files = db.files("ice")
    assert files.height == len(load_table(lake, "ice").inspect.files())


def test_compaction_replaces_small_files_and_time_travel_reads_before_it(kafka, topic, tmp_path):
    report = ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV)
    lake = tmp_path / "lake"
    land(kafka, topic, lake, table_format="iceberg", roll=ss.RollPolicy(records=500))
    db = ss.Lake(str(lake))
    before = load_table(lake, topic)
    landed_snapshot = before.current_snapshot().snapshot_id
    small = len(before.inspect.files())
    assert small > 2

    compacted = db.compact(progress=False)
    assert compacted.objects_merged == small and compacted.objects_written >= 1
    table = load_table(lake, topic)
    snapshot = table.current_snapshot()
    assert snapshot.summary.operation.value == "replace"
    assert (
        snapshot.summary["stockstream.landed"]
        == before.current_snapshot().summary["stockstream.landed"]
    )
    assert len(table.inspect.files()) < small
    after = pl.from_arrow(table.scan().to_arrow()).select(TICKS).sort("Index", "Date")
    assert after.equals(bundled_ticks())

    # Time travel: the snapshot before compaction, by id and by moment.
    n = f"SELECT count(*) AS n FROM {topic.replace('-', '_')}"
    assert db.sql(n, as_of=landed_snapshot)["n"][0] == report.delivered
    first = table.snapshots()[0]
    moment = datetime.fromtimestamp(first.timestamp_ms / 1000, tz=timezone.utc)
    assert db.sql(n, as_of=moment)["n"][0] == int(first.summary["total-records"])
    assert db.sql(n, as_of=datetime(2000, 1, 1))["n"][0] == 0
    with pytest.raises(ss.QueryError, match="a query as_of the past"):
        db.sql(n, as_of=landed_snapshot, live=True)

    # After the grace period old snapshots expire and their files go; the rows stay.
    old_files = [t.file.file_path.removeprefix("file://") for t in before.scan().plan_files()]
    expired = db.compact(grace=0, progress=False)
    assert expired.snapshots_expired >= 2 and expired.objects_deleted >= small
    assert not any(os.path.exists(path) for path in old_files)
    assert len(load_table(lake, topic).snapshots()) == 1
    assert db.sql(n)["n"][0] == report.delivered
    with pytest.raises(ss.NotFoundError, match="has no snapshot"):
        db.sql(n, as_of=landed_snapshot)


def test_a_live_query_of_an_iceberg_table_adds_what_is_not_landed_once(kafka, topic, tmp_path):
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    first = producer.send_csv(ss.BUNDLED_CSV)
    lake = tmp_path / "lake"
    land(kafka, topic, lake, table_format="iceberg")
    more = producer.send_csv(ss.BUNDLED_CSV)
    db = ss.Lake(str(lake))
    n = f"SELECT count(*) AS n FROM {topic.replace('-', '_')}"
    assert db.sql(n, live=False)["n"][0] == first.delivered
    assert db.sql(n, live=True)["n"][0] == first.delivered + more.delivered
    (tail,) = db.last_query
    assert tail.live and tail.records == more.delivered


def test_time_travel_is_refused_for_hive_tables_and_bad_moments(kafka, topic, tmp_path):
    ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV)
    lake = tmp_path / "lake"
    land(kafka, topic, lake, catalog="local")
    db = ss.Lake(str(lake))
    with pytest.raises(ss.QueryError, match="is a Hive table"):
        db.sql(f"SELECT count(*) FROM {topic.replace('-', '_')}", as_of=datetime(2026, 1, 1))
    with pytest.raises(ss.ConfigError, match="as_of must be a snapshot id"):
        db.sql(f"SELECT count(*) FROM {topic.replace('-', '_')}", as_of="yesterday")


def produce(bootstrap, topic, records):
    """Sends ``records`` as JSON values to partition 0, with an independent client."""
    p = Producer({"bootstrap.servers": bootstrap})
    for record in records:
        p.produce(topic, value=json.dumps(record).encode(), partition=0)
    assert p.flush(10) == 0


def test_a_new_field_adds_a_column_and_a_value_of_another_type_is_quarantined(
    kafka, topic, tmp_path
):
    tick = {"Index": "NYA", "Date": "2021-01-04", "Close": 2.5, "Trades": 100}
    produce(kafka.bootstrap_servers, topic, [tick, {**tick, "Date": "2021-01-05"}])
    lake = tmp_path / "lake"
    assert land(kafka, topic, lake, table_format="iceberg", kafka_metadata=True).written == 2
    schema = load_table(lake, topic).schema()
    assert str(schema.find_field("Trades").field_type) == "long"
    assert str(schema.find_field("Close").field_type) == "double"

    later = [
        {**tick, "Date": "2021-01-06", "Close": 3, "note": "integer price"},  # 3 fits a double
        {**tick, "Date": "2021-01-07", "Close": "n/a"},
        {**tick, "Date": "2021-01-08", "Trades": 1.5},
        {**tick, "Date": "2021-01-11", "Trades": 7},
    ]
    produce(kafka.bootstrap_servers, topic, later)
    status = land(kafka, topic, lake, table_format="iceberg", kafka_metadata=True)
    assert (status.written, status.rejected) == (2, 2)

    table = load_table(lake, topic)
    assert str(table.schema().find_field("note").field_type) == "string"
    rows = pl.from_arrow(table.scan().to_arrow()).sort("_kafka_offset")
    assert rows["_kafka_offset"].to_list() == [0, 1, 2, 5]
    assert rows["Close"].to_list() == [2.5, 2.5, 3.0, 2.5]
    assert rows["Trades"].to_list() == [100, 100, 100, 7]
    assert rows["note"].to_list() == [None, None, "integer price", None]
    rejected = {
        r["offset"]: r["error"]
        for f in (lake / "_rejected").rglob("*.json")
        for r in map(json.loads, f.read_text().splitlines())
    }
    assert sorted(rejected) == [3, 4]
    assert '"Close": expected a number, got a string' in rejected[3]
    assert '"Trades": expected an integer' in rejected[4]


def s3_properties(s3):
    """pyiceberg's FileIO properties for the S3 test server."""
    return {
        "s3.endpoint": s3.endpoint_url,
        "s3.region": "us-east-1",
        "s3.access-key-id": "testing",
        "s3.secret-access-key": "testing",
    }


def data_files(catalog, database):
    """The data files of each table of `database`'s current snapshot, as pyiceberg plans them."""
    for _, name in catalog.list_tables(database):
        yield from (t.file for t in catalog.load_table(f"{database}.{name}").scan().plan_files())


def test_an_iceberg_table_in_glue_has_what_athena_reads_and_pyiceberg_opens_it(
    kafka, topic, s3, bucket
):
    report = ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV)
    lake = f"s3://{bucket}/lake"
    aws = ss.AwsOptions(endpoint_url=s3.endpoint_url)
    database = f"db_{uuid.uuid4().hex[:8]}"
    table = topic.replace("-", "_")
    options = {"table_format": "iceberg", "catalog": "glue", "database": database, "aws": aws}
    assert land(kafka, topic, lake, **options).written == report.delivered

    glue = s3.client("glue").get_table(DatabaseName=database, Name=table)["Table"]
    parameters = glue["Parameters"]
    assert glue["TableType"] == "EXTERNAL_TABLE" and parameters["table_type"] == "ICEBERG"
    assert parameters["metadata_location"].startswith(f"{lake}/{topic}/metadata/")
    assert parameters["previous_metadata_location"].startswith(f"{lake}/{topic}/metadata/")
    assert glue["StorageDescriptor"]["Location"] == f"{lake}/{topic}"
    columns = {c["Name"]: c["Type"] for c in glue["StorageDescriptor"]["Columns"]}
    assert columns["Close"] == "double" and columns["Date"] == "date"

    from pyiceberg.catalog.glue import GlueCatalog

    catalog = GlueCatalog(
        "glue",
        **{"glue.endpoint": s3.endpoint_url, "glue.region": "us-east-1"},
        **s3_properties(s3),
    )
    rows = pl.from_arrow(catalog.load_table(f"{database}.{table}").scan().to_arrow())
    assert rows.select(TICKS).sort("Index", "Date").equals(bundled_ticks())

    db = ss.Lake(lake, catalog="glue", database=database, aws=aws)
    assert db.tables().select("table", "table_format").rows() == [(table, "iceberg")]
    assert db.sql(f"SELECT count(*) AS n FROM {table}", live=False)["n"][0] == report.delivered
    # A filter on a column opens only the files whose bounds (in the manifests) allow it:
    # each file holds the symbols of one Kafka partition.
    files = {f.file_path.removeprefix(f"s3://{bucket}/") for f in data_files(catalog, database)}
    s3.requests.clear()
    nya = db.sql(f"SELECT count(*) AS n FROM {table} WHERE \"Index\" = 'NYA'", live=False)
    assert nya["n"][0] == rows.filter(pl.col("Index") == "NYA").height
    read = s3.objects_read(bucket)
    assert read and read < files, (read, files)
    # A second run lands nothing twice: the table in Glue says where it ends.
    assert land(kafka, topic, lake, **options).written == 0


def test_an_s3_lake_can_keep_its_iceberg_catalog_in_a_local_sqlite_file(
    kafka, topic, s3, bucket, tmp_path
):
    report = ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV)
    lake = f"s3://{bucket}/lake"
    aws = ss.AwsOptions(endpoint_url=s3.endpoint_url)
    with pytest.raises(ss.ConfigError, match='need a catalog: catalog="glue", or catalog_uri'):
        lake_sink(kafka, topic, lake, table_format="iceberg", aws=aws)
    uri = str(tmp_path / "catalog.db")
    land(kafka, topic, lake, table_format="iceberg", catalog_uri=uri, aws=aws)
    catalog = SqlCatalog("stockstream", uri=f"sqlite:///{uri}", **s3_properties(s3))
    rows = catalog.load_table(f"stock_market.{topic.replace('-', '_')}").scan().to_arrow()
    assert rows.num_rows == report.delivered
    db = ss.Lake(lake, catalog_uri=uri, aws=aws)
    n = db.sql(f"SELECT count(*) AS n FROM {topic.replace('-', '_')}", live=False)["n"][0]
    assert n == report.delivered


def test_a_rest_catalog_holds_the_table_two_members_commit_through_it_and_pyiceberg_reads_it(
    kafka, topic, tmp_path, rest_catalog
):
    report = ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV)
    lake = tmp_path / "lake"
    rest = {"table_format": "iceberg", "catalog": "rest", "catalog_uri": rest_catalog.uri}
    group = f"g-{uuid.uuid4().hex[:8]}"
    small = ss.RollPolicy(records=200)
    members = [
        ss.LakeSink(
            kafka.bootstrap_servers, topic, group, str(lake), roll=small, kafka_metadata=True,
            **rest, **GROUP,
        )
        for _ in range(2)
    ]  # fmt: skip
    for member in members:
        member.start(stop_at_end=True)
    for member in members:
        assert member.wait(timeout=120)
    assert sum(m.stop().written for m in members) == report.delivered

    from pyiceberg.catalog.rest import RestCatalog

    table = RestCatalog("rest", uri=rest_catalog.uri).load_table(
        f"stock_market.{topic.replace('-', '_')}"
    )
    rows = pl.from_arrow(table.scan().to_arrow())
    ends = {p: hi for p, (_, hi) in end_offsets(kafka.bootstrap_servers, topic).items()}
    assert_exactly_once(rows, ends)
    assert rows.select(TICKS).sort("Index", "Date").equals(bundled_ticks())

    db = ss.Lake(str(lake), catalog="rest", catalog_uri=rest_catalog.uri)
    n = f"SELECT count(*) AS n FROM {topic.replace('-', '_')}"
    assert db.sql(n, live=False)["n"][0] == report.delivered
    assert db.compact(progress=False).objects_merged > 2
    table.refresh()
    assert table.current_snapshot().summary.operation.value == "replace"
    assert pl.from_arrow(table.scan().to_arrow()).height == report.delivered
    # A new group resumes where the table ends.
    assert land(kafka, topic, lake, **rest).written == 0


def land_while(kafka, topic, lake, during, **options):
    """Sends 12,000 one-second ticks at 2,000/s while a sink lands them in small files and
    `during()` is called every 0.3 s; the table, once the sink has landed everything."""
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    source = ss.TickSource.synthetic(8, start="2021-03-01 09:30:00", interval=1.0)
    sending = threading.Thread(target=lambda: producer.send(source, rate=2000, limit=12_000))
    sending.start()
    sink = lake_sink(
        kafka, topic, lake, table_format="iceberg", kafka_metadata=True,
        roll=ss.RollPolicy(records=300), **GROUP, **options,
    )  # fmt: skip
    # Not stop_at_end: a sink faster than the producer would reach the end before the
    # last ticks are sent.
    sink.start()
    deadline = time.monotonic() + 120
    while sending.is_alive() or sink.status().written < 12_000:
        assert time.monotonic() < deadline and sink.running, sink.status()
        during()
        time.sleep(0.3)
    sending.join()
    status = sink.stop()
    assert status.written == 12_000 and status.errors == 0, status
    table = load_table(lake, topic)
    ends = {p: hi for p, (_, hi) in end_offsets(kafka.bootstrap_servers, topic).items()}
    assert_exactly_once(pl.from_arrow(table.scan().to_arrow()), ends)
    return table


def replaced(table):
    return [s for s in table.snapshots() if s.summary.operation.value == "replace"]


def test_a_sink_that_compacts_as_it_lands_keeps_every_record_once(kafka, topic, tmp_path):
    table = land_while(kafka, topic, tmp_path / "lake", lambda: None, compact_every=1.0)
    assert replaced(table)


def test_compaction_racing_a_sink_keeps_every_record_once_and_the_cli_expires(
    kafka, topic, tmp_path
):
    lake = tmp_path / "lake"
    merged = []

    def compact():
        try:
            merged.append(ss.Lake(str(lake)).compact(grace=600, progress=False).objects_merged)
        except (ss.NotFoundError, ss.ConfigError):
            pass  # no table yet

    table = land_while(kafka, topic, lake, compact)
    assert sum(merged) > 0 and replaced(table)

    # The command line compacts Iceberg tables too.
    out = subprocess.run(
        [sys.executable, "-m", "stockstream", "compact", str(lake), "--grace", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Iceberg snapshots expired" in out.stdout
    assert len(load_table(lake, topic).snapshots()) == 1
