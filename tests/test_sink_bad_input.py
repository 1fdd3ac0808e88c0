"""Bad sink configuration and unreachable or refusing servers give clear errors, not hangs."""

import os
import subprocess
import sys
import time
import uuid

import pytest

import stockstream as ss
from conftest import AWS_ENV, free_port, serve


def test_unreachable_broker_is_a_kafka_error_within_the_timeout(tmp_path):
    began = time.monotonic()
    with pytest.raises(ss.KafkaError, match=r"cannot reach Kafka at 127\.0\.0\.1:1") as e:
        ss.LakeSink("127.0.0.1:1", "t", "g", str(tmp_path), connect_timeout=1.0)
    assert time.monotonic() - began < 10
    # A broker that is away may come back: worth trying again later.
    assert e.value.retryable is True


def test_missing_topic_is_not_found(kafka, tmp_path):
    with pytest.raises(ss.NotFoundError, match=r'topic "no-such-topic" does not exist'):
        ss.LakeSink(kafka.bootstrap_servers, "no-such-topic", "g", str(tmp_path))


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"format": "avro"}, 'format "avro" is not supported'),
        ({"partition_by": ["weekday"]}, 'partition key "weekday" is not supported'),
        ({"columns": {"Open": "decimal"}}, 'column type "decimal" is not supported'),
        ({"table": "_hidden"}, "may not start with '_'"),
        ({"lake": "gs://bucket/x"}, 'scheme "gs" is not supported'),
    ],
)
def test_invalid_options_are_config_errors(kafka, topic, tmp_path, option, message):
    args = {"lake": str(tmp_path / "lake"), **option}
    with pytest.raises(ss.ConfigError, match=message):
        ss.LakeSink(kafka.bootstrap_servers, topic, "g", **args)


def test_a_bad_roll_policy_is_a_config_error_naming_the_limit():
    with pytest.raises(ss.ConfigError, match="records, bytes and buffer_bytes must be positive"):
        ss.RollPolicy(records=0)
    with pytest.raises(ss.ConfigError, match="age must be a non-negative number"):
        ss.RollPolicy(age=-1.0)
    with pytest.raises(ss.ConfigError, match="age and idle must be positive"):
        ss.RollPolicy(idle=0)


def test_a_file_where_the_lake_should_be_is_named(kafka, topic, tmp_path):
    path = tmp_path / "not-a-dir"
    path.write_text("x")
    with pytest.raises(ss.StockstreamError, match="not-a-dir"):
        ss.LakeSink(kafka.bootstrap_servers, topic, "g", str(path))


def test_missing_bucket_is_not_found(kafka, topic, s3):
    with pytest.raises(ss.NotFoundError, match=r"bucket s3://no-such-bucket at http://127"):
        ss.LakeSink(
            kafka.bootstrap_servers,
            topic,
            "g",
            "s3://no-such-bucket/x",
            aws=ss.AwsOptions(endpoint_url=s3.endpoint_url),
        )


def test_too_small_s3_part_size_is_a_config_error(kafka, topic, s3, bucket):
    with pytest.raises(ss.ConfigError, match="s3_part_size must be at least"):
        ss.LakeSink(
            kafka.bootstrap_servers,
            topic,
            "g",
            f"s3://{bucket}",
            aws=ss.AwsOptions(endpoint_url=s3.endpoint_url, part_size=1024),
        )


def test_unreachable_s3_endpoint_is_named(kafka, topic, aws_env):
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ss.StockstreamError, match=f"cannot reach bucket s3://b at {endpoint}"):
        ss.LakeSink(
            kafka.bootstrap_servers, topic, "g", "s3://b", aws=ss.AwsOptions(endpoint_url=endpoint)
        )


def test_unknown_aws_profile_is_reported(kafka, topic, s3, bucket):
    with pytest.raises(
        ss.ConfigError, match='no AWS credentials .* profile "no-such-profile"'
    ) as err:
        ss.LakeSink(
            kafka.bootstrap_servers,
            topic,
            "g",
            f"s3://{bucket}",
            aws=ss.AwsOptions(endpoint_url=s3.endpoint_url, profile="no-such-profile"),
        )
    assert "testing" not in str(err.value)


@pytest.fixture
def s3_with_auth(tmp_path):
    """A separate moto server that checks credentials against its IAM users (none exist)."""
    port = free_port()
    env = {**os.environ, **AWS_ENV, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    moto_server = os.path.join(os.path.dirname(sys.executable), "moto_server")
    with serve(
        [moto_server, "-H", "127.0.0.1", "-p", str(port)],
        port,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ):
        yield f"http://127.0.0.1:{port}"


def test_refused_credentials_are_a_config_error_without_the_secret(
    kafka, topic, aws_env, s3_with_auth
):
    secret = f"secret-{uuid.uuid4().hex}"
    saved = os.environ["AWS_SECRET_ACCESS_KEY"]
    os.environ["AWS_SECRET_ACCESS_KEY"] = secret
    try:
        with pytest.raises(ss.ConfigError, match="was denied: check the credentials") as err:
            ss.LakeSink(
                kafka.bootstrap_servers,
                topic,
                "g",
                "s3://any-bucket",
                aws=ss.AwsOptions(endpoint_url=s3_with_auth),
            )
    finally:
        os.environ["AWS_SECRET_ACCESS_KEY"] = saved
    assert secret not in str(err.value)


def land_some(bootstrap, topic, lake, n, seed, start):
    ss.Producer(bootstrap, topic).send(ss.TickSource.synthetic(6, seed=seed, start=start), limit=n)
    sink = ss.LakeSink(
        bootstrap, topic, f"g-{uuid.uuid4().hex[:6]}", str(lake), session_timeout_ms=6000
    )
    return sink.run(stop_at_end=True)


@pytest.mark.parametrize("records", [200, 5000], ids=["fewer", "more"])
def test_a_topic_created_again_with_other_records_is_refused_not_taken_for_landed(
    tmp_path, records
):
    # An embedded broker that restarted: same topic name, offsets from 0, other records.
    lake = tmp_path / "lake"
    with ss.EmbeddedKafka(partitions=2) as before:
        assert land_some(before.bootstrap_servers, "ticks", lake, 1000, 1, "2001-01-02").written
    with ss.EmbeddedKafka(partitions=2) as after:
        with pytest.raises(ss.ConfigError, match="deleted and created again") as refused:
            land_some(after.bootstrap_servers, "ticks", lake, records, 2, "2011-01-03")
    assert "another table" in str(refused.value)


def test_a_table_holding_another_topic_is_refused(kafka, topic, tmp_path):
    lake = tmp_path / "lake"
    land_some(kafka.bootstrap_servers, topic, lake, 100, 1, "2001-01-02")
    other = f"{topic}-other"
    kafka.create_topic(other, 4)
    ss.Producer(kafka.bootstrap_servers, other).send(ss.TickSource.synthetic(6), limit=10)
    with pytest.raises(ss.ConfigError, match=f'holds topic "{topic}"'):
        ss.LakeSink(
            kafka.bootstrap_servers, other, "g", str(lake), table=topic, session_timeout_ms=6000
        ).run(stop_at_end=True)
