"""The end-to-end demo behind ``make demo``: embedded Kafka, the bundled data, a lake."""

import shutil
from pathlib import Path

import polars as pl

import stockstream as ss

TOPIC = "stock-market"


def run(rate_seconds: float = 3.0, lake: str = "demo-lake") -> None:
    """Start an embedded broker, produce the bundled CSV, land it in a lake, crawl, query."""
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
        first = messages.row(0, named=True)
        print(f"5. read back {messages.height:,} messages, a column per field; first:\n   {first}")
        per_partition = (
            messages.group_by("partition")
            .agg(pl.len().alias("messages"), pl.col("key").unique().sort().alias("symbols"))
            .sort("partition")
        )
        print("6. messages per partition (a symbol always lands on one partition):")
        print(per_partition)
        summary = (
            messages.group_by("Index")
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
        for folder in (TOPIC, "_catalog"):
            shutil.rmtree(Path(lake) / folder, ignore_errors=True)
        sink = ss.LakeSink(kafka.bootstrap_servers, TOPIC, "demo-sink", lake)
        status = sink.run(stop_at_end=True)
        db = ss.Lake(lake)
        table = db.tables().row(0, named=True)
        print(
            f"8. landed the topic in {lake}/{TOPIC}/ exactly once: {status.written:,} records in "
            f"{status.files} Parquet files, {status.rejected} rejected; folders chosen from the "
            f"data: {table['partitioning']}"
        )
        report = ss.crawl(lake)
        print(
            f"9. the sink registered the table in the lake's catalog ({lake}/_catalog/, JSON); "
            f"a crawl finds {len(report.partitions_added)} new partitions and reads "
            f"{report.objects_read} objects"
        )
        more = producer.send_csv(ss.BUNDLED_CSV, mode="sample", limit=25)
        live = db.sql("SELECT count(*) AS n FROM stock_market")["n"][0]
        print(
            f"10. {more.delivered} more ticks sent and not landed: SQL counts {live:,} records, "
            f"{db.last_query[0].records} of them read from Kafka's tail"
        )
        print("11. the tutorial's Athena queries, run locally with stockstream SQL:")
        with pl.Config(tbl_rows=20, tbl_cols=12, tbl_width_chars=160):
            for query in (
                "SELECT * FROM stock_market LIMIT 3",
                "SELECT count(*) AS records FROM stock_market",
                'SELECT "Index", round(avg("Close"), 2) AS avg_close, max("High") AS high '
                'FROM stock_market GROUP BY "Index" ORDER BY avg_close DESC LIMIT 5',
                "SELECT STRFTIME(\"Date\", '%Y-%m') AS month, count(*) AS records "
                "FROM stock_market WHERE \"Date\" >= '2021-10-01' GROUP BY 1 ORDER BY 1",
            ):
                print(f"    {query}")
                print(db.sql(query))
    print("done: the embedded broker has stopped.")
