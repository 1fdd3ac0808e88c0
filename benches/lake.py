"""The lake's shape, freshness and upkeep, measured with every default.

1. daily:   the tutorial's kind of dataset (14 indices, business days from each one's start
            year to 2021, ~120k rows) landed by a default LakeSink (auto folders), by the
            previous default (`date=` folders), and written as one Parquet file: objects,
            landing time, `count(*)` and a per-index average with stockstream and with DuckDB
            on the same files.
2. fresh:   one tick a second into a topic a default LakeSink runs on in the background;
            after each tick is delivered, `Lake.sql("SELECT count(*)")` runs back to back
            until the tick is counted: produce → visible, median and max of --ticks, and what
            the sink wrote meanwhile.
3. compact: six hours of one-second ticks of 16 symbols landed as minute-sized objects (what the
            default age roll makes of such a stream), then compacted: MB/s, and the queries
            before and after.
4. glue:    a sink registering landings in a Glue table (moto on loopback) that has 10
            partitions, and one that has 10,000: seconds per landing, and what reading all
            the partitions (what each landing did before) costs.
5. local:   the same with the local catalog (one JSON object per table).
6. iceberg: one topic landed twice, as a Hive table and as an Iceberg table (both with their
            defaults): the tutorial's daily bars, and an hour of one-second ticks of 64
            symbols. Landing time, and `Lake.sql` over each (count, one day, per-index
            average), the Iceberg table's time as a ratio of the Hive table's.

`--table-format iceberg` runs `fresh` with an Iceberg sink.

Usage: python benches/lake.py [--only daily,fresh,compact,glue,local,iceberg] [--ticks 20]
       [--repeat 5] [--table-format hive|iceberg]
"""

import argparse
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import broker  # noqa: E402

# Topic names unique to this run, so a long-lived broker can serve several runs.
RUN = uuid.uuid4().hex[:6]


def median_seconds(run, repeat):
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def queries(name, urls, db, repeat):
    """count(*) and a per-index average with stockstream and DuckDB on the same files."""
    import duckdb

    duck = duckdb.connect()
    per_index = 'SELECT "Index", avg("Close") AS a FROM {} GROUP BY 1'
    rows = []
    for label, ours, theirs in [
        ("count(*)", f"SELECT count(*) FROM {name}", f"SELECT count(*) FROM read_parquet({urls})"),
        ("per-index avg", per_index.format(name), per_index.format(f"read_parquet({urls})")),
    ]:
        s = median_seconds(lambda q=ours: db.sql(q, live=False), repeat) if db else None
        d = median_seconds(lambda q=theirs: duck.sql(q).pl(), repeat)
        rows.append((label, s, d))
    return rows


def land(kafka, topic, lake, n, **options):
    """Lands all of `topic` (`n` records) into `lake` with a new group: its status, and
    how long it took."""
    import stockstream as ss

    began = time.perf_counter()
    group = f"g-{uuid.uuid4().hex[:6]}"
    status = ss.LakeSink(kafka.bootstrap_servers, topic, group, str(lake), **options).run(
        stop_at_end=True
    )
    assert status.written == n
    return status, time.perf_counter() - began


def daily(args):
    import polars as pl
    from datasets import tutorial_daily

    import stockstream as ss

    work = Path(tempfile.mkdtemp(prefix="lake-bench-"))
    csv = work / "indexProcessed.csv"
    n = tutorial_daily(csv)
    print(f"\n## daily: {n:,} rows of 14 indices' daily bars\n")
    print("| layout | objects | landing s | query | stockstream s | DuckDB s |")
    print("|---|---:|---:|---|---:|---:|")
    topic = f"daily-{RUN}"
    with broker.open_broker(args.broker, 4, [topic]) as kafka:
        report = ss.Producer(kafka.bootstrap_servers, topic).send_csv(csv)
        assert report.delivered == n and report.dropped_by_broker == 0
        for label, extra in [
            ("auto (default)", {}),
            ("date= (previous default)", {"partition_by": "date"}),
        ]:
            lake = work / label.split()[0].strip("=")
            status, landing = land(kafka, topic, lake, n, table="daily", **extra)
            db = ss.Lake(str(lake))
            urls = db.files("daily")["url"].to_list()
            for q, s, d in queries("daily", urls, db, args.repeat):
                print(f"| {label} | {len(urls):,} | {landing:.2f} | {q} | {s:.4f} | {d:.4f} |")
    one = work / "one.parquet"
    pl.read_csv(csv).write_parquet(one)
    for q, _, d in queries("x", [str(one)], None, args.repeat):
        print(f"| one Parquet file | 1 | – | {q} | – | {d:.4f} |")
    shutil.rmtree(work, ignore_errors=True)


