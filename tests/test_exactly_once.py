"""Exactly once when groups, members, catalogs and brokers misbehave: the table, not the
consumer group, says what is landed. Each record is counted by DuckDB over the objects in
the lake (every object, registered or not) and by live SQL, which must be exact at every
moment: registered objects plus the topic's tail from the table's offsets."""

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import polars as pl
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

import stockstream as ss
from conftest import S3Server, apache, end_offsets, kafka_broker, start_apache_kafka
from lake_check import read_s3_parquet

# Short sessions: a member that stops is replaced within seconds, on every broker.
GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
N = 20_000


def gid(name="g"):
    return f"{name}-{uuid.uuid4().hex[:6]}"


def produce(bootstrap, topic, n=N, symbols=10, seed=1):
    """`n` daily bars; each seed's start 12 years after the last's, so no (symbol, date) of
    one batch is in another."""
    start = f"{1970 + 12 * seed}-01-02"
    report = ss.Producer(bootstrap, topic).send(
        ss.TickSource.synthetic(symbols, start=start, seed=seed), limit=n
    )
    assert report.delivered == n, report
    return n


def delivered(bootstrap, topic):
    return sum(high - low for low, high in end_offsets(bootstrap, topic).values())


def table_name(topic):
    return topic.replace("-", "_")


def objects_count(lake: Path, folder: str) -> tuple[int, int]:
    """(rows, distinct (symbol, date)) over every Parquet object in the table's folder."""
    files = str(lake / folder / "**" / "*.parquet")
    return duckdb.sql(
        f'SELECT count(*), count(DISTINCT ("Index", "Date")) FROM read_parquet(\'{files}\')'
    ).fetchall()[0]


def files_count(db: ss.Lake, table: str) -> tuple[int, int]:
    """(rows, distinct) over the objects a query of `table` reads (after compaction)."""
    urls = db.files(table)["url"].to_list()
    return duckdb.sql(
        f'SELECT count(*), count(DISTINCT ("Index", "Date")) FROM read_parquet({urls!r})'
    ).fetchall()[0]


def live_count(db, table):
    return db.sql(f"SELECT count(*) AS n FROM {table}", live=True)["n"][0]


def sink(bootstrap, topic, group, lake, **options):
    options.setdefault("roll", ss.RollPolicy(records=1000, idle=0.5))
    return ss.LakeSink(bootstrap, topic, group, str(lake), **{**GROUP, **options})


@pytest.fixture
def fresh_topic(broker):
    name = f"eo-{uuid.uuid4().hex[:8]}"
    broker.create_topic(name, 4)
    return name


def test_a_new_group_on_a_table_landed_in_two_runs_lands_nothing_twice(
    broker, fresh_topic, tmp_path
):
    lake = tmp_path / "lake"
    produce(broker.bootstrap_servers, fresh_topic)
    first = sink(broker.bootstrap_servers, fresh_topic, gid("a"), lake)
    first.run(limit=6000)
    first.run(limit=6000)
    landed = first.status().landed
    assert landed and first.status().resumed == {}
    other = sink(broker.bootstrap_servers, fresh_topic, gid("b"), lake)
    status = other.run(stop_at_end=True)
    # The new group had no offsets: every partition resumed where the table ends.
    assert status.resumed == landed, status
    assert any("no committed offset" in note for note in status.notes)
    assert objects_count(lake, fresh_topic) == (N, N)
    assert live_count(ss.Lake(str(lake)), table_name(fresh_topic)) == N


def land_a_part(bootstrap, lake, name):
    """A new topic of N records, 9,000 of them landed by a new group: (broker, topic, group,
    the table's landed offsets)."""
    broker = kafka_broker(bootstrap)
    topic = f"eo-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, 4)
    produce(broker.bootstrap_servers, topic)
    group = gid(name)
    landed = sink(broker.bootstrap_servers, topic, group, lake).run(limit=9000).landed
    return broker, topic, group, landed


