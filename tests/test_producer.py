import _thread
import json
import threading
import uuid
from datetime import datetime, timezone

import pytest
from kafka.partitioner.default import murmur2

import stockstream as ss
from conftest import consume_all, csv_rows, end_offsets


def event_ms(date: str) -> int:
    return int(datetime.fromisoformat(date).replace(tzinfo=timezone.utc).timestamp() * 1000)


def test_replay_sends_every_row_as_the_tutorials_json(kafka, topic):
    rows = csv_rows(ss.BUNDLED_CSV)
    report = ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV, mode="replay")
    assert (report.sent, report.delivered, report.failed) == (len(rows), len(rows), 0)
    assert report.dropped_by_broker == 0 and report.warnings == []

    messages = consume_all(kafka.bootstrap_servers, topic, len(rows))
    assert len(messages) == len(rows)
    values = [json.loads(m.value()) for m in messages]
    # Same multiset of rows, with the CSV's own column names and JSON numbers.
    key = lambda r: (r["Index"], r["Date"])  # noqa: E731
    assert sorted(values, key=key) == sorted(rows, key=key)
    assert all(list(v) == list(rows[0]) for v in values)
    for m, v in zip(messages, values):
        assert m.key().decode() == v["Index"]
        assert m.timestamp()[1] == event_ms(v["Date"])


def test_a_symbol_stays_on_one_partition_chosen_like_the_java_client(kafka, topic):
    ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV)
    messages = consume_all(kafka.bootstrap_servers, topic, 3640)
    partitions = {}
    for m in messages:
        partitions.setdefault(m.key(), set()).add(m.partition())
    assert all(len(p) == 1 for p in partitions.values())
    # kafka-python's murmur2 is the Java client's default partitioner.
    for key, (p,) in partitions.items():
        assert p == (murmur2(key) & 0x7FFFFFFF) % 4
    # Replay keeps each symbol's ticks in event-time order within its partition.
    for key in partitions:
        dates = [json.loads(m.value())["Date"] for m in messages if m.key() == key]
        assert dates == sorted(dates)


def test_several_lanes_keep_each_symbols_order_on_its_java_partition(kafka, topic):
    producer = ss.Producer(kafka.bootstrap_servers, topic, lanes=3)
    assert producer.lanes == 3
    source = ss.TickSource.synthetic(200, start="2021-03-01 09:30:00", interval=1.0)
    report = producer.send(source, limit=20_000, progress=False)
    assert report.delivered == report.sent == 20_000
    messages = consume_all(kafka.bootstrap_servers, topic, 20_000)
    partitions, dates = {}, {}
    for m in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        partitions.setdefault(m.key(), set()).add(m.partition())
        dates.setdefault(m.key(), []).append(json.loads(m.value())["Date"])
    assert len(partitions) == 200
    for key, (p,) in partitions.items():
        assert p == (murmur2(key) & 0x7FFFFFFF) % 4
    # Three lanes, four partitions: each symbol's ticks in its partition in send order.
    assert all(d == sorted(d) for d in dates.values())
    with pytest.raises(ss.ConfigError, match="lanes"):
        ss.Producer(kafka.bootstrap_servers, topic, lanes=0)
    assert ss.Producer(kafka.bootstrap_servers, topic, partitioner="consistent").lanes == 1
    assert ss.Producer(kafka.bootstrap_servers, topic).lanes == 1


def test_sample_mode_draws_csv_rows_at_the_requested_rate(kafka, topic):
    rows = csv_rows(ss.BUNDLED_CSV)
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    report = producer.send_csv(ss.BUNDLED_CSV, mode="sample", rate=40.0, limit=20, seed=3)
    assert report.delivered == 20
    # Paced: message n is not sent before n / rate seconds.
    assert report.elapsed >= 19 / 40.0
    messages = consume_all(kafka.bootstrap_servers, topic, 20)
    assert all(json.loads(m.value()) in rows for m in messages)
    # Sampled ticks carry the send time, not the row's date (as the tutorial's did).
    assert all(m.timestamp()[1] > event_ms("2025-01-01") for m in messages)


def test_replay_speedup_paces_by_event_time(kafka, topic, write_csv):
    path = write_csv(
        "Index,Date,Open,High,Low,Close,Adj Close,Volume,CloseUSD\n"
        "NYA,2021-01-04,1,1,1,1,1,1,1\nNYA,2021-01-05,2,2,2,2,2,2,2\nNYA,2021-01-06,3,3,3,3,3,3,3\n"
    )
    # Two days of event time at 4 days per second: at least half a second.
    report = ss.Producer(kafka.bootstrap_servers, topic).send_csv(path, speedup=4 * 86400)
    assert report.delivered == 3 and report.elapsed >= 0.5


