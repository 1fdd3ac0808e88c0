"""Soak: the sink's exactly-once promise, run many times (not part of `make test`).

    python tests/soak/exactly_once.py outage [--runs 10]
    python tests/soak/exactly_once.py sigkill [--runs 10] [--table-format iceberg] [--rest]

outage:  two members of one group land a topic into an S3 lake (moto, the catalog in the
         lake) while a producer writes; S3 goes away for longer than max.poll.interval.ms,
         so members are evicted and rejoin while their writes are being retried.
sigkill: two members run as processes and are SIGKILLed at random moments, again and
         again, while a producer writes; halfway the group id changes (a new group starts
         with no offsets: the table says where to resume); a last member lands the rest.
         With --table-format iceberg the members commit to one Iceberg table (racing for
         its pointer), and a compaction runs every second meanwhile; with --rest too, the
         table is in Apache Iceberg's reference REST catalog.

Each run ends with the table read back and checked: each Kafka offset of each partition
exactly once. A Hive table is read as every object of its folder (registered or not); an
Iceberg table as pyiceberg reads its current snapshot. One line per run; exit status 1 if
any run was not exact.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import polars as pl  # noqa: E402

import stockstream as ss  # noqa: E402
from conftest import AWS_ENV, S3Server  # noqa: E402

sys.path.insert(0, str(HERE.parent / "iceberg_rest"))
from catalog import RestCatalog  # noqa: E402

from lake_check import read_local_parquet, read_s3_parquet  # noqa: E402

RECORDS = 20_000
TIMINGS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500, "max_poll_interval_ms": 6000}


def verdict(df: pl.DataFrame, ends: dict[int, int]) -> tuple[int, int, int]:
    """(rows, offsets written twice, offsets missing) over `ends`."""
    doubled = missing = 0
    for partition, end in ends.items():
        offsets = df.filter(pl.col("_kafka_partition") == partition)["_kafka_offset"]
        counts = offsets.value_counts()
        doubled += counts.filter(pl.col("count") > 1).height
        missing += len(set(range(end)) - set(offsets.to_list()))
    return df.height, doubled, missing


def end_offsets(kafka, topic) -> dict[int, int]:
    frame = ss.read_topic(kafka.bootstrap_servers, topic, last=1)
    return {p: o + 1 for p, o in zip(frame["partition"], frame["offset"])}


def outage_run(kafka, seed: int) -> tuple[int, int, int, int]:
    rng = random.Random(seed)
    topic = f"soak-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, 4)
    server = S3Server()
    server.start()
    bucket = f"soak-{uuid.uuid4().hex[:8]}"
    server.client().create_bucket(Bucket=bucket)
    group = f"g-{uuid.uuid4().hex[:6]}"
    members = [
        ss.LakeSink(
            kafka.bootstrap_servers,
            topic,
            group,
            f"s3://{bucket}",
            aws=ss.AwsOptions(endpoint_url=server.endpoint_url),
            kafka_metadata=True,
            roll=ss.RollPolicy(records=200, idle=0.5),
            **TIMINGS,
        )
        for _ in range(2)
    ]
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    feeding = threading.Thread(
        target=lambda: producer.send(
            ss.TickSource.synthetic(40, seed=seed), rate=2000, limit=RECORDS
        )
    )
    for m in members:
        m.start()
    feeding.start()
    time.sleep(rng.uniform(2, 5))
    server.stop()
    time.sleep(rng.uniform(8, 14))  # longer than max.poll.interval.ms
    server.start()
    feeding.join()
    deadline = time.monotonic() + 180
    while sum(m.status().written for m in members) < RECORDS and time.monotonic() < deadline:
        time.sleep(0.2)
    if sum(m.status().written for m in members) < RECORDS:
        for m in members:
            st = m.status()
            print(f"  stalled: {st} landed {st.landed} error {st.last_error} notes {st.notes}")
    written = sum(m.stop().written for m in members)
    df = read_s3_parquet(server.client(), bucket, f"{topic}/")
    server.stop()
    return (written, *verdict(df, end_offsets(kafka, topic)))


@dataclass
class Target:
    """Where the sinks land: command-line flags, the same as LakeSink and Lake options,
    and how the table is read back."""

    flags: list
    options: dict
    lake: dict
    rows: Callable[[Path, str], pl.DataFrame]

    @property
    def iceberg(self) -> bool:
        return bool(self.flags)


def target(table_format: str, rest_uri: str | None, run: int) -> Target:
    """The target of one run: a REST catalog outlives the runs' lakes, so each run has a
    database of its own there."""
    if table_format == "hive":
        return Target([], {}, {}, read_local_parquet)
    database = f"run_{run}" if rest_uri else "stock_market"
    flags = ["--table-format", "iceberg", "--database", database]
    lake = {"database": database}
    if rest_uri:
        flags += ["--catalog", "rest", "--catalog-uri", rest_uri]
        lake |= {"catalog": "rest", "catalog_uri": rest_uri}
    options = {"table_format": "iceberg", **lake}
    return Target(flags, options, lake, iceberg_rows(rest_uri, database))


def sink_process(kafka, topic, group, lake, flags) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable, "-m", "stockstream", "sink", str(lake), "-b",
            kafka.bootstrap_servers, "-t", topic, "-g", group, "--kafka-metadata",
            "--flush-records", "300", "--quiet", "-X", "session.timeout.ms=6000", "-X",
            "heartbeat.interval.ms=500", "-X", "max.poll.interval.ms=10000",
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def compacting(lake: Path, options, done: threading.Event, merged: list, errors: list) -> None:
    """Compacts the lake every second until `done` (the grace period outlasts the run)."""
    while not done.wait(1.0):
        try:
            db = ss.Lake(str(lake), **options)
            report = db.compact(grace=600, min_objects=2, progress=False)
            merged.append(report.objects_merged)
        except ss.NotFoundError:
            pass  # nothing landed yet
        except ss.StockstreamError as e:
            errors.append(str(e))


def iceberg_rows(rest_uri: str | None, database: str) -> Callable[[Path, str], pl.DataFrame]:
    """How to read the rows of a table's current snapshot with pyiceberg: from the lake's
    SQLite catalog, or from the REST catalog at `rest_uri`."""

    def rows(lake: Path, topic: str) -> pl.DataFrame:
        from pyiceberg.catalog.rest import RestCatalog
        from pyiceberg.catalog.sql import SqlCatalog

        catalog = (
            RestCatalog("rest", uri=rest_uri)
            if rest_uri
            else SqlCatalog("stockstream", uri=f"sqlite:///{lake}/catalog.db")
        )
        table = catalog.load_table(f"{database}.{topic.replace('-', '_')}")
        return pl.from_arrow(table.scan().to_arrow())

    return rows


def sigkill_run(kafka, seed: int, lake: Path, to: Target) -> tuple[int, int, int, int]:
    rng = random.Random(seed)
    topic = f"soak-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, 4)
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    feeding = threading.Thread(
        target=lambda: producer.send(
            ss.TickSource.synthetic(40, seed=seed), rate=3000, limit=RECORDS
        )
    )
    feeding.start()
    done, merged, errors = threading.Event(), [], []
    compactor = threading.Thread(target=compacting, args=(lake, to.lake, done, merged, errors))
    if to.iceberg:
        compactor.start()
    groups = [f"g-{uuid.uuid4().hex[:6]}", f"h-{uuid.uuid4().hex[:6]}"]
    for round in range(4):
        group = groups[round // 2]
        procs = [sink_process(kafka, topic, group, lake, to.flags) for _ in range(2)]
        time.sleep(rng.uniform(2.0, 6.0))
        for p in procs:
            if rng.random() < 0.8:
                p.send_signal(signal.SIGKILL)
            else:
                p.terminate()
        for p in procs:
            p.wait()
    feeding.join()
    last = ss.LakeSink(
        kafka.bootstrap_servers,
        topic,
        f"last-{uuid.uuid4().hex[:6]}",
        str(lake),
        kafka_metadata=True,
        **to.options,
        **TIMINGS,
    )
    status = last.run(stop_at_end=True)
    done.set()
    if compactor.is_alive():
        compactor.join()
    if compactor.ident is not None:
        print(
            f"  {len(merged)} compactions merged {sum(merged)} files; errors: {errors[:3]}",
            flush=True,
        )
    rows = to.rows(lake, topic)
    return (status.written, *verdict(rows, end_offsets(kafka, topic)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["outage", "sigkill"])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--table-format", choices=["hive", "iceberg"], default="hive")
    parser.add_argument("--rest", action="store_true", help="Iceberg tables in a REST catalog")
    args = parser.parse_args()
    import os
    import tempfile

    os.environ.update(AWS_ENV)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    base = args.seed if args.seed is not None else random.randrange(1 << 20)
    failures = 0
    print(
        f"scenario {args.scenario} ({args.table_format}{', REST' if args.rest else ''}), "
        f"{args.runs} runs, {RECORDS} records "
        f"each, seeds from {base}"
    )
    with ss.EmbeddedKafka(partitions=4) as kafka, tempfile.TemporaryDirectory() as home:
        rest = RestCatalog(Path(home) / "warehouse") if args.rest else None
        for run in range(args.runs):
            to = target(args.table_format, rest and rest.uri, run)
            seed = base + run
            began = time.monotonic()
            with tempfile.TemporaryDirectory() as tmp:
                if args.scenario == "outage":
                    result = outage_run(kafka, seed)
                else:
                    result = sigkill_run(kafka, seed, Path(tmp) / "lake", to)
            written, rows, doubled, missing = result
            exact = rows == RECORDS and doubled == 0 and missing == 0
            failures += not exact
            print(
                f"run {run + 1:2d} seed {seed}: rows {rows}, offsets twice {doubled}, "
                f"missing {missing}, last run wrote {written}, "
                f"{time.monotonic() - began:.0f} s: {'exact' if exact else 'NOT EXACT'}",
                flush=True,
            )
        if rest:
            rest.stop()
    print(f"{args.runs - failures}/{args.runs} runs exact")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