def fresh(args):
    import stockstream as ss

    work = Path(tempfile.mkdtemp(prefix="lake-fresh-"))
    lake = work / "lake"
    print(f"\n## fresh: one tick a second, {args.ticks} ticks, {args.table_format} sink defaults\n")
    source = ss.TickSource.synthetic(4, start="2021-03-01 09:30:00", interval=1.0)
    topic = f"live-{RUN}"
    with broker.open_broker(args.broker, 4, [topic]) as kafka:
        producer = ss.Producer(kafka.bootstrap_servers, topic, linger_ms=0)
        # The table is declared by the sink's first landing (its first minute, at this pace).
        producer.send(source, limit=8)
        sink = ss.LakeSink(
            kafka.bootstrap_servers,
            topic,
            "fresh",
            str(lake),
            table="live",
            table_format=args.table_format,
        )
        sink.run(stop_at_end=True)
        sink.start()
        db = ss.Lake(str(lake))
        latencies, query_times = [], []
        expected = 8
        for _ in range(args.ticks):
            time.sleep(1.0)
            producer.send(source, limit=1)  # returns once the broker acknowledged it
            delivered = time.perf_counter()
            expected += 1
            while True:
                began = time.perf_counter()
                got = db.sql("SELECT count(*) AS n FROM live")["n"][0]
                query_times.append(time.perf_counter() - began)
                if got >= expected:
                    latencies.append(time.perf_counter() - delivered)
                    break
        status = sink.stop()
    print("| produce → visible | seconds |")
    print("|---|---:|")
    print(f"| median | {statistics.median(latencies):.3f} |")
    print(f"| max | {max(latencies):.3f} |")
    print(f"| one live query (median) | {statistics.median(query_times):.3f} |")
    print(
        f"\nThe sink wrote {status.files} objects for {expected} ticks: its first landing "
        "(which declared the table) and what stop() landed (its rolls are 60 s / 10 s idle)."
    )
    shutil.rmtree(work, ignore_errors=True)


