"""Producer throughput on one embedded broker, in one run.

Compares the tutorial's loop (pandas ``df.sample(1)`` + kafka-python), a tight
confluent-kafka loop over pre-serialized values, kcat reading pre-serialized lines, and
stockstream's replay and sample modes (which also parse the CSV and build the JSON).

Every contender writes its own topic with enough partitions that the embedded broker's
~5 MiB-per-partition retention drops nothing; the script checks start and end offsets
after each run and fails if any record is missing.

Usage: python benches/producer.py [--rows 1000000] [--tutorial-rows 3000]
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import broker

import stockstream as ss

PARTITIONS = 32
# Topic names unique to this run, so a long-lived broker can serve several runs.
RUN = uuid.uuid4().hex[:6]
SYMBOLS = 200
# The same durable, batched, compressed settings for every librdkafka-based contender.
COMMON = {
    "enable.idempotence": "true",
    "acks": "all",
    "compression.type": "zstd",
    "linger.ms": "20",
    "batch.size": "1000000",
    "batch.num.messages": "10000",
    "queue.buffering.max.messages": "1000000",
}


def held(bootstrap: str, topic: str) -> int:
    """Records the broker holds for `topic`; fails if retention dropped any."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-check"})
    total = 0
    for p in c.list_topics(topic, timeout=10).topics[topic].partitions:
        low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        assert low == 0, f"{topic}[{p}]: retention dropped {low} records"
        total += high
    c.close()
    return total


def tutorial_loop(bootstrap, topic, csv_path, n):
    import pandas as pd
    from kafka import KafkaProducer

    df = pd.read_csv(csv_path)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        api_version=(2, 0),
        value_serializer=lambda x: json.dumps(x).encode("utf-8"),
    )
    start = time.perf_counter()
    for _ in range(n):
        dict_stock = df.sample(1).to_dict(orient="records")[0]
        producer.send(topic, value=dict_stock)
    producer.flush()
    return n, time.perf_counter() - start


def confluent_loop(bootstrap, topic, values):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, **COMMON})
    start = time.perf_counter()
    for key, value in values:
        while True:
            try:
                p.produce(topic, value, key)
                break
            except BufferError:
                p.poll(0.001)
    remaining = p.flush(120)
    assert remaining == 0
    return len(values), time.perf_counter() - start


def kcat(bootstrap, topic, lines_path, n):
    args = ["kcat", "-P", "-b", bootstrap, "-t", topic, "-K", "\t"]
    for k, v in COMMON.items():
        args += ["-X", f"{k}={v}"]
    with open(lines_path, "rb") as stdin:
        start = time.perf_counter()
        subprocess.run(args, stdin=stdin, check=True)
    return n, time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--tutorial-rows", type=int, default=3000)
    ap.add_argument(
        "--lanes",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[2, 4],
        help="replay again with each of these lane counts (comma-separated; the plain "
        "replay row is the default, one lane)",
    )
    broker.add_option(ap)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="stockstream-bench-"))
    csv_path = tmp / "ticks.csv"
    frame = ss.synthetic_ticks(args.rows, SYMBOLS, seed=1, start="2000-01-03", interval=60.0)
    frame.write_csv(csv_path)
    values = [
        (k.encode(), json.dumps(row, separators=(",", ":")).encode())
        for k, row in zip(frame["Index"], frame.iter_rows(named=True))
    ]
    lines_path = tmp / "lines.tsv"
    with open(lines_path, "wb") as f:
        for k, v in values:
            f.write(k + b"\t" + v + b"\n")

    results, rates = [], {}
    print(broker.describe(args.broker), flush=True)
    with broker.open_broker(args.broker, PARTITIONS) as kafka:
        bs = kafka.bootstrap_servers

        def run(key, name, fn, *fn_args):
            topic = f"{key.split()[0]}-{len(results)}-{RUN}"
            kafka.create_topic(topic, PARTITIONS)
            n, seconds = fn(bs, topic, *fn_args)
            assert held(bs, topic) == n, f"{name}: broker holds {held(bs, topic)} of {n}"
            results.append((name, n, seconds))
            rates[key] = n / seconds
            print(
                f"{name:58s} {n:>9,} msgs {seconds:8.2f} s {n / seconds:>12,.0f} msg/s", flush=True
            )

        run(
            "tutorial",
            "tutorial loop (pandas sample(1) + kafka-python)",
            tutorial_loop,
            csv_path,
            args.tutorial_rows,
        )
        run("confluent-kafka", "confluent-kafka tight loop, pre-serialized", confluent_loop, values)
        if shutil.which("kcat"):
            run("kcat", "kcat -P from stdin, pre-serialized", kcat, lines_path, len(values))

        def stockstream_csv(bootstrap, topic, mode, lanes=None):
            producer = ss.Producer(bootstrap, topic, lanes=lanes)
            start = time.perf_counter()
            report = producer.send_csv(csv_path, mode=mode, limit=args.rows)
            seconds = time.perf_counter() - start  # includes loading and validating the CSV
            assert report.failed == 0 and not report.warnings, report
            return report.delivered, seconds

        run("replay", "stockstream replay (CSV load + JSON + produce)", stockstream_csv, "replay")
        for lanes in args.lanes:
            run(
                f"replay lanes={lanes}",
                f"stockstream replay, lanes={lanes} (librdkafka producers)",
                stockstream_csv,
                "replay",
                lanes,
            )
        run("sample", "stockstream sample (CSV load + JSON + produce)", stockstream_csv, "sample")

        def stockstream_synthetic(bootstrap, topic):
            producer = ss.Producer(bootstrap, topic)
            start = time.perf_counter()
            report = producer.send(ss.TickSource.synthetic(SYMBOLS), limit=args.rows)
            return report.delivered, time.perf_counter() - start

        run("synthetic", "stockstream synthetic (generate + JSON + produce)", stockstream_synthetic)

    shutil.rmtree(tmp)
    conf = rates["confluent-kafka"]
    print()
    print("| contender | messages | seconds | msg/s | vs confluent-kafka |")
    print("|---|---:|---:|---:|---:|")
    for name, n, s in results:
        print(f"| {name} | {n:,} | {s:.2f} | {n / s:,.0f} | {n / s / conf:.2f}× |")
    ours = [k for k in rates if k not in ("tutorial", "confluent-kafka", "kcat")]
    broker.save(
        args.json,
        **{f"{k} msg/s": v for k, v in rates.items()},
        **{f"{k} vs confluent-kafka": rates[k] / conf for k in ours},
        **({f"{k} vs kcat": rates[k] / rates["kcat"] for k in ours} if "kcat" in rates else {}),
    )
    print(
        f"\ncpu: {os.cpu_count()} cores; rows: {args.rows:,}; symbols: {SYMBOLS}; "
        f"partitions: {PARTITIONS}; {broker.describe(args.broker)}; settings: {COMMON}"
    )


if __name__ == "__main__":
    main()
