"""The ``stockstream`` command line: broker, produce, tail, sink, analyze, crawl, query, ….

Each command is a thin layer over the Python API of the same name.
"""

import argparse
import inspect
import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Optional

from stockstream import _core
from stockstream.errors import StockstreamError
from stockstream.progress import TerminalProgress

BOOTSTRAP_ENV = "STOCKSTREAM_BOOTSTRAP_SERVERS"


def _pair(text: str, option: str) -> tuple:
    key, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"stockstream: {option} expects key=value, got {text!r}")
    return key, value


def _properties(pairs: list) -> dict:
    return dict(_pair(p, "-X") for p in pairs)


def cmd_broker(args: argparse.Namespace) -> int:
    """Serve an embedded Kafka cluster in the foreground until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with _core.EmbeddedKafka(args.partitions, brokers=args.brokers, topics=args.topic) as kafka:
        bootstrap = kafka.bootstrap_servers
        if args.port:
            bootstrap = f"127.0.0.1:{args.port}"
            _forward(args.port, kafka.bootstrap_servers.split(",")[0], stop)
        print(f"stockstream embedded Kafka at {bootstrap}", flush=True)
        if args.port:
            print(f"  (its brokers listen on {kafka.bootstrap_servers})", flush=True)
        print(
            f"  topics created by clients get 4 partitions; --topic NAME creates NAME with "
            f"{args.partitions}.\n"
            f"  try: kcat -b {bootstrap} -L     (Ctrl-C to stop)",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    print("stopped", flush=True)
    return 0


def _pump(
    src: socket.socket, dst: socket.socket, before_send: Callable[[], object] = lambda: None
) -> None:
    """Copy what ``src`` sends to ``dst`` until either closes, then shut both down."""
    try:
        while chunk := src.recv(65536):
            before_send()
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _forward(port: int, target: str, stop: threading.Event) -> None:
    """Relay connections to 127.0.0.1:``port`` to ``target`` (host:port) until ``stop``.

    Clients only bootstrap through it: the brokers advertise their own ports, which clients
    on this machine then connect to directly.
    """
    host, _, target_port = target.rpartition(":")
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.5)

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except socket.timeout:
                continue
            upstream = socket.create_connection((host, int(target_port)))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()
        server.close()

    threading.Thread(target=accept, name="stockstream-bootstrap-relay", daemon=True).start()


def cmd_tail(args: argparse.Namespace) -> int:
    """Print a topic's messages, like ``kcat -C``: the last N, or from the beginning; follow."""
    bootstrap = _bootstrap(args)
    props = _properties(args.property)
    if args.from_beginning:
        frame = _core.read_topic(bootstrap, args.topic, limit=args.n, **props)
    else:
        frame = _core.read_topic(bootstrap, args.topic, last=args.n or 10, **props)
    after = _next_offsets(frame, {})
    if not args.from_beginning:
        frame = frame.sort("timestamp", "partition", "offset").tail(args.n or 10)
    _print_messages(frame, args.format)
    try:
        while args.follow:
            time.sleep(0.5)
            frame = _core.read_topic(bootstrap, args.topic, after=after, **props)
            after = _next_offsets(frame, after)
            _print_messages(frame.sort("timestamp", "partition", "offset"), args.format)
    except KeyboardInterrupt:
        pass
    return 0


def _next_offsets(frame, after: dict) -> dict:
    """Return each partition's next offset after the messages of ``frame`` and before."""
    import polars as pl

    ends = dict(after)
    for partition, offset in frame.group_by("partition").agg(pl.col("offset").max()).iter_rows():
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


def _print_messages(frame, fmt: str) -> None:
    """Print messages as JSON lines (the value, or key/partition/offset too) or a table."""
    import polars as pl

    if frame.height == 0:
        return
    if fmt == "table":
        values = frame["value"].str.json_decode() if frame["value"].null_count() == 0 else None
        shown = (
            values.struct.unnest() if values is not None and values.dtype == pl.Struct else frame
        )
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200):
            print(shown, flush=True)
        return
    for value in frame["value"]:
        print(value if value is not None else json.dumps(None), flush=True)


