"""Frames in: a Polars, pandas or Arrow frame (or a Parquet file) goes to a topic without a
CSV in between, lands in the lake, and reads back equal to the frame."""

from datetime import datetime, timedelta

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

import stockstream as ss
from conftest import lake_sink

START = datetime(2021, 1, 4, 9, 30)


def ticks(n=50):
    return pl.DataFrame(
        {
            "symbol": [("AAPL", "MSFT")[i % 2] for i in range(n)],
            "time": [START + timedelta(seconds=i) for i in range(n)],
            "price": [100.0 + i / 4 for i in range(n)],
            "size": list(range(n)),
        }
    ).with_columns(pl.col("time").dt.cast_time_unit("us"))


def as_kind(frame, kind, tmp_path):
    if kind == "polars":
        return frame
    if kind == "lazy":
        return frame.lazy()
    if kind == "pandas":
        return frame.to_pandas()
    if kind == "arrow":
        return frame.to_arrow()
    path = tmp_path / "ticks.parquet"
    frame.write_parquet(path)
    return path


def landed(kafka, topic, tmp_path):
    lake = tmp_path / "lake"
    sink = lake_sink(
        kafka,
        topic,
        lake,
        schema=ss.TickSchema("symbol", "time", "price", None),
        columns={"price": "float", "size": "int"},
    )
    sink.run(stop_at_end=True)
    table = topic.replace("-", "_")
    got = ss.Lake(str(lake)).sql(f'SELECT symbol, "time", price, size FROM "{table}"')
    if got.schema["time"] == pl.String:
        got = got.with_columns(pl.col("time").str.to_datetime(time_unit="us"))
    return got.sort("time")


@pytest.mark.parametrize("kind", ["polars", "lazy", "pandas", "arrow", "parquet"])
def test_each_kind_of_frame_round_trips_through_topic_and_lake(kafka, topic, tmp_path, kind):
    frame = ticks()
    source = as_kind(frame, kind, tmp_path)
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    schema = ss.TickSchema("symbol", "time", "price", None)
    if kind == "parquet":
        report = producer.send(ss.TickSource.parquet(source, schema=schema))
    else:
        report = producer.send_frame(source, schema=schema)
    assert report.delivered == frame.height
    assert_frame_equal(landed(kafka, topic, tmp_path), frame, check_dtypes=False)


def test_a_zone_aware_time_column_is_converted_to_utc(kafka, topic, tmp_path):
    frame = ticks(4)
    aware = frame.with_columns(pl.col("time").dt.replace_time_zone("America/New_York"))
    report = ss.Producer(kafka.bootstrap_servers, topic).send_frame(
        aware.to_pandas(), schema=ss.TickSchema("symbol", "time", numeric=[])
    )
    assert report.delivered == 4
    got = landed(kafka, topic, tmp_path)
    want = frame.with_columns(pl.col("time") + timedelta(hours=5))
    assert got["time"].to_list() == want["time"].to_list()


def test_bad_frames_name_the_row_and_column(kafka, topic):
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    bad_price = pd.DataFrame(
        {"symbol": ["A", "B", "C"], "time": ["2021-01-04"] * 3, "price": ["1.5", "2", "n/a"]}
    )
    with pytest.raises(ss.SchemaError, match=r'frame row 2, column "price": cannot read "n/a"'):
        producer.send_frame(bad_price, schema=ss.TickSchema("symbol", "time", "price", None))
    bad_time = pl.DataFrame({"symbol": ["A", "B"], "time": ["2021-01-04", "soon"]})
    with pytest.raises(ss.SchemaError, match=r'frame row 1, column "time": cannot parse "soon"'):
        producer.send_frame(bad_time, schema=ss.TickSchema("symbol", "time", numeric=[]))
    with pytest.raises(ss.SchemaError, match=r'no column "Index"'):
        producer.send_frame(bad_time)
    with pytest.raises(ss.ConfigError, match="expected a Polars DataFrame"):
        producer.send_frame([{"symbol": "A"}])
    with pytest.raises(ss.SchemaError, match="no rows"):
        producer.send_frame(
            pa.table({"symbol": pa.array([], pa.string()), "time": pa.array([], pa.string())}),
            schema=ss.TickSchema("symbol", "time", numeric=[]),
        )
