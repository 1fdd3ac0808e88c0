"""Real-time analytics against real brokers, checked with an independent Polars computation.

Every expected value below comes from Polars (``group_by_dynamic``, ``rolling_*``,
``ewm_mean*``) over the same ticks the test produced, never from stockstream itself.
"""

import json
import random
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta

import polars as pl
import pytest
from confluent_kafka import Producer as CkProducer
from polars.testing import assert_frame_equal

import stockstream as ss
from conftest import lake_sink, random_walk

SYMBOLS = ["NYA", "IXIC", "N225"]
BASE = datetime(2021, 3, 1, 9, 30)
FORMAT = "%Y-%m-%d %H:%M:%S"


def tick(symbol, t, price, rng):
    """One tick record as the producer sends it (a random volume)."""
    return {
        "Index": symbol,
        "Date": t.strftime(FORMAT) + f".{t.microsecond:06d}",
        "Close": round(price, 4),
        "Volume": rng.randint(1, 1000),
    }


def make_ticks(n_per_symbol=300, step=7, seed=1):
    """Ticks of three symbols every ``step`` seconds (jittered, distinct times), time-sorted."""
    ticks = []
    for symbol, t, price, rng in random_walk(SYMBOLS, n_per_symbol, step, seed, BASE):
        ticks.append(tick(symbol, t + timedelta(seconds=rng.random() * 0.5), price, rng))
    ticks.sort(key=lambda r: r["Date"])
    return ticks


def shuffle_in_blocks(ticks, block, seed=2):
    """Out of order, but never by more than ``block`` neighbours."""
    rng = random.Random(seed)
    out = []
    for i in range(0, len(ticks), block):
        chunk = ticks[i : i + block]
        rng.shuffle(chunk)
        out.extend(chunk)
    return out


def produce(bootstrap, topic, records):
    """Each record as JSON keyed by symbol (bytes are sent as they are), in order.

    Idempotent, as stockstream's producer is: without it librdkafka may write a retried
    batch after a later one (a just-created topic's first request can be refused while its
    leader is elected), and ticks would reach the job out of event-time order.
    """
    p = CkProducer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
        }
    )
    for r in records:
        value = r if isinstance(r, bytes) else json.dumps(r).encode()
        key = b"BAD" if isinstance(r, bytes) else r["Index"].encode()
        p.produce(topic, value, key=key)
    assert p.flush(30) == 0


def frame_of(ticks):
    return pl.DataFrame(ticks).with_columns(
        pl.col("Date").str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us"),
        pl.col("Close").cast(pl.Float64),
        pl.col("Volume").cast(pl.Float64),
    )


def expected_windows(ticks, every="1m", period=None):
    df = frame_of(ticks).sort("Index", "Date")
    bars = (
        df.group_by_dynamic(
            "Date", every=every, period=period or every, group_by="Index", closed="left"
        )
        .agg(
            open=pl.col("Close").first(),
            high=pl.col("Close").max(),
            low=pl.col("Close").min(),
            close=pl.col("Close").last(),
            volume=pl.col("Volume").sum(),
            vwap=(pl.col("Close") * pl.col("Volume")).sum() / pl.col("Volume").sum(),
            count=pl.len().cast(pl.Int64),
        )
        .rename({"Index": "symbol", "Date": "window_start"})
    )
    return bars.with_columns(change_pct=(pl.col("close") / pl.col("open") - 1) * 100)


def windows_of(frame):
    return frame.drop("window_end").sort("symbol", "window_start")


def analytics(bootstrap, topic, **options):
    options.setdefault("idle_timeout", 0.5)
    options.setdefault("keep", 100_000)
    return ss.Analytics(bootstrap, topic, f"a-{uuid.uuid4().hex[:8]}", **options)


@pytest.fixture
def fresh_topic(broker):
    name = f"an-{uuid.uuid4().hex[:8]}"
    broker.create_topic(name, 4)
    return name


