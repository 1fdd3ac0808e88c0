"""The sink's exactly-once promise under failure: SIGKILL at random moments, S3 outages."""

import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import polars as pl
import pytest

import stockstream as ss
from conftest import S3Server, end_offsets
from lake_check import assert_exactly_once, read_local_parquet, read_s3_parquet
from stockstream import cli

GROUP = [
    "-X",
    "session.timeout.ms=6000",
    "-X",
    "heartbeat.interval.ms=500",
    "-X",
    "max.poll.interval.ms=10000",
]


def offsets(bootstrap, topic):
    return {p: hi for p, (_, hi) in end_offsets(bootstrap, topic).items()}


def sink_command(bootstrap, topic, gid, lake, *extra):
    return [
        sys.executable,
        "-m",
        "stockstream",
        "sink",
        str(lake),
        "-b",
        bootstrap,
        "-t",
        topic,
        "-g",
        gid,
        "--kafka-metadata",
        "--flush-records",
        "300",
        "--quiet",
        *GROUP,
        *extra,
    ]


def iceberg_rows(lake, topic):
    """The rows of the Iceberg table's current snapshot, as pyiceberg reads them, and the
    files it refers to."""
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("stockstream", uri=f"sqlite:///{lake}/catalog.db")
    table = catalog.load_table(f"stock_market.{topic.replace('-', '_')}")
    files = {t.file.file_path.removeprefix("file://") for t in table.scan().plan_files()}
    return pl.from_arrow(table.scan().to_arrow()), files


