"""Live SQL: a table fed by a sink also reads what its topic holds beyond the lake, so a
query is fresh to the second without small objects, and no record is counted twice or
missed while objects land and commit."""

import threading
import time
import uuid

import pytest

import stockstream as ss
from conftest import end_offsets, lake_sink

GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


def group_id():
    return f"live-{uuid.uuid4().hex[:8]}"


def intraday_source(symbols=4):
    return ss.TickSource.synthetic(symbols, start="2021-03-01 09:30:00", interval=1.0)


def count(db, table, **kw):
    return db.sql(f"SELECT count(*) AS n FROM {table}", **kw)["n"][0]


def delivered(kafka, topic):
    return sum(high - low for low, high in end_offsets(kafka.bootstrap_servers, topic).values())


def test_live_counts_never_exceed_what_was_delivered_never_go_down_and_end_exact(
    kafka, topic, tmp_path
):
    lake = tmp_path / "lake"
    table = topic.replace("-", "_")
    # The first records declare the table.
    ss.Producer(kafka.bootstrap_servers, topic).send(intraday_source(), limit=40)
    # Rolls far longer than the test, so what is sent below stays in the sink's memory.
    sink = ss.LakeSink(
        kafka.bootstrap_servers,
        topic,
        group_id(),
        str(lake),
        roll=ss.RollPolicy(age=600, idle=600),
        **GROUP,
    )
    sink.run(stop_at_end=True)
    sink.start()
    # The run above left its group when it ended: the started one joins it again first.
    deadline = time.monotonic() + 60
    while not sink.status().assigned:
        assert time.monotonic() < deadline, sink.status()
        time.sleep(0.05)
    total = 40 + 3000
    producing = threading.Thread(
        target=lambda: ss.Producer(kafka.bootstrap_servers, topic).send(
            intraday_source(), limit=3000, rate=1000
        )
    )
    producing.start()
    db = ss.Lake(str(lake))
    seen = []
    while producing.is_alive():
        n = count(db, table)
        # Read after the query: the topic held at least this many then.
        assert n <= delivered(kafka, topic)
        seen.append(n)
        time.sleep(0.05)
    producing.join()
    assert len(seen) > 10
    assert all(a <= b for a, b in zip(seen, seen[1:])), "a live count went down"
    # Nothing more was landed meanwhile (the sink waits for its idle and age rolls), yet
    # the query sees every record.
    assert count(db, table) == total
    info = db.last_query[0]
    assert info.live and info.records > 0 and not info.truncated
    assert count(db, table, live=False) < total
    sink.stop()
    assert count(db, table, live=False) == total
    assert count(db, table) == total
    assert db.last_query[0].records == 0


def test_queries_hammering_a_table_while_objects_land_never_double_count(kafka, topic, tmp_path):
    lake = tmp_path / "lake"
    table = topic.replace("-", "_")
    n = 6000
    ss.Producer(kafka.bootstrap_servers, topic).send(intraday_source(), limit=n)
    # Small objects: about 120 landings, so queries run between many of them.
    roll = ss.RollPolicy(records=50, idle=0.05)
    sink = lake_sink(kafka, topic, lake, partition_by="date", roll=roll, **GROUP)
    sink.run(limit=10)
    sink.start()
    db = ss.Lake(str(lake))
    counts, landed = [], []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        counts.append(count(db, table))
        landed.append(count(db, table, live=False))
        if landed[-1] == n:
            break
    sink.stop()
    # Everything was in Kafka from the start: every live count is exact, whatever was
    # landed, registered or committed at that moment.
    assert set(counts) == {n}, sorted(set(counts))[:5]
    # The queries ran while objects landed, not only before and after.
    assert landed[-1] == n and any(10 < c < n for c in landed), sorted(set(landed))


def test_a_truncated_tail_warns_and_says_so(kafka, topic, tmp_path):
    lake = tmp_path / "lake"
    table = topic.replace("-", "_")
    ss.Producer(kafka.bootstrap_servers, topic).send(intraday_source(), limit=20)
    sink = ss.LakeSink(kafka.bootstrap_servers, topic, group_id(), str(lake), **GROUP)
    sink.run(stop_at_end=True)
    ss.Producer(kafka.bootstrap_servers, topic).send(intraday_source(), limit=500)
    db = ss.Lake(str(lake))
    with pytest.warns(UserWarning, match="cut at"):
        n = count(db, table, tail_records=100)
    info = db.last_query[0]
    assert info.truncated and info.records == 100
    assert n == 20 + 100
    assert count(db, table) == 520


def test_without_its_broker_a_table_is_queried_from_the_lake(tmp_path):
    lake = tmp_path / "lake"
    with ss.EmbeddedKafka(partitions=2, topics=["gone"]) as kafka:
        ss.Producer(kafka.bootstrap_servers, "gone").send(intraday_source(), limit=30)
        ss.LakeSink(kafka.bootstrap_servers, "gone", group_id(), str(lake)).run(stop_at_end=True)
    db = ss.Lake(str(lake))
    started = time.monotonic()
    assert count(db, "gone") == 30
    assert time.monotonic() - started < 5
    info = db.last_query[0]
    assert not info.live and "does not answer" in info.reason
    with pytest.raises(ss.KafkaError, match="live query of table gone"):
        count(db, "gone", live=True)
    assert count(db, "gone", live=False) == 30