def test_out_of_order_windows_and_indicators_match_polars(kafka, topic):
    ticks = make_ticks()
    produce(kafka.bootstrap_servers, topic, shuffle_in_blocks(ticks, 6))
    a = analytics(
        kafka.bootstrap_servers,
        topic,
        window="1m",
        allowed_lateness="30s",
        indicators=["sma_20", "ema_10", "sma_5m", "ema_2m", "volatility_20"],
    )
    status = a.run(stop_at_end=True)
    assert (status.ticks, status.late, status.rejected) == (len(ticks), 0, 0)

    got = windows_of(a.windows())
    assert_frame_equal(got, expected_windows(ticks).sort("symbol", "window_start"), rel_tol=1e-9)
    assert status.windows == got.height

    df = frame_of(ticks).sort("Index", "Date")
    price = pl.col("Close")
    want = df.select(
        symbol=pl.col("Index"),
        time=pl.col("Date"),
        price=price,
        sma_20=price.rolling_mean(20).over("Index"),
        ema_10=price.ewm_mean(span=10, adjust=False).over("Index"),
        sma_5m=price.rolling_mean_by("Date", "5m").over("Index"),
        ema_2m=price.ewm_mean_by("Date", half_life="2m").over("Index"),
        volatility_20=price.pct_change().rolling_std(20).over("Index"),
    )
    got = a.indicators().sort("symbol", "time")
    assert_frame_equal(got, want, rel_tol=1e-9)


def test_hopping_windows_match_polars(kafka, topic):
    ticks = make_ticks(n_per_symbol=120)
    produce(kafka.bootstrap_servers, topic, ticks)
    a = analytics(kafka.bootstrap_servers, topic, window="1m", slide="20s")
    a.run(stop_at_end=True)
    got = windows_of(a.windows())
    want = expected_windows(ticks, every="20s", period="1m")
    # Polars starts at the first tick's 20 s boundary; stockstream also emits the two
    # windows that began before it and already hold that tick.
    first = frame_of(ticks).group_by("Index").agg(pl.col("Date").min().dt.truncate("20s"))
    got = (
        got.join(first, left_on="symbol", right_on="Index")
        .filter(pl.col("window_start") >= pl.col("Date"))
        .drop("Date")
    )
    assert got.height > 0
    assert_frame_equal(got, want.sort("symbol", "window_start"), rel_tol=1e-9)


def session_ticks(n_per_symbol=200, seed=5):
    """Ticks of three symbols at irregular times: mostly close together, now and then
    after a pause of several minutes, time-sorted."""
    rng = random.Random(seed)
    ticks = []
    for k, symbol in enumerate(SYMBOLS):
        t, price = BASE + timedelta(seconds=k), 100.0 * (k + 1)
        for _ in range(n_per_symbol):
            pause = rng.uniform(1, 100) if rng.random() < 0.8 else rng.uniform(150, 400)
            t += timedelta(seconds=pause)
            price *= 1 + rng.gauss(0, 0.004)
            ticks.append(tick(symbol, t, price, rng))
    ticks.sort(key=lambda r: r["Date"])
    return ticks


def test_session_windows_on_shuffled_ticks_match_polars(kafka, topic):
    ticks = session_ticks()
    produce(kafka.bootstrap_servers, topic, shuffle_in_blocks(ticks, 8))
    a = analytics(kafka.bootstrap_servers, topic, window=ss.Session("3m"), allowed_lateness="1h")
    status = a.run(stop_at_end=True)
    assert (status.ticks, status.late, status.rejected) == (len(ticks), 0, 0)

    gap = timedelta(minutes=3)
    price = pl.col("Close")
    want = (
        frame_of(ticks)
        .sort("Index", "Date")
        .with_columns(
            session=(pl.col("Date").diff() >= gap).fill_null(False).cum_sum().over("Index")
        )
        .group_by("Index", "session")
        .agg(
            window_start=pl.col("Date").first(),
            window_end=pl.col("Date").last() + gap,
            open=price.first(),
            high=price.max(),
            low=price.min(),
            close=price.last(),
            volume=pl.col("Volume").sum(),
            vwap=(price * pl.col("Volume")).sum() / pl.col("Volume").sum(),
            count=pl.len().cast(pl.Int64),
        )
        .rename({"Index": "symbol"})
        .with_columns(change_pct=(pl.col("close") / pl.col("open") - 1) * 100)
        .drop("session")
        .sort("symbol", "window_start")
    )
    got = a.windows().sort("symbol", "window_start")
    assert want.height > 60, "pauses make many sessions"
    assert_frame_equal(got, want.select(got.columns).cast(got.schema), rel_tol=1e-9)
    assert status.windows == want.height


