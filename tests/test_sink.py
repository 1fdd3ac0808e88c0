"""The lake sink against real brokers (embedded, Apache Kafka) and a real S3 server (moto)."""

import _thread
import json
import threading
import time
import uuid

import polars as pl
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer as CkProducer

import stockstream as ss
from conftest import kafka_broker
from lake_check import (
    TICK_COLUMNS,
    assert_exactly_once,
    local_files,
    read_local_parquet,
    read_ndjson_lines,
    read_s3_parquet,
)

# Fast group rejoin on both brokers.
GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500, "max_poll_interval_ms": 10000}


def group_id():
    return f"sink-{uuid.uuid4().hex[:8]}"


def produce_bundled(bootstrap, topic, **config):
    report = ss.Producer(bootstrap, topic, **config).send_csv(ss.BUNDLED_CSV, mode="replay")
    assert report.delivered == report.sent > 0
    return report.delivered


def end_offsets_of(broker_bootstrap, topic):
    from conftest import end_offsets

    return {p: hi for p, (_, hi) in end_offsets(broker_bootstrap, topic).items()}


def expected_ticks():
    """The bundled CSV as the lake should hold it: dates as dates."""
    ticks = ss.read_ticks(ss.BUNDLED_CSV).select(TICK_COLUMNS)
    return ticks.with_columns(pl.col("Date").str.to_date()).sort("Index", "Date")


@pytest.fixture
def fresh_topic(broker):
    name = f"sink-{uuid.uuid4().hex[:8]}"
    broker.create_topic(name, 4)
    return name


def test_parquet_round_trip_lands_every_record_once_with_types(broker, fresh_topic, tmp_path):
    n = produce_bundled(broker.bootstrap_servers, fresh_topic)
    lake = tmp_path / "lake"
    sink = ss.LakeSink(
        broker.bootstrap_servers,
        fresh_topic,
        group_id(),
        str(lake),
        kafka_metadata=True,
        partition_by="date",
        **GROUP,
    )
    status = sink.run(stop_at_end=True, duration=120)
    assert status.written == n and status.rejected == 0
    assert status.files == len(local_files(lake, fresh_topic))

    df = read_local_parquet(lake, fresh_topic)
    assert df.height == n
    assert_exactly_once(df, end_offsets_of(broker.bootstrap_servers, fresh_topic))
    # The folder is the record's own event date.
    assert (df["folder_date"] == df["Date"].cast(pl.String)).all()
    # The values are the CSV's values.
    got = df.select(TICK_COLUMNS).sort("Index", "Date")
    assert got.equals(expected_ticks())
    # Object names carry the partition and the first offset of the records inside.
    for name, part in df.group_by("file"):
        first = part["_kafka_offset"].min()
        p = part["_kafka_partition"][0]
        assert name[0] == f"part-{fresh_topic}-{p}-{first:020d}.parquet"
    # Parquet types every engine reads (Athena, Spark and DuckDB go by these, not by the
    # Arrow schema Polars also stores): UTF-8 strings, doubles, dates, microsecond timestamps.
    schema = pq.ParquetFile(local_files(lake, fresh_topic)[0]).schema
    types = {schema.column(i).name: schema.column(i) for i in range(len(schema))}
    assert (types["Index"].physical_type, str(types["Index"].logical_type)) == (
        "BYTE_ARRAY",
        "String",
    )
    assert types["Open"].physical_type == "DOUBLE"
    assert (types["Date"].physical_type, str(types["Date"].logical_type)) == ("INT32", "Date")
    ts = types["_kafka_timestamp"]
    assert ts.physical_type == "INT64" and "microseconds" in str(ts.logical_type)


