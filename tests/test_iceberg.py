"""Iceberg tables: what a sink lands, pyiceberg and Polars read back as the topic held it."""

import polars as pl
import pytest
from pyiceberg.catalog.sql import SqlCatalog

import stockstream as ss
from conftest import end_offsets, lake_sink
from lake_check import assert_exactly_once

TICKS = ["Index", "Date", "Open", "High", "Low", "Close", "Adj Close", "Volume", "CloseUSD"]
GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


def load_table(lake, table, database="stock_market"):
    """The table as pyiceberg opens it from the lake's catalog."""
    catalog = SqlCatalog(
        "stockstream", uri=f"sqlite:///{lake}/catalog.db", warehouse=f"file://{lake}"
    )
    return catalog.load_table(f"{database}.{table}")


def bundled_ticks():
    """The bundled CSV as the table should hold it: dates as dates."""
    ticks = ss.read_ticks(ss.BUNDLED_CSV).select(TICKS)
    return ticks.with_columns(pl.col("Date").str.to_date()).sort("Index", "Date")


def test_a_sink_lands_an_iceberg_table_pyiceberg_and_polars_read_exactly_once(
    kafka, topic, tmp_path
):
    report = ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV)
    lake = tmp_path / "lake"
    sink = lake_sink(kafka, topic, lake, table_format="iceberg", kafka_metadata=True, **GROUP)
    status = sink.run(stop_at_end=True, duration=120)
    assert status.written == report.delivered and status.rejected == 0

    table = load_table(lake, topic)
    rows = pl.from_arrow(table.scan().to_arrow())
    assert rows.height == report.delivered
    ends = {p: hi for p, (_, hi) in end_offsets(kafka.bootstrap_servers, topic).items()}
    assert_exactly_once(rows, ends)
    assert rows.select(TICKS).sort("Index", "Date").equals(bundled_ticks())
    # The snapshot says where each Kafka partition resumes.
    summary = table.current_snapshot().summary
    assert int(summary["total-records"]) == report.delivered
    assert '"next"' in summary["stockstream.landed"]
    # Polars reads the same table by field id.
    scanned = pl.scan_iceberg(table).select(pl.len(), pl.col("Close").sum()).collect()
    assert scanned.row(0) == (rows.height, pytest.approx(rows["Close"].sum()))

    # A new group lands nothing twice: it resumes where the table ends.
    again = lake_sink(kafka, topic, lake, table_format="iceberg", kafka_metadata=True, **GROUP)
    status = again.run(stop_at_end=True, duration=120)
    landed = {p: end for p, end in ends.items() if end > 0}
    assert status.written == 0 and status.resumed == landed
    assert load_table(lake, topic).scan().to_arrow().num_rows == report.delivered


@pytest.mark.parametrize(
    "options, message",
    [
        ({"table_format": "delta"}, 'table_format "delta" is not supported'),
        ({"table_format": "iceberg", "format": "ndjson"}, "Iceberg table holds Parquet"),
        ({"table_format": "iceberg", "catalog": None}, 'needs a local lake and catalog="local"'),
    ],
)
def test_an_iceberg_sink_it_cannot_build_is_refused_saying_why(
    kafka, topic, tmp_path, options, message
):
    with pytest.raises(ss.ConfigError, match=message):
        lake_sink(kafka, topic, tmp_path / "lake", **options)
