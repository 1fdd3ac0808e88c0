"""Reading what a topic holds now into a Polars DataFrame, its JSON values as columns."""

from __future__ import annotations

import json
from collections.abc import Mapping

import polars as pl

from . import _core
from .errors import SchemaError

KAFKA_COLUMNS = ("partition", "offset", "timestamp", "key")


def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    limit: int | None = None,
    last: int | None = None,
    after: Mapping[int, int] | None = None,
    decode: bool | None = None,
    timeout: float = 30.0,
    **config: str | int | float | bool,
) -> pl.DataFrame:
    """Read what a topic holds now into a Polars DataFrame, JSON objects as columns.

    From each partition's start to its current end, without joining a consumer group —
    like ``kcat -C -e``.

    Args:
        bootstrap_servers: ``host:port[,…]``.
        topic: the topic to read.
        limit: read at most this many messages.
        last: start at each partition's last ``last`` messages (like ``tail -n``).
        after: ``{partition: next offset}`` to carry on from an earlier read (partitions
            not named start at their beginning), e.g. from ``df.group_by("partition")``'s
            highest offset + 1.
        decode: ``True``: one column per field of the JSON object values (a value that is
            not one raises); ``False``: the value as text; ``None`` (default): decoded when
            every value is a JSON object (or null), as text otherwise.
        timeout: seconds allowed for connecting and for reading everything.
        **config: librdkafka consumer properties (SASL/SSL settings, …).

    Returns:
        polars.DataFrame with ``partition, offset, timestamp`` (a UTC ``Datetime``),
        ``key``, then the value's fields (a field named like one of these four takes the
        name, and the Kafka column becomes ``_kafka_<name>``), or ``value`` as text.

    Raises:
        KafkaError: the broker cannot be reached or the messages do not arrive within
            ``timeout``.
        SchemaError: ``decode=True`` and a value is not a JSON object (the message's
            partition and offset are named).

    """
    frame = _core.read_topic(
        bootstrap_servers, topic, limit=limit, last=last, after=after, timeout=timeout, **config
    )
    if decode is False or (decode is None and not _all_objects(frame)):
        return frame
    try:
        return _decoded(frame, topic)
    except SchemaError:
        if decode:
            raise
        return frame


def _all_objects(frame: pl.DataFrame) -> bool:
    values = frame["value"]
    return values.null_count() < frame.height and _shaped_like_objects(values).all()


def _shaped_like_objects(values: pl.Series) -> pl.Series:
    """Per value: null (a tombstone), or text between braces."""
    text = values.str.strip_chars()
    return (text.str.starts_with("{") & text.str.ends_with("}")).fill_null(True)


def _decoded(frame: pl.DataFrame, topic: str) -> pl.DataFrame:
    if frame.height == 0:
        return frame.drop("value")
    _raise_on_non_object(frame.filter(~_shaped_like_objects(frame["value"])), topic)
    try:
        # The whole column is read to find the fields: a field first seen late is kept.
        fields = frame["value"].str.json_decode(infer_schema_length=None)
    except pl.exceptions.PolarsError:
        _raise_on_non_object(frame, topic)
        raise
    values = fields.struct.unnest()
    taken = set(values.columns)
    kafka = frame.drop("value").rename(
        {name: f"_kafka_{name}" for name in KAFKA_COLUMNS if name in taken}
    )
    return pl.concat([kafka, values], how="horizontal")


def _raise_on_non_object(frame: pl.DataFrame, topic: str) -> None:
    """Raise naming the first message of ``frame`` whose value is not a JSON object."""
    for partition, offset, value in frame.select("partition", "offset", "value").iter_rows():
        if value is None:
            continue
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as e:
            problem = f"not JSON ({e.msg} at character {e.pos})"
        else:
            if isinstance(parsed, dict):
                continue
            problem = f"a JSON {type(parsed).__name__}, not an object"
        raise SchemaError(
            f"{topic}[{partition}]@{offset}: the value is {problem}: {value[:80]!r}; "
            "read it with decode=False"
        )
