"""Analytics on Apache Kafka itself, the one broker here with the whole protocol:
exactly-once output through transactions (aborted outputs hidden from read_committed
readers), state restored across the gaps transactions and log compaction leave in the
state topic, a checkpoint whose delivery fails, and the consumer group protocol of KIP-848."""

import json
import subprocess
import sys
import time
import uuid

import polars as pl
from confluent_kafka import Producer as CkProducer
from confluent_kafka.admin import AdminClient, NewTopic
from polars.testing import assert_frame_equal

import stockstream as ss
from test_analytics import expected_windows, make_ticks, produce, windows_of

SESSION = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


def create(bootstrap, name, partitions=4, **config):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = NewTopic(name, partitions, 1, config={k: str(v) for k, v in config.items()})
    admin.create_topics([topic], operation_timeout=10)[name].result(timeout=15)
    return name


def fresh(bootstrap, **config):
    return create(bootstrap, f"k-{uuid.uuid4().hex[:8]}", **config)


def bars(bootstrap, topic, **config):
    values = ss.read_topic(bootstrap, topic, decode=False, **config)["value"]
    if values.len() == 0:
        return pl.DataFrame()
    return pl.DataFrame([json.loads(v) for v in values]).with_columns(
        pl.col("window_start").str.to_datetime(time_unit="us"), pl.col("count").cast(pl.Int64)
    )


def test_exactly_once_outputs_survive_a_crash_mid_transaction(apache_kafka, tmp_path):
    bootstrap = apache_kafka.bootstrap
    topic = fresh(bootstrap)
    ticks = make_ticks(n_per_symbol=400)
    produce(bootstrap, topic, ticks)
    out, group = f"{topic}-bars", f"g-{uuid.uuid4().hex[:8]}"
    options = dict(window="1m", checkpoint_interval=0.2, exactly_once=True, **SESSION)
    # A process that dies mid-transaction, at its 60th window, once that window's record
    # has reached the broker (inside the open transaction).
    script = tmp_path / "crash.py"
    script.write_text(
        "import os, time, stockstream as ss\n"
        "seen = []\n"
        "def die_at_60(kind, record):\n"
        "    seen.append(record)\n"
        "    if len(seen) == 60:\n"
        "        time.sleep(0.5)\n"
        "        os._exit(9)\n"
        f"a = ss.Analytics({bootstrap!r}, {topic!r}, {group!r}, "
        f"callback=die_at_60, outputs=ss.Outputs(windows={out!r}), **{options!r})\n"
        "a.run()\n"
    )
    assert subprocess.run([sys.executable, str(script)], timeout=120).returncode == 9
    survivor = ss.Analytics(
        bootstrap, topic, group, idle_timeout=0.5, outputs=ss.Outputs(windows=out), **options
    )
    status = survivor.run(stop_at_end=True)
    assert status.checkpoints > 0 and status.errors == 0, status
    # The dead job's transaction is aborted when its timeout (10 s) passes; until then
    # read_committed readers wait at its start.
    expected = expected_windows(ticks).sort("symbol", "window_start")
    deadline = time.monotonic() + 60
    while (committed := bars(bootstrap, out)).height < expected.height:
        assert time.monotonic() < deadline, committed.height
        time.sleep(1)
    # Exactly once: no repeat at all, not even an identical one.
    assert committed.select("symbol", "window_start").is_duplicated().sum() == 0
    assert_frame_equal(windows_of(committed), expected, rel_tol=1e-9)
    # The aborted outputs are in the log, hidden from read_committed readers only.
    everything = bars(bootstrap, out, isolation_level="read_uncommitted")
    assert everything.height > committed.height