def test_a_session_window_takes_no_slide(kafka, topic):
    with pytest.raises(ss.ConfigError, match="session window has no slide"):
        ss.Analytics(kafka.bootstrap_servers, topic, window=ss.Session("5m"), slide="1m")
    with pytest.raises(ss.ConfigError, match="gap must be a positive"):
        ss.Session(0)


def test_bounded_runs_return_this_runs_outputs_as_frames(kafka, topic):
    ticks = make_ticks(n_per_symbol=100)
    produce(kafka.bootstrap_servers, topic, ticks)
    a = analytics(kafka.bootstrap_servers, topic, window="1m", indicators=["sma_5"])
    first = a.run(limit=60, collect=True)
    assert set(first) == {"windows", "indicators", "alerts", "late"}
    assert first["indicators"].height == 60
    rest = a.run(stop_at_end=True, collect=True)
    assert rest["indicators"].height == len(ticks) - 60
    both = pl.concat([first["windows"], rest["windows"]])
    assert_frame_equal(
        windows_of(both), expected_windows(ticks).sort("symbol", "window_start"), rel_tol=1e-9
    )


def test_a_run_bounded_by_duration_returns_within_a_second_of_it(kafka, topic, tmp_path):
    quiet = analytics(kafka.bootstrap_servers, topic, window="1m")
    sink = ss.LakeSink(kafka.bootstrap_servers, topic, f"s-{uuid.uuid4().hex[:8]}", str(tmp_path))
    for job in (quiet, sink):
        began = time.monotonic()
        job.run(duration=2)
        assert time.monotonic() - began < 3, job


def test_late_ticks_go_to_the_side_output_and_change_nothing(kafka, topic):
    ticks = make_ticks(n_per_symbol=100)
    # Ten minutes behind the end of the stream: far beyond the 10 s allowed lateness.
    late = [dict(t, Close=1e9) for t in ticks[:5]]
    late_topic = f"{topic}-late"
    produce(kafka.bootstrap_servers, topic, ticks + late)
    a = analytics(
        kafka.bootstrap_servers,
        topic,
        window="1m",
        allowed_lateness="10s",
        outputs=ss.Outputs(late=late_topic),
    )
    status = a.run(stop_at_end=True)
    assert status.late == 5
    assert status.ticks == len(ticks) + 5
    assert_frame_equal(
        windows_of(a.windows()), expected_windows(ticks).sort("symbol", "window_start")
    )
    side = a.late().sort("time")
    assert side["price"].to_list() == [1e9] * 5
    assert side["time"].to_list() == frame_of(late).sort("Date")["Date"].to_list()
    assert (side["time"] < side["watermark"]).all()
    held = ss.read_topic(kafka.bootstrap_servers, late_topic, decode=False)
    records = [json.loads(v) for v in held["value"]]
    assert sorted(r["offset"] for r in records) == sorted(side["offset"].to_list())


def test_a_run_to_the_end_closes_the_last_windows_without_waiting_idle_timeout(kafka, topic):
    ticks = [t for t in make_ticks(n_per_symbol=8) if t["Date"] < "2021-03-01 09:31"]
    produce(kafka.bootstrap_servers, topic, ticks)
    job = analytics(kafka.bootstrap_servers, topic, window="1m", idle_timeout=60)
    began = time.monotonic()
    status = job.run(stop_at_end=True)
    # The end of the input closes every window: no wait for a minute of quiet.
    assert time.monotonic() - began < 30
    assert (status.open_windows, status.errors) == (0, 0), status
    assert_frame_equal(
        windows_of(job.windows()), expected_windows(ticks).sort("symbol", "window_start")
    )