def test_group_offsets_deleted_between_two_runs_land_nothing_twice(apache_kafka, tmp_path):
    lake = tmp_path / "lake"
    broker, topic, group, landed = land_a_part(apache_kafka.bootstrap, lake, "deleted")
    deleted = apache.offset_delete("127.0.0.1", apache_kafka.port, group, topic, range(4))
    assert deleted == {"error": 0, "partitions": {p: 0 for p in range(4)}}, deleted
    status = sink(broker.bootstrap_servers, topic, group, lake).run(stop_at_end=True)
    assert status.resumed == landed, status
    assert objects_count(lake, topic) == (N, N)


def committed(bootstrap, group, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(4)]
        return {tp.partition: tp.offset for tp in c.committed(parts, timeout=10) if tp.offset >= 0}
    finally:
        c.close()


def test_expired_group_offsets_land_nothing_twice(tmp_path):
    # A broker of its own: offsets of an empty group expire after a minute (Kafka's least).
    settings = {"offsets.retention.minutes": 1, "offsets.retention.check.interval.ms": 1000}
    with start_apache_kafka(tmp_path / "kafka", **settings) as expiring:
        lake = tmp_path / "lake"
        broker, topic, group, landed = land_a_part(expiring.bootstrap, lake, "expired")
        assert committed(broker.bootstrap_servers, group, topic)
        deadline = time.monotonic() + 120
        while committed(broker.bootstrap_servers, group, topic):
            assert time.monotonic() < deadline, "the group's offsets did not expire"
            time.sleep(2)
        status = sink(broker.bootstrap_servers, topic, group, lake).run(stop_at_end=True)
        assert status.resumed == landed, (status, status.last_error, status.notes)
        assert objects_count(lake, topic) == (N, N), (status, status.last_error, status.notes)


def test_live_counts_are_exact_while_two_members_land(kafka, topic, tmp_path):
    lake = tmp_path / "lake"
    n = produce(kafka.bootstrap_servers, topic, n=12_000)
    group = gid("two")
    roll = ss.RollPolicy(records=300, idle=0.5)
    first = sink(kafka.bootstrap_servers, topic, group, lake, roll=roll)
    second = sink(kafka.bootstrap_servers, topic, group, lake, roll=roll)
    # The table exists before the members race, so every query has one to read.
    first.run(limit=300)
    db = ss.Lake(str(lake))
    counts = []
    first.start(stop_at_end=True)
    second.start(stop_at_end=True)
    try:
        while first.running or second.running:
            counts.append(live_count(db, table_name(topic)))
    finally:
        first.stop()
        second.stop()
    assert len(counts) > 5
    assert set(counts) == {n}, sorted(set(counts))
    assert first.status().written + second.status().written > 0
    assert objects_count(lake, topic) == (n, n)


def private_s3():
    server = S3Server()
    server.start()
    bucket = f"eo-{uuid.uuid4().hex[:8]}"
    server.client().create_bucket(Bucket=bucket)
    return server, bucket


def s3_lake(server, bucket):
    return dict(lake=f"s3://{bucket}", aws=ss.AwsOptions(endpoint_url=server.endpoint_url))


def s3_objects_count(server, bucket, folder):
    df = read_s3_parquet(server.client(), bucket, f"{folder}/")
    return df.height, df.select("Index", "Date").n_unique()


def wait_for(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.05)


def test_a_landing_half_registered_then_crawled_is_counted_once(kafka, topic, aws_env):
    server, bucket = private_s3()
    where = s3_lake(server, bucket)
    table = table_name(topic)
    try:
        produce(kafka.bootstrap_servers, topic, n=2000)
        make = lambda: sink(  # noqa: E731
            kafka.bootstrap_servers, topic, "half", where["lake"], aws=where["aws"]
        )
        make().run(stop_at_end=True)
        half = make()
        half.start()
        # Once the sink holds its partitions (claimed in the table), the catalog refuses
        # every write: objects land, their registrations fail.
        wait_for(lambda: half.status().assigned, lambda: half.status())
        time.sleep(1)
        catalog_down = server.fail("PUT", r"/_catalog/")
        produce(kafka.bootstrap_servers, topic, n=3000, seed=2)
        wait_for(
            lambda: half.status().files > 0 and catalog_down.hits > 0,
            lambda: half.status(),
        )
        produce(kafka.bootstrap_servers, topic, n=2000, seed=3)
        db = ss.Lake(**where)
        assert live_count(db, table) == 7000
        half.stop()
        assert live_count(db, table) == 7000
        server.faults.remove(catalog_down)
        db.crawl()
        assert live_count(db, table) == 7000
        status = make().run(stop_at_end=True)
        assert status.written == 5000, status
        assert live_count(db, table) == 7000
        assert s3_objects_count(server, bucket, topic) == (7000, 7000)
    finally:
        server.stop()


