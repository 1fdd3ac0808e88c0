import csv
import io
import itertools
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

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


def lake_sink(kafka, topic, lake, **options) -> ss.LakeSink:
    """A sink of ``topic`` for a new group into the directory ``lake``."""
    group = f"g-{uuid.uuid4().hex[:8]}"
    return ss.LakeSink(kafka.bootstrap_servers, topic, group, str(lake), **options)


def random_walk(symbols, n, step, seed, base):
    """Per symbol, ``n`` prices of a random walk from 100 × (its rank + 1), one every ``step``
    seconds from ``base`` (shifted by the rank in seconds): ``(symbol, time, price, rng)``,
    the generator handed on for the caller's own draws (so the data follow from ``seed``)."""
    rng = random.Random(seed)
    for k, symbol in enumerate(symbols):
        price = 100.0 * (k + 1)
        for i in range(n):
            price *= 1 + rng.gauss(0, 0.004)
            yield symbol, base + timedelta(seconds=i * step + k), price, rng


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


@pytest.fixture
def sigint_raises():
    """Ctrl-C raises KeyboardInterrupt even where SIGINT is ignored (a shell's background job)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc=None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@contextmanager
def serve(command: list, port: int, **popen):
    """Runs a server process until the block ends, once it listens on 127.0.0.1:`port`."""
    proc = subprocess.Popen(command, **popen)
    try:
        wait_for_port(port, proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


# --- S3: moto's server, in this process so it can be stopped and restarted with its data ---


GLUE_UPDATES = threading.Lock()


def glue_version_conflict(environ) -> bytes | None:
    """The error AWS Glue answers an UpdateTable whose VersionId is not the table's current
    version with; None if it is (the request body is left readable)."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    request = json.loads(body or b"{}")
    asked = request.get("VersionId")
    if asked is None:
        return None
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.glue.models import glue_backends

    region = re.search(r"/([a-z0-9-]+)/glue/", environ.get("HTTP_AUTHORIZATION", ""))
    backend = glue_backends[DEFAULT_ACCOUNT_ID][region.group(1) if region else "us-east-1"]
    try:
        table = backend.get_table(request["DatabaseName"], request["TableInput"]["Name"])
    except Exception:
        return None
    if str(table._current_version) == str(asked):
        return None
    return json.dumps(
        {
            "__type": "ConcurrentModificationException",
            "message": "Update table failed due to concurrent modifications.",
        }
    ).encode()


class Fault:
    """A rule of an `S3Server`: requests it matches are held until released, or answered
    with an error status, instead of being served at once."""

    def __init__(self, method: str, pattern: str, status: int | None = None, times: int = -1):
        self.method = method
        self.pattern = re.compile(pattern)
        self.status = status
        self.times = times
        self.released = threading.Event()
        self.hits = 0

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and self.pattern.search(path) is not None and self.times != 0

    def release(self):
        self.released.set()