def cmd_produce(args: argparse.Namespace) -> int:
    """Produce ticks from a CSV file or the synthetic generator, with a progress line."""
    producer = _core.Producer(_bootstrap(args), args.topic, **_properties(args.property))
    if args.synthetic:
        source = _core.TickSource.synthetic(
            args.synthetic, seed=args.seed, start=args.start, interval=args.interval
        )
    else:
        path = args.file or _bundled()
        # Another layout is checked for the columns named only: it may have no Close.
        other = args.symbol_column or args.time_column
        schema = _schema(
            args, PRODUCE_SCHEMA, numeric=args.numeric_column or ([] if other else None)
        )
        read = _core.TickSource.parquet if str(path).endswith(".parquet") else _core.TickSource.csv
        source = read(path, args.mode, seed=args.seed, schema=schema)
    progress = TerminalProgress()
    try:
        report = producer.send(
            source,
            rate=args.rate,
            speedup=args.speedup,
            limit=args.limit,
            duration=args.duration,
            progress=progress,
        )
    except KeyboardInterrupt:
        progress.close()
        print(f"interrupted; flushed: {producer.last_report}", file=sys.stderr)
        return 130
    progress.close()
    print(report)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_sink(args: argparse.Namespace) -> int:
    """Land a topic in a lake, printing a status line, until a limit or Ctrl-C / SIGTERM."""
    sink = _call(
        _core.LakeSink,
        args,
        _bootstrap(args),
        roll=_core.RollPolicy(**_options(args, ROLL)),
        schema=_schema(args, SINK_SCHEMA),
        columns=dict(_pair(c, "--column") for c in args.column) or None,
        aws=_aws(args),
        catalog=None if args.catalog == "none" else args.catalog,
        **_properties(args.property),
    )
    return _run_until_stopped(sink, args, _status_line)


def _aws(args: argparse.Namespace) -> "_core.AwsOptions":
    """Return the AWS options the command's ``--endpoint-url``, ``--region`` etc. name."""
    return _core.AwsOptions(**_options(args, AWS))


# Which command-line option fills which field of an option object (field: option dest).
ROLL = {"records": "flush_records", "bytes": "flush_bytes", "age": "flush_age",
        "idle": "flush_idle", "buffer_bytes": "buffer_bytes"}  # fmt: skip
AWS = {"endpoint_url": "endpoint_url", "region": "region", "profile": "profile",
       "part_size": "s3_part_size"}  # fmt: skip
OUTPUTS = {"windows": "windows_topic", "indicators": "indicators_topic",
           "alerts": "alerts_topic", "late": "late_topic", "state": "state_topic"}  # fmt: skip
SINK_SCHEMA = {"symbol": "symbol_field", "time": "time_field"}
ANALYTICS_SCHEMA = {**SINK_SCHEMA, "price": "price_field", "volume": "volume_field"}
PRODUCE_SCHEMA = {"symbol": "symbol_column", "time": "time_column"}


def _options(args: argparse.Namespace, fields: dict) -> dict:
    """Return the fields the command line gave of one option object.

    One not given (None, or absent from this command) takes the API's default.
    """
    given = {field: getattr(args, dest, None) for field, dest in fields.items()}
    return {field: value for field, value in given.items() if value is not None}


def _call(target: Any, args: argparse.Namespace, *positional: Any, **explicit: Any) -> Any:
    """Call an API class or function with ``positional``, ``explicit`` and the rest given.

    The rest: each other parameter that an option of the same name gave (unless left unset).
    """
    names = list(inspect.signature(target).parameters)[len(positional) :]
    given = _options(args, {name: name for name in names if name not in explicit})
    return target(*positional, **given, **explicit)


def _schema(args: argparse.Namespace, fields: dict, **extra: Any) -> "Optional[_core.TickSchema]":
    """Return a tick schema of the fields and time options given.

    None if none was given: the tutorial's fields (and for a sink its declared columns).
    """
    given = _options(args, {**fields, "time_format": "time_format", "time_zone": "time_zone"})
    given.update((k, v) for k, v in extra.items() if v is not None)
    if not given:
        return None
    if given.get("volume") == "":
        given["volume"] = None  # ticks without a volume
    return _core.TickSchema(**given)


