"""Kafka → lake throughput and peak memory, in one run, on one embedded broker.

One topic of synthetic ticks (the tutorial's record shape) is read to its end by each
contender, each in its own process with its own consumer group, so each one's peak RSS is
its own:

- raw references that only count messages: kcat (librdkafka) and a confluent-kafka loop;
- stockstream's LakeSink: Parquet and NDJSON, to a local directory and to an S3 server (moto),
  and Parquet as an Iceberg table (one commit per landing) in a local directory;
- a careful Python baseline: confluent-kafka batches + json + pyarrow, zstd Parquet per
  month folder, committing after each write;
- the tutorial's consumer: kafka-python, one S3 object per message (boto3 put_object, as
  s3fs does underneath), run for a fixed time on the same topic.

Rates count from the first message received, so consumer-group joins do not count. The
topic has enough partitions that the broker's ~5 MiB-per-partition retention drops nothing
(checked), and every lake is read back and must hold exactly the topic's records.

Usage: python benches/sink.py [--rows 1000000] [--tutorial-seconds 10]
"""

import argparse
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import broker

PARTITIONS = 32
SYMBOLS = 500
LAYOUT = "month"
AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


# --- contenders: each runs in a child process and prints one JSON line ---


def run_stockstream(a):
    import stockstream as ss

    extra = {"aws": ss.AwsOptions(endpoint_url=a.endpoint)} if a.endpoint else {}
    sink = ss.LakeSink(
        a.bootstrap,
        a.topic,
        a.group,
        a.lake,
        format=a.format,
        partition_by=LAYOUT,
        table_format=a.table_format or "hive",
        **extra,
    )
    sink.start(stop_at_end=True)
    while sink.status().consumed == 0 and sink.running:
        time.sleep(0.001)
    began = time.perf_counter()
    sink.wait()
    elapsed = time.perf_counter() - began
    status = sink.status()
    return {"records": status.written, "seconds": elapsed, "files": status.files}


def consume_to_end(a):
    """Batches of messages of the topic, from the start until every partition's end."""
    from confluent_kafka import Consumer, KafkaError

    c = Consumer(_ck_config(a))
    c.subscribe([a.topic])
    ended = set()
    while len(ended) < PARTITIONS:
        batch = []
        for m in c.consume(10000, timeout=1.0):
            if m.error() is None:
                batch.append(m)
            elif m.error().code() == KafkaError._PARTITION_EOF:
                ended.add(m.partition())
        yield c, batch


def run_confluent_count(a):
    n, began = 0, None
    for _, batch in consume_to_end(a):
        if batch:
            began = began or time.perf_counter()
        n += len(batch)
    return {"records": n, "seconds": time.perf_counter() - began}


def run_python_baseline(a):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, files, began = 0, 0, None
    rows = []

    def write(consumer):
        nonlocal files
        table = pa.Table.from_pylist(rows)
        months = pa.compute.utf8_slice_codeunits(table["Date"], 0, 7)
        for month in pa.compute.unique(months).to_pylist():
            part = table.filter(pa.compute.equal(months, month))
            folder = Path(a.lake) / a.topic / f"month={month}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(part, folder / f"part-{uuid.uuid4().hex}.parquet", compression="zstd")
            files += 1
        consumer.commit(asynchronous=False)
        rows.clear()

    for consumer, batch in consume_to_end(a):
        if batch:
            began = began or time.perf_counter()
        rows.extend(json.loads(m.value()) for m in batch)
        n += len(batch)
        if len(rows) >= 200_000:
            write(consumer)
    if rows:
        write(consumer)
    return {"records": n, "seconds": time.perf_counter() - began, "files": files}


def run_tutorial(a):
    import boto3
    from kafka import KafkaConsumer

    s3 = boto3.client("s3", endpoint_url=a.endpoint)
    consumer = KafkaConsumer(
        a.topic,
        bootstrap_servers=a.bootstrap,
        group_id=a.group,
        auto_offset_reset="earliest",
        api_version=(2, 0),
    )
    n, began = 0, None
    bucket = a.lake.removeprefix("s3://").split("/")[0]
    for count, message in enumerate(consumer):
        began = began or time.perf_counter()
        # The tutorial: s3.open(f"s3://bucket/stock_market_{count}.json", "w") + json.dump.
        body = json.dumps(json.loads(message.value.decode("utf-8"))).encode()
        s3.put_object(Bucket=bucket, Key=f"stock_market_{count}.json", Body=body)
        n += 1
        if time.perf_counter() - began >= a.seconds:
            break
    return {"records": n, "seconds": time.perf_counter() - began, "files": n}


