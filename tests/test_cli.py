import re
import signal
import subprocess
import sys
import uuid
from datetime import datetime

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

import stockstream as ss
from conftest import free_port


@pytest.fixture
def broker_process():
    proc = subprocess.Popen(
        [sys.executable, "-m", "stockstream", "broker", "--topic", "cli", "--partitions", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    match = re.search(r"at (127\.0\.0\.1:\d+)", line)
    assert match, line + proc.stderr.read()
    yield proc, match.group(1)
    if proc.poll() is None:
        proc.kill()


def test_broker_serves_independent_clients_until_ctrl_c(broker_process):
    proc, bootstrap = broker_process
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(100):
        p.produce("cli", key=f"k{i % 7}", value=f"v{i}")
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    meta = c.list_topics("cli", timeout=10)
    assert sorted(meta.topics["cli"].partitions) == [0, 1]
    c.assign([TopicPartition("cli", part, 0) for part in (0, 1)])
    got = []
    while len(got) < 100:
        msg = c.poll(5)
        assert msg is not None and msg.error() is None
        got.append(msg.value().decode())
    c.close()
    assert sorted(got) == sorted(f"v{i}" for i in range(100))

    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0


def test_produce_command_reports_and_the_data_arrives(broker_process):
    _, bootstrap = broker_process
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "stockstream",
            "produce",
            "-b",
            bootstrap,
            "-t",
            "cli",
            "--limit",
            "500",
            "-X",
            "linger.ms=1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "delivered=500" in out.stdout and "failed=0" in out.stdout
    held = ss.read_topic(bootstrap, "cli")
    assert held.height == 500 and held["key"].n_unique() == 14


def test_produce_command_explains_errors(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "stockstream", "produce", "-b", "127.0.0.1:1", "-t", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 1
    assert "KafkaError: cannot reach Kafka at 127.0.0.1:1" in out.stderr


def stockstream(*args, timeout=60, **kw):
    return subprocess.run(
        [sys.executable, "-m", "stockstream", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def test_produce_reads_any_csv_or_parquet_with_column_and_time_options(broker_process, tmp_path):
    import polars as pl

    _, bootstrap = broker_process
    csv = tmp_path / "prices.csv"
    csv.write_text("ticker,day,px\nAAPL,04.01.2021,129.4\nMSFT,05.01.2021,217.7\n")
    options = ["--symbol-column", "ticker", "--time-column", "day", "--numeric-column", "px"]
    out = stockstream("produce", str(csv), "-b", bootstrap, "-t", "any", *options,
                      "--time-format", "%d.%m.%Y")  # fmt: skip
    assert out.returncode == 0, out.stderr
    held = ss.read_topic(bootstrap, "any").sort("timestamp")
    assert held["key"].to_list() == ["AAPL", "MSFT"]
    assert held["timestamp"].to_list() == [datetime(2021, 1, 4), datetime(2021, 1, 5)]
    parquet = tmp_path / "prices.parquet"
    pl.read_csv(csv).write_parquet(parquet)
    out = stockstream("produce", str(parquet), "-b", bootstrap, "-t", "pq", *options,
                      "--time-format", "%d.%m.%Y")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert ss.read_topic(bootstrap, "pq").height == 2
    # A day-first date with slashes is not guessed: the error says which format to give.
    csv.write_text("ticker,day,px\nAAPL,13/01/2021,129.4\n")
    out = stockstream("produce", str(csv), "-b", bootstrap, "-t", "any", *options)
    assert out.returncode == 1 and 'time_format="%d/%m/%Y"' in out.stderr, out.stderr


def test_tail_prints_the_last_messages_from_the_beginning_and_follows(broker_process):
    _, bootstrap = broker_process
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(30):
        p.produce("cli", key=f"k{i % 3}", value=f'{{"i": {i}}}', timestamp=1_600_000_000_000 + i)
    assert p.flush(10) == 0
    last = stockstream("tail", "cli", "-b", bootstrap, "-n", "5")
    assert last.returncode == 0, last.stderr
    assert last.stdout.splitlines() == [f'{{"i": {i}}}' for i in range(25, 30)]
    first = stockstream("tail", "cli", "-b", bootstrap, "--from-beginning", "--format", "table")
    assert first.returncode == 0 and "shape: (30, 1)" in first.stdout
    follow = subprocess.Popen(
        [sys.executable, "-m", "stockstream", "tail", "cli", "-b", bootstrap, "-n", "1", "-f"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout.readline().strip() == '{"i": 29}'
        p.produce("cli", key="k0", value='{"i": 30}')
        assert p.flush(10) == 0
        assert follow.stdout.readline().strip() == '{"i": 30}'
    finally:
        follow.send_signal(signal.SIGINT)
        assert follow.wait(10) == 0


def test_broker_port_lets_clients_bootstrap_on_a_fixed_port():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stockstream", "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert f"at 127.0.0.1:{port}" in proc.stdout.readline()
        report = ss.Producer(f"localhost:{port}", "fixed").send_csv(ss.BUNDLED_CSV, limit=100)
        assert report.delivered == 100
        assert ss.read_topic(f"127.0.0.1:{port}", "fixed").height == 100
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0


def test_analyze_and_sink_take_field_names_state_topic_and_buffer_options(broker_process, tmp_path):
    _, bootstrap = broker_process
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(120):
        tick = f'{{"sym": "AAPL", "ts": {1609752600 + i}, "px": {100 + i}}}'
        p.produce("cli", key="AAPL", value=tick)
    assert p.flush(10) == 0
    group = f"g-{uuid.uuid4().hex[:6]}"
    analyze = stockstream(
        "analyze", "-b", bootstrap, "-t", "cli", "-g", group, "--symbol-field", "sym",
        "--time-field", "ts", "--price-field", "px", "--volume-field", "", "--window", "1m",
        "--state-topic", f"{group}-custom", "--checkpoint-interval", "0.5",
        "--connect-timeout", "5", "--idle-timeout", "0.5", "--stop-at-end", "-q",
    )  # fmt: skip
    assert analyze.returncode == 0, analyze.stderr
    assert "ticks=120" in analyze.stdout and "windows=2" in analyze.stdout, analyze.stdout
    assert ss.read_topic(bootstrap, f"{group}-custom").height > 0
    lake = tmp_path / "lake"
    sink = stockstream(
        "sink", str(lake), "-b", bootstrap, "-t", "cli", "-g", f"{group}-sink",
        "--symbol-field", "sym", "--time-field", "ts", "--buffer-bytes", "1000000",
        "--column", "px=float", "--stop-at-end", "-q",
    )  # fmt: skip
    assert sink.returncode == 0, sink.stderr
    assert "written=120" in sink.stdout, sink.stdout