def _bootstrap(args: argparse.Namespace) -> str:
    bootstrap = args.bootstrap_servers or os.environ.get(BOOTSTRAP_ENV)
    if not bootstrap:
        raise SystemExit(f"stockstream {args.command}: give -b HOST:PORT or set {BOOTSTRAP_ENV}")
    return bootstrap


def _run_until_stopped(job, args: argparse.Namespace, status_line) -> int:
    """Run ``job`` in the background with a status line until its limit or Ctrl-C / SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    job.start(limit=args.limit, duration=args.duration, stop_at_end=args.stop_at_end)
    print(f"{job} started", file=sys.stderr, flush=True)
    last = 0.0
    while job.running and not stop.wait(0.2):
        if not args.quiet and time.monotonic() - last >= 1.0:
            last = time.monotonic()
            print(f"\r{status_line(job.status())}", end="", file=sys.stderr, flush=True)
    status = job.stop()
    if not args.quiet:
        print(file=sys.stderr)
    print(status)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """Compute windows, indicators and alerts on a topic; print alerts as they fire."""

    def print_alert(kind: str, record: dict) -> None:
        print(
            f"\r{record['time']}  {record['symbol']:<10} {record['rule']}: "
            f"{record['direction']} at {record['value']:.6g}",
            flush=True,
        )

    analytics = _call(
        _core.Analytics,
        args,
        _bootstrap(args),
        indicators=args.indicator,
        alerts=args.alert,
        outputs=_core.Outputs(**_options(args, OUTPUTS)),
        schema=_schema(args, ANALYTICS_SCHEMA),
        callback=print_alert,
        callback_kinds=["alert"],
        **_properties(args.property),
    )
    return _run_until_stopped(analytics, args, _analytics_line)


def cmd_crawl(args: argparse.Namespace) -> int:
    """Crawl a lake into its catalog and print what changed."""
    report = _call(_core.crawl, args, aws=_aws(args))
    for table in report.tables_created:
        print(f"table created: {args.database}.{table}")
    for table in report.tables_updated:
        print(f"table updated: {args.database}.{table}")
    for table, column, kind in report.columns_added:
        print(f"column added: {table}.{column} {kind}")
    for table, folder in report.partitions_added:
        print(f"partition added: {table} {folder}")
    for table, column, existing, found, files in report.conflicts:
        where = " and ".join(files)
        print(f"type conflict: {table}.{column} is {existing}, but {found} in {where}")
    for url, why in report.skipped:
        print(f"skipped: {url}: {why}")
    print(
        f"{report.objects_read} objects read, {report.objects_unchanged} unchanged since the "
        "last crawl"
    )
    return 0


def _lake(args: argparse.Namespace) -> "_core.Lake":
    """Open the lake and catalog that the command's options name."""
    return _call(_core.Lake, args, aws=_aws(args))


def cmd_query(args: argparse.Namespace) -> int:
    """Run SQL over the lake and print the result as a table."""
    import polars as pl

    frame = _call(_lake(args).sql, args, args.sql)
    with pl.Config(tbl_rows=args.rows, tbl_cols=-1, tbl_width_chars=200):
        print(frame)
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    """Compact a lake's small objects and print what changed."""
    report = _call(_lake(args).compact, args)
    for table, path in report.partitions:
        print(f"compacted: {table} {path or '(unpartitioned)'}")
    print(
        f"{report.objects_merged} objects merged into {report.objects_written} "
        f"({report.bytes_read} → {report.bytes_written} bytes), {report.objects_carried} "
        f"carried; {report.folders_deleted} old folders deleted ({report.objects_deleted} "
        f"objects, {report.snapshots_expired} Iceberg snapshots expired); {report.raced} lost "
        f"to another compaction; {report.elapsed:.2f} s"
    )
    return 0