def test_a_second_run_of_the_same_group_writes_nothing_new(kafka, topic, tmp_path):
    produce_bundled(kafka.bootstrap_servers, topic)
    lake = tmp_path / "lake"
    gid = group_id()
    first = ss.LakeSink(
        kafka.bootstrap_servers, topic, gid, str(lake), partition_by="month", **GROUP
    )
    assert first.run(stop_at_end=True, duration=60).written > 0
    before = {p: p.stat().st_mtime_ns for p in local_files(lake, topic)}
    again = ss.LakeSink(
        kafka.bootstrap_servers, topic, gid, str(lake), partition_by="month", **GROUP
    )
    status = again.run(stop_at_end=True, duration=60)
    assert status.consumed == 0 and status.files == 0
    assert {p: p.stat().st_mtime_ns for p in local_files(lake, topic)} == before


def test_a_bounded_run_returns_the_records_it_landed(kafka, topic, tmp_path):
    n = produce_bundled(kafka.bootstrap_servers, topic)
    sink = ss.LakeSink(
        kafka.bootstrap_servers, topic, group_id(), str(tmp_path / "lake"), kafka_metadata=True
    )
    first = sink.run(limit=1000, collect=True)
    written = sink.status().written
    assert isinstance(first, pl.DataFrame) and first.height == written >= 1000
    rest = sink.run(stop_at_end=True, collect=True)
    assert first.height + rest.height == n
    both = pl.concat([first, rest])
    # Each record once, and the values as the file has them.
    assert both.select("_kafka_partition", "_kafka_offset").is_unique().all()
    assert both.select(TICK_COLUMNS).sort("Index", "Date").equals(expected_ticks())
    # Without collect, a run returns its status; with nothing new, collect gives no rows.
    assert isinstance(sink.run(stop_at_end=True), ss.SinkStatus)
    assert sink.run(stop_at_end=True, collect=True).height == 0


