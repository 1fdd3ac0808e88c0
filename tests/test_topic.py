"""read_topic: a topic's messages as a Polars frame, JSON objects as columns."""

import json
from datetime import datetime, timezone

import polars as pl
import pytest
from confluent_kafka import Producer as CkProducer

import stockstream as ss


def send(bootstrap, topic, values, timestamp_ms=None):
    p = CkProducer({"bootstrap.servers": bootstrap})
    for i, value in enumerate(values):
        p.produce(topic, value, key=f"k{i}", partition=0, timestamp=timestamp_ms or 0)
    assert p.flush(30) == 0


def test_json_objects_come_back_one_column_per_field_with_a_datetime_timestamp(kafka, topic):
    when = datetime(2021, 1, 4, 9, 30, 0, 123000)
    ms = int(when.replace(tzinfo=timezone.utc).timestamp() * 1000)
    values = [
        json.dumps({"Index": "NYA", "Close": 1.5, "Volume": 10}),
        json.dumps({"Index": "GDAXI", "Close": 2.0, "Volume": 20, "Note": "late field"}),
    ]
    send(kafka.bootstrap_servers, topic, values, timestamp_ms=ms)
    df = ss.read_topic(kafka.bootstrap_servers, topic).sort("offset")
    assert df.columns == [
        "partition", "offset", "timestamp", "key", "Index", "Close", "Volume", "Note"
    ]  # fmt: skip
    assert df.schema["timestamp"] == pl.Datetime("ms")
    assert df["timestamp"].to_list() == [when, when]
    assert df.select("Index", "Close", "Volume", "Note").rows() == [
        ("NYA", 1.5, 10, None),
        ("GDAXI", 2.0, 20, "late field"),
    ]
    raw = ss.read_topic(kafka.bootstrap_servers, topic, decode=False).sort("offset")
    assert raw.columns == ["partition", "offset", "timestamp", "key", "value"]
    assert raw["value"].to_list() == values


def test_a_field_named_like_a_kafka_column_keeps_its_name(kafka, topic):
    send(kafka.bootstrap_servers, topic, [json.dumps({"key": "AAPL", "offset": 3.5})])
    df = ss.read_topic(kafka.bootstrap_servers, topic)
    assert df.columns == ["partition", "_kafka_offset", "timestamp", "_kafka_key", "key", "offset"]
    assert df.row(0, named=True) | {"timestamp": None} == {
        "partition": 0,
        "_kafka_offset": 0,
        "timestamp": None,
        "_kafka_key": "k0",
        "key": "AAPL",
        "offset": 3.5,
    }


def test_values_that_are_not_all_json_objects_stay_text_unless_decoding_is_asked(kafka, topic):
    send(kafka.bootstrap_servers, topic, [json.dumps({"a": 1}), "plain text", "[1, 2]"])
    auto = ss.read_topic(kafka.bootstrap_servers, topic)
    assert auto.columns[-1] == "value" and auto.height == 3
    with pytest.raises(ss.SchemaError, match=rf"{topic}\[0\]@1: the value is not JSON"):
        ss.read_topic(kafka.bootstrap_servers, topic, decode=True)


def test_a_malformed_object_is_named_when_decoding(kafka, topic):
    send(kafka.bootstrap_servers, topic, [json.dumps({"a": 1}), '{"a": }'])
    assert ss.read_topic(kafka.bootstrap_servers, topic).columns[-1] == "value"
    with pytest.raises(ss.SchemaError, match=rf"{topic}\[0\]@1: the value is not JSON"):
        ss.read_topic(kafka.bootstrap_servers, topic, decode=True)