def _status_line(s: "_core.SinkStatus") -> str:
    lag = "?" if s.lag is None else f"{s.lag:,}"
    return (
        f"consumed {s.consumed:,}  written {s.written:,}  files {s.files:,}  "
        f"rejected {s.rejected:,}  lag {lag}  errors {s.errors}  [{s.state}]"
    )


def _analytics_line(s: "_core.AnalyticsStatus") -> str:
    lag = "?" if s.lag is None else f"{s.lag:,}"
    return (
        f"ticks {s.ticks:,}  windows {s.windows:,}  alerts {s.alerts:,}  late {s.late:,}  "
        f"rejected {s.rejected:,}  lag {lag}  errors {s.errors}  [{s.state}]"
    )


def _bundled() -> str:
    from stockstream import BUNDLED_CSV

    return str(BUNDLED_CSV)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the end-to-end demo on embedded defaults."""
    from stockstream.demo import run

    run(rate_seconds=args.tutorial_seconds)
    return 0


def _property_option(p: argparse.ArgumentParser, client: str) -> None:
    p.add_argument(
        "-X",
        dest="property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"librdkafka {client} property, e.g. -X security.protocol=SASL_SSL (repeatable)",
    )


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, help="stop after N messages")
    p.add_argument("--duration", type=float, help="stop after N seconds")
    p.add_argument(
        "--stop-at-end", action="store_true", help="stop once the topic is read to its end"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no status line")


def _time_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--time-format",
        help='strftime of the time values, e.g. "%%d.%%m.%%Y" (default: common shapes recognised)',
    )
    p.add_argument("--time-zone", help="zone of times without an offset, e.g. America/New_York")


def _aws_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    p.add_argument("--region")
    p.add_argument("--profile", help="AWS profile name")


def _catalog_options(p: argparse.ArgumentParser, none: bool = False) -> None:
    p.add_argument("--database", default="stock_market", help="catalog database")
    p.add_argument(
        "--catalog",
        choices=["local", "glue", "rest", "none"] if none else ["local", "glue", "rest"],
        default="local",
        help="local: JSON in the lake's _catalog/ (Iceberg tables: catalog.db in the lake); "
        "glue: AWS Glue Data Catalog; rest: an Iceberg REST catalog at --catalog-uri"
        + ("; none: register nothing" if none else ""),
    )
    p.add_argument(
        "--catalog-uri",
        metavar="PATH|URL",
        help="SQLite file of the Iceberg catalog, if not the lake's catalog.db; "
        "the URL of a REST catalog",
    )


def parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``stockstream`` command."""
    p = argparse.ArgumentParser(
        prog="stockstream", description="Real-time stock-market pipelines on Kafka."
    )
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("broker", help="serve an embedded Kafka cluster until Ctrl-C")
    b.add_argument("--partitions", type=int, default=4, help="partitions of --topic topics")
    b.add_argument("--brokers", type=int, default=1)
    b.add_argument("--topic", action="append", default=[], help="create this topic (repeatable)")
    b.add_argument(
        "--port",
        type=int,
        help="also accept clients on 127.0.0.1:PORT (e.g. 9092, as in the tutorial). The "
        "embedded brokers always listen on ports of their own choosing; this port relays to "
        "them, so clients bootstrap through it and then connect to the brokers' own ports "
        "(all on this machine)",
    )
    b.set_defaults(func=cmd_broker)

    tl = sub.add_parser("tail", help="print a topic's messages (like kcat -C)")
    tl.add_argument("topic")
    tl.add_argument("-b", "--bootstrap-servers", help=f"host:port list (or ${BOOTSTRAP_ENV})")
    tl.add_argument("-n", type=int, help="how many messages (default: the last 10)")
    tl.add_argument(
        "--from-beginning", action="store_true", help="from each partition's first message"
    )
    tl.add_argument("-f", "--follow", action="store_true", help="keep printing new messages")
    tl.add_argument("--format", choices=["json", "table"], default="json")
    _property_option(tl, "consumer")
    tl.set_defaults(func=cmd_tail)

    pr = sub.add_parser("produce", help="produce stock ticks to a topic")
    pr.add_argument(
        "file", nargs="?", help="a CSV or Parquet file (default: the bundled tutorial data)"
    )
    pr.add_argument("--symbol-column", help="the symbol column (the Kafka key; default Index)")
    pr.add_argument("--time-column", help="the event-time column (default Date)")
    pr.add_argument(
        "--numeric-column", action="append", help="a column that must be numeric (repeatable)"
    )
    _time_options(pr)
    pr.add_argument("-b", "--bootstrap-servers", help=f"host:port list (or ${BOOTSTRAP_ENV})")
    pr.add_argument("-t", "--topic", default="stock-market")
    pr.add_argument("--mode", choices=["replay", "sample"], default="replay")
    pr.add_argument("--synthetic", type=int, metavar="SYMBOLS", help="synthetic ticks instead")
    pr.add_argument("--start", default="2021-01-04", help="first synthetic event time")
    pr.add_argument(
        "--interval", type=float, default=86400.0, help="seconds of event time between ticks"
    )
    pr.add_argument("--rate", type=float, help="messages per second (1 = the tutorial)")
    pr.add_argument("--speedup", type=float, help="replay event time N times faster")
    pr.add_argument("--limit", type=int, help="stop after N messages")
    pr.add_argument("--duration", type=float, help="stop after N seconds")
    pr.add_argument("--seed", type=int, default=0)
    _property_option(pr, "producer")
    pr.set_defaults(func=cmd_produce)

    sk = sub.add_parser("sink", help="land a topic in a lake (local directory or s3://)")
    sk.add_argument("lake", nargs="?", default="lake", help="directory or s3://bucket/prefix")
    sk.add_argument("-b", "--bootstrap-servers", help=f"host:port list (or ${BOOTSTRAP_ENV})")
    sk.add_argument("-t", "--topic", default="stock-market")
    sk.add_argument("-g", "--group-id", default="stockstream-sink")
    sk.add_argument("--format", choices=["parquet", "ndjson"], default="parquet")
    sk.add_argument(
        "--table-format",
        choices=["hive", "iceberg"],
        default="hive",
        help="hive folders in the catalog, or an Iceberg table (in catalog.db, or Glue)",
    )
    sk.add_argument("--table", help="lake folder to write (default: the topic name)")
    sk.add_argument(
        "--partition-by",
        help="auto (the default: chosen from the data), or a comma list of "
        "symbol,year,month,date,hour; "
        "symbol,auto adds symbol folders",
    )
    sk.add_argument(
        "--compact-every", type=float, metavar="SECONDS", help="compact the table this often"
    )
    sk.add_argument("--flush-records", type=int, help="records per partition buffer")
    sk.add_argument("--flush-bytes", type=int, help="message bytes per partition buffer")
    sk.add_argument("--flush-age", type=float, help="seconds before a buffer is landed")
    sk.add_argument("--flush-idle", type=float, help="seconds of quiet before it is landed")
    sk.add_argument("--buffer-bytes", type=int, help="memory for all buffers before landing")
    sk.add_argument("--s3-part-size", type=int, help="bytes per S3 multipart upload part")
    sk.add_argument("--kafka-metadata", action="store_true", help="add _kafka_* columns")
    sk.add_argument("--symbol-field", help="the field holding the symbol (default Index)")
    sk.add_argument("--time-field", help="the field holding the event time (default Date)")
    sk.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="NAME=TYPE",
        help="declared column type: string, float, int or bool (repeatable)",
    )
    _time_options(sk)
    sk.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to reach Kafka")
    _aws_options(sk)
    _catalog_options(sk, none=True)
    _run_options(sk)
    _property_option(sk, "consumer")
    sk.set_defaults(func=cmd_sink)

    a = sub.add_parser("analyze", help="windows, indicators and alerts on a topic, on event time")
    a.add_argument("-b", "--bootstrap-servers", help=f"host:port list (or ${BOOTSTRAP_ENV})")
    a.add_argument("-t", "--topic", default="stock-market")
    a.add_argument("-g", "--group-id", default="stockstream-analytics")
    a.add_argument("--window", help="window length, e.g. 1m, 5m, 1d")
    a.add_argument("--slide", help="hop between window starts (default: tumbling)")
    a.add_argument(
        "--indicator",
        action="append",
        help="sma_20, ema_12, sma_5m, volatility_20, rsi_14, macd, macd_signal, macd_hist, "
        "bb_upper_20, bb_lower_20, bb_pctb_20, atr_14, vwap, roc_10 (repeatable)",
    )
    a.add_argument(
        "--alert",
        action="append",
        help='"price crosses 15000", "sma_5 crosses sma_20", "move 2%%" (repeatable)',
    )
    a.add_argument("--allowed-lateness", help="e.g. 30s (default: none)")
    a.add_argument("--idle-timeout", type=float, default=10.0, help="seconds of quiet")
    a.add_argument("--windows-topic", help="produce closed windows here")
    a.add_argument("--indicators-topic", help="produce per-tick indicators here")
    a.add_argument("--alerts-topic", help="produce alerts here")
    a.add_argument("--late-topic", help="produce late ticks here")
    a.add_argument("--state-topic", help="checkpoint topic (default: GROUP-state)")
    a.add_argument(
        "--checkpoint-interval", type=float, default=2.0, help="seconds between checkpoints"
    )
    a.add_argument(
        "--exactly-once",
        action="store_true",
        help="outputs, state and offsets in Kafka transactions (a broker with transactions)",
    )
    a.add_argument("--symbol-field", help="default Index")
    a.add_argument("--time-field", help="default Date")
    a.add_argument("--price-field", help="default Close")
    a.add_argument("--volume-field", help='default Volume; "" if ticks have no volume')
    _time_options(a)
    a.add_argument("--session-zone", help="exchange time zone where trading days begin")
    a.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to reach Kafka")
    _run_options(a)
    _property_option(a, "client")
    a.set_defaults(func=cmd_analyze)

    c = sub.add_parser("crawl", help="find tables, partitions and columns; update the catalog")
    c.add_argument("lake", nargs="?", default="lake", help="directory or s3://bucket/prefix")
    c.add_argument("--table", help="crawl only this table")
    c.add_argument("--on-error", choices=["skip", "raise"], default="skip")
    _catalog_options(c)
    _aws_options(c)
    c.set_defaults(func=cmd_crawl)

    q = sub.add_parser("query", help="run SQL over the lake's catalog tables")
    q.add_argument("sql", help='e.g. "SELECT count(*) FROM stock_market"')
    q.add_argument("--lake", default="lake", help="directory or s3://bucket/prefix")
    q.add_argument("--engine", choices=["polars", "athena"], default="polars")
    q.add_argument("--workgroup", help="Athena workgroup")
    q.add_argument("--output", help="Athena result location, s3://bucket/prefix/")
    q.add_argument("--rows", type=int, default=25, help="rows to print")
    q.add_argument(
        "--live",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also read what the source topic holds beyond the lake (default: when reachable)",
    )
    _catalog_options(q)
    _aws_options(q)
    q.set_defaults(func=cmd_query)

    m = sub.add_parser("compact", help="merge small objects; switch partitions in the catalog")
    m.add_argument("lake", nargs="?", default="lake", help="directory or s3://bucket/prefix")
    m.add_argument("--table", help="compact only this table")
    m.add_argument(
        "--target-bytes", type=int, default=128 << 20, help="size of merged objects (128 MiB)"
    )
    m.add_argument(
        "--min-objects", type=int, default=2, help="compact folders with at least this many"
    )
    m.add_argument(
        "--grace",
        type=float,
        default=3600.0,
        help="seconds before replaced folders are deleted (by a later run)",
    )
    _catalog_options(m)
    _aws_options(m)
    m.set_defaults(func=cmd_compact)

    d = sub.add_parser("demo", help="embedded broker + bundled data, end to end")
    d.add_argument(
        "--tutorial-seconds",
        type=float,
        default=3.0,
        help="how long to run the tutorial's 1 msg/s loop",
    )
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Optional[list] = None) -> int:
    """Entry point of the ``stockstream`` command."""
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except StockstreamError as e:
        print(f"stockstream {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
