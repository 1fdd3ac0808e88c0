import csv
import itertools
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

import stockstream as ss

NUMERIC = ["Open", "High", "Low", "Close", "Adj Close", "Volume", "CloseUSD"]


@pytest.fixture(scope="session")
def kafka():
    with ss.EmbeddedKafka(partitions=4) as k:
        yield k


_topics = itertools.count()


@pytest.fixture
def topic(kafka):
    name = f"ticks-{next(_topics)}-{uuid.uuid4().hex[:6]}"
    kafka.create_topic(name, 4)
    return name


@pytest.fixture
def write_csv(tmp_path):
    def write(text: str, name: str = "ticks.csv") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def csv_rows(path):
    """The CSV's rows as the tutorial's pandas code would send them: numbers as floats."""
    with open(path, newline="") as f:
        return [
            {k: (float(v) if k in NUMERIC else v) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def consume_all(bootstrap, topic, expected, timeout=30.0):
    """Reads `expected` messages of every partition with confluent-kafka (an independent client)."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = c.list_topics(topic, timeout=10)
        parts = sorted(meta.topics[topic].partitions)
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out = []
        import time

        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            out.append(msg)
        # Nothing beyond what was expected may be there either.
        while (msg := c.poll(0.5)) is not None:
            out.append(msg)
        return out
    finally:
        c.close()


def end_offsets(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "offsets"})
    try:
        meta = c.list_topics(topic, timeout=10)
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in meta.topics[topic].partitions
        }
    finally:
        c.close()
