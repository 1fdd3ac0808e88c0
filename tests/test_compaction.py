"""Compaction: small objects merged into a new versioned folder per partition and the
partition's location switched in the catalog in one step, while sinks land and queries run;
crashes and races lose nothing and double nothing; old folders go after the grace period."""

import random
import subprocess
import sys
import threading
import time
import uuid

import polars as pl
import pytest

import stockstream as ss
from conftest import lake_sink

GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
SMALL = ss.RollPolicy(records=40, age=0.3, idle=0.2)


def group_id():
    return f"compact-{uuid.uuid4().hex[:8]}"


def table_of(topic):
    return topic.replace("-", "_")


def produce_intraday(kafka, topic, n, symbols=4, **pace):
    source = ss.TickSource.synthetic(symbols, start="2021-03-01 09:30:00", interval=1.0)
    report = ss.Producer(kafka.bootstrap_servers, topic).send(source, limit=n, **pace)
    assert report.delivered == n
    return n


def small_objects_lake(kafka, topic, lake, n, **sink):
    """A lake of many small objects: `n` ticks landed 40 records at a time (or as `sink` says)."""
    produce_intraday(kafka, topic, n)
    options = {"partition_by": "date", "roll": SMALL, **sink}
    s = ss.LakeSink(kafka.bootstrap_servers, topic, group_id(), str(lake), **options)
    s.run(stop_at_end=True)
    return n


def exact(db, table, n):
    """The table holds each of the `n` ticks once (lake only)."""
    count = db.sql(f"SELECT count(*) AS n FROM {table}", live=False)["n"][0]
    dupes = db.sql(
        f'SELECT "Index", "Date", count(*) AS c FROM {table} GROUP BY 1, 2 HAVING c > 1',
        live=False,
    )
    return count == n and dupes.height == 0, (count, dupes.height)


def test_compaction_merges_small_objects_and_old_folders_go_after_the_grace_period(
    kafka, topic, tmp_path
):
    lake = tmp_path / "lake"
    n = small_objects_lake(kafka, topic, lake, 4000)
    db = ss.Lake(str(lake))
    table = table_of(topic)
    before = db.files(table).height
    assert before >= 50, before
    report = db.compact(grace=3600)
    # Each Kafka partition's last range could still be rewritten by a replay: carried as
    # it is; everything else merged.
    assert report.objects_carried <= 4
    assert report.objects_merged + report.objects_carried == before
    assert report.objects_written >= 1
    assert report.partitions and report.folders_deleted == 0
    after = db.files(table)
    assert after.height == report.objects_written + report.objects_carried < before
    assert all("/_v" in url for url in after["url"]), after
    ok, detail = exact(db, table, n)
    assert ok, detail
    # The old objects stay for readers that listed them before the switch …
    old = [p for p in (lake / topic).glob("date=*/*.parquet")]
    assert len(old) == before
    # … and go once their grace period is over.
    report = db.compact(grace=0)
    assert report.folders_deleted >= 1 and report.objects_deleted == before
    assert not list((lake / topic).glob("date=*/*.parquet"))
    ok, detail = exact(db, table, n)
    assert ok, detail
    # Compacting again merges only what was carried and is now settled, if anything.
    assert db.compact(grace=0).objects_merged <= 1 + report.objects_carried