class S3Server:
    """A moto S3 (and Glue, Athena) server on loopback that logs every request it serves, like
    S3 server access logs; `stop()` / `start()` simulate an outage, keeping the data. Several
    servers in one process share their data (moto's backends are per process), so a second
    one is a second route to the same S3: one writer's requests can be held or failed
    (`hold`, `fail`) while another's pass. Glue's UpdateTable is refused with
    ConcurrentModificationException when its VersionId is not the table's current one, as
    AWS does (moto ignores VersionId)."""

    def __init__(self):
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.requests: list[tuple[str, str]] = []
        # What moto answered each request it served: (method, path, HTTP status).
        self.answers: list[tuple[str, str, int]] = []
        self.faults: list[Fault] = []
        self._server = None

    def hold(self, method: str, pattern: str) -> Fault:
        """Holds matching requests (their bodies received) until the fault is released."""
        fault = Fault(method, pattern)
        self.faults.append(fault)
        return fault

    def fail(self, method: str, pattern: str, status: int = 503, times: int = -1) -> Fault:
        """Answers matching requests with `status` (`times` of them; -1: until removed)."""
        fault = Fault(method, pattern, status, times)
        self.faults.append(fault)
        return fault

    def start(self):
        from moto.server import ThreadedMotoServer

        log = self.requests
        answers = self.answers
        faults = self.faults

        class Logged(ThreadedMotoServer):
            def _server_entry(self):
                from moto.moto_server.threaded_moto_server import MotoRequestHandler
                from moto.server import DomainDispatcherApplication, create_backend_app
                from werkzeug.serving import make_server

                moto = DomainDispatcherApplication(create_backend_app)

                def app(environ, start_response):
                    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
                    log.append((method, path))
                    for fault in list(faults):
                        if not fault.matches(method, path):
                            continue
                        fault.hits += 1
                        if fault.times > 0:
                            fault.times -= 1
                        if fault.status is None:
                            fault.released.wait()
                        else:
                            # Read what the client sends, so the connection stays usable.
                            environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                            start_response(f"{fault.status} Fault", [("Content-Length", "0")])
                            return [b""]

                    def answer(status, headers, *rest):
                        answers.append((method, path, int(status.split()[0])))
                        return start_response(status, headers, *rest)

                    if environ.get("HTTP_X_AMZ_TARGET") != "AWSGlue.UpdateTable":
                        return moto(environ, answer)
                    # The version check and the update are one step, as in AWS.
                    with GLUE_UPDATES:
                        refused = glue_version_conflict(environ)
                        if refused is not None:
                            start_response(
                                "400 Bad Request", [("Content-Type", "application/x-amz-json-1.1")]
                            )
                            return [refused]
                        return list(moto(environ, answer))

                self._server = make_server(
                    self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
                )
                self._server_ready_event.set()
                self._server.serve_forever()

        self._server = Logged(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        wait_for_port(self.port)

    def objects_read(self, bucket: str, suffix: str = ".parquet") -> set[str]:
        """Keys of the objects GET requests fetched (whole or in part) since the log was cleared."""
        prefix = f"/{bucket}/"
        return {
            path[len(prefix) :]
            for method, path in list(self.requests)
            if method == "GET" and path.startswith(prefix) and path.endswith(suffix)
        }

    def stop(self):
        self._server.stop()

    def client(self, service: str = "s3"):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint_url, region_name="us-east-1")


@pytest.fixture(scope="session")
def aws_env():
    """Test credentials, and no instance-metadata lookups (nothing but loopback is contacted)."""
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    os.environ.pop("AWS_PROFILE", None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="session")
def s3(aws_env):
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3):
    name = f"lake-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=name)
    return name


# --- Kafka: the embedded broker, and Apache Kafka itself (transactions, compaction, KIP-848) ---

sys.path.insert(0, str(Path(__file__).parent / "kafka"))
import broker as apache  # noqa: E402  (tests/kafka/broker.py; not a package: see its README)


@dataclass
class Broker:
    name: str
    bootstrap_servers: str
    create_topic: Callable[[str, int], None]


def start_apache_kafka(data_dir: Path, **props) -> "apache.Broker":
    """A single-node Apache Kafka broker on 127.0.0.1 (resolved by `make kafka`)."""
    try:
        cache = apache.default_cache_dir()
        apache.resolve(cache)
    except Exception as e:  # no Java, no Maven, no Maven Central
        message = f"Apache Kafka cannot be resolved here ({e}); make kafka resolves it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    # Replayed ticks carry their event times (decades back) as Kafka timestamps, which
    # time-based retention (7 days by default) deletes at its next check: keep everything.
    return apache.start(cache, data_dir, extra_props={"log.retention.ms": -1, **props})


@pytest.fixture(scope="session")
def rest_catalog(tmp_path_factory):
    """Apache Iceberg's reference REST catalog on 127.0.0.1 (tests/iceberg_rest/catalog.py)."""
    sys.path.insert(0, str(Path(__file__).parent / "iceberg_rest"))
    from catalog import RestCatalog

    server = RestCatalog(tmp_path_factory.mktemp("rest") / "warehouse")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def apache_kafka(tmp_path_factory):
    with start_apache_kafka(tmp_path_factory.mktemp("kafka")) as b:
        yield b


def _admin_create(bootstrap):
    def create(name, partitions):
        admin = AdminClient({"bootstrap.servers": bootstrap})
        futures = admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10)
        futures[name].result(timeout=15)

    return create


def kafka_broker(bootstrap: str) -> Broker:
    return Broker("kafka", bootstrap, _admin_create(bootstrap))


@pytest.fixture(params=["embedded", "kafka"])
def broker(request, kafka):
    if request.param == "embedded":
        return Broker("embedded", kafka.bootstrap_servers, kafka.create_topic)
    return kafka_broker(request.getfixturevalue("apache_kafka").bootstrap)
