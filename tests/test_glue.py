"""The AWS Glue catalog backend against moto's Glue (a real metadata store), read back with
boto3's own Glue client; and the Athena engine's protocol handling (moto's Athena runs no SQL)."""

import json
import urllib.request
import uuid

import polars as pl
import pytest

import stockstream as ss
from test_query import land_bundled


def glue_partitions(glue, database, table):
    pages = glue.get_paginator("get_partitions").paginate(DatabaseName=database, TableName=table)
    return [p for page in pages for p in page["Partitions"]]


def s3_folders(s3, bucket, key):
    objects = [
        o["Key"]
        for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
        if o["Key"].endswith(".parquet")
    ]
    return {k.split(f"{key}=")[1].split("/")[0] for k in objects}


def test_crawl_registers_the_lake_in_glue(kafka, s3, bucket):
    lake = f"s3://{bucket}/lake"
    aws = {"aws": ss.AwsOptions(endpoint_url=s3.endpoint_url)}
    n = land_bundled(kafka, lake, **aws)
    database = f"db_{uuid.uuid4().hex[:8]}"
    report = ss.crawl(lake, catalog="glue", database=database, **aws)
    assert report.tables_created == ["stock_market"]

    glue = s3.client("glue")
    table = glue.get_table(DatabaseName=database, Name="stock_market")["Table"]
    sd = table["StorageDescriptor"]
    assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == [
        ("Index", "string"),
        ("Date", "date"),
        ("Open", "double"),
        ("High", "double"),
        ("Low", "double"),
        ("Close", "double"),
        ("Adj Close", "double"),
        ("Volume", "double"),
        ("CloseUSD", "double"),
    ]
    # Glue and Athena compare names without case: the `date` folders must not clash with `Date`.
    assert table["PartitionKeys"] == [{"Name": "partition_date", "Type": "date"}]
    assert sd["Location"] == f"s3://{bucket}/lake/stock-market/"
    assert sd["SerdeInfo"]["SerializationLibrary"].endswith("ParquetHiveSerDe")
    assert sd["InputFormat"].endswith("MapredParquetInputFormat")
    assert table["TableType"] == "EXTERNAL_TABLE"
    assert table["Parameters"]["classification"] == "parquet"

    partitions = glue_partitions(glue, database, "stock_market")
    folders = s3_folders(s3, bucket, "date")
    assert {p["Values"][0] for p in partitions} == folders and len(folders) > 200
    for p in partitions:
        assert p["StorageDescriptor"]["Location"].endswith(f"/date={p['Values'][0]}/")

    # The Glue table reads back as a stockstream table: same counts, pruning by `date`.
    db = ss.Lake(lake, catalog="glue", database=database, **aws)
    assert db.sql("SELECT count(*) AS n FROM stock_market")["n"][0] == n
    one = db.sql("SELECT count(*) AS n FROM stock_market WHERE date = '2021-03-01'")["n"][0]
    assert 0 < one < n

    # An incremental crawl after more data registers only the new partition.
    s3.client().put_object(
        Bucket=bucket,
        Key="lake/stock-market/date=2022-01-03/part-x-0-0.parquet",
        Body=_five_rows(db),
    )
    again = ss.crawl(lake, catalog="glue", database=database, **aws)
    assert again.objects_read == 1 and again.partitions_added == [
        ("stock_market", "date=2022-01-03")
    ]
    assert len(glue_partitions(glue, database, "stock_market")) == len(folders) + 1


def _five_rows(db) -> bytes:
    import io

    frame = db.sql("SELECT * FROM stock_market LIMIT 5").drop("date")
    out = io.BytesIO()
    frame.write_parquet(out)
    return out.getvalue()


def test_the_sink_registers_partitions_in_glue_as_it_lands(kafka, s3, bucket):
    lake = f"s3://{bucket}/lake"
    aws = {"aws": ss.AwsOptions(endpoint_url=s3.endpoint_url)}
    database = f"db_{uuid.uuid4().hex[:8]}"
    n = land_bundled(kafka, lake, partition_by="month", catalog="glue", database=database, **aws)
    glue = s3.client("glue")
    table = glue.get_table(DatabaseName=database, Name="stock_market")["Table"]
    assert table["PartitionKeys"] == [{"Name": "month", "Type": "string"}]
    months = {p["Values"][0] for p in glue_partitions(glue, database, "stock_market")}
    assert months == s3_folders(s3, bucket, "month") and len(months) == 12
    assert (
        ss.Lake(lake, catalog="glue", database=database, **aws).sql(
            "SELECT count(*) AS n FROM stock_market"
        )["n"][0]
        == n
    )


def test_glue_without_tables_and_with_a_local_lake(s3, bucket, tmp_path):
    aws = {"aws": ss.AwsOptions(endpoint_url=s3.endpoint_url)}
    db = ss.Lake(f"s3://{bucket}/lake", catalog="glue", database="nothing_here", **aws)
    assert db.tables().height == 0
    with pytest.raises(ss.QueryError, match="no tables yet"):
        db.sql("SELECT * FROM stock_market")
    (tmp_path / "lake").mkdir()
    with pytest.raises(ss.ConfigError, match="Glue can only describe a lake in S3"):
        ss.crawl(str(tmp_path / "lake"), catalog="glue")


def test_athena_engine_protocol_with_canned_results(s3, bucket):
    """Not a SQL test: moto's Athena runs nothing and returns the rows injected here. What is
    tested is the request sequence (start, poll, fetch pages) and the typing of the rows."""
    rows = [["Index", "n", "avg_close", "first_day"], ["NYA", "261", "16036.5", "2021-01-04"]]
    columns = [
        ("Index", "varchar"),
        ("n", "bigint"),
        ("avg_close", "double"),
        ("first_day", "date"),
    ]
    body = {
        "results": [
            {
                "rows": [{"Data": [{"VarCharValue": v} for v in row]} for row in rows],
                "column_info": [
                    {"Name": name, "Label": name, "Type": kind, "Nullable": "UNKNOWN"}
                    for name, kind in columns
                ],
            }
        ]
    }
    request = urllib.request.Request(
        f"{s3.endpoint_url}/moto-api/static/athena/query-results",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
    db = ss.Lake(f"s3://{bucket}/lake", aws=ss.AwsOptions(endpoint_url=s3.endpoint_url))
    got = db.sql(
        "SELECT whatever FROM stock_market",
        engine="athena",
        output=f"s3://{bucket}/athena/",
        workgroup="primary",
    )
    assert got.schema == pl.Schema(
        {"Index": pl.String, "n": pl.Int64, "avg_close": pl.Float64, "first_day": pl.Date}
    )
    assert got.rows() == [("NYA", 261, 16036.5, pl.Series(["2021-01-04"]).str.to_date()[0])]