def test_compaction_while_a_sink_lands_and_queries_run_is_exact_and_monotonic(
    kafka, topic, tmp_path
):
    lake = tmp_path / "lake"
    table = table_of(topic)
    sink = lake_sink(kafka, topic, lake, partition_by="date", roll=SMALL, **GROUP)
    sink.start()
    producing = threading.Thread(
        target=produce_intraday, args=(kafka, topic, 6000), kwargs={"rate": 1500}
    )
    producing.start()
    counts, errors = [], []
    done = threading.Event()

    def query_loop():
        db = ss.Lake(str(lake)) if (lake / "_catalog").exists() else None
        while not done.is_set():
            try:
                db = db or ss.Lake(str(lake))
                counts.append(db.sql(f"SELECT count(*) AS n FROM {table}", live=False)["n"][0])
            except ss.QueryError:
                pass  # the table is not registered yet
            except ss.NotFoundError:
                pass  # the lake does not exist yet
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
            time.sleep(0.02)

    querying = threading.Thread(target=query_loop)
    querying.start()
    compactions = []
    while producing.is_alive():
        time.sleep(0.3)
        if (lake / "_catalog").exists():
            try:
                compactions.append(ss.Lake(str(lake)).compact(grace=0.5, min_objects=2))
            except ss.QueryError:
                pass
    producing.join()
    sink.stop()
    # Catch up with what the background run had not read yet, then compact once more.
    sink.run(stop_at_end=True)
    compactions.append(ss.Lake(str(lake)).compact(grace=0))
    done.set()
    querying.join()
    assert not errors, errors[:3]
    assert sum(c.objects_merged for c in compactions) > 0
    assert len(counts) > 10
    assert all(a <= b for a, b in zip(counts, counts[1:])), "a count went down"
    ok, detail = exact(ss.Lake(str(lake)), table, 6000)
    assert ok, detail


COMPACT = (
    "import sys, stockstream as ss; "
    "ss.Lake(sys.argv[1]).compact(grace=0, target_bytes=int(sys.argv[2]))"
)


def test_a_compaction_killed_at_random_points_loses_and_doubles_nothing(kafka, topic, tmp_path):
    lake = tmp_path / "lake"
    # 600 objects of 10 records.
    n = small_objects_lake(
        kafka, topic, lake, 6000, roll=ss.RollPolicy(records=10, age=0.3, idle=0.2)
    )
    db = ss.Lake(str(lake))
    table = table_of(topic)
    rng = random.Random(7)
    killed = 0
    for _ in range(8):
        # Small targets make a merged object of each small one, so the run takes a while;
        # it is killed once it has written a random number of them.
        proc = subprocess.Popen([sys.executable, "-c", COMPACT, str(lake), "4096"])
        before = set((lake / topic).rglob("_v*"))
        wanted = rng.randint(1, 400)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            written = sum(
                len(list(v.glob("*.parquet"))) for v in set((lake / topic).rglob("_v*")) - before
            )
            if written >= wanted:
                proc.kill()
                killed += 1
                break
        proc.wait()
        ok, detail = exact(db, table, n)
        assert ok, detail
        if proc.returncode == 0:
            break
    assert killed >= 1
    subprocess.run([sys.executable, "-c", COMPACT, str(lake), str(128 << 20)], check=True)
    ok, detail = exact(db, table, n)
    assert ok, detail


def test_two_compactions_racing_keep_the_table_exact(kafka, topic, tmp_path):
    lake = tmp_path / "lake"
    n = small_objects_lake(kafka, topic, lake, 3000)
    table = table_of(topic)
    reports = []

    def run():
        reports.append(ss.Lake(str(lake)).compact(grace=0))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reports) == 2
    # Every partition was switched once: by one of them, or the other lost the race.
    switched = [p for r in reports for p in r.partitions]
    assert len(switched) == len(set(switched))
    ok, detail = exact(ss.Lake(str(lake)), table, n)
    assert ok, detail
    # The loser's objects were deleted: only the current folders' objects remain besides
    # the old ones waiting for their grace period.
    ss.Lake(str(lake)).compact(grace=0)
    files = ss.Lake(str(lake)).files(table)
    on_disk = [p for p in (lake / topic).rglob("*.parquet") if not p.name.startswith(".")]
    assert len(on_disk) == files.height


