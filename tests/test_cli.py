import re
import signal
import subprocess
import sys
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

import stockstream as ss


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
