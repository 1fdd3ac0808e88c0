"""The end-to-end demo behind ``make demo``: embedded Kafka, the bundled data, a lake."""

import shutil
from pathlib import Path

import polars as pl

import stockstream as ss

TOPIC = "stock-market"


def run(rate_seconds: float = 3.0, lake: str = "demo-lake") -> None:
    """Start an embedded broker, produce the bundled CSV, summarise it, land it in a lake."""
    with ss.EmbeddedKafka(partitions=4, topics=[TOPIC]) as kafka:
        print(f"1. embedded Kafka at {kafka.bootstrap_servers}, topic {TOPIC!r} (4 partitions)")
        ticks = ss.read_ticks(ss.BUNDLED_CSV)
        print(
            f"2. {ss.BUNDLED_CSV.name}: {ticks.height:,} rows, "
            f"{ticks['Index'].n_unique()} indices, {ticks['Date'].min()} .. {ticks['Date'].max()}"
        )

        producer = ss.Producer(kafka.bootstrap_servers, TOPIC)
        report = producer.send_csv(ss.BUNDLED_CSV, mode="replay")
        print(f"3. replayed in event-time order: {report}")

        slow = producer.send_csv(ss.BUNDLED_CSV, mode="sample", rate=1.0, duration=rate_seconds)
        print(
            f"4. the tutorial's loop (random row, 1 msg/s) for {rate_seconds:g} s: "
            f"{slow.delivered} messages"
        )

        messages = ss.read_topic(kafka.bootstrap_servers, TOPIC)
        values = messages["value"].str.json_decode()
        print(f"5. read back {messages.height:,} messages; first value:\n   {messages['value'][0]}")
        per_partition = (
            messages.group_by("partition")
            .agg(pl.len().alias("messages"), pl.col("key").unique().sort().alias("symbols"))
            .sort("partition")
        )
        print("6. messages per partition (a symbol always lands on one partition):")
        print(per_partition)
        summary = (
            messages.select("key", values.alias("tick"))
            .unnest("tick")
            .group_by("Index")
            .agg(
                pl.len().alias("ticks"),
                pl.col("Date").min().alias("first"),
                pl.col("Date").max().alias("last"),
                pl.col("Close").sort_by("Date").last().alias("last_close"),
                pl.col("CloseUSD").mean().round(2).alias("mean_close_usd"),
            )
            .sort("Index")
        )
        print("7. per-index summary of what Kafka holds:")
        with pl.Config(tbl_rows=20):
            print(summary)

        # Each run starts a fresh broker whose offsets restart at 0: start the table afresh too.
        shutil.rmtree(Path(lake) / TOPIC, ignore_errors=True)
        sink = ss.LakeSink(kafka.bootstrap_servers, TOPIC, "demo-sink", lake, partition_by="month")
        status = sink.run(stop_at_end=True)
        print(
            f"8. landed the topic in {lake}/{TOPIC}/ exactly once: {status.written:,} records in "
            f"{status.files} Parquet files (month=YYYY-MM/ folders), {status.rejected} rejected"
        )
        landed = pl.scan_parquet(f"{lake}/{TOPIC}/**/*.parquet", hive_partitioning=True)
        per_month = landed.group_by("month").agg(pl.len().alias("records")).sort("month")
        print("9. read back from the lake with Polars:")
        print(per_month.collect())
    print("done: the embedded broker has stopped.")