def test_a_sink_landing_into_a_compacted_partition_goes_to_its_new_folder(kafka, topic, tmp_path):
    lake = tmp_path / "lake"
    gid = group_id()
    produce_intraday(kafka, topic, 2000)
    ss.LakeSink(
        kafka.bootstrap_servers, topic, gid, str(lake), partition_by="date", roll=SMALL, **GROUP
    ).run(stop_at_end=True)
    db = ss.Lake(str(lake))
    db.compact(grace=0)
    # The same day again: the sink writes into the compacted folder.
    produce_intraday(kafka, topic, 400)
    ss.LakeSink(
        kafka.bootstrap_servers, topic, gid, str(lake), partition_by="date", roll=SMALL, **GROUP
    ).run(stop_at_end=True)
    table = table_of(topic)
    urls = db.files(table)["url"].to_list()
    assert urls and all("/_v" in u for u in urls), urls
    count = db.sql(f"SELECT count(*) AS n FROM {table}", live=False)["n"][0]
    assert count == 2400


def test_the_sink_compacts_in_the_background(kafka, topic, tmp_path):
    lake = tmp_path / "lake"
    produce_intraday(kafka, topic, 3000)
    sink = lake_sink(
        kafka, topic, lake, partition_by="date", compact_every=0.5, compact_grace=0, roll=SMALL
    )
    sink.run(stop_at_end=True)
    # Let one more round run after the last landing.
    sink.start(duration=1.5)
    sink.wait(timeout=30)
    db = ss.Lake(str(lake))
    table = table_of(topic)
    files = db.files(table)
    assert files.height < 10, files
    assert exact(db, table, 3000)[0]


def test_compaction_on_s3_switches_glue_partition_locations(kafka, topic, s3, bucket):
    lake = f"s3://{bucket}/lake"
    aws = {"aws": ss.AwsOptions(endpoint_url=s3.endpoint_url)}
    database = f"db_{uuid.uuid4().hex[:8]}"
    produce_intraday(kafka, topic, 2000)
    ss.LakeSink(
        kafka.bootstrap_servers,
        topic,
        group_id(),
        lake,
        partition_by="date",
        catalog="glue",
        database=database,
        roll=SMALL,
        **aws,
    ).run(stop_at_end=True)
    db = ss.Lake(lake, catalog="glue", database=database, **aws)
    table = table_of(topic)
    before = db.files(table).height
    assert before > 10
    report = db.compact(grace=0)
    assert report.objects_merged + report.objects_carried == before
    glue = s3.client("glue")
    parts = glue.get_partitions(DatabaseName=database, TableName=table)["Partitions"]
    assert parts and all("/_v" in p["StorageDescriptor"]["Location"] for p in parts), parts
    assert db.sql(f"SELECT count(*) AS n FROM {table}", live=False)["n"][0] == 2000
    # The next run deletes the old objects; only the compacted ones remain in the bucket.
    db.compact(grace=0)
    keys = [
        o["Key"]
        for o in s3.client().list_objects_v2(Bucket=bucket, Prefix=f"lake/{topic}/")["Contents"]
    ]
    assert keys and all("/_v" in k for k in keys), keys
    assert db.sql(f"SELECT count(*) AS n FROM {table}", live=False)["n"][0] == 2000


def test_compaction_options_are_checked(tmp_path):
    (tmp_path / "lake").mkdir()
    db = ss.Lake(str(tmp_path / "lake"))
    with pytest.raises(ss.ConfigError, match="min_objects"):
        db.compact(min_objects=1)
    with pytest.raises(ss.ConfigError, match="grace"):
        db.compact(grace=-1)
    with pytest.raises(ss.NotFoundError, match="no table"):
        db.compact("nothing")
    assert pl.DataFrame(db.files()).height == 0


def test_stockstream_compact_on_the_command_line(kafka, topic, tmp_path):
    lake = tmp_path / "lake"
    n = small_objects_lake(kafka, topic, lake, 1000)
    out = subprocess.run(
        [sys.executable, "-m", "stockstream", "compact", str(lake), "--grace", "0"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert f"compacted: {table_of(topic)} date=2021-03-01" in out, out
    ok, detail = exact(ss.Lake(str(lake)), table_of(topic), n)
    assert ok, detail