def test_live_count_is_exact_while_a_first_landing_is_retried(kafka, topic, aws_env):
    server, bucket = private_s3()
    where = s3_lake(server, bucket)
    table = table_name(topic)
    try:
        n = produce(kafka.bootstrap_servers, topic, n=3000)
        writes_down = server.fail("PUT", r"/part-")
        first = sink(kafka.bootstrap_servers, topic, "retry", where["lake"], aws=where["aws"])
        first.start()
        wait_for(lambda: first.status().state == "retrying", lambda: first.status())
        # The table is declared but has no columns yet: the tail brings its own.
        assert live_count(ss.Lake(**where), table) == n
        server.faults.remove(writes_down)
        wait_for(
            lambda: first.status().written == n,
            lambda: (first.status(), first.status().last_error),
        )
        first.stop()
        assert live_count(ss.Lake(**where), table) == n
        assert s3_objects_count(server, bucket, topic) == (n, n)
    finally:
        server.stop()


def test_a_stale_writer_after_compaction_lands_nothing_twice(kafka, topic, tmp_path):
    lake = tmp_path / "lake"
    table = table_name(topic)
    n = produce(kafka.bootstrap_servers, topic, n=5000)
    roll = ss.RollPolicy(records=250, idle=0.5)
    sink(kafka.bootstrap_servers, topic, gid("a"), lake, roll=roll).run(stop_at_end=True)
    db = ss.Lake(str(lake))
    report = db.compact(grace=0)
    assert report.objects_merged > 0
    # A sink of another group, from the topic's start: the table says where to resume.
    late = sink(kafka.bootstrap_servers, topic, gid("b"), lake, roll=roll)
    status = late.run(stop_at_end=True)
    assert status.written == 0 and status.resumed, status
    produce(kafka.bootstrap_servers, topic, n=1000, seed=4)
    assert live_count(db, table) == n + 1000
    late.run(stop_at_end=True)
    # The folders compaction replaced go once their grace period (none) is over, at the
    # next compaction.
    db.compact(grace=0)
    db.compact(grace=0)
    assert files_count(db, table) == (n + 1000, n + 1000)
    assert objects_count(lake, topic) == (n + 1000, n + 1000)


def produce_to(bootstrap, topic, partition, rows):
    p = Producer({"bootstrap.servers": bootstrap})
    for row in rows.with_columns(pl.col("Date").cast(pl.String)).iter_rows(named=True):
        p.produce(topic, key=row["Index"], value=json.dumps(row), partition=partition)
    p.flush(30)


def racing_sinks(bootstrap, topic, lake, **options):
    """Two members of one group whose partitions hold data of different density (daily bars
    over decades on 0 and 1, second ticks on 2 and 3), so each would choose other folders."""
    daily = ss.synthetic_ticks(2000, symbols=4, start="1990-01-02")
    ticks = ss.synthetic_ticks(2000, symbols=4, start="2021-03-01 09:30:00", interval=1.0)
    for partition, rows in enumerate([daily[:1000], daily[1000:], ticks[:1000], ticks[1000:]]):
        produce_to(bootstrap, topic, partition, rows)
    group = gid("race")
    roll = ss.RollPolicy(records=400, idle=0.5)
    return [sink(bootstrap, topic, group, lake, roll=roll, **options) for _ in range(2)]


def run_both(members):
    for m in members:
        m.start(stop_at_end=True)
    for m in members:
        m.wait(120)
    return [m.stop() for m in members]


