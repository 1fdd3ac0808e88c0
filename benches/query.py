"""SQL over the lake: stockstream (Polars SQL over the catalog) vs DuckDB on the same files, and
the same rows stored the tutorial's way (one JSON object per record).

The lake is written by the sink itself: synthetic minute ticks (500 symbols, ~14 days) go
through the broker into one topic in rounds of 1M records, and a LakeSink lands each round as
`date=` Parquet in one table before the next is sent (the embedded broker keeps ~5 MiB a
partition: what it drops later is landed already); then the lake is crawled. The lake is
kept between runs (--lake) and rebuilt only if it does not hold --rows records.

Each query runs --repeat times per engine; the table shows the median wall time. stockstream's
time is a whole `Lake.sql` call: catalog read, object listing, planning, reading, result.
DuckDB reads the same Parquet files through a view over `read_parquet` (its `date` folders
clash with the `Date` column, as names compare without case, so DuckDB filters on `Date`).

The small-files comparison takes the first --sample rows of the lake, writes them once as
one Parquet object per day (what the sink would write) and once as one JSON object per record
(what the tutorial's consumer writes through s3fs), crawls both and queries both with
stockstream and DuckDB; the factor is how much slower the one-object-per-record layout is.

Usage: python benches/query.py [--rows 10000000] [--sample 20000] [--repeat 5]
"""

import datetime
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import broker  # noqa: E402

ROUND = 1_000_000
PARTITIONS = 32
SYMBOLS = 500