def _ck_config(a):
    return {
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    }


CONTENDERS = {
    "stockstream": run_stockstream,
    "confluent-count": run_confluent_count,
    "python-baseline": run_python_baseline,
    "tutorial": run_tutorial,
}


def child(argv):
    p = argparse.ArgumentParser()
    names = ["contender", "bootstrap", "topic", "group", "lake", "format", "endpoint"]
    for name in [*names, "table_format"]:
        p.add_argument(f"--{name}")
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args(argv)
    result = CONTENDERS[a.contender](a)
    result["rss_mb"] = peak_rss_mb()
    print(json.dumps(result), flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident memory since exec (getrusage would include the parent's)."""
    for text in Path("/proc/self/status").read_text().splitlines():
        if text.startswith("VmHWM:"):
            return int(text.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# --- the orchestrator ---


def line(name, records, seconds, rss_mb=None, files=None):
    text = f"{name:34s} {records:>9,} rec  {seconds:7.2f} s  {records / seconds:>10,.0f} rec/s"
    if rss_mb is not None:
        text += f"  peak RSS {rss_mb:6.0f} MB"
    if files is not None:
        text += f"  {files:,} files"
    print(text, flush=True)


def measure(name, args, env=None):
    """Runs one contender in a child process, which reports its result and its peak RSS."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", *args],
        stdout=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out = proc.stdout.read()
    assert proc.wait() == 0, f"{name} failed"
    result = json.loads(out.splitlines()[-1])
    result["rate"] = result["records"] / result["seconds"]
    line(name, result["records"], result["seconds"], result["rss_mb"], result.get("files"))
    return result


def kcat_count(bootstrap, topic, n):
    """librdkafka's own consume rate: kcat printing one byte per message (connect included)."""
    if not shutil.which("kcat"):
        return None
    cmd = ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "x"]
    began = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    elapsed = time.perf_counter() - began
    assert len(out) == n, (len(out), n)
    line("kcat (count only, incl. connect)", n, elapsed)
    return n / elapsed


def lake_rows(path: Path, topic: str, suffix: str) -> int:
    import polars as pl

    files = [f for f in (path / topic).rglob(f"*{suffix}") if not f.name.startswith(".")]
    if suffix == ".parquet":
        return sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in files)
    return sum(f.read_bytes().count(b"\n") for f in files)


def iceberg_rows(lake: Path, topic: str) -> int:
    """The rows of the Iceberg table's current snapshot, as pyiceberg counts them."""
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("stockstream", uri=f"sqlite:///{lake}/catalog.db")
    table = catalog.load_table(f"stock_market.{topic.replace('-', '_')}")
    return table.scan().to_arrow().num_rows


def s3_rows(client, bucket, topic) -> int:
    import io

    import polars as pl

    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{topic}/"):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            total += (
                pl.read_parquet(io.BytesIO(body)).height
                if obj["Key"].endswith(".parquet")
                else body.count(b"\n")
            )
    return total


