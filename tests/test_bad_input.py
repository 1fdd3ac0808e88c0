import time

import pytest

import stockstream as ss

HEADER = "Index,Date,Open,High,Low,Close,Adj Close,Volume,CloseUSD\n"
GOOD = "NYA,2021-01-04,1,2,0.5,1.5,1.5,100,1.5\n"


def test_missing_column_is_named(write_csv):
    path = write_csv(
        "Index,Date,Open,High,Low,Close,Volume,CloseUSD\n" + "NYA,2021-01-04,1,1,1,1,1,1\n"
    )
    with pytest.raises(ss.SchemaError, match=r'missing column "Adj Close"') as err:
        ss.read_ticks(path)
    assert str(path) in str(err.value)


def test_bad_number_names_file_line_and_column(write_csv):
    path = write_csv(HEADER + GOOD * 3 + "NYA,2021-01-08,1,2,0.5,n/a,1.5,100,1.5\n")
    with pytest.raises(
        ss.SchemaError, match=r'line 5, column "Close": cannot parse "n/a" as a number'
    ):
        ss.TickSource.csv(path)


def test_bad_date_names_the_line(write_csv):
    path = write_csv(HEADER + GOOD + "NYA,04/31/2021,1,2,0.5,1,1.5,100,1.5\n")
    with pytest.raises(ss.SchemaError, match=r'line 3, column "Date": cannot parse "04/31/2021"'):
        ss.read_ticks(path)


def test_missing_symbol_names_the_line(write_csv):
    path = write_csv(HEADER + GOOD + ",2021-01-05,1,2,0.5,1,1.5,100,1.5\n")
    with pytest.raises(ss.SchemaError, match=r'line 3, column "Index": the symbol is empty'):
        ss.read_ticks(path)


def test_empty_and_header_only_files(write_csv):
    with pytest.raises(ss.SchemaError, match="the file is empty"):
        ss.read_ticks(write_csv(""))
    with pytest.raises(ss.SchemaError, match="no data rows"):
        ss.read_ticks(write_csv(HEADER, "header.csv"))


def test_nonexistent_file(kafka, topic, tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(ss.NotFoundError, match="nope.csv") as err:
        ss.Producer(kafka.bootstrap_servers, topic).send_csv(missing)
    assert isinstance(err.value, FileNotFoundError)


def test_unreachable_broker_fails_within_the_connect_timeout():
    start = time.monotonic()
    with pytest.raises(ss.KafkaError, match=r"cannot reach Kafka at 127\.0\.0\.1:1 within 2\.0 s"):
        ss.Producer("127.0.0.1:1", "ticks", connect_timeout=2.0)
    # Bounded: the call gives up instead of hanging.
    assert time.monotonic() - start < 10


def test_invalid_options_are_config_errors(kafka, topic):
    with pytest.raises(ss.ConfigError, match="No such configuration property"):
        ss.Producer(kafka.bootstrap_servers, topic, no_such_property=1)
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    with pytest.raises(ss.ConfigError, match='unknown mode "shuffle"'):
        producer.send_csv(ss.BUNDLED_CSV, mode="shuffle")
    for rate in (-1, 0, 1e-20, float("nan"), float("inf"), 1e300):
        with pytest.raises(ss.ConfigError, match="rate must be between"):
            producer.send_csv(ss.BUNDLED_CSV, mode="sample", rate=rate)
    with pytest.raises(ss.ConfigError, match="speedup must be between"):
        producer.send_csv(ss.BUNDLED_CSV, speedup=1e-300)
    with pytest.raises(ss.ConfigError, match="either rate or speedup"):
        producer.send_csv(ss.BUNDLED_CSV, rate=1, speedup=2)
    with pytest.raises(ss.ConfigError, match="bootstrap_servers is empty"):
        ss.Producer("", topic)
    with pytest.raises(ss.ConfigError, match="symbols must be between 1 and"):
        ss.TickSource.synthetic(0)
    with pytest.raises(ss.ConfigError, match="symbols must be between 1 and"):
        ss.TickSource.synthetic(10**12)
    with pytest.raises(ss.ConfigError, match="interval must be between"):
        ss.TickSource.synthetic(3, interval=1e300)


def test_topic_names_that_kafka_would_refuse_or_that_escape_a_folder_are_config_errors(
    kafka, tmp_path
):
    for bad in ("a/b", "../up", "x" * 300, "with space", "nul\x00byte"):
        with pytest.raises(ss.ConfigError, match="not a valid Kafka topic name"):
            ss.Producer(kafka.bootstrap_servers, bad)
        with pytest.raises(ss.ConfigError, match="not a valid Kafka topic name"):
            ss.read_topic(kafka.bootstrap_servers, bad)
        with pytest.raises(ss.ConfigError, match="not a valid Kafka topic name"):
            ss.LakeSink(kafka.bootstrap_servers, bad, "g", str(tmp_path / "lake"))
        with pytest.raises(ss.ConfigError, match="not a valid Kafka topic name"):
            outputs = ss.Outputs(windows=bad)
            ss.Analytics(kafka.bootstrap_servers, "ticks", "g", outputs=outputs, window="1m")
    assert not (tmp_path / "lake").exists()


def test_a_table_too_large_for_memory_is_refused_before_allocating():
    with pytest.raises(ss.ConfigError, match="rows must be at most"):
        ss.synthetic_ticks(10**12, 3)


def test_synthetic_ticks_past_the_year_9999_are_an_error_not_an_overflow():
    with pytest.raises(ss.ConfigError, match="year 9999"):
        ss.synthetic_ticks(10_000, 1, start="9990-01-01", interval=86400.0 * 365)


def test_secrets_do_not_leak_into_errors(kafka, topic):
    with pytest.raises(ss.ConfigError) as err:
        ss.Producer(
            kafka.bootstrap_servers,
            topic,
            **{
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanisms": "PLAIN",
                "sasl.username": "u",
                "sasl.password": "hunter2",
                "bogus.key": "x",
            },
        )
    assert "hunter2" not in str(err.value) and "bogus.key" in str(err.value)


def test_errors_share_one_base_class():
    for cls in (ss.SchemaError, ss.NotFoundError, ss.ConfigError, ss.KafkaError, ss.DeliveryError):
        assert issubclass(cls, ss.StockstreamError)
    assert issubclass(ss.DeliveryError, ss.KafkaError)