def test_state_is_restored_across_transaction_markers_and_a_compacted_state_topic(apache_kafka):
    bootstrap = apache_kafka.bootstrap
    topic = fresh(bootstrap)
    # The state topic compacts within seconds (the active segment rolls every 200 ms).
    state = fresh(
        bootstrap,
        **{
            "cleanup.policy": "compact",
            "segment.ms": 200,
            "min.cleanable.dirty.ratio": 0.01,
            "min.compaction.lag.ms": 0,
            "delete.retention.ms": 100,
        },
    )
    ticks = make_ticks(n_per_symbol=300)
    third = len(ticks) // 3
    out, group = f"{topic}-bars", f"g-{uuid.uuid4().hex[:8]}"
    options = dict(
        window="1m",
        checkpoint_interval=0.1,
        exactly_once=True,
        outputs=ss.Outputs(windows=out, state=state),
        **SESSION,
    )
    for part in (ticks[:third], ticks[third : 2 * third]):
        produce(bootstrap, topic, part)
        # Many small checkpoints, each a transaction: the state topic is full of markers
        # and of superseded checkpoints for the cleaner to remove.
        job = ss.Analytics(bootstrap, topic, group, idle_timeout=3600, **options)
        assert job.run(limit=len(part)).consumed == len(part)

    # Wait for the cleaner to remove superseded checkpoints. The active segment is never
    # cleaned: later appends to each partition (unrelated tombstones, which restores pass
    # by) roll it.
    def checkpoints():
        held = ss.read_topic(bootstrap, state, decode=False, isolation_level="read_uncommitted")
        return held.filter(pl.col("key") != "compaction-nudge").height

    before = checkpoints()
    nudge = CkProducer({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 60
    while checkpoints() >= before:
        assert time.monotonic() < deadline, "the state topic was not compacted"
        for partition in range(4):
            nudge.produce(state, None, key=b"compaction-nudge", partition=partition)
        nudge.flush(10)
        time.sleep(0.5)
    produce(bootstrap, topic, ticks[2 * third :])
    last = ss.Analytics(bootstrap, topic, group, idle_timeout=0.5, **options)
    status = last.run(stop_at_end=True)
    assert status.errors == 0 and status.notes == [], status
    got = bars(bootstrap, out)
    assert got.select("symbol", "window_start").is_duplicated().sum() == 0
    assert_frame_equal(
        windows_of(got), expected_windows(ticks).sort("symbol", "window_start"), rel_tol=1e-9
    )


def test_a_checkpoint_whose_chunks_are_refused_leaves_the_previous_one_usable(apache_kafka):
    bootstrap = apache_kafka.bootstrap
    topic = fresh(bootstrap)
    # The state topic takes batches of up to 5 kB (compressed): a small state goes in one
    # message; a large one is cut in 512 KiB chunks, which the broker refuses.
    state = fresh(bootstrap, **{"max.message.bytes": 5000})
    group = f"g-{uuid.uuid4().hex[:8]}"
    options = dict(
        window="1m", idle_timeout=3600, outputs=ss.Outputs(state=state), checkpoint_interval=0.2
    )
    ticks = make_ticks(n_per_symbol=50)
    produce(bootstrap, topic, ticks)
    first = ss.Analytics(bootstrap, topic, group, **options).run(limit=len(ticks))
    assert first.checkpoints > 0 and first.errors == 0, first
    # Thousands of symbols: the next checkpoint needs chunks.
    many = [
        {"Index": f"S{i:05d}", "Date": "2021-03-01 09:40:00.000000", "Close": 1.0, "Volume": 1}
        for i in range(20_000)
    ]
    produce(bootstrap, topic, many)
    second = ss.Analytics(bootstrap, topic, group, **options)
    failed = None
    try:
        second.run(limit=len(many))
    except ss.StockstreamError as e:
        failed = e
    assert failed is not None and "not delivered" in str(failed), failed
    # The previous checkpoint is whole: a restart restores it (its windows still open) and
    # reads on from its offsets.
    third = ss.Analytics(bootstrap, topic, group, **options)
    restored = third.run(limit=1)
    assert restored.errors == 0 and restored.notes == [], restored
    # Each restored window is still open or closed by the new tick; the tick opened one.
    assert restored.windows + restored.open_windows == first.open_windows + 1, (first, restored)


def test_the_consumer_group_protocol_of_kip_848_shares_partitions(apache_kafka, tmp_path):
    bootstrap = apache_kafka.bootstrap
    topic = fresh(bootstrap)
    group = f"g-{uuid.uuid4().hex[:8]}"
    options = dict(group_protocol="consumer", roll=ss.RollPolicy(records=500, idle=0.5))
    sinks = [ss.LakeSink(bootstrap, topic, group, str(tmp_path / "lake"), **options) for _ in "ab"]
    for s in sinks:
        s.start()
    try:
        deadline = time.monotonic() + 60
        while not all(held := [set(s.status().assigned) for s in sinks]):
            assert time.monotonic() < deadline, [s.status() for s in sinks]
            time.sleep(0.1)
        # The broker split the partitions between the two members.
        assert not held[0] & held[1] and held[0] | held[1] == {0, 1, 2, 3}, held
        n = 6000
        ss.Producer(bootstrap, topic).send(ss.TickSource.synthetic(12, seed=3), limit=n)
        while sum(s.status().written for s in sinks) < n:
            assert time.monotonic() < deadline + 60, [s.status() for s in sinks]
            time.sleep(0.1)
    finally:
        statuses = [s.stop() for s in sinks]
    assert sum(s.written for s in statuses) == n and all(s.written for s in statuses), statuses
    db = ss.Lake(str(tmp_path / "lake"))
    assert db.sql(f"SELECT count(*) AS n FROM {topic.replace('-', '_')}")["n"][0] == n
