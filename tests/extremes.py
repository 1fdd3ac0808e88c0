"""Public constructors and functions driven with extreme arguments (hypothesis).

Run as a script by ``test_extremes.py``, in a process of its own, so that an abort (an
allocation failure, a Rust panic that unwinds into C) fails the test instead of killing
pytest. Every call must either work or raise a Python exception of the library's own, or
Python's for a wrong type or range; a ``PanicException`` (a ``BaseException``) stops the
run with the arguments that caused it.
"""

import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stockstream as ss

NUMBERS = st.sampled_from(
    [0, -1, 1, 0.5, -1e-300, 1e-20, 1e19, 10**12, 2**63, float("nan"), float("inf"), -float("inf")]
)
TEXT = st.sampled_from(
    ["", " ", "x" * 100_000, "~", "../..", "a\x00b", "é", "1d", "-5s", "9" * 30 + "d"]
)
ANY = st.one_of(NUMBERS, TEXT, st.none())
# Lake locations: none may be a real folder worth crawling (the home directory, the root).
PLACES = st.sampled_from(["", " ", "x" * 100_000, "a\x00b", "é", "s3://", "s3:///x", "ftp://x"])
# Arguments bounding how long a call may run stay small; the one under test is extreme.
ACCEPTED = (ss.StockstreamError, ValueError, TypeError, OverflowError)
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)


def short(timeout):
    """A timeout as given, but at most 2 s when it is a valid long one."""
    return min(timeout, 2) if isinstance(timeout, float) and timeout == timeout else timeout


def attempt(f, *args, **kwargs):
    try:
        return f(*args, **kwargs)
    except ACCEPTED:
        return None


def main() -> None:
    kafka = ss.EmbeddedKafka(partitions=2, topics=["t"])
    bootstrap = kafka.bootstrap_servers
    ss.Producer(bootstrap, "t").send(ss.TickSource.synthetic(2), limit=20)
    work = Path(tempfile.mkdtemp())
    csv = work / "ticks.csv"
    csv.write_text("Index,Date,Close\nNYA,2021-01-04,1.5\nNYA,2021-01-05,2.5\n")

    @SETTINGS
    @given(rows=ANY, symbols=ANY, seed=ANY, start=ANY, interval=ANY)
    def synthetic(rows, symbols, seed, start, interval):
        attempt(ss.synthetic_ticks, rows, symbols, seed=seed, start=start, interval=interval)
        attempt(ss.TickSource.synthetic, symbols, seed=seed, start=start, interval=interval)

    @SETTINGS
    @given(partitions=ANY, brokers=ANY)
    def embedded(partitions, brokers):
        cluster = attempt(ss.EmbeddedKafka, partitions, brokers=brokers)
        if cluster is not None:
            attempt(cluster.create_topic, "x", partitions)
            cluster.stop()

    producer = ss.Producer(bootstrap, "t")

    @SETTINGS
    @given(rate=ANY, speedup=ANY, limit=ANY, seed=ANY, mode=ANY)
    def send(rate, speedup, limit, seed, mode):
        attempt(ss.Producer, bootstrap, "t", connect_timeout=rate)
        # At most 50 messages and 2 s, whatever the pacing asked for.
        bounded = limit if isinstance(limit, int) and 0 <= limit <= 50 else 50
        attempt(producer.send, ss.TickSource.synthetic(2), rate=rate, limit=bounded, duration=2)
        attempt(producer.send, ss.TickSource.synthetic(2), speedup=speedup, limit=5, duration=2)
        attempt(producer.send_csv, csv, mode=mode, seed=seed, limit=5, duration=2)
        attempt(producer.send, ss.TickSource.synthetic(2), limit=5, duration=limit)

    @SETTINGS
    @given(a=ANY, b=ANY, c=ANY, text=TEXT)
    def sink(a, b, c, text):
        text = text.replace("/", "_")
        lake = str(work / "lake")
        for name in ("records", "bytes", "buffer_bytes", "age", "idle"):
            roll = attempt(ss.RollPolicy, **{name: a})
            attempt(ss.LakeSink, bootstrap, "t", "g", lake, roll=roll)
        attempt(ss.LakeSink, bootstrap, "t", "g", lake, aws=attempt(ss.AwsOptions, part_size=a))
        for name in ("compact_every", "compact_grace"):
            attempt(ss.LakeSink, bootstrap, "t", "g", lake, **{name: b})
        attempt(
            ss.LakeSink,
            bootstrap,
            "t",
            "g",
            lake,
            connect_timeout=min(c, 2) if isinstance(c, float) and c == c else c,
        )
        for name in ("table", "partition_by", "format", "database"):
            attempt(ss.LakeSink, bootstrap, "t", "g", lake, **{name: text})
        for name in ("symbol", "time", "time_format", "time_zone"):
            schema = attempt(ss.TickSchema, **{name: text})
            attempt(ss.LakeSink, bootstrap, "t", "g", lake, schema=schema)
        attempt(ss.LakeSink, bootstrap, text, "g", lake)
        attempt(ss.LakeSink, bootstrap, "t", text, lake)
        attempt(ss.LakeSink, bootstrap, "t", "g", str(work / text[:200]))

    @SETTINGS
    @given(a=ANY, b=ANY, text=TEXT)
    def analytics(a, b, text):
        for name in ("window", "slide", "allowed_lateness", "max_future"):
            kwargs = {"window": "1m", name: a}
            attempt(ss.Analytics, bootstrap, "t", "g", **kwargs)
        for name in ("idle_timeout", "checkpoint_interval", "keep"):
            attempt(ss.Analytics, bootstrap, "t", "g", window="1m", **{name: b})
        attempt(ss.Analytics, bootstrap, "t", "g", indicators=[text])
        attempt(ss.Analytics, bootstrap, "t", "g", alerts=[text])
        attempt(ss.Analytics, bootstrap, "t", "g", window=text)
        outputs = attempt(ss.Outputs, state=text, windows=text)
        attempt(ss.Analytics, bootstrap, "t", "g", outputs=outputs, window="1m")
        attempt(ss.Analytics, bootstrap, "t", "g", session_zone=text, indicators=["vwap"])

    @SETTINGS
    @given(text=TEXT, place=PLACES, timeout=ANY)
    def lake(text, place, timeout):
        attempt(ss.Lake, place)
        attempt(ss.crawl, place)
        attempt(
            ss.read_topic,
            bootstrap,
            "t",
            timeout=min(timeout, 2)
            if isinstance(timeout, float) and timeout == timeout
            else timeout,
        )
        attempt(ss.read_topic, bootstrap, text, timeout=2)
        if (work / "lake").exists():
            attempt(ss.Lake(str(work / "lake")).sql, text)
            query = "SELECT {x} AS x"
            attempt(ss.Lake(str(work / "lake")).sql, query, params={"x": timeout})
            attempt(ss.Lake(str(work / "lake")).sql, query, params={"x": text})

    for check in (synthetic, embedded, send, sink, analytics, lake):
        print("checking", check.__name__, flush=True)
        check()
    print("no panic, no abort", flush=True)


if __name__ == "__main__":
    main()
    sys.exit(0)