def test_limit_and_duration_bound_an_endless_source(kafka, topic):
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    assert producer.send(ss.TickSource.synthetic(5), limit=12_345).delivered == 12_345
    report = producer.send(ss.TickSource.synthetic(5), rate=100.0, duration=0.3)
    assert 0 < report.delivered <= 31 and not report.interrupted
    assert sum(h - lo for lo, h in end_offsets(kafka.bootstrap_servers, topic).values()) == (
        12_345 + report.delivered
    )


def test_progress_callback_sees_growing_counts(kafka, topic):
    seen = []
    ss.Producer(kafka.bootstrap_servers, topic).send(
        ss.TickSource.synthetic(3), rate=50.0, limit=15, progress=lambda r: seen.append(r.sent)
    )
    assert len(seen) >= 2 and seen == sorted(seen) and seen[-1] <= 15


def test_ctrl_c_stops_after_flushing_what_was_sent(kafka, topic, sigint_raises):
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        producer.send_csv(ss.BUNDLED_CSV, mode="sample", rate=200.0)
    report = producer.last_report
    assert report.interrupted and report.sent > 0 and report.delivered == report.sent
    held = sum(h - lo for lo, h in end_offsets(kafka.bootstrap_servers, topic).values())
    assert held == report.sent


def test_stop_from_another_thread(kafka, topic):
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    threading.Timer(0.3, producer.stop).start()
    report = producer.send(ss.TickSource.synthetic(), rate=100.0)
    assert report.interrupted and report.delivered == report.sent > 0


# message.timeout.ms=0 never times a message out: without a report, the send gives up after
# its margin and counts what is left as failed, rather than raising another error.
# With several lanes each counts its own messages, not librdkafka's pending connection errors.
@pytest.mark.parametrize("lanes", [1, 2])
@pytest.mark.parametrize(("timeout_ms", "says"), [(1500, "50 of 50"), (0, "unacknowledged")])
def test_delivery_failures_are_raised_with_the_counts(timeout_ms, says, lanes):
    with ss.EmbeddedKafka(topics=["doomed"]) as lonely:
        producer = ss.Producer(
            lonely.bootstrap_servers, "doomed", message_timeout_ms=timeout_ms, lanes=lanes
        )
        assert producer.lanes == lanes
        lonely.stop()
        with pytest.raises(ss.DeliveryError) as err:
            producer.send(ss.TickSource.synthetic(3), limit=50)
    assert err.value.report.failed == 50 and err.value.report.delivered == 0
    assert says in str(err.value) and "doomed" in str(err.value), str(err.value)
    # A later flush reports the failures again (messages never timed out stay in flight).
    with pytest.raises(ss.DeliveryError if timeout_ms else ss.KafkaError):
        producer.flush(5)


def test_report_warns_when_the_embedded_broker_drops_records(kafka):
    kafka.create_topic("tiny", 1)
    producer = ss.Producer(kafka.bootstrap_servers, "tiny", compression_type="none")
    report = producer.send(ss.TickSource.synthetic(14), limit=60_000)
    assert report.delivered == 60_000
    low, high = end_offsets(kafka.bootstrap_servers, "tiny")[0]
    assert report.dropped_by_broker == low > 0
    assert any("retention" in w for w in report.warnings)


def test_pre_1970_rows_carry_the_send_time(kafka, topic, write_csv):
    path = write_csv(
        "Index,Date,Open,High,Low,Close,Adj Close,Volume,CloseUSD\n"
        "NYA,1965-12-31,528.69,528.69,528.69,528.69,528.69,0.0,528.69\n"
    )
    report = ss.Producer(kafka.bootstrap_servers, topic).send_csv(path)
    assert report.delivered == 1 and "before 1970" in report.warnings[0]
    (msg,) = consume_all(kafka.bootstrap_servers, topic, 1)
    assert msg.timestamp()[1] > event_ms("2025-01-01")
    assert json.loads(msg.value())["Date"] == "1965-12-31"


