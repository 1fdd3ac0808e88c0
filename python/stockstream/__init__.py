"""stockstream: real-time stock-market pipelines on Kafka, with a Rust core.

Produce stock ticks from a CSV (or a synthetic generator) into Kafka, fast and with every
delivery accounted for; an in-process Kafka cluster makes it run with zero setup::

    import stockstream

    with stockstream.EmbeddedKafka() as kafka:
        producer = stockstream.Producer(kafka.bootstrap_servers, "stock-market")
        report = producer.send_csv(stockstream.BUNDLED_CSV, mode="replay")
        ticks = stockstream.read_topic(kafka.bootstrap_servers, "stock-market")

Land the topic in a lake, exactly once, as Hive-partitioned Parquet (a local directory or
``s3://bucket/prefix``)::

        sink = stockstream.LakeSink(kafka.bootstrap_servers, "stock-market", lake="lake")
        sink.run(stop_at_end=True)            # or sink.start() … sink.status() … sink.stop()

Describe the lake in a catalog (like a Glue crawler) and query it with SQL (like Athena)::

        stockstream.crawl("lake")
        stockstream.Lake("lake").sql("SELECT count(*) FROM stock_market")

Your own data: a DataFrame (Polars, pandas, Arrow) and a ``TickSchema`` naming its fields::

        schema = stockstream.TickSchema(symbol="ticker", time="day", price="close",
                                        volume=None, time_format="%d.%m.%Y")
        producer.send_frame(frame, schema=schema)

Compute per-symbol windows, indicators and alerts on the stream, on event time::

        analytics = stockstream.Analytics(kafka.bootstrap_servers, "stock-market",
                                          window="5m", indicators=["rsi_14", "macd"],
                                          alerts=["rsi_14 crosses 70"],
                                          outputs=stockstream.Outputs(windows="bars-5m",
                                                                      alerts="alerts"))
        analytics.start()                     # … analytics.windows(), analytics.alerts()
"""

from pathlib import Path

from stockstream._core import (
    Analytics,
    AnalyticsStatus,
    AsOf,
    AwsOptions,
    CompactReport,
    CrawlReport,
    EmbeddedKafka,
    JobStatus,
    Lake,
    LakeSink,
    Outputs,
    Pipeline,
    RollPolicy,
    SendReport,
    Session,
    SinkStatus,
    TailInfo,
    TickSchema,
    TickSource,
    __version__,
    crawl,
    read_ticks,
    running_pipelines,
    synthetic_ticks,
)
from stockstream.chart import chart
from stockstream.display import watch
from stockstream.errors import (
    ConfigError,
    DeliveryError,
    KafkaError,
    NotFoundError,
    QueryError,
    SchemaError,
    StockstreamError,
)
from stockstream.producer import Producer
from stockstream.progress import ProgressBar
from stockstream.topic import read_topic

BUNDLED_CSV = Path(__file__).parent / "data" / "indexProcessed_synthetic.csv"
"""The bundled dataset: synthetic daily bars of 14 world indices in the tutorial's schema."""

__all__ = [
    "Analytics",
    "AnalyticsStatus",
    "AsOf",
    "AwsOptions",
    "BUNDLED_CSV",
    "CompactReport",
    "ConfigError",
    "CrawlReport",
    "DeliveryError",
    "EmbeddedKafka",
    "JobStatus",
    "KafkaError",
    "Lake",
    "LakeSink",
    "NotFoundError",
    "Outputs",
    "Pipeline",
    "Producer",
    "ProgressBar",
    "QueryError",
    "RollPolicy",
    "SchemaError",
    "SendReport",
    "Session",
    "SinkStatus",
    "StockstreamError",
    "TailInfo",
    "TickSchema",
    "TickSource",
    "__version__",
    "chart",
    "crawl",
    "read_ticks",
    "read_topic",
    "running_pipelines",
    "synthetic_ticks",
    "watch",
]


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext stockstream``: the ``%%sql`` and ``%stockstream`` magics."""
    from stockstream.magics import load_ipython_extension as load

    load(ipython)