def test_a_finished_run_leaves_its_group_so_the_next_member_is_not_kept_waiting(kafka, tmp_path):
    # No session settings: on the embedded broker the defaults must rejoin quickly. The
    # first sink stays alive, as it would in a notebook after its cell finished.
    gid = group_id()
    first_topic, second_topic = (f"leave-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for t in (first_topic, second_topic):
        kafka.create_topic(t, 2)
        ss.Producer(kafka.bootstrap_servers, t).send(ss.TickSource.synthetic(2), limit=100)
    first = ss.LakeSink(kafka.bootstrap_servers, first_topic, gid, str(tmp_path / "a"))
    assert first.run(stop_at_end=True, duration=60).written == 100
    assert first.status().assigned == []
    second = ss.LakeSink(kafka.bootstrap_servers, second_topic, gid, str(tmp_path / "b"))
    # Kafka's default session timeout is 45 s: a member that had to wait it out would
    # still be waiting when this run's 30 s are over.
    assert second.run(stop_at_end=True, duration=30).written == 100
    # The same sink runs again: it rejoins and finds everything committed (the counts
    # are the sink's totals, so they stay as they were).
    again = second.run(stop_at_end=True, duration=30)
    assert (again.consumed, again.written) == (100, 100)


def test_a_sink_built_but_not_started_holds_no_partitions(kafka, topic, tmp_path):
    # A notebook builds jobs in one cell and starts them in another: one that is not
    # running must not take partitions from the group's running members.
    ss.Producer(kafka.bootstrap_servers, topic).send(ss.TickSource.synthetic(8), limit=400)
    gid = group_id()
    idle = ss.LakeSink(kafka.bootstrap_servers, topic, gid, str(tmp_path / "idle"), **GROUP)
    running = ss.LakeSink(kafka.bootstrap_servers, topic, gid, str(tmp_path / "lake"), **GROUP)
    status = running.run(stop_at_end=True, duration=60)
    assert (status.written, idle.status().assigned) == (400, [])
    assert sorted(status.landed) == [0, 1, 2, 3]


def test_ndjson_files_hold_one_newline_terminated_object_per_record(kafka, topic, tmp_path):
    from conftest import csv_rows

    n = produce_bundled(kafka.bootstrap_servers, topic)
    lake = tmp_path / "lake"
    sink = ss.LakeSink(
        kafka.bootstrap_servers, topic, group_id(), str(lake), format="ndjson", partition_by="month"
    )
    assert sink.run(stop_at_end=True, duration=60).written == n
    rows = read_ndjson_lines(lake, topic)
    key = lambda r: (r["Index"], r["Date"])  # noqa: E731
    assert sorted(rows, key=key) == sorted(csv_rows(ss.BUNDLED_CSV), key=key)
    # A generic reader agrees: Polars reads every file as NDJSON.
    total = sum(pl.read_ndjson(f).height for f in local_files(lake, topic, ".json"))
    assert total == n


def test_parquet_objects_hold_row_groups_sorted_by_symbol_and_time(apache_kafka, tmp_path):
    # One partition, one object of 200,000 ticks of 8 symbols: two row groups, rows sorted
    # by symbol then time, so each group's statistics cover a narrow range of symbols.
    # Apache Kafka keeps every tick (the embedded broker keeps ~5 MiB a partition).
    bootstrap = apache_kafka.bootstrap
    topic = f"sorted-{uuid.uuid4().hex[:6]}"
    kafka_broker(bootstrap).create_topic(topic, 1)
    source = ss.TickSource.synthetic(8, start="2021-03-01 09:30:00", interval=1.0)
    assert ss.Producer(bootstrap, topic).send(source, limit=200_000).delivered == 200_000
    lake = tmp_path / "lake"
    sink = ss.LakeSink(
        bootstrap, topic, group_id(), str(lake), partition_by=[], kafka_metadata=True
    )
    status = sink.run(stop_at_end=True, duration=120)
    assert (status.written, status.files) == (200_000, 1)
    (path,) = (lake / topic).rglob("*.parquet")
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [131_072, 68_928]
    index = meta.schema.to_arrow_schema().get_field_index("Index")
    bounds = [meta.row_group(i).column(index).statistics for i in range(2)]
    assert all(b.has_min_max for b in bounds)
    assert bounds[0].max <= bounds[1].min
    frame = pl.read_parquet(path)
    assert frame.equals(frame.sort("Index", "Date", maintain_order=True))
    # Within a symbol, ties aside, Kafka order is time order: offsets still ascend.
    assert frame.group_by("Index").agg(pl.col("_kafka_offset").is_sorted().alias("s"))["s"].all()
    assert frame["_kafka_offset"].sort().to_list() == list(range(200_000))


def test_partition_by_symbol_and_month(kafka, topic, tmp_path):
    produce_bundled(kafka.bootstrap_servers, topic)
    lake = tmp_path / "lake"
    sink = ss.LakeSink(
        kafka.bootstrap_servers, topic, group_id(), str(lake), partition_by=["symbol", "month"]
    )
    sink.run(stop_at_end=True, duration=60)
    df = read_local_parquet(lake, topic)
    assert (df["folder_symbol"] == df["Index"]).all()
    assert (df["folder_month"] == df["Date"].dt.strftime("%Y-%m")).all()


def test_s3_round_trip(kafka, topic, s3, bucket):
    n = produce_bundled(kafka.bootstrap_servers, topic)
    sink = ss.LakeSink(
        kafka.bootstrap_servers,
        topic,
        group_id(),
        f"s3://{bucket}/raw",
        aws=ss.AwsOptions(endpoint_url=s3.endpoint_url),
        kafka_metadata=True,
        partition_by="year",
    )
    assert sink.run(stop_at_end=True, duration=60).written == n
    df = read_s3_parquet(s3.client(), bucket, f"raw/{topic}/year=")
    assert df.height == n
    assert_exactly_once(df, end_offsets_of(kafka.bootstrap_servers, topic))
    got = df.select(TICK_COLUMNS).sort("Index", "Date")
    assert got.equals(expected_ticks())
    assert all(k.startswith(f"raw/{topic}/year=") for k in df["key"])


def test_large_objects_go_up_as_multipart_uploads(kafka, s3, bucket):
    topic = f"big-{uuid.uuid4().hex[:6]}"
    kafka.create_topic(topic, 1)
    n = 40_000
    ss.Producer(kafka.bootstrap_servers, topic).send(ss.TickSource.synthetic(50, seed=3), limit=n)
    sink = ss.LakeSink(
        kafka.bootstrap_servers,
        topic,
        group_id(),
        f"s3://{bucket}",
        format="ndjson",
        partition_by=[],
        aws=ss.AwsOptions(endpoint_url=s3.endpoint_url, part_size=5 << 20),
    )
    assert sink.run(stop_at_end=True, duration=60).written == n
    client = s3.client()
    [obj] = client.list_objects_v2(Bucket=bucket, Prefix=f"{topic}/")["Contents"]
    assert obj["Size"] > 5 << 20
    # S3 marks an object assembled from N parts with an ETag ending in "-N".
    assert obj["ETag"].strip('"').endswith(f"-{-(-obj['Size'] // (5 << 20))}")
    body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    assert body.count(b"\n") == n and body.endswith(b"\n")
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def _produce_raw(bootstrap, topic, values, partition=0):
    p = CkProducer({"bootstrap.servers": bootstrap})
    for v in values:
        p.produce(topic, value=v, key=b"k", partition=partition)
    assert p.flush(10) == 0


def test_bad_records_are_quarantined_with_their_offsets(kafka, topic, tmp_path):
    good = {"Index": "NYA", "Date": "2021-01-04", "Open": 1.0, "Close": 2.0}
    values = [
        json.dumps(good).encode(),
        b"not json at all",
        json.dumps({"Index": "NYA"}).encode(),
        json.dumps({**good, "Open": "high"}).encode(),
        json.dumps({**good, "Date": "someday"}).encode(),
        b"\xff\xfe binary",
        None,
        json.dumps({**good, "Date": "2021-01-05"}).encode(),
    ]
    _produce_raw(kafka.bootstrap_servers, topic, values)
    lake = tmp_path / "lake"
    sink = ss.LakeSink(kafka.bootstrap_servers, topic, group_id(), str(lake), kafka_metadata=True)
    status = sink.run(stop_at_end=True, duration=60)
    assert (status.written, status.rejected) == (2, 6)
    df = read_local_parquet(lake, topic)
    assert sorted(df["_kafka_offset"].to_list()) == [0, 7]
    rejected = [
        json.loads(line)
        for f in (lake / "_rejected" / topic).glob("*.json")
        for line in f.read_text().splitlines()
    ]
    by_offset = {r["offset"]: r for r in rejected}
    assert sorted(by_offset) == [1, 2, 3, 4, 5, 6]
    assert "not valid JSON" in by_offset[1]["error"]
    assert by_offset[1]["value"] == "not json at all"
    assert 'missing field "Date"' in by_offset[2]["error"]
    assert '"Open": expected a number, got a string' in by_offset[3]["error"]
    assert "cannot parse" in by_offset[4]["error"]
    assert "UTF-8" in by_offset[5]["error"] and by_offset[5]["value"] is None
    assert by_offset[5]["value_base64"] == "//4gYmluYXJ5"
    assert "no value" in by_offset[6]["error"]
    assert all(r["topic"] == topic and r["partition"] == 0 for r in rejected)


def test_a_symbol_too_long_for_a_folder_name_is_quarantined_not_retried(kafka, topic, tmp_path):
    good = {"Index": "NYA", "Date": "2021-01-04", "Close": 2.0}
    values = [
        json.dumps(good).encode(),
        json.dumps({**good, "Index": "X" * 300}).encode(),
        json.dumps({**good, "Date": "2021-01-05"}).encode(),
    ]
    _produce_raw(kafka.bootstrap_servers, topic, values)
    lake = tmp_path / "lake"
    sink = ss.LakeSink(kafka.bootstrap_servers, topic, group_id(), str(lake), partition_by="symbol")
    status = sink.run(stop_at_end=True, duration=60)
    assert (status.written, status.rejected, status.errors) == (2, 1, 0)
    (line,) = [
        json.loads(line)
        for f in (lake / "_rejected" / topic).glob("*.json")
        for line in f.read_text().splitlines()
    ]
    assert line["offset"] == 1 and "at most 255" in line["error"]


def test_a_field_named_like_a_kafka_metadata_column_is_quarantined(kafka, topic, tmp_path):
    good = {"Index": "NYA", "Date": "2021-01-04", "Close": 2.0}
    values = [json.dumps(good).encode(), json.dumps({**good, "_kafka_offset": 99}).encode()]
    _produce_raw(kafka.bootstrap_servers, topic, values)
    lake = tmp_path / "lake"
    sink = ss.LakeSink(kafka.bootstrap_servers, topic, group_id(), str(lake), kafka_metadata=True)
    status = sink.run(stop_at_end=True, duration=60)
    assert (status.written, status.rejected, status.errors) == (1, 1, 0)
    assert read_local_parquet(lake, topic)["_kafka_offset"].to_list() == [0]


def test_records_lost_to_retention_before_landing_are_reported_as_a_gap(kafka, tmp_path):
    from conftest import end_offsets

    topic = f"gap-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, 1)
    lake = tmp_path / "lake"
    gid = group_id()
    ss.Producer(kafka.bootstrap_servers, topic).send(ss.TickSource.synthetic(3), limit=100)
    first = ss.LakeSink(kafka.bootstrap_servers, topic, gid, str(lake))
    assert first.run(stop_at_end=True, duration=60).written == 100
    # The embedded broker keeps ~5 MiB per partition: this pushes the log start past 100.
    more = ss.Producer(kafka.bootstrap_servers, topic, compression_type="none")
    more.send(ss.TickSource.synthetic(3), limit=60_000)
    ((low, high),) = end_offsets(kafka.bootstrap_servers, topic).values()
    assert low > 100
    second = ss.LakeSink(kafka.bootstrap_servers, topic, gid, str(lake))
    status = second.run(stop_at_end=True, duration=120)
    assert status.skipped == low - 100 and status.written == high - low
    (note,) = (lake / "_rejected" / topic).glob("gap-*.json")
    note = json.loads(note.read_text())
    assert (note["from_offset"], note["to_offset"]) == (100, low)
    assert f"offsets 100..{low}" in note["error"] and "retention" in note["error"]


def test_a_new_column_widens_the_schema_instead_of_failing(kafka, topic, tmp_path):
    base = {"Index": "NYA", "Date": "2021-01-04", "Open": 1.0}
    values = [json.dumps(base).encode(), json.dumps({**base, "Venue": "NYSE"}).encode()]
    _produce_raw(kafka.bootstrap_servers, topic, values)
    lake = tmp_path / "lake"
    sink = ss.LakeSink(kafka.bootstrap_servers, topic, group_id(), str(lake))
    assert sink.run(stop_at_end=True, duration=60).written == 2
    [f] = local_files(lake, topic)
    df = pl.read_parquet(f)
    assert df.columns == ["Index", "Date", "Open", "Venue"]
    assert df["Venue"].to_list() == [None, "NYSE"]


def test_an_idle_stream_is_landed_without_stopping_the_sink(kafka, topic, tmp_path):
    lake = tmp_path / "lake"
    sink = ss.LakeSink(
        kafka.bootstrap_servers, topic, group_id(), str(lake), roll=ss.RollPolicy(age=30, idle=1.0)
    )
    sink.start()
    try:
        ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV, limit=10)
        deadline = time.monotonic() + 15
        while sink.status().written < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        status = sink.status()
        # Landed and committed by the idle timer, not by stop() and not by the 30 s age.
        assert status.running and status.written == 10, status
        assert status.errors == 0 and status.last_commit is not None
        assert sum(pl.read_parquet(f).height for f in local_files(lake, topic)) == 10
        while sink.status().lag != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sink.status().lag == 0
    finally:
        sink.stop()