def main():
    p = broker.child_or_parser(__doc__, child, rows=1_000_000)
    p.add_argument("--tutorial-seconds", type=float, default=10.0)
    a = p.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer
    from producer import held

    import stockstream as ss

    os.environ.update(AWS)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="sink-bench-"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint)
    topic = f"ticks-{uuid.uuid4().hex[:6]}"
    print(broker.describe(a.broker), flush=True)
    try:
        with broker.open_broker(a.broker, PARTITIONS, [topic]) as kafka:
            b = kafka.bootstrap_servers
            source = ss.TickSource.synthetic(SYMBOLS, seed=1)
            report = ss.Producer(b, topic).send(source, limit=a.rows)
            n = held(b, topic)
            assert n == report.delivered == a.rows, (n, report.delivered)
            print(f"topic {topic!r}: {n:,} records, {PARTITIONS} partitions, none dropped\n")

            def args(contender, **kw):
                out = ["--contender", contender, "--bootstrap", b, "--topic", topic,
                       "--group", f"bench-{uuid.uuid4().hex[:8]}"]  # fmt: skip
                for k, v in kw.items():
                    out += [f"--{k}", str(v)]
                return out

            results = {"kcat": kcat_count(b, topic, n)}
            results["confluent-count"] = measure(
                "confluent-kafka (count only)", args("confluent-count")
            )
            for fmt, suffix in (("parquet", ".parquet"), ("ndjson", ".json")):
                lake = work / f"local-{fmt}"
                r = measure(
                    f"stockstream {fmt} → local dir", args("stockstream", lake=lake, format=fmt)
                )
                assert lake_rows(lake, topic, suffix) == n == r["records"], (
                    f"{fmt} local lake incomplete"
                )
                results[f"local-{fmt}"] = r
            lake = work / "local-iceberg"
            r = measure(
                "stockstream iceberg → local dir",
                args("stockstream", lake=lake, format="parquet", table_format="iceberg"),
            )
            assert iceberg_rows(lake, topic) == n == r["records"], "Iceberg table incomplete"
            results["local-iceberg"] = r
            for fmt in ("parquet", "ndjson"):
                bucket = f"bench-{fmt}"
                s3.create_bucket(Bucket=bucket)
                r = measure(
                    f"stockstream {fmt} → S3 (moto)",
                    args("stockstream", lake=f"s3://{bucket}", format=fmt, endpoint=endpoint),
                )
                assert s3_rows(s3, bucket, topic) == n == r["records"], f"{fmt} S3 lake incomplete"
                results[f"s3-{fmt}"] = r
            lake = work / "python"
            r = measure("python baseline (ck+pyarrow) → local", args("python-baseline", lake=lake))
            assert lake_rows(lake, topic, ".parquet") == n
            results["python"] = r
            s3.create_bucket(Bucket="tutorial")
            results["tutorial"] = measure(
                "tutorial (1 object/message) → S3",
                args(
                    "tutorial", lake="s3://tutorial", endpoint=endpoint, seconds=a.tutorial_seconds
                ),
                env=AWS,
            )
    finally:
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)

    local = results["local-parquet"]["rate"]
    raw = results["kcat"] or results["confluent-count"]["rate"]

    def ratio(label, value, target="", fmt="parquet"):
        print(f"{fmt + ' → local':17s} vs {label:22s} {value:8.2f}×  {target}")

    print()
    ratio("tutorial loop", local / results["tutorial"]["rate"], "(target ≥ 1000×)")
    ratio("python baseline", local / results["python"]["rate"], "(target ≥ 3×)")
    ratio("raw consume (kcat)", local / raw, "(target ≥ 0.5×)")
    ratio("confluent-kafka count", local / results["confluent-count"]["rate"])
    iceberg = results["local-iceberg"]["rate"]
    print(f"iceberg → local    vs hive parquet → local  {iceberg / local:8.2f}×  (target ≥ 0.9×)")
    ndjson = results["local-ndjson"]["rate"]
    ratio("raw consume (kcat)", ndjson / raw, "(target ≥ 0.6×)", fmt="ndjson")
    peak = max(results[k]["rss_mb"] for k in results if k.startswith(("local-", "s3-")))
    print(f"sink peak RSS, any configuration: {peak:.0f} MB  (target < 300 MB)")
    rates = {k: r["rate"] for k, r in results.items() if k != "kcat"}
    broker.save(
        a.json,
        **{f"{k} rec/s": v for k, v in rates.items()},
        **({"kcat rec/s": results["kcat"]} if results["kcat"] else {}),
        **{f"{k} vs raw consume": v / raw for k, v in rates.items() if k.startswith("local-")},
        **{"parquet vs python baseline": local / results["python"]["rate"]},
        **{"iceberg vs hive parquet": iceberg / local, "peak RSS MB": peak},
    )


if __name__ == "__main__":
    main()
