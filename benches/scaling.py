"""Scaling: one consumer group of 1, 2 and 4 members, and the cost of a landing as the table
grows.

**Members** (``members``): one topic of synthetic ticks (100 symbols, one
tick per symbol per second) in 32 partitions is read to its end
by a group of N members of the same job (a ``LakeSink`` writing Parquet to a local lake, or
an ``Analytics`` job with 1-minute windows and a 20-tick SMA), each member in a process of
its own, all started together. Each member reports when it took its first record and when
it stopped (``stop_at_end``); the rate is the topic's records over the span from the first
member's first record to the last member's end. All members run on this machine, so the
table shows what a group costs (joins, rebalances as members arrive, one fetch session per
member), not a speed-up. The sink's lake must hold every record exactly once afterwards.

**Landings** (``landing``): a sink lands 100 ranges of 40 records (one Kafka partition, one
``date=`` folder) into a local table that already holds 10, 1,000 or 10,000 date
partitions, each landed by the sink itself (one record a day from 1980 on), as a Hive table
with the local catalog and as an Iceberg table. Milliseconds per landing from the sink's first
record to its end (writing each object, syncing it, committing); the cost must not grow with
the table.

Usage: python benches/scaling.py [--rows 500000] [--only members,landing] [--broker ...]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import broker

PARTITIONS = 32
SYMBOLS = 100


# --- a member: runs in a child process and prints one JSON line ---


def member(argv):
    p = argparse.ArgumentParser()
    for name in ("kind", "bootstrap", "topic", "group", "lake", "out"):
        p.add_argument(f"--{name}")
    a = p.parse_args(argv)
    import stockstream as ss

    if a.kind == "sink":
        job = ss.LakeSink(a.bootstrap, a.topic, a.group, a.lake, partition_by="month")
    else:
        job = ss.Analytics(
            a.bootstrap, a.topic, a.group, window="1m", indicators=["sma_20"],
            outputs=ss.Outputs(windows=f"{a.out}-windows", indicators=f"{a.out}-indicators"),
            keep=0,
        )  # fmt: skip
    first, end = run_from_first_record(job)
    s = job.status()
    done = s.written if a.kind == "sink" else s.ticks
    print(json.dumps({"first": first, "end": end, "records": done}), flush=True)
    return 0


def run_from_first_record(job):
    """Runs `job` to the end of its topic; the wall-clock times of its first record and its
    end (a group's join, which Kafka delays by 3 s by default, is left out)."""
    job.start(stop_at_end=True)
    while job.status().consumed == 0 and job.running:
        time.sleep(0.001)
    first = time.time()
    job.wait()
    return first, time.time()


def run_group(kind, members, bootstrap, topic, lake):
    group = f"{kind}-{members}-{uuid.uuid4().hex[:6]}"
    args = ["--kind", kind, "--bootstrap", bootstrap, "--topic", topic, "--group", group,
            "--lake", str(lake), "--out", f"{kind}-{members}-out"]  # fmt: skip
    procs = [
        subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE)
        for _ in range(members)
    ]
    reports = []
    for proc in procs:
        out = proc.stdout.read()
        assert proc.wait() == 0, f"a {kind} member failed"
        reports.append(json.loads(out.splitlines()[-1]))
    span = max(r["end"] for r in reports) - min(r["first"] for r in reports)
    return span, [r["records"] for r in reports]


def members_table(a):
    import polars as pl
    from producer import held

    import stockstream as ss

    topic = f"scale-{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="scaling-"))
    print(f"\n## members: {a.rows:,} ticks, {PARTITIONS} partitions\n")
    results = {}
    print("| job | members | seconds | records/s | vs 1 member | records per member |")
    print("|---|---:|---:|---:|---:|---|")
    try:
        with broker.open_broker(a.broker, PARTITIONS, [topic]) as kafka:
            b = kafka.bootstrap_servers
            source = ss.TickSource.synthetic(SYMBOLS, seed=1, start="2021-01-04", interval=1.0)
            report = ss.Producer(b, topic).send(source, limit=a.rows)
            assert report.delivered == held(b, topic) == a.rows
            for kind in ("sink", "analytics"):
                one = None
                for members in (1, 2, 4):
                    if kind == "analytics":
                        for t in ("windows", "indicators"):
                            kafka.create_topic(f"{kind}-{members}-out-{t}", PARTITIONS)
                    lake = work / f"{kind}-{members}"
                    span, counts = run_group(kind, members, b, topic, lake)
                    if kind == "sink":
                        files = list((lake / topic).rglob("*.parquet"))
                        landed = sum(
                            pl.scan_parquet(f).select(pl.len()).collect().item() for f in files
                        )
                        assert landed == sum(counts) == a.rows, (landed, counts)
                    else:
                        # A partition moved by a rebalance is read again from its last
                        # checkpoint by its new owner: ticks may count twice, never zero times.
                        assert sum(counts) >= a.rows, counts
                    rate = a.rows / span
                    one = one or rate
                    results[f"{kind} {members} members rec/s"] = rate
                    results[f"{kind} {members} members vs 1"] = rate / one
                    print(
                        f"| {kind} | {members} | {span:.2f} | {rate:,.0f} | {rate / one:.2f}× "
                        f"| {', '.join(f'{c:,}' for c in counts)} |",
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def landing_table(a):
    import stockstream as ss

    landings, results = 100, {}
    work = Path(tempfile.mkdtemp(prefix="scaling-landing-"))
    print(f"\n## landing: {landings} landings of 40 records into a table of N partitions\n")
    print("| table | partitions before | s to land them (join included) | ms per landing |")
    print("|---|---:|---:|---:|")
    ticks = ss.TickSource.synthetic(4, start="2021-03-01 09:30:00", interval=1.0)
    try:
        with broker.open_broker(a.broker, 1) as kafka:
            b = kafka.bootstrap_servers
            for table_format in ("hive", "iceberg"):
                for size in (10, 1_000, 10_000):
                    name = f"t{size}_{table_format}"
                    topic = f"{name}-{uuid.uuid4().hex[:6]}"
                    kafka.create_topic(topic, 1)
                    lake = work / name
                    common = dict(partition_by="date", table=name, table_format=table_format)
                    days = ss.TickSource.synthetic(1, start="1980-01-01", interval=86_400.0)
                    ss.Producer(b, topic).send(days, limit=size)
                    began = time.perf_counter()
                    status = ss.LakeSink(
                        b, topic, "history", str(lake), roll=ss.RollPolicy(records=size), **common
                    ).run(stop_at_end=True)
                    history = time.perf_counter() - began
                    assert status.written == size, status
                    ss.Producer(b, topic).send(ticks, limit=40 * landings)
                    # A new group: the embedded broker makes a rejoining member wait out the
                    # previous one's session.
                    sink = ss.LakeSink(
                        b, topic, "landings", str(lake), roll=ss.RollPolicy(records=40), **common
                    )
                    first, end = run_from_first_record(sink)
                    per = (end - first) / landings * 1000
                    assert sink.status().written == 40 * landings, sink.status()
                    print(f"| {table_format} | {size:,} | {history:.1f} | {per:.1f} |", flush=True)
                    results[f"{table_format} ms per landing, {size:,} partitions"] = per
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def main():
    p = broker.child_or_parser(__doc__, member, rows=500_000)
    p.add_argument("--only", default="members,landing")
    a = p.parse_args()
    print(broker.describe(a.broker), f"· {os.cpu_count()} cores", flush=True)
    sections = {"members": members_table, "landing": landing_table}
    results = {}
    for name in a.only.split(","):
        results.update(sections[name](a))
    broker.save(a.json, **results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