@pytest.mark.parametrize("table_format", ["hive", "iceberg"])
def test_sigkill_at_random_moments_loses_and_doubles_nothing(kafka, topic, tmp_path, table_format):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    lake = tmp_path / "lake"
    gid = f"crash-{uuid.uuid4().hex[:6]}"
    # The producer keeps writing while the sink is killed, so kills land mid-range and mid-write.
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    source = ss.TickSource.synthetic(40, seed=seed)
    feeding = threading.Thread(target=lambda: producer.send(source, rate=4000, limit=40_000))
    feeding.start()
    kills = 0
    try:
        for _ in range(4):
            command = sink_command(kafka.bootstrap_servers, topic, gid, lake)
            proc = subprocess.Popen([*command, "--table-format", table_format])
            time.sleep(rng.uniform(2.0, 8.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    finally:
        feeding.join()
    final = subprocess.run(
        sink_command(
            kafka.bootstrap_servers, topic, gid, lake, "--stop-at-end", "--duration", "120"
        )
        + ["--table-format", table_format],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert final.returncode == 0, final.stderr
    ends = offsets(kafka.bootstrap_servers, topic)
    assert sum(ends.values()) == 40_000, f"seed {seed}"
    assert kills == 4
    if table_format == "iceberg":
        # The table's snapshot is the truth; what killed writers left uncommitted goes with
        # the cleanup after the grace period, and the table reads the same.
        df, files = iceberg_rows(lake, topic)
        assert_exactly_once(df, ends)
        ss.Lake(str(lake)).compact(grace=0, min_objects=1_000_000, progress=False)
        data = {str(p) for p in (lake / topic).rglob("*.parquet")}
        assert data == files, f"seed {seed}"
        assert_exactly_once(iceberg_rows(lake, topic)[0], ends)
        return
    df = read_local_parquet(lake, topic)
    assert_exactly_once(df, ends)
    # No temporary files were left visible to readers.
    assert not [p for p in lake.rglob("*.tmp") if not p.name.startswith(".")]


def private_s3(prefix):
    """An S3 server of this test's own (so it can be stopped) holding one new bucket."""
    server = S3Server()
    server.start()
    bucket = f"{prefix}-{uuid.uuid4().hex[:8]}"
    server.client().create_bucket(Bucket=bucket)
    return server, bucket


def s3_sink(kafka, topic, name, **options):
    """A sink of ``topic`` (a new group) into a new bucket of a private S3 server."""
    server, bucket = private_s3(name)
    aws = ss.AwsOptions(endpoint_url=server.endpoint_url)
    group = f"{name}-{uuid.uuid4().hex[:6]}"
    sink = ss.LakeSink(kafka.bootstrap_servers, topic, group, f"s3://{bucket}", aws=aws, **options)
    return sink, server, bucket


def fail_mid_run(sink, server, producer, n, seed):
    """Sends n/2 ticks, waits for the sink's first landing, stops S3, sends n/2 more and
    waits until the sink is retrying; returns its status then."""
    producer.send(ss.TickSource.synthetic(20, seed=seed), limit=n // 2)
    deadline = time.monotonic() + 30
    while sink.status().written == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.stop()
    producer.send(ss.TickSource.synthetic(20, seed=seed + 1), limit=n // 2)
    while sink.status().state != "retrying" and time.monotonic() < deadline:
        time.sleep(0.05)
    return sink.status()


def test_an_s3_outage_mid_run_loses_nothing(kafka, topic, aws_env):
    sink, server, bucket = s3_sink(
        kafka, topic, "outage", kafka_metadata=True, roll=ss.RollPolicy(records=200)
    )
    n = 6000
    sink.start()
    try:
        producer = ss.Producer(kafka.bootstrap_servers, topic)
        during = fail_mid_run(sink, server, producer, n, seed=7)
        assert during.state == "retrying" and during.errors > 0, during
        assert during.written < n
        time.sleep(2)
        server.start()
        deadline = time.monotonic() + 60
        while sink.status().written < n and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        final = sink.stop()
        server.stop()
    assert final.written == n, final
    server.start()
    try:
        df = read_s3_parquet(server.client(), bucket, f"{topic}/")
    finally:
        server.stop()
    assert_exactly_once(df, offsets(kafka.bootstrap_servers, topic))


def test_stop_during_an_outage_returns_promptly_without_committing(kafka, topic, aws_env):
    sink, server, _ = s3_sink(kafka, topic, "gone", roll=ss.RollPolicy(idle=0.5))
    server.stop()
    ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV, limit=50)
    sink.start(stop_at_end=True)
    deadline = time.monotonic() + 30
    while sink.status().state != "retrying" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.status().state == "retrying"
    began = time.monotonic()
    status = sink.stop()
    assert time.monotonic() - began < 15
    # Asked to stop while S3 is down: nothing committed, so a restart re-reads everything.
    assert status.written == 0 and status.committed == {}


def test_partitions_taken_away_during_an_outage_are_not_written_by_their_old_owner(
    kafka, topic, aws_env
):
    server, bucket = private_s3("handover")
    gid = f"handover-{uuid.uuid4().hex[:6]}"
    options = dict(
        aws=ss.AwsOptions(endpoint_url=server.endpoint_url),
        # With no catalog nothing records the folders: both members must be given the same.
        catalog=None,
        partition_by="month",
        kafka_metadata=True,
        roll=ss.RollPolicy(records=200),
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    first = ss.LakeSink(kafka.bootstrap_servers, topic, gid, f"s3://{bucket}", **options)
    second = ss.LakeSink(kafka.bootstrap_servers, topic, gid, f"s3://{bucket}", **options)
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    n = 4000
    first.start()
    try:
        assert fail_mid_run(first, server, producer, n, seed=11).state == "retrying"
        # A second member joins while the first is retrying: the rebalance takes some of
        # the first's partitions, with ranges it could not write yet.
        second.start()
        # The first learns of the rebalance when it next polls, between two retries (at
        # most RETRY_MAX apart): until then its status still lists what it held.
        deadline = time.monotonic() + 60
        while True:
            held, taken = set(first.status().assigned), set(second.status().assigned)
            if taken and not held & taken:
                break
            assert time.monotonic() < deadline, (first.status(), second.status())
            time.sleep(0.1)
        server.start()
        while first.status().written + second.status().written < n:
            assert time.monotonic() < deadline, (first.status(), second.status())
            time.sleep(0.1)
    finally:
        a, b = first.stop(), second.stop()
    assert a.written + b.written == n, (a, b)
    df = read_s3_parquet(server.client(), bucket, f"{topic}/")
    server.stop()
    assert_exactly_once(df, offsets(kafka.bootstrap_servers, topic))


class StallingProxy:
    """A TCP proxy to a local server that can stall: while stalled it keeps every connection
    open and takes what clients send, but forwards and answers nothing, like a server that
    stopped mid-request (a frozen process, a dead load balancer)."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.stalled = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst):
        cli._pump(src, dst, before_send=self._hold)

    def _hold(self):
        while self.stalled.is_set():
            time.sleep(0.05)

    def close(self):
        self._listener.close()


def test_writes_stalled_mid_request_go_to_retrying_and_recover_and_stop_promptly(
    kafka, topic, aws_env
):
    server, bucket = private_s3("stall")
    proxy = StallingProxy(server.port)
    # Symbol folders: each range lands as several objects, written concurrently.
    sink = ss.LakeSink(
        kafka.bootstrap_servers,
        topic,
        f"stall-{uuid.uuid4().hex[:6]}",
        f"s3://{bucket}",
        aws=ss.AwsOptions(endpoint_url=f"http://127.0.0.1:{proxy.port}"),
        partition_by="symbol",
        catalog=None,
        kafka_metadata=True,
        roll=ss.RollPolicy(records=400, idle=0.5),
    )
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    n = 4000
    sink.start()
    try:
        producer.send(ss.TickSource.synthetic(20, seed=5), limit=n // 2)
        deadline = time.monotonic() + 30
        while sink.status().written == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.status().written > 0
        proxy.stalled.set()
        producer.send(ss.TickSource.synthetic(20, seed=6), limit=n // 2)
        deadline = time.monotonic() + 60
        while sink.status().state != "retrying" and time.monotonic() < deadline:
            time.sleep(0.1)
        during = sink.status()
        assert during.state == "retrying" and "time" in during.last_error, during
        proxy.stalled.clear()
        deadline = time.monotonic() + 60
        while sink.status().written < n and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sink.status().written == n
        # Stalled again with writes in flight: stop() does not wait for them.
        proxy.stalled.set()
        producer.send(ss.TickSource.synthetic(20, seed=7), limit=1000)
        time.sleep(2)
        began = time.monotonic()
        final = sink.stop()
        assert time.monotonic() - began < 5
    finally:
        proxy.stalled.clear()
        sink.stop()
        proxy.close()
    assert final.written == n, final
    try:
        df = read_s3_parquet(server.client(), bucket, f"{topic}/")
    finally:
        server.stop()
    # Everything committed is in the lake once; what was abandoned at stop() was not committed.
    committed = dict(final.committed)
    df = df.filter(
        pl.col("_kafka_offset")
        < pl.col("_kafka_partition").replace_strict(committed, default=0, return_dtype=pl.Int64)
    )
    assert_exactly_once(df, committed)


def test_a_bucket_deleted_mid_run_ends_the_run_at_once_naming_it(kafka, topic, aws_env):
    sink, server, bucket = s3_sink(
        kafka, topic, "deleted", roll=ss.RollPolicy(records=100, idle=0.5)
    )
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    try:
        producer.send(ss.TickSource.synthetic(8, seed=1), limit=400)
        sink.start()
        # Everything sent is landed first: a landing between the deletes below and the
        # bucket's could find its table's catalog (kept in the bucket) gone instead.
        deadline = time.monotonic() + 30
        while sink.status().written < 400 and time.monotonic() < deadline:
            time.sleep(0.05)
        s3 = server.client()
        while True:
            for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
            try:
                s3.delete_bucket(Bucket=bucket)
                break
            except s3.exceptions.ClientError:
                assert time.monotonic() < deadline
        producer.send(ss.TickSource.synthetic(8, seed=2, start="2011-01-03"), limit=400)
        # Not retried for ever: a missing bucket does not come back by itself.
        deadline = time.monotonic() + 30
        while sink.running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not sink.running and sink.status().state == "failed", sink.status()
        with pytest.raises(ss.NotFoundError, match=bucket) as ended:
            sink.stop()
        assert ended.value.retryable is False
    finally:
        server.stop()
