"""Streaming analytics throughput: a 1-minute tumbling OHLC + VWAP per symbol and a 20-tick
SMA, on one embedded broker, versus Quix Streams and a plain Python consumer loop.

The same topic of synthetic ticks (the tutorial's record shape, one tick per symbol per
second of event time, keyed by symbol) is read by each contender in its own process with
its own consumer group. Each one does the same work: event time from the ``Date`` field,
per-symbol 1-minute windows with open/high/low/close/volume/VWAP/count written as JSON to a
windows topic when they close, and every tick with its 20-tick SMA written to an indicators
topic. Rates count from the first message processed to the last output delivered, so
consumer-group joins do not count.

- stockstream: ``Analytics(window="1m", indicators=["sma_20"], outputs=Outputs(windows=…,
  indicators=…))``, release build, with its checkpoints (state topic) on.
- Quix Streams: ``tumbling_window(1 min).agg(First, Max, Min, Last, Sum, Count).final()``
  and a stateful ``apply`` for the SMA. Its changelog topics are off (the embedded broker's
  admin API cannot create them), which spares it the state replication stockstream does,
  and its topic-config lookup is answered from metadata (see ``describe_from_metadata``).
- Python loop: confluent-kafka batches, ``json.loads``, dicts and deques, confluent-kafka
  producer; the same window-closing rule as stockstream (a window closes when its
  partition's latest event time reaches its end).

Usage: python benches/analytics.py [--rows 1000000] [--symbols 100]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from datetime import datetime, timedelta, timezone

import broker

# Enough that the embedded broker's ~5 MiB-per-partition retention drops nothing (checked).
PARTITIONS = 32
# Every contender's output producer compresses, as stockstream's does: it keeps 1M indicator
# records within that retention, and costs each the same.
PRODUCER = {"compression.type": "zstd", "linger.ms": "20"}


def run_stockstream(a):
    import stockstream as ss

    job = ss.Analytics(
        a.bootstrap, a.topic, a.group, window="1m", indicators=["sma_20"],
        outputs=ss.Outputs(windows=a.windows, indicators=a.indicators), keep=0,
    )  # fmt: skip
    job.start(limit=a.rows)
    while job.status().consumed == 0 and job.running:
        time.sleep(0.001)
    began = time.perf_counter()
    job.wait()  # ends with a checkpoint: every output delivered
    elapsed = time.perf_counter() - began
    s = job.status()
    assert s.ticks == a.rows and s.rejected == 0, s
    return {"records": a.rows, "seconds": elapsed, "windows": s.windows}


def event_ms(date: str) -> int:
    return int(datetime.fromisoformat(date).replace(tzinfo=timezone.utc).timestamp() * 1000)


def describe_from_metadata(admin, topic_names, timeout=30):
    """Quix asks for topic configs (DescribeConfigs), which the embedded broker does not
    implement; answer with partition and replica counts from metadata instead."""
    from quixstreams.models.topics.topic import TopicConfig

    topics = admin.list_topics(timeout=timeout)
    return {
        name: TopicConfig(
            num_partitions=len(topics[name].partitions),
            replication_factor=len(topics[name].partitions[0].replicas),
            # Unbounded, as the broker's own retention is its ~5 MiB per partition.
            extra_config={"retention.ms": "-1", "retention.bytes": "-1"},
        )
        if name in topics
        else None
        for name in topic_names
    }


def run_quix(a):
    import logging

    from quixstreams import Application
    from quixstreams.dataframe.windows.aggregations import Count, First, Last, Max, Min, Sum
    from quixstreams.models.topics.admin import TopicAdmin

    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    TopicAdmin.inspect_topics = describe_from_metadata
    app = Application(
        broker_address=a.bootstrap, consumer_group=a.group, auto_offset_reset="earliest",
        use_changelog_topics=False, auto_create_topics=False, loglevel="WARNING",
        state_dir=tempfile.mkdtemp(prefix="quix-state-"), producer_extra_config=PRODUCER,
        on_message_processed=lambda topic, partition, offset: counted(),
    )  # fmt: skip

    def timestamp(value, headers, timestamp, timestamp_type):
        return event_ms(value["Date"])

    ticks = app.topic(a.topic, value_deserializer="json", timestamp_extractor=timestamp)
    sdf = app.dataframe(ticks)
    sdf["pv"] = sdf["Close"] * sdf["Volume"]

    def sma(value, state):
        prices = state.get("prices", [])
        prices.append(value["Close"])
        if len(prices) > 20:
            prices.pop(0)
        state.set("prices", prices)
        return {
            "symbol": value["Index"],
            "time": value["Date"],
            "price": value["Close"],
            "sma_20": sum(prices) / 20 if len(prices) == 20 else None,
        }

    sdf.apply(sma, stateful=True).to_topic(app.topic(a.indicators, value_serializer="json"))
    windows = sdf.tumbling_window(timedelta(minutes=1)).agg(
        open=First("Close"), high=Max("Close"), low=Min("Close"), close=Last("Close"),
        volume=Sum("Volume"), pv=Sum("pv"), count=Count(),
    )  # fmt: skip
    windows = windows.final().apply(
        lambda w: {**w, "vwap": w["pv"] / w["volume"] if w["volume"] else None}
    )
    windows.update(lambda w: closed.append(1)).to_topic(
        app.topic(a.windows, value_serializer="json")
    )
    seen = [0, 0.0]
    closed = []

    def counted():
        seen[0] += 1
        if seen[0] == 1:
            seen[1] = time.perf_counter()
        if seen[0] == a.rows:
            app.stop()

    app.run()  # flushes the producer on stop
    elapsed = time.perf_counter() - seen[1]
    assert seen[0] == a.rows, seen
    return {"records": a.rows, "seconds": elapsed, "windows": len(closed)}


def run_python(a):
    from confluent_kafka import Consumer, Producer

    consumer = Consumer({
        "bootstrap.servers": a.bootstrap, "group.id": a.group,
        "auto.offset.reset": "earliest", "enable.auto.commit": True,
    })  # fmt: skip
    producer = Producer({"bootstrap.servers": a.bootstrap, **PRODUCER})
    consumer.subscribe([a.topic])
    minute = 60_000
    prices = {}  # symbol -> deque of the last 20 prices
    bars = {}  # partition -> {symbol: bar}
    latest = {}  # partition -> latest event time
    n = windows = 0
    began = None
    while n < a.rows:
        for m in consumer.consume(num_messages=1000, timeout=1.0):
            if m.error():
                continue
            if began is None:
                began = time.perf_counter()
            n += 1
            tick = json.loads(m.value())
            symbol, price, volume = tick["Index"], tick["Close"], tick["Volume"]
            t = event_ms(tick["Date"])
            part = m.partition()
            if t > latest.get(part, t - 1):
                latest[part] = t
                open_bars = bars.setdefault(part, {})
                for s in [s for s, b in open_bars.items() if b["start"] + minute <= t]:
                    b = open_bars.pop(s)
                    b["vwap"] = b["pv"] / b["volume"] if b["volume"] else None
                    producer.produce(a.windows, json.dumps({"symbol": s, **b}), key=s)
                    windows += 1
            start = t - t % minute
            b = bars.setdefault(part, {}).get(symbol)
            if b is None:
                bars[part][symbol] = b = {"start": start, "open": price, "high": price,
                                          "low": price, "close": price, "volume": 0.0,
                                          "pv": 0.0, "count": 0}  # fmt: skip
            b["high"] = max(b["high"], price)
            b["low"] = min(b["low"], price)
            b["close"] = price
            b["volume"] += volume
            b["pv"] += price * volume
            b["count"] += 1
            window = prices.setdefault(symbol, deque(maxlen=20))
            window.append(price)
            record = {"symbol": symbol, "time": tick["Date"], "price": price,
                      "sma_20": sum(window) / 20 if len(window) == 20 else None}  # fmt: skip
            while True:
                try:
                    producer.produce(a.indicators, json.dumps(record), key=symbol)
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
    producer.flush()
    elapsed = time.perf_counter() - began
    consumer.close()
    return {"records": n, "seconds": elapsed, "windows": windows}


CONTENDERS = {"stockstream": run_stockstream, "quix": run_quix, "python": run_python}


def child(argv):
    p = argparse.ArgumentParser()
    for name in ["contender", "bootstrap", "topic", "group", "windows", "indicators"]:
        p.add_argument(f"--{name}")
    p.add_argument("--rows", type=int)
    a = p.parse_args(argv)
    print(json.dumps(CONTENDERS[a.contender](a)), flush=True)


def measure(name, args):
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, check=True
    ).stdout
    r = json.loads(out.splitlines()[-1])
    r["rate"] = r["records"] / r["seconds"]
    print(
        f"{name:14s} {r['records']:>9,} ticks  {r['seconds']:7.2f} s  {r['rate']:>9,.0f} ticks/s"
        f"  {r['windows']:>7,} windows closed",
        flush=True,
    )
    return r


def main():
    p = broker.child_or_parser(__doc__, child, rows=1_000_000)
    p.add_argument("--symbols", type=int, default=100)
    p.add_argument("--only", choices=sorted(CONTENDERS), action="append")
    a = p.parse_args()

    from producer import held

    import stockstream as ss

    topic = f"ticks-{uuid.uuid4().hex[:6]}"
    print(broker.describe(a.broker), flush=True)
    with broker.open_broker(a.broker, PARTITIONS, [topic]) as kafka:
        b = kafka.bootstrap_servers
        source = ss.TickSource.synthetic(a.symbols, seed=1, start="2021-01-04", interval=1.0)
        report = ss.Producer(b, topic).send(source, limit=a.rows)
        n = held(b, topic)
        assert n == report.delivered == a.rows, (n, report.delivered)
        print(f"topic {topic!r}: {n:,} ticks of {a.symbols} symbols, {PARTITIONS} partitions\n")
        from sink import kcat_count

        kcat = kcat_count(b, topic, n)
        results = {}
        for name in a.only or ["stockstream", "python", "quix"]:
            tag = uuid.uuid4().hex[:8]
            windows, indicators = f"bars-{tag}", f"sma-{tag}"
            for t in (windows, indicators):
                kafka.create_topic(t, PARTITIONS)
            results[name] = measure(
                name,
                ["--contender", name, "--bootstrap", b, "--topic", topic, "--group",
                 f"bench-{tag}", "--windows", windows, "--indicators", indicators,
                 "--rows", str(n)],
            )  # fmt: skip
            produced = held(b, indicators)
            assert produced == n, f"{name}: {produced:,} indicator records for {n:,} ticks"
        if "stockstream" in results:
            base = results["stockstream"]["rate"]
            for name, r in results.items():
                if name != "stockstream":
                    print(f"stockstream / {name}: {base / r['rate']:.1f}×")
            if kcat:
                print(f"stockstream / kcat's consume rate: {base / kcat:.2f}×")
            broker.save(
                a.json,
                **{f"{k} ticks/s": r["rate"] for k, r in results.items()},
                **(
                    {"kcat consume rec/s": kcat, "stockstream vs kcat consume": base / kcat}
                    if kcat
                    else {}
                ),
                **{
                    f"stockstream vs {k}": base / r["rate"]
                    for k, r in results.items()
                    if k != "stockstream"
                },
            )


if __name__ == "__main__":
    main()
