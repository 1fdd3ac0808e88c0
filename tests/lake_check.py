"""Reading a lake back independently of the sink, and checking it holds each record once."""

import io
import json
from pathlib import Path

import polars as pl

TICK_COLUMNS = ["Index", "Date", "Open", "High", "Low", "Close", "Adj Close", "Volume", "CloseUSD"]


def catalog_file(lake: Path, table: str, database: str = "stock_market") -> Path:
    """The latest version of a table's document in the lake's local catalog."""
    return max((lake / "_catalog" / database / table).glob("*.json"))


def catalog_table(lake: Path, table: str, database: str = "stock_market") -> dict:
    return json.loads(catalog_file(lake, table, database).read_text())


def local_files(lake: Path, table: str, suffix: str = ".parquet") -> list[Path]:
    return sorted(p for p in (lake / table).rglob(f"*{suffix}") if not p.name.startswith("."))


def read_local_parquet(lake: Path, table: str) -> pl.DataFrame:
    """Every Parquet file of the table, with its folder's partition values as columns."""
    frames = []
    for f in local_files(lake, table):
        df = pl.read_parquet(f)
        for part in f.relative_to(lake / table).parent.parts:
            key, value = part.split("=", 1)
            df = df.with_columns(pl.lit(value).alias(f"folder_{key}"))
        frames.append(df.with_columns(pl.lit(f.name).alias("file")))
    return pl.concat(frames, how="diagonal_relaxed")


def read_s3_parquet(client, bucket: str, prefix: str) -> pl.DataFrame:
    frames = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".parquet"):
                body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                frames.append(
                    pl.read_parquet(io.BytesIO(body)).with_columns(pl.lit(obj["Key"]).alias("key"))
                )
    return pl.concat(frames, how="diagonal_relaxed")


def read_ndjson_lines(lake: Path, table: str) -> list[dict]:
    rows = []
    for f in local_files(lake, table, ".json"):
        text = f.read_text()
        assert text.endswith("\n"), f"{f} does not end with a newline"
        rows.extend(json.loads(line) for line in text.splitlines())
    return rows


def assert_exactly_once(df: pl.DataFrame, end_offsets: dict) -> None:
    """Each partition's offsets 0..end appear exactly once (the sink adds _kafka_* columns)."""
    for partition, end in end_offsets.items():
        offsets = df.filter(pl.col("_kafka_partition") == partition)["_kafka_offset"].sort()
        dupes = offsets.filter(offsets.is_duplicated()).unique().to_list()
        assert not dupes, f"partition {partition}: offsets written twice: {dupes[:10]}"
        missing = sorted(set(range(end)) - set(offsets.to_list()))
        assert not missing, f"partition {partition}: {len(missing)} offsets missing: {missing[:10]}"
        assert offsets.len() == end, (partition, offsets.len(), end)