def build_lake(lake: Path, rows: int, address: str | None) -> None:
    import stockstream as ss

    shutil.rmtree(lake, ignore_errors=True)
    source = ss.TickSource.synthetic(SYMBOLS, seed=7, interval=60.0)
    began = time.perf_counter()
    topic = f"ticks-{uuid.uuid4().hex[:6]}"
    with broker.open_broker(address, PARTITIONS, [topic]) as kafka:
        b = kafka.bootstrap_servers
        landed, round_ = 0, 0
        while landed < rows:
            n = min(ROUND, rows - landed)
            t0 = time.perf_counter()
            report = ss.Producer(b, topic).send(source, limit=n)
            assert report.delivered == n and report.dropped_by_broker == 0, report
            t1 = time.perf_counter()
            sink = ss.LakeSink(
                b,
                topic,
                f"bench-{round_}",
                str(lake),
                table="ticks",
                roll=ss.RollPolicy(idle=1.0),
            )
            status = sink.run(stop_at_end=True)
            assert status.written == n, (status.written, n)
            landed += n
            round_ += 1
            print(
                f"  landed {landed:,} records (produce {t1 - t0:.1f} s, "
                f"sink {time.perf_counter() - t1:.1f} s, {status.files} objects)",
                file=sys.stderr,
            )
    print(f"lake written by the sink in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    ss.crawl(str(lake))


def median_seconds(run, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


def duck_view(files_glob: str, reader: str):
    import duckdb

    con = duckdb.connect()
    con.execute(f"CREATE VIEW ticks AS SELECT * FROM {reader}('{files_glob}')")
    return con


def compare(title, lake: Path, con, queries, repeat: int) -> list:
    import stockstream as ss

    db = ss.Lake(str(lake))
    rows = []
    for name, ours, theirs in queries:
        t_ours, r_ours = median_seconds(lambda q=ours: db.sql(q), repeat)
        t_duck, r_duck = median_seconds(lambda q=theirs: con.sql(q).fetchall(), repeat)
        assert r_ours.height == len(r_duck), (name, r_ours.height, len(r_duck))
        rows.append((title, name, t_ours, t_duck))
    return rows


def main() -> None:
    p = broker.parser(__doc__, rows=10_000_000)
    p.add_argument("--sample", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--lake", type=Path, default=Path(tempfile.gettempdir()) / "stockstream-query")
    a = p.parse_args()
    print(broker.describe(a.broker))

    import polars as pl

    import stockstream as ss

    lake = a.lake / f"lake-{a.rows}"
    try:
        held_rows = ss.Lake(str(lake)).sql("SELECT count(*) AS n FROM ticks")["n"][0]
    except ss.StockstreamError:
        held_rows = 0
    if held_rows != a.rows:
        build_lake(lake, a.rows, a.broker)
    objects = sorted((lake / "ticks").rglob("*.parquet"))
    size = sum(f.stat().st_size for f in objects)
    first = ss.Lake(str(lake)).sql("SELECT min(date) AS d FROM ticks")["d"][0]
    day = (first + datetime.timedelta(days=3)).isoformat()
    print(
        f"lake: {a.rows:,} rows in {len(objects)} Parquet objects ({size / 1e6:.0f} MB), "
        f"one-day filter on {day}\n"
    )

    queries = [
        ("count(*)", "SELECT count(*) AS n FROM ticks", "SELECT count(*) AS n FROM ticks"),
        (
            "avg(Close) by symbol",
            'SELECT "Index", avg("Close") AS c FROM ticks GROUP BY "Index"',
            'SELECT "Index", avg("Close") AS c FROM ticks GROUP BY "Index"',
        ),
        (
            "one day",
            f'SELECT "Index", avg("Close") AS c FROM ticks WHERE date = \'{day}\' GROUP BY 1',
            f'SELECT "Index", avg("Close") AS c FROM ticks '
            f"WHERE CAST(\"Date\" AS DATE) = DATE '{day}' GROUP BY 1",
        ),
    ]
    con = duck_view(str(lake / "ticks" / "*" / "*.parquet"), "read_parquet")
    results = compare(f"{a.rows:,} rows", lake, con, queries, a.repeat)

    # The same first rows, laid out by the sink and by the tutorial.
    work = Path(tempfile.mkdtemp(prefix="query-bench-"))
    try:
        sample = (
            ss.Lake(str(lake))
            .sql(f"SELECT * FROM ticks LIMIT {a.sample}")
            .drop("date")
            .with_columns(pl.col("Date").cast(pl.String))
        )
        sink_like, tutorial = work / "sink-layout", work / "tutorial-layout"
        for d, part in sample.group_by(pl.col("Date").str.slice(0, 10).alias("d")):
            folder = sink_like / "ticks" / f"date={d[0]}"
            folder.mkdir(parents=True)
            part.write_parquet(folder / "part-0.parquet")
        (tutorial / "ticks").mkdir(parents=True)
        began = time.perf_counter()
        for i, row in enumerate(sample.iter_rows(named=True)):
            (tutorial / "ticks" / f"stock_market_{i}.json").write_text(
                pl.DataFrame([row]).write_ndjson()
            )
        write_s = time.perf_counter() - began
        crawl_s = {}
        for layout in (sink_like, tutorial):
            began = time.perf_counter()
            ss.crawl(str(layout))
            crawl_s[layout] = time.perf_counter() - began
        small = queries[:2]
        results += compare(
            f"{a.sample:,} rows, sink layout",
            sink_like,
            duck_view(str(sink_like / "ticks" / "*" / "*.parquet"), "read_parquet"),
            small,
            a.repeat,
        )
        results += compare(
            f"{a.sample:,} rows, 1 object/record",
            tutorial,
            duck_view(str(tutorial / "ticks" / "*.json"), "read_json_auto"),
            small,
            a.repeat,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("| data | query | stockstream s | DuckDB s | stockstream / DuckDB |")
    print("|---|---|---:|---:|---:|")
    for title, name, ours, duck in results:
        print(f"| {title} | {name} | {ours:.3f} | {duck:.3f} | {ours / duck:.2f}× |")
    by = {(t, q): (o, d) for t, q, o, d in results}
    broker.save(a.json, **{f"{t}: {q} vs DuckDB": o / d for t, q, o, d in results})
    print(
        f"\ncrawl: sink layout {crawl_s[sink_like]:.2f} s, one object per record "
        f"{crawl_s[tutorial]:.2f} s (writing the {a.sample:,} objects took {write_s:.1f} s)"
    )
    for name, _, _ in queries[:2]:
        o_sink, d_sink = by[(f"{a.sample:,} rows, sink layout", name)]
        o_tut, d_tut = by[(f"{a.sample:,} rows, 1 object/record", name)]
        print(
            f"small-files factor, {name}: stockstream {o_tut / o_sink:.0f}×, "
            f"DuckDB {d_tut / d_sink:.0f}× slower on one object per record"
        )


if __name__ == "__main__":
    main()
