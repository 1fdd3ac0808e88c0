"""Dates and times as real files write them: each shape recognised without a format, the
ones that cannot be guessed read with ``time_format`` / ``time_zone``, and a value that
fits no shape named with its line, column and the format to give."""

import json
import uuid
from datetime import datetime, timezone

import polars as pl
import pytest

import stockstream as ss
from conftest import consume_all, lake_sink

JAN4_MS = int(datetime(2021, 1, 4, tzinfo=timezone.utc).timestamp() * 1000)

SHAPES = [
    ("2021-01-04", None, None, JAN4_MS),
    ("01/04/2021", None, None, JAN4_MS),
    ("04.01.2021", None, None, JAN4_MS),
    ("20210104", None, None, JAN4_MS),
    ("Jan 4 2021", None, None, JAN4_MS),
    ("4 Jan 2021", None, None, JAN4_MS),
    ('"January 4, 2021"', None, None, JAN4_MS),
    ("1609718400", None, None, JAN4_MS),
    ("1609718400000", None, None, JAN4_MS),
    ("1609718400000000000", None, None, JAN4_MS),
    ("2021-01-04T09:30:00-05:00", None, None, JAN4_MS + (14 * 3600 + 1800) * 1000),
    ("04/01/2021", "%d/%m/%Y", None, JAN4_MS),
    # A naive exchange time, read in the exchange's zone.
    ("2021-01-04 09:30", None, "America/New_York", JAN4_MS + (14 * 3600 + 1800) * 1000),
    ("04.01.2021 15:30", "%d.%m.%Y %H:%M", "Europe/Berlin", JAN4_MS + (14 * 3600 + 1800) * 1000),
]


@pytest.mark.parametrize(("text", "time_format", "time_zone", "want_ms"), SHAPES)
def test_each_shape_sets_the_message_time(
    kafka, topic, write_csv, text, time_format, time_zone, want_ms
):
    path = write_csv(f"symbol,date,price\nAAPL,{text},1.5\n")
    report = ss.Producer(kafka.bootstrap_servers, topic).send_csv(
        path,
        schema=ss.TickSchema(
            "symbol", "date", "price", None, time_format=time_format, time_zone=time_zone
        ),
    )
    assert report.delivered == 1
    [msg] = consume_all(kafka.bootstrap_servers, topic, 1)
    assert msg.timestamp()[1] == want_ms
    # The record keeps the text as the file wrote it.
    assert json.loads(msg.value())["date"] == text.strip('"')


@pytest.mark.parametrize(
    ("text", "time_format", "hint"),
    [
        ("13/01/2021", None, 'time_format="%d/%m/%Y"'),
        ("20211301", None, "YYYYMMDD"),
        ("someday", None, "give time_format"),
        ("2021-01-04", "%d/%m/%Y", 'with time_format "%d/%m/%Y"'),
    ],
)
def test_an_unreadable_or_ambiguous_date_names_line_column_value_and_the_fix(
    write_csv, text, time_format, hint
):
    good = "04/01/2021" if time_format else "2021-01-04"
    path = write_csv(f"symbol,date,price\nAAPL,{good},1\nAAPL,{text},2\n")
    with pytest.raises(ss.SchemaError) as err:
        schema = ss.TickSchema("symbol", "date", "price", None, time_format=time_format)
        ss.read_ticks(path, schema=schema)
    message = str(err.value)
    assert f'line 3, column "date": cannot parse "{text}"' in message
    assert hint in message


def test_bad_format_and_zone_are_config_errors():
    with pytest.raises(ss.ConfigError, match="time_format"):
        ss.TickSchema("symbol", "date", time_format="%Q")
    with pytest.raises(ss.ConfigError, match="time_zone"):
        ss.TickSchema("symbol", "date", time_zone="Mars/Base")


def test_the_sink_partitions_by_the_time_read_with_its_format(kafka, topic, tmp_path):
    from confluent_kafka import Producer as CkProducer

    p = CkProducer({"bootstrap.servers": kafka.bootstrap_servers})
    # Day first: not a shape that is guessed.
    for day in ("13/01/2021", "14/01/2021"):
        p.produce(topic, json.dumps({"sym": "AAPL", "when": day, "px": 1.0}).encode(), key=b"AAPL")
    assert p.flush(10) == 0
    lake = tmp_path / "lake"
    sink = lake_sink(
        kafka,
        topic,
        lake,
        schema=ss.TickSchema("sym", "when", "px", None, time_format="%d/%m/%Y"),
        partition_by="date",
    )
    status = sink.run(stop_at_end=True)
    assert (status.written, status.rejected) == (2, 0)
    query = f'SELECT date, "when" FROM "{topic.replace("-", "_")}" ORDER BY date'
    got = ss.Lake(str(lake)).sql(query, live=False)
    assert got["date"].to_list() == [datetime(2021, 1, 13).date(), datetime(2021, 1, 14).date()]
    # A record still only in Kafka is read by a live query with the sink's format too.
    p.produce(topic, json.dumps({"sym": "AAPL", "when": "15/01/2021", "px": 2.0}).encode())
    assert p.flush(10) == 0
    live = ss.Lake(str(lake)).sql(query, live=True)
    assert live["date"].to_list()[-1] == datetime(2021, 1, 15).date()


def test_analytics_reads_epoch_integers_and_formatted_times(kafka, topic):
    from test_analytics import produce

    start = 1609752600  # 2021-01-04 09:30:00 UTC, in seconds
    ticks = [
        {"Index": "AAPL", "Date": start + i, "Close": 100.0 + i, "Volume": 1} for i in range(120)
    ]
    produce(kafka.bootstrap_servers, topic, ticks)
    a = ss.Analytics(
        kafka.bootstrap_servers, topic, f"g-{uuid.uuid4().hex[:8]}", window="1m", idle_timeout=0.5
    )
    status = a.run(stop_at_end=True)
    assert (status.ticks, status.rejected) == (120, 0)
    windows = a.windows().sort("window_start")
    assert windows["window_start"].to_list() == [
        datetime(2021, 1, 4, 9, 30),
        datetime(2021, 1, 4, 9, 31),
    ]
    assert windows["count"].to_list() == [60, 60]
    assert windows.schema["window_start"] == pl.Datetime("us")