def test_two_members_racing_a_first_landing_agree_on_one_scheme(kafka, topic, tmp_path):
    lake = tmp_path / "lake"
    members = racing_sinks(kafka.bootstrap_servers, topic, str(lake))
    statuses = run_both(members)
    assert sum(s.written for s in statuses) == 4000, statuses
    db = ss.Lake(str(lake))
    assert db.tables().filter(pl.col("table") == table_name(topic)).height == 1
    assert live_count(db, table_name(topic)) == 4000
    assert db.sql(f"SELECT count(*) AS n FROM {table_name(topic)}", live=False)["n"][0] == 4000
    # Every object lies in folders of the one recorded scheme.
    depth = {len(p.relative_to(lake / topic).parts) for p in (lake / topic).rglob("*.parquet")}
    assert len(depth) == 1, depth


def test_two_members_racing_a_first_landing_on_glue_agree_on_one_scheme(kafka, topic, s3, bucket):
    where = dict(lake=f"s3://{bucket}", aws=ss.AwsOptions(endpoint_url=s3.endpoint_url))
    database = f"race_{uuid.uuid4().hex[:6]}"
    members = racing_sinks(
        kafka.bootstrap_servers, topic, where["lake"], aws=where["aws"], catalog="glue",
        database=database,
    )  # fmt: skip
    statuses = run_both(members)
    assert sum(s.written for s in statuses) == 4000, statuses
    glue = s3.client("glue").get_table(DatabaseName=database, Name=table_name(topic))["Table"]
    db = ss.Lake(**where, catalog="glue", database=database)
    assert live_count(db, table_name(topic)) == 4000
    names = [k["Name"] for k in glue["PartitionKeys"]]
    assert db.sql(f"SELECT count(*) AS n FROM {table_name(topic)}", live=False)["n"][0] == 4000, (
        names
    )


def test_a_zombie_cannot_overwrite_its_successor_or_register(kafka, topic, aws_env):
    """A member frozen while its PUTs are held by a slow S3 (a stopped process, a network
    partition) loses its partitions; its successor lands them; then the held PUTs reach S3
    and the zombie wakes up."""
    slow = S3Server()  # the zombie's route to S3: the same data, its PUTs held
    slow.start()
    server, bucket = private_s3()
    table = table_name(topic)
    zombie = None
    held = slow.hold("PUT", r"/part-")
    try:
        n = produce(kafka.bootstrap_servers, topic, n=4000)
        group = gid("zombie")
        zombie = subprocess.Popen(
            [
                sys.executable, "-m", "stockstream", "sink", f"s3://{bucket}",
                "-b", kafka.bootstrap_servers, "-t", topic, "-g", group,
                "--endpoint-url", slow.endpoint_url, "--flush-records", "1000",
                "--flush-idle", "0.5", "--quiet", "-X", "session.timeout.ms=6000",
                "-X", "heartbeat.interval.ms=500",
            ],
        )  # fmt: skip
        wait_for(lambda: held.hits > 0, lambda: "the zombie wrote nothing")
        time.sleep(0.5)
        zombie.send_signal(signal.SIGSTOP)
        successor = sink(
            kafka.bootstrap_servers, topic, group, f"s3://{bucket}",
            aws=ss.AwsOptions(endpoint_url=server.endpoint_url),
        )  # fmt: skip
        successor.start()
        wait_for(lambda: successor.status().written == n, lambda: successor.status(), 120)
        # The held PUTs reach S3 now, where the successor's objects are.
        held.release()
        zombie.send_signal(signal.SIGCONT)
        time.sleep(5)
        final = successor.stop()
        assert final.written == n, final
        # The zombie's PUTs reached S3 after its successor's objects: refused, not written.
        refused = [a for a in slow.answers if a[0] == "PUT" and "/part-" in a[1]]
        assert refused and {status for *_, status in refused} == {412}, refused
        assert s3_objects_count(server, bucket, topic) == (n, n)
        db = ss.Lake(f"s3://{bucket}", aws=ss.AwsOptions(endpoint_url=server.endpoint_url))
        assert live_count(db, table) == n
    finally:
        held.release()
        if zombie is not None:
            zombie.send_signal(signal.SIGCONT)
            zombie.terminate()
            zombie.wait(30)
        slow.stop()
        server.stop()