def test_rows_dated_ahead_of_the_clock_carry_the_send_time_on_apache_kafka(apache_kafka):
    # Apache Kafka refuses the whole batch of a record dated more than an hour ahead of its
    # clock (message.timestamp.after.max.ms); synthetic daily ticks run years ahead.
    topic = f"future-{uuid.uuid4().hex[:6]}"
    source = ss.TickSource.synthetic(2, start="2025-01-01", interval=86_400.0)
    report = ss.Producer(apache_kafka.bootstrap, topic).send(source, limit=2_000)
    assert report.delivered == 2_000 and report.failed == 0
    assert any("ahead of this machine's clock" in w for w in report.warnings), report.warnings
    now_ms = datetime.now(timezone.utc).timestamp() * 1000
    messages = consume_all(apache_kafka.bootstrap, topic, 2_000)
    future = [m for m in messages if json.loads(m.value())["Date"] > "2027"]
    assert future and all(abs(m.timestamp()[1] - now_ms) < 600_000 for m in future)
    past = [m for m in messages if json.loads(m.value())["Date"] < "2026-06"]
    assert past and all(m.timestamp()[1] == event_ms(json.loads(m.value())["Date"]) for m in past)


def test_a_refused_batch_is_reported_by_the_records_own_error_not_its_batch_mates(apache_kafka):
    from confluent_kafka.admin import AdminClient, NewTopic

    # A topic that refuses timestamps older than a day: every replayed 2021 tick is refused,
    # and librdkafka fails the rest of each batch as "an invalid record in the same batch".
    topic = f"recent-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": apache_kafka.bootstrap})
    config = {"message.timestamp.before.max.ms": "86400000"}
    admin.create_topics([NewTopic(topic, 2, 1, config=config)])[topic].result(15)
    source = ss.TickSource.synthetic(3, start="2021-01-04", interval=60.0)
    with pytest.raises(ss.DeliveryError) as caught:
        ss.Producer(apache_kafka.bootstrap, topic).send(source, limit=500)
    assert caught.value.report.failed == 500
    message = str(caught.value)
    # Apache Kafka 4.4 answers InvalidRecord (older brokers InvalidTimestamp).
    assert "InvalidRecord" in message or "InvalidTimestamp" in message, message
    assert "InvalidDifferentRecord" not in message


def test_any_csv_with_a_symbol_and_time_column(kafka, topic, write_csv):
    path = write_csv(
        "ticker,ts,price,venue\n"
        "AAPL,2024-03-01T14:30:00Z,179.5,X\n"
        "MSFT,2024-03-01 14:30:01,410.25,Y\n"
    )
    report = ss.Producer(kafka.bootstrap_servers, topic).send_csv(
        path, schema=ss.TickSchema("ticker", "ts", "price", None)
    )
    assert report.delivered == 2
    msgs = sorted(consume_all(kafka.bootstrap_servers, topic, 2), key=lambda m: m.key())
    assert [json.loads(m.value()) for m in msgs] == [
        {"ticker": "AAPL", "ts": "2024-03-01T14:30:00Z", "price": 179.5, "venue": "X"},
        {"ticker": "MSFT", "ts": "2024-03-01 14:30:01", "price": 410.25, "venue": "Y"},
    ]
    assert msgs[0].timestamp()[1] == event_ms("2024-03-01T14:30:00")


def test_options_are_objects_and_a_loose_keyword_is_refused_by_name(kafka, topic, tmp_path):
    lake = str(tmp_path)
    # Not a sink option: taken for a librdkafka property, which librdkafka refuses by name.
    with pytest.raises(ss.StockstreamError, match=r"flush\.idle"):
        ss.LakeSink(kafka.bootstrap_servers, topic, "g-roll", lake, flush_idle=1.0)
    sink = ss.LakeSink(kafka.bootstrap_servers, topic, "g-roll", lake, roll=ss.RollPolicy(idle=1.0))
    assert repr(sink).startswith("LakeSink(")
    with pytest.raises(ss.ConfigError, match="age"):
        ss.RollPolicy(age=-1)
    with pytest.raises(TypeError, match="symbol_column"):
        ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV, symbol_column="Index")
    outputs = ss.Outputs(windows="w-new", state="s-new")
    assert (outputs.windows, outputs.alerts, outputs.state) == ("w-new", None, "s-new")
    for option in (outputs, ss.AwsOptions(region="eu-west-1", part_size=5 << 20)):
        assert eval(repr(option), vars(ss)) == option, "repr reads back as Python"
    ss.Analytics(kafka.bootstrap_servers, topic, "g-out", window="1m", outputs=outputs)


def test_kafka_python_reads_what_stockstream_wrote(kafka, topic):
    from kafka import KafkaConsumer, TopicPartition

    ss.Producer(kafka.bootstrap_servers, topic).send(ss.TickSource.synthetic(14), limit=500)
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        api_version=(2, 0),
        consumer_timeout_ms=5000,
        enable_auto_commit=False,
    )
    consumer.assign([TopicPartition(topic, p) for p in range(4)])
    consumer.seek_to_beginning()
    records = list(consumer)
    consumer.close()
    assert len(records) == 500
    assert all(json.loads(r.value)["Index"] == r.key.decode() for r in records)