def test_idle_timeout_emits_the_last_window_of_a_quiet_stream(kafka, topic):
    # One minute of ticks, then nothing: no later tick will ever move the watermark on.
    ticks = [t for t in make_ticks(n_per_symbol=8) if t["Date"] < "2021-03-01 09:31"]
    produce(kafka.bootstrap_servers, topic, ticks)
    patient = analytics(kafka.bootstrap_servers, topic, window="1m", idle_timeout=60)
    patient.start()
    time.sleep(4)
    assert patient.status().open_windows == len(SYMBOLS)
    assert patient.windows().height == 0
    patient.stop()

    quick = analytics(kafka.bootstrap_servers, topic, window="1m", idle_timeout=1)
    quick.start()
    deadline = time.monotonic() + 20
    while quick.windows().height < len(SYMBOLS) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert quick.running, "the windows came from the idle timeout, not from stopping"
    quick.stop()
    assert_frame_equal(
        windows_of(quick.windows()), expected_windows(ticks).sort("symbol", "window_start")
    )


def test_restart_resumes_open_windows_without_repeats(broker, fresh_topic):
    ticks = make_ticks(n_per_symbol=200)
    produce(broker.bootstrap_servers, fresh_topic, ticks)
    out = f"{fresh_topic}-bars"
    group = f"g-{uuid.uuid4().hex[:8]}"
    options = dict(
        window="1m", indicators=["sma_5"], outputs=ss.Outputs(windows=out), idle_timeout=0.5
    )

    first = ss.Analytics(broker.bootstrap_servers, fresh_topic, group, **options)
    s1 = first.run(limit=len(ticks) // 2)
    assert s1.consumed == len(ticks) // 2 and s1.open_windows > 0
    del first
    second = ss.Analytics(broker.bootstrap_servers, fresh_topic, group, **options)
    s2 = second.run(stop_at_end=True)
    # The second member starts where the first checkpointed, with its open windows.
    assert s1.consumed + s2.consumed == len(ticks)
    assert s1.windows > 0 and s2.windows > 0

    landed = ss.read_topic(broker.bootstrap_servers, out, decode=False)
    bars = pl.DataFrame([json.loads(v) for v in landed["value"]]).with_columns(
        pl.col("window_start").str.to_datetime(time_unit="us"),
        pl.col("count").cast(pl.Int64),
    )
    assert landed["key"].to_list() == bars["symbol"].to_list()
    assert bars.height == s1.windows + s2.windows
    assert_frame_equal(
        windows_of(bars), expected_windows(ticks).sort("symbol", "window_start"), rel_tol=1e-9
    )


def test_a_rebalance_hands_state_over_and_emits_nothing_twice(broker, fresh_topic):
    ticks = make_ticks(n_per_symbol=200)
    half = len(ticks) // 2
    produce(broker.bootstrap_servers, fresh_topic, ticks[:half])
    out, group = f"{fresh_topic}-bars", f"g-{uuid.uuid4().hex[:8]}"
    # No timed checkpoint and no idle flush during the test: only the revoke saves state,
    # and windows close only as the ticks move on.
    options = dict(
        window="1m",
        outputs=ss.Outputs(windows=out),
        checkpoint_interval=3600,
        idle_timeout=3600,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    first = ss.Analytics(broker.bootstrap_servers, fresh_topic, group, **options)
    first.start()
    second = None
    try:
        deadline = time.monotonic() + 60
        while first.status().ticks < half and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.status().ticks == half
        # A second member joins: the first gives up two partitions, with their state.
        second = ss.Analytics(broker.bootstrap_servers, fresh_topic, group, **options)
        second.start()
        while time.monotonic() < deadline and not (
            first.status().assigned and second.status().assigned
        ):
            time.sleep(0.1)
        held = [set(a.status().assigned) for a in (first, second)]
        assert held[0] | held[1] == {0, 1, 2, 3} and not held[0] & held[1], held
        produce(broker.bootstrap_servers, fresh_topic, ticks[half:])
        while time.monotonic() < deadline and (
            first.status().ticks + second.status().ticks < len(ticks)
        ):
            time.sleep(0.1)
    finally:
        s1 = first.stop()
        s2 = second.stop() if second else None
    # Each tick was taken once: the new owner started from the handed-over state.
    assert s1.ticks + s2.ticks == len(ticks), (s1, s2)
    assert s1.checkpoints >= 1 and s2.windows > 0
    # A last member closes the windows still open.
    last = ss.Analytics(
        broker.bootstrap_servers, fresh_topic, group, **{**options, "idle_timeout": 0.5}
    )
    s3 = last.run(stop_at_end=True)
    bars = pl.DataFrame(
        [json.loads(v) for v in ss.read_topic(broker.bootstrap_servers, out, decode=False)["value"]]
    ).with_columns(
        pl.col("window_start").str.to_datetime(time_unit="us"), pl.col("count").cast(pl.Int64)
    )
    assert bars.select("symbol", "window_start").is_duplicated().sum() == 0
    expected = expected_windows(ticks).sort("symbol", "window_start")
    missing = expected.join(bars, on=["symbol", "window_start"], how="anti")
    members = [
        (s.ticks, s.late, s.windows, s.checkpoints, s.errors, s.last_error, s.notes)
        for s in (s1, s2, s3)
    ]
    assert missing.is_empty(), (missing.select("symbol", "window_start", "count"), members)
    assert_frame_equal(windows_of(bars), expected, rel_tol=1e-9)


def test_exactly_once_is_refused_without_transactions_saying_what_runs_instead(kafka, topic):
    # The embedded broker accepts transaction requests without keeping their promise
    # (Apache Kafka keeps it: test_analytics_kafka.py).
    started = time.monotonic()
    with pytest.raises(ss.ConfigError, match="exactly_once=True") as refused:
        ss.Analytics(kafka.bootstrap_servers, topic, "g-eos", exactly_once=True, connect_timeout=5)
    assert "at-least-once" in str(refused.value)
    assert time.monotonic() - started < 30
    # Without it the same job runs.
    ss.Analytics(kafka.bootstrap_servers, topic, "g-eos", window="1m").run(limit=0)


def test_a_tick_from_the_far_future_is_rejected_and_moves_no_watermark(kafka, topic):
    ticks = make_ticks(n_per_symbol=40)
    half = len(ticks) // 2
    poison = {**ticks[half], "Date": "2999-12-31 00:00:00.000000"}
    produce(kafka.bootstrap_servers, topic, [*ticks[:half], poison, *ticks[half:]])
    a = analytics(kafka.bootstrap_servers, topic, window="1m")
    status = a.run(stop_at_end=True)
    assert (status.ticks, status.late, status.rejected) == (len(ticks), 0, 1)
    assert "2999-12-31" in status.last_rejected and "max_future" in status.last_rejected
    assert all(wm < "2999" for wm in status.watermarks.values())
    # Every window closed as if the poison tick had never come.
    got = windows_of(a.windows())
    assert_frame_equal(got, expected_windows(ticks).sort("symbol", "window_start"), rel_tol=1e-9)


def test_the_state_of_50000_symbols_checkpoints_in_chunks_and_restores(kafka):
    topic = f"many-{uuid.uuid4().hex[:8]}"
    # Four partitions: the embedded broker keeps ~5 MiB per partition.
    kafka.create_topic(topic, 4)
    symbols = [f"S{i:05d}" for i in range(50_000)]

    def send_minute(minute, price):
        ticks = [{"Index": s, "Date": minute, "Close": price, "Volume": 1} for s in symbols]
        produce(kafka.bootstrap_servers, topic, ticks)

    group = f"g-{uuid.uuid4().hex[:8]}"
    options = dict(window="1m", idle_timeout=3600, keep=10)
    send_minute("2021-03-01 09:30:10.000000", 1.0)
    first = ss.Analytics(kafka.bootstrap_servers, topic, group, **options)
    s1 = first.run(limit=len(symbols))
    # Every symbol has an open window: nothing emitted yet, all of it in the checkpoint.
    assert (s1.windows, s1.open_windows, s1.errors) == (0, len(symbols), 0), s1
    keys = ss.read_topic(kafka.bootstrap_servers, f"{group}-state", decode=False)["key"]
    assert keys.str.contains("~").sum() > 1, "the state was not chunked"
    del first
    send_minute("2021-03-01 09:31:10.000000", 2.0)
    second = ss.Analytics(kafka.bootstrap_servers, topic, group, **{**options, "idle_timeout": 1})
    s2 = second.run(stop_at_end=True)
    # Restored: the first minute's windows close with the second minute, then the second's.
    assert (s2.consumed, s2.windows, s2.errors) == (len(symbols), 2 * len(symbols), 0), s2


def test_a_restart_with_another_indicator_keeps_the_old_and_starts_the_new(kafka, topic):
    ticks = make_ticks(n_per_symbol=60)
    produce(kafka.bootstrap_servers, topic, ticks)
    group = f"g-{uuid.uuid4().hex[:8]}"
    options = dict(window="1m", idle_timeout=0.5, keep=100_000)
    first = ss.Analytics(kafka.bootstrap_servers, topic, group, indicators=["sma_5"], **options)
    first.run(limit=len(ticks) // 2)
    second = ss.Analytics(
        kafka.bootstrap_servers, topic, group, indicators=["sma_5", "ema_20"], **options
    )
    status = second.run(stop_at_end=True)
    assert any('indicators added ["ema_20"]' in w for w in status.notes), status.notes
    got = second.indicators().sort("symbol", "time")
    assert got.height > 0 and got.columns[-2:] == ["sma_5", "ema_20"]
    # sma_5 carries on from the restored state: equal to one computed over every tick.
    df = frame_of(ticks).sort("Index", "Date")
    want = df.select(
        symbol=pl.col("Index"),
        time=pl.col("Date"),
        sma_5=pl.col("Close").rolling_mean(5).over("Index"),
    )
    joined = got.join(want, on=["symbol", "time"], suffix="_want")
    assert joined.height == got.height
    assert_frame_equal(joined.select("sma_5"), joined.select(sma_5="sma_5_want"), rel_tol=1e-9)
    # ema_20 started with the second run: each symbol's first value is that tick's price.
    firsts = got.group_by("symbol").first()
    assert firsts["ema_20"].to_list() == firsts["price"].to_list()


def test_crash_loses_no_window_and_repeats_only_identical_ones(kafka, topic, tmp_path):
    ticks = make_ticks(n_per_symbol=400)
    produce(kafka.bootstrap_servers, topic, ticks)
    out, group = f"{topic}-bars", f"g-{uuid.uuid4().hex[:8]}"
    # Short sessions for both members: the crashed one's session is what the survivor
    # waits out before it gets the partitions.
    options = dict(
        window="1m",
        checkpoint_interval=0.2,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    # A process that dies mid-stream, at its 60th window (os._exit: no final checkpoint,
    # no clean leave; windows produced but not yet flushed are lost with it).
    script = tmp_path / "crash.py"
    script.write_text(
        "import os, stockstream as ss\n"
        "seen = []\n"
        "def die_at_60(kind, record):\n"
        "    seen.append(record)\n"
        "    if len(seen) == 60: os._exit(9)\n"
        f"a = ss.Analytics({kafka.bootstrap_servers!r}, {topic!r}, {group!r}, "
        f"callback=die_at_60, outputs=ss.Outputs(windows={out!r}), **{options!r})\n"
        "a.run()\n"
    )
    # The embedded broker lives in this process; the crashing member connects to it.
    proc = subprocess.run([sys.executable, str(script)], timeout=60)
    assert proc.returncode == 9
    survivor = ss.Analytics(
        kafka.bootstrap_servers,
        topic,
        group,
        idle_timeout=0.5,
        outputs=ss.Outputs(windows=out),
        **options,
    )
    survivor.run(stop_at_end=True)
    bars = pl.DataFrame(
        [json.loads(v) for v in ss.read_topic(kafka.bootstrap_servers, out, decode=False)["value"]]
    ).with_columns(
        pl.col("window_start").str.to_datetime(time_unit="us"), pl.col("count").cast(pl.Int64)
    )
    unique = bars.unique(maintain_order=True)
    # Repeats are whole, identical records, from after the last checkpoint only.
    assert unique.select("symbol", "window_start").is_duplicated().sum() == 0
    assert_frame_equal(
        windows_of(unique), expected_windows(ticks).sort("symbol", "window_start"), rel_tol=1e-9
    )


def test_alerts_match_an_independent_computation(kafka, topic):
    ticks = make_ticks(n_per_symbol=300)
    produce(kafka.bootstrap_servers, topic, ticks)
    rules = ["price crosses 200 for IXIC", "sma_5 crosses sma_20", "move 0.5%"]
    seen = []
    a = analytics(
        kafka.bootstrap_servers,
        topic,
        window="1m",
        alerts=rules,
        outputs=ss.Outputs(alerts=f"{topic}-alerts"),
        callback=lambda kind, record: seen.append((kind, record)),
    )
    a.run(stop_at_end=True)
    got = a.alerts()

    df = frame_of(ticks).sort("Index", "Date")
    side = lambda diff: (diff >= 0).cast(pl.Int8)  # noqa: E731
    flips = lambda d: d.filter(side(pl.col("d")).diff().over("Index").fill_null(0) != 0)  # noqa: E731
    price_cross = flips(df.filter(pl.col("Index") == "IXIC").with_columns(d=pl.col("Close") - 200))
    sma = df.with_columns(
        fast=pl.col("Close").rolling_mean(5).over("Index"),
        slow=pl.col("Close").rolling_mean(20).over("Index"),
    ).drop_nulls("slow")
    ma_cross = flips(sma.with_columns(d=pl.col("fast") - pl.col("slow")))
    bars = expected_windows(ticks)
    moves = bars.filter(pl.col("change_pct").abs() >= 0.5)

    def times(rule):
        return sorted(got.filter(pl.col("rule") == rule)["time"].to_list())

    assert price_cross.height > 0 and ma_cross.height > 0 and moves.height > 0
    assert times(rules[0]) == sorted(price_cross["Date"].to_list())
    assert times(rules[1]) == sorted(ma_cross["Date"].to_list())
    assert times(rules[2]) == sorted(
        moves.select(pl.col("window_start") + pl.duration(minutes=1))["window_start"].to_list()
    )
    # The callback saw every alert and window, as plain records.
    kinds = [k for k, _ in seen]
    assert kinds.count("alert") == got.height and kinds.count("window") == bars.height
    alert = next(r for k, r in seen if k == "alert")
    assert set(alert) == {"symbol", "rule", "time", "value", "direction"}


def test_bad_records_are_skipped_and_counted(kafka, topic):
    ticks = make_ticks(n_per_symbol=50)
    bad = [
        b"not json",
        json.dumps({"Index": "NYA", "Date": "2021-03-01 09:30:01", "Volume": 1}).encode(),
        json.dumps({"Index": "NYA", "Date": "soon", "Close": 1, "Volume": 1}).encode(),
        json.dumps(
            {"Index": "NYA", "Date": "2021-03-01 09:30:01", "Close": "1", "Volume": 1}
        ).encode(),
    ]
    produce(kafka.bootstrap_servers, topic, ticks[:10] + bad + ticks[10:])
    a = analytics(kafka.bootstrap_servers, topic, window="1m")
    status = a.run(stop_at_end=True)
    assert status.rejected == len(bad)
    assert status.ticks == len(ticks)
    assert f"{topic}[" in status.last_rejected and '"Close" is a string' in status.last_rejected
    assert_frame_equal(
        windows_of(a.windows()), expected_windows(ticks).sort("symbol", "window_start")
    )


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(window="1x"), "duration"),
        (dict(window="1m", slide="2m"), "slide"),
        (dict(indicators=["wma_3"]), "indicator"),
        (dict(alerts=["price above 3"]), "alert rule"),
        (dict(alerts=["move 2%"]), "needs a window"),
        (dict(callback=print, callback_kinds=["bars"]), "callback kind"),
    ],
)
def test_bad_options_are_config_errors(kafka, topic, options, message):
    with pytest.raises(ss.ConfigError, match=message):
        ss.Analytics(kafka.bootstrap_servers, topic, **options)


def test_missing_topic_and_unreachable_broker(kafka):
    with pytest.raises(ss.NotFoundError, match="does not exist"):
        ss.Analytics(kafka.bootstrap_servers, "no-such-topic", window="1m")
    with pytest.raises(ss.KafkaError, match="cannot reach Kafka"):
        ss.Analytics("127.0.0.1:1", "t", window="1m", connect_timeout=1)


def test_windows_topic_lands_in_the_lake_and_queries(kafka, topic, tmp_path):
    ticks = make_ticks(n_per_symbol=100)
    produce(kafka.bootstrap_servers, topic, ticks)
    bars_topic = f"{topic}-bars"
    a = analytics(
        kafka.bootstrap_servers, topic, window="1m", outputs=ss.Outputs(windows=bars_topic)
    )
    a.run(stop_at_end=True)
    lake = tmp_path / "lake"
    sink = lake_sink(
        kafka,
        bars_topic,
        lake,
        table="bars",
        schema=ss.TickSchema("symbol", "window_start"),
        columns={"open": "float", "close": "float", "volume": "float", "count": "int"},
        catalog="local",
    )
    sink.run(stop_at_end=True)
    got = ss.Lake(str(lake)).sql(
        "SELECT symbol, count(*) AS n, sum(volume) AS volume FROM bars"
        " GROUP BY symbol ORDER BY symbol"
    )
    want = (
        expected_windows(ticks)
        .group_by("symbol")
        .agg(n=pl.len().cast(got["n"].dtype), volume=pl.col("volume").sum())
        .sort("symbol")
    )
    assert_frame_equal(got, want)


def test_cli_prints_alerts_and_its_windows_land_with_the_sink(kafka, topic, tmp_path):
    ticks = make_ticks(n_per_symbol=100)
    produce(kafka.bootstrap_servers, topic, ticks)
    b, bars = kafka.bootstrap_servers, f"{topic}-bars"

    def cli(*args):
        out = subprocess.run(
            [sys.executable, "-m", "stockstream", *args, "-b", b, "-q"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    stdout = cli(
        "analyze", "-t", topic, "-g", f"cli-{uuid.uuid4().hex[:6]}", "--window", "1m",
        "--alert", "price crosses 200 for IXIC", "--windows-topic", bars,
        "--idle-timeout", "0.5", "--stop-at-end",
    )  # fmt: skip
    alerts = [line for line in stdout.splitlines() if "price crosses 200" in line]
    df = frame_of(ticks).filter(pl.col("Index") == "IXIC").sort("Date")
    crossings = ((df["Close"] >= 200).cast(pl.Int8).diff().fill_null(0) != 0).sum()
    assert len(alerts) == crossings > 0
    assert "AnalyticsStatus(state=stopped" in stdout

    cli(
        "sink", "lake", "-t", bars, "-g", f"cli-{uuid.uuid4().hex[:6]}", "--symbol-field",
        "symbol", "--time-field", "window_start", "--column", "count=int", "--catalog", "local",
        "--stop-at-end", "--flush-idle", "0.5",
    )  # fmt: skip
    table = bars.replace("-", "_")  # made Athena-safe by the catalog
    got = ss.Lake(str(tmp_path / "lake")).sql(f'SELECT sum("count") AS n FROM {table}')
    assert got["n"].item() == len(ticks)