def test_a_run_to_the_end_reports_no_lag_once_everything_is_landed(kafka, topic, tmp_path):
    # Statistics come once a second and may carry committed offsets older than the sink's
    # last commit: a finished run must not report what it landed as still to read.
    ss.Producer(kafka.bootstrap_servers, topic).send(ss.TickSource.synthetic(8), limit=100_000)
    sink = ss.LakeSink(kafka.bootstrap_servers, topic, group_id(), str(tmp_path / "lake"))
    status = sink.run(stop_at_end=True, duration=60)
    assert (status.written, status.lag) == (100_000, 0)


def test_ctrl_c_lands_what_is_buffered_then_raises(kafka, topic, tmp_path, sigint_raises):
    n = produce_bundled(kafka.bootstrap_servers, topic)
    lake = tmp_path / "lake"
    # Nothing would land before the run ends: only the interrupt path can write the files.
    sink = ss.LakeSink(
        kafka.bootstrap_servers, topic, group_id(), str(lake), partition_by="year",
        roll=ss.RollPolicy(age=600, idle=600),
    )  # fmt: skip

    def interrupt_when_all_read():
        deadline = time.monotonic() + 30
        while sink.status().consumed < n and time.monotonic() < deadline:
            time.sleep(0.05)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_when_all_read, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        sink.run()
    status = sink.status()
    assert status.written == n and status.buffered == 0 and status.state == "stopped"
    assert sum(pl.read_parquet(f).height for f in local_files(lake, topic)) == n