def compact(args):
    import stockstream as ss

    work = Path(tempfile.mkdtemp(prefix="lake-compact-"))
    lake = work / "lake"
    # Six hours of 16 symbols: the embedded broker's bounded retention holds it whole.
    symbols, seconds = 16, 6 * 3600
    n = symbols * seconds
    print(f"\n## compact: six hours of one-second ticks, {symbols} symbols ({n:,} ticks)\n")
    source = ss.TickSource.synthetic(symbols, start="2021-03-01 00:00:00", interval=1.0)
    topic = f"day-{RUN}"
    with broker.open_broker(args.broker, 16, [topic]) as kafka:
        report = ss.Producer(kafka.bootstrap_servers, topic).send(source, limit=n)
        assert report.delivered == n and report.dropped_by_broker == 0
        # A minute of a symbol's ticks per object: what 60 s age rolls make of this stream.
        began = time.perf_counter()
        status = ss.LakeSink(
            kafka.bootstrap_servers,
            topic,
            "compact",
            str(lake),
            table="day",
            roll=ss.RollPolicy(records=60),
        ).run(stop_at_end=True)
        landing = time.perf_counter() - began
        assert status.written == n
    db = ss.Lake(str(lake))
    before = db.files("day").height
    q = {
        "count(*)": "SELECT count(*) FROM day",
        "per-symbol avg": 'SELECT "Index", avg("Close") FROM day GROUP BY 1',
    }
    t_before = {
        k: median_seconds(lambda v=v: db.sql(v, live=False), args.repeat) for k, v in q.items()
    }
    r = db.compact(grace=0)
    after = db.files("day").height
    t_after = {
        k: median_seconds(lambda v=v: db.sql(v, live=False), args.repeat) for k, v in q.items()
    }
    got = db.sql("SELECT count(*) AS n FROM day", live=False)["n"][0]
    assert got == n, got
    mb = r.bytes_read / 1e6
    print(
        f"landed in {landing:.1f} s as {before:,} objects; compacted {r.objects_merged:,} objects "
        f"({mb:.1f} MB) into {r.objects_written} (+{r.objects_carried} carried) in "
        f"{r.elapsed:.2f} s: **{mb / r.elapsed:.1f} MB/s**, "
        f"{r.objects_merged / r.elapsed:,.0f} objects/s\n"
    )
    print("| query | before s | after s | speed-up |")
    print("|---|---:|---:|---:|")
    for k in q:
        print(f"| {k} | {t_before[k]:.4f} | {t_after[k]:.4f} | {t_before[k] / t_after[k]:.1f}× |")
    print(f"\nobjects a query reads: {before:,} → {after}")
    shutil.rmtree(work, ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def glue(args):
    import os

    import boto3
    from moto.server import ThreadedMotoServer

    import stockstream as ss

    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    gl = boto3.client("glue", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    landings = 100
    print(f"\n## glue: a sink registering {landings} landings (moto on loopback)\n")
    print("| partitions in the table | s per landing | reading all partitions s |")
    print("|---:|---:|---:|")
    source = ss.TickSource.synthetic(4, start="2021-03-01 09:30:00", interval=1.0)
    try:
        with broker.open_broker(args.broker, 1) as kafka:
            for size in (10, 10_000):
                name, topic = f"t{size}", f"t{size}-{RUN}"
                kafka.create_topic(topic, 1)
                db_name = f"bench_{size}"
                ss.Producer(kafka.bootstrap_servers, topic).send(source, limit=40)
                common = dict(
                    partition_by="date",
                    catalog="glue",
                    database=db_name,
                    aws=ss.AwsOptions(endpoint_url=endpoint),
                    roll=ss.RollPolicy(records=40),
                    table=name,
                )
                ss.LakeSink(
                    kafka.bootstrap_servers, topic, "g", f"s3://lake/{name}-lake", **common
                ).run(stop_at_end=True)
                table = gl.get_table(DatabaseName=db_name, Name=name)["Table"]
                sd = table["StorageDescriptor"]
                # Days long before the ticks': partitions the sink never touches. A new group
                # below: the embedded broker makes a rejoining member wait out the old one's
                # session, which would swamp the landings measured.
                values = [str(date(1980, 1, 1) + timedelta(days=i)) for i in range(size)]
                inputs = [
                    {
                        "Values": [v],
                        "StorageDescriptor": {**sd, "Location": sd["Location"] + f"date={v}/"},
                    }
                    for v in values
                ]
                for i in range(0, len(inputs), 100):
                    gl.batch_create_partition(
                        DatabaseName=db_name,
                        TableName=name,
                        PartitionInputList=inputs[i : i + 100],
                    )
                ss.Producer(kafka.bootstrap_servers, topic).send(source, limit=40 * landings)
                began = time.perf_counter()
                status = ss.LakeSink(
                    kafka.bootstrap_servers, topic, "g2", f"s3://lake/{name}-lake", **common
                ).run(stop_at_end=True)
                per = (time.perf_counter() - began) / (landings + 1)
                assert status.written == 40 * (landings + 1)
                began = time.perf_counter()
                pages = gl.get_paginator("get_partitions").paginate(
                    DatabaseName=db_name, TableName=name
                )
                total = sum(len(p["Partitions"]) for p in pages)
                read_all = time.perf_counter() - began
                print(f"| {total:,} | {per:.3f} | {read_all:.3f} |")
    finally:
        server.stop()


def local_catalog(args):
    """The same measurement with the catalog kept as JSON in the lake."""
    import json

    import stockstream as ss

    landings = 100
    work = Path(tempfile.mkdtemp(prefix="lake-local-"))
    print(f"\n## local catalog: a sink registering {landings} landings\n")
    print("| partitions in the table | s per landing |")
    print("|---:|---:|")
    source = ss.TickSource.synthetic(4, start="2021-03-01 09:30:00", interval=1.0)
    with broker.open_broker(args.broker, 1) as kafka:
        for size in (10, 10_000):
            name, topic = f"t{size}", f"t{size}-{RUN}"
            kafka.create_topic(topic, 1)
            lake = work / name
            ss.Producer(kafka.bootstrap_servers, topic).send(source, limit=40)
            common = dict(partition_by="date", roll=ss.RollPolicy(records=40), table=name)
            ss.LakeSink(kafka.bootstrap_servers, topic, "g", str(lake), **common).run(
                stop_at_end=True
            )
            path = lake / "_catalog" / "stock_market" / f"{name}.json"
            table = json.loads(path.read_text())
            table["partitions"] += [
                [str(date(1980, 1, 1) + timedelta(days=i))] for i in range(size - 1)
            ]
            path.write_text(json.dumps(table, indent=2))
            ss.Producer(kafka.bootstrap_servers, topic).send(source, limit=40 * landings)
            began = time.perf_counter()
            status = ss.LakeSink(kafka.bootstrap_servers, topic, "g2", str(lake), **common).run(
                stop_at_end=True
            )
            per = (time.perf_counter() - began) / (landings + 1)
            assert status.written == 40 * (landings + 1)
            print(f"| {len(table['partitions']):,} | {per:.4f} |")
    shutil.rmtree(work, ignore_errors=True)


def iceberg(args):
    from datasets import tutorial_daily

    import stockstream as ss

    work = Path(tempfile.mkdtemp(prefix="lake-iceberg-"))
    csv = work / "indexProcessed.csv"
    daily_rows = tutorial_daily(csv)
    intraday = ss.TickSource.synthetic(64, start="2021-03-01 09:00:00", interval=1.0)
    shapes = [
        ("daily bars", daily_rows, lambda p, t: p.send_csv(csv), "2010-06-01"),
        ("1 s ticks", 64 * 3600, lambda p, t: p.send(intraday, limit=64 * 3600), "2021-03-01"),
    ]
    print("\n## iceberg: one topic as a Hive and as an Iceberg table, Lake.sql over each\n")
    print("| data | query | Hive s | Iceberg s | Iceberg / Hive |")
    print("|---|---|---:|---:|---:|")
    landings = []
    for label, n, send, day in shapes:
        topic = f"shape-{uuid.uuid4().hex[:6]}"
        with broker.open_broker(args.broker, 4, [topic]) as kafka:
            report = send(ss.Producer(kafka.bootstrap_servers, topic), topic)
            assert report.delivered == n and report.dropped_by_broker == 0
            lake = work / topic
            for name, table_format in (("hive_t", "hive"), ("ice_t", "iceberg")):
                status, seconds = land(kafka, topic, lake, n, table=name, table_format=table_format)
                landings.append((label, table_format, seconds, status.files))
            db = ss.Lake(str(lake))
            for query, text in [
                ("count(*)", "SELECT count(*) FROM {}"),
                ("one day", 'SELECT count(*), avg("Close") FROM {} WHERE "Date" = \'' + day + "'"),
                ("per-index avg", 'SELECT "Index", avg("Close") FROM {} GROUP BY 1'),
            ]:
                hive, ice = (
                    median_seconds(lambda q=q, d=db: d.sql(q, live=False), args.repeat)
                    for q in (text.format("hive_t"), text.format("ice_t"))
                )
                print(f"| {label} | {query} | {hive:.4f} | {ice:.4f} | {ice / hive:.2f}× |")
    print("\n| data | table | landing s | objects |")
    print("|---|---|---:|---:|")
    for label, table_format, seconds, files in landings:
        print(f"| {label} | {table_format} | {seconds:.2f} | {files:,} |")
    shutil.rmtree(work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="daily,fresh,compact,glue,local,iceberg")
    p.add_argument("--table-format", choices=["hive", "iceberg"], default="hive")
    p.add_argument("--ticks", type=int, default=20)
    p.add_argument("--repeat", type=int, default=5)
    broker.add_option(p)
    args = p.parse_args()
    print(broker.describe(args.broker))
    for name in args.only.split(","):
        sections = {
            "daily": daily,
            "fresh": fresh,
            "compact": compact,
            "glue": glue,
            "local": local_catalog,
            "iceberg": iceberg,
        }
        sections[name](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