def test_two_sinks_in_one_group_split_the_partitions(broker, fresh_topic, tmp_path):
    lake = tmp_path / "lake"
    gid = group_id()
    sinks = [
        ss.LakeSink(
            broker.bootstrap_servers,
            fresh_topic,
            gid,
            str(lake),
            kafka_metadata=True,
            roll=ss.RollPolicy(idle=0.5),
            **GROUP,
        )
        for _ in range(2)
    ]
    for s in sinks:
        s.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(len(s.status().assigned) == 2 for s in sinks):
            time.sleep(0.2)
        assigned = [set(s.status().assigned) for s in sinks]
        assert assigned[0] | assigned[1] == {0, 1, 2, 3} and not assigned[0] & assigned[1]
        n = produce_bundled(broker.bootstrap_servers, fresh_topic)
        while time.monotonic() < deadline and sum(s.status().written for s in sinks) < n:
            time.sleep(0.2)
    finally:
        final = [s.stop() for s in sinks]
    assert all(f.written > 0 for f in final), final
    df = read_local_parquet(lake, fresh_topic)
    assert_exactly_once(df, end_offsets_of(broker.bootstrap_servers, fresh_topic))


def test_a_partition_revoked_mid_stream_is_neither_landed_nor_committed_by_its_old_owner(
    kafka, topic, tmp_path
):
    lake = tmp_path / "lake"
    gid = group_id()
    config = dict(kafka_metadata=True, roll=ss.RollPolicy(records=300, idle=3), **GROUP)
    first = ss.LakeSink(kafka.bootstrap_servers, topic, gid, str(lake), **config)
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    n = 30_000
    feeding = threading.Thread(
        target=lambda: producer.send(ss.TickSource.synthetic(40, seed=3), rate=3000, limit=n)
    )
    first.start()
    feeding.start()
    second = None
    try:
        deadline = time.monotonic() + 60
        while first.status().written == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Joining takes partitions from a member that holds buffered, unlanded records of them.
        second = ss.LakeSink(kafka.bootstrap_servers, topic, gid, str(lake), **config)
        second.start()
        feeding.join()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (
            len(first.status().assigned) == 2
            and len(second.status().assigned) == 2
            and first.status().written + second.status().written >= n
        ):
            time.sleep(0.2)
        kept, moved = (set(s.status().assigned) for s in (first, second))
    finally:
        feeding.join()
        final = [s.stop() for s in (first, second) if s is not None]
    assert len(final) == 2 and all(f.written > 0 for f in final), final
    assert len(moved) == 2 and len(kept) == 2 and moved.isdisjoint(kept), (kept, moved)
    ends = end_offsets_of(kafka.bootstrap_servers, topic)
    assert sum(ends.values()) == n
    df = read_local_parquet(lake, topic)
    assert_exactly_once(df, ends)
    # Each member committed only its own partitions' ends; the first one's commits of the
    # moved partitions stopped before the second one's began.
    for p in moved:
        assert dict(final[1].committed)[p] == ends[p]
        assert dict(final[0].committed).get(p, 0) < ends[p]
