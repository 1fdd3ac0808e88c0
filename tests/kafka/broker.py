"""Run Apache Kafka's own broker (single node, KRaft) for the test suite.

Standard library only. The broker comes from Maven Central: ``resolve()`` runs Maven on
``tests/kafka/pom.xml`` (``dependency:copy-dependencies``) into a cache directory outside the
checkout, once; ``start()`` writes a ``server.properties``, formats the log directory with
``kafka.tools.StorageTool`` and starts ``kafka.Kafka`` with ``java -cp <libs>/*``, on 127.0.0.1
only, and returns when the broker answers a Metadata request::

    from tests.kafka import broker          # or: import broker (with tests/kafka on sys.path)
    b = broker.start(broker.default_cache_dir(), tmp_path / "kafka")
    try:
        ...  # bootstrap.servers = b.bootstrap
    finally:
        b.stop()

Needs ``java`` (17+) and, the first time, ``mvn`` (3.8+) with access to Maven Central.
Environment: ``STOCKSTREAM_KAFKA_CACHE`` overrides the cache directory, ``JAVA`` / ``MVN`` the
executables, ``STOCKSTREAM_KAFKA_HEAP`` the heap (default 512m).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J2_CONFIG = HERE / "log4j2.properties"

# Broker settings for a fast, small, single-node test broker. ``extra_props`` overrides any.
DEFAULT_PROPS: dict[str, object] = {
    "process.roles": "broker,controller",
    "node.id": 1,
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    # Single replica everywhere.
    "offsets.topic.replication.factor": 1,
    "transaction.state.log.replication.factor": 1,
    "transaction.state.log.min.isr": 1,
    "share.coordinator.state.topic.replication.factor": 1,
    "share.coordinator.state.topic.min.isr": 1,
    "default.replication.factor": 1,
    "min.insync.replicas": 1,
    # Internal topics with one partition: created in milliseconds instead of 50 partitions.
    "offsets.topic.num.partitions": 1,
    "transaction.state.log.num.partitions": 1,
    "share.coordinator.state.topic.num.partitions": 1,
    # User topics.
    "num.partitions": 4,
    "auto.create.topics.enable": "true",
    # Groups: no initial rebalance delay; KIP-848 (group.protocol=consumer) with short timeouts
    # so a dead member is noticed within seconds (broker defaults: 5 s heartbeat, 45 s session).
    "group.initial.rebalance.delay.ms": 0,
    "group.consumer.min.heartbeat.interval.ms": 500,
    "group.consumer.heartbeat.interval.ms": 1000,
    "group.consumer.min.session.timeout.ms": 3000,
    "group.consumer.session.timeout.ms": 10000,
    # Few threads, small buffers (2-core machines; the cleaner's dedupe buffer defaults to 128 MiB).
    "num.network.threads": 2,
    "num.io.threads": 2,
    "background.threads": 2,
    "num.recovery.threads.per.data.dir": 1,
    "num.replica.fetchers": 1,
    "log.cleaner.threads": 1,
    "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
    # The cleaner rechecks every 15 s by default; 1 s lets a compacted topic show gaps in ~2 s
    # (the active segment is never cleaned: the topic needs a small segment.ms and a later append).
    "log.cleaner.backoff.ms": 1000,
}

# C1 only (TieredStopAtLevel=1): ready ~1 s sooner and with ~40% less CPU at start; the C2 JIT
# bought nothing measurable for test-sized workloads on 2 cores.
DEFAULT_JVM_OPTS = [
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xss512k",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


def kafka_version() -> str:
    """The Kafka version that pom.xml resolves (its ``kafka.version`` property)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(POM).getroot()
    return root.find("m:properties/m:kafka.version", ns).text.strip()


def default_cache_dir() -> Path:
    """``$STOCKSTREAM_KAFKA_CACHE``, or ``kafka-<version>-<pom hash>`` in ``$STOCKSTREAM_CACHE``
    (the Makefile's ``CACHE``; ``~/.cache/stockstream`` by default).

    The POM's hash is part of the name, so changing pom.xml (a version bump) resolves afresh.
    """
    env = os.environ.get("STOCKSTREAM_KAFKA_CACHE")
    if env:
        return Path(env)
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:10]
    base = os.environ.get("STOCKSTREAM_CACHE")
    folder = (
        Path(base)
        if base
        else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stockstream"
    )
    return folder / f"kafka-{kafka_version()}-{digest}"


def _libs_complete(libs: Path) -> bool:
    return (
        libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")) and any(libs.glob("log4j-core-*.jar"))
    )


def resolve(cache_dir, *, quiet: bool = True) -> Path:
    """Make sure ``<cache_dir>/libs`` holds the broker's classpath; return that folder.

    Idempotent and safe against concurrent callers: a file lock serialises Maven runs; Maven
    copies into a temporary folder that is renamed to ``libs`` only once complete. Maven's own
    local repository is ``<cache_dir>/m2`` (so nothing is written to ``~/.m2``).
    """
    cache_dir = Path(cache_dir)
    libs = cache_dir / "libs"
    if _libs_complete(libs):
        return libs
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _libs_complete(libs):
            return libs
        mvn = os.environ.get("MVN") or shutil.which("mvn")
        if not mvn:
            raise RuntimeError("Maven (mvn) is needed to resolve the Kafka broker: not found")
        tmp = Path(tempfile.mkdtemp(prefix="libs.tmp-", dir=cache_dir))
        cmd = [
            mvn,
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(POM),
            f"-Dmaven.repo.local={cache_dir / 'm2'}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
        ]
        if quiet:
            cmd.insert(2, "-q")
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0 or not _libs_complete(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(
                f"resolving the Kafka broker failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                + proc.stdout[-4000:]
            )
        if libs.exists():  # an incomplete leftover
            shutil.rmtree(libs)
        os.rename(tmp, libs)
    return libs


# --------------------------------------------------------------------------------------------
# Minimal Kafka protocol client: readiness probe (Metadata) and OffsetDelete
# --------------------------------------------------------------------------------------------


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def request(
    host: str, port: int, api_key: int, version: int, body: bytes, timeout: float = 5.0
) -> _Reader:
    """One non-flexible Kafka request (header v1); returns a reader positioned after the
    response's correlation id."""
    msg = struct.pack(">hhi", api_key, version, 1) + _str("stockstream-probe") + body
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(msg)) + msg)
        (size,) = struct.unpack(">i", _read_exact(s, 4))
        r = _Reader(_read_exact(s, size))
    r.take(">i")  # correlation id
    return r


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt):
        vals = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return vals if len(vals) > 1 else vals[0]

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return s


def metadata(host: str, port: int, timeout: float = 2.0) -> dict:
    """Metadata v4 (the oldest version Kafka 4 serves), all topics: {"brokers": [(id, host,
    port)], "controller_id", "cluster_id", "topics": [name, ...]}. Raises OSError when the
    broker does not answer."""
    r = request(host, port, 3, 4, struct.pack(">i?", -1, False), timeout)  # topics=null
    r.take(">i")  # throttle
    brokers = []
    for _ in range(r.take(">i")):
        node_id, bhost, bport = r.take(">i"), r.string(), r.take(">i")
        r.string()  # rack
        brokers.append((node_id, bhost, bport))
    cluster_id, controller_id = r.string(), r.take(">i")
    topics = []
    for _ in range(r.take(">i")):
        r.take(">h")  # error code
        topics.append(r.string())
        r.take(">?")  # is_internal
        for _ in range(r.take(">i")):  # partitions
            r.take(">hii")  # error, index, leader
            for _ in range(2):  # replicas, isr
                r.pos += 4 * max(r.take(">i"), 0)
    return {
        "brokers": brokers,
        "controller_id": controller_id,
        "cluster_id": cluster_id,
        "topics": topics,
    }


def offset_delete(host: str, port: int, group: str, topic: str, partitions) -> dict:
    """OffsetDelete v0 (KIP-496) sent to this broker, the coordinator of every group on a
    single-node cluster. confluent-kafka's Python AdminClient has no
    delete_consumer_group_offsets, so tests can use this. Returns {"error": group error code,
    "partitions": {partition: error code}} (0 = ok; 69 GROUP_ID_NOT_FOUND,
    86 GROUP_SUBSCRIBED_TO_TOPIC)."""
    body = _str(group) + struct.pack(">i", 1) + _str(topic) + struct.pack(">i", len(partitions))
    body += b"".join(struct.pack(">i", p) for p in partitions)
    r = request(host, port, 47, 0, body)
    err, _throttle = r.take(">hi")
    parts = {}
    for _ in range(r.take(">i")):
        r.string()
        for _ in range(r.take(">i")):
            p, e = r.take(">ih")
            parts[p] = e
    return {"error": err, "partitions": parts}


# --------------------------------------------------------------------------------------------
# Broker process
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_id() -> str:
    # Kafka's Uuid.toString(): URL-safe base64 of 16 bytes, no padding, never a leading '-'.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _java() -> str:
    java = os.environ.get("JAVA")
    if java:
        return java
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java") or "java"


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _die_with_parent():  # preexec_fn (Linux): the broker gets SIGTERM if the test runner dies.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Broker:
    """A running broker. ``bootstrap`` is ``"127.0.0.1:PORT"``."""

    def __init__(self, proc, port, controller_port, data_dir, props_file, log_dir, cmd):
        self.proc = proc
        self.port = port
        self.controller_port = controller_port
        self.bootstrap = f"127.0.0.1:{port}"
        self.data_dir = data_dir
        self.props_file = props_file
        self.log_dir = log_dir
        self.log_file = log_dir / "server.log"
        self.stdout_file = log_dir / "stdout.log"
        self.cmd = cmd
        self.ready_seconds = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (controlled shutdown), then SIGKILL after ``timeout`` seconds."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def tail(self, n: int = 60) -> str:
        out = []
        for f in (self.stdout_file, self.log_file):
            with contextlib.suppress(OSError):
                lines = f.read_text(errors="replace").splitlines()[-n:]
                out.append(f"--- {f} ---\n" + "\n".join(lines))
        return "\n".join(out)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start(
    cache_dir,
    data_dir,
    port=None,
    extra_props=None,
    *,
    controller_port=None,
    heap=None,
    jvm_opts=None,
    timeout: float = 90.0,
    die_with_parent: bool = True,
) -> Broker:
    """Start a single-node KRaft broker on 127.0.0.1 and wait until it answers Metadata.

    ``data_dir`` holds ``server.properties``, the log directory (``kraft-logs``, formatted on
    first use and reused afterwards: starting again on the same ``data_dir`` restarts the same
    cluster) and ``logs/`` (``server.log`` from log4j2, ``stdout.log`` from the JVM).
    ``port``/``controller_port``: free ports are picked when None. ``extra_props`` overrides
    ``DEFAULT_PROPS`` (e.g. ``{"offsets.retention.minutes": 1}``).
    """
    libs = resolve(cache_dir)
    data_dir = Path(data_dir).resolve()
    log_dir = data_dir / "logs"
    kraft_dir = data_dir / "kraft-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    port = int(port or free_port())
    controller_port = int(controller_port or free_port())
    while controller_port == port:
        controller_port = free_port()

    props = dict(DEFAULT_PROPS)
    props.update(
        {
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            # Static quorum: the voter set lives in the config, so a restart on other ports works.
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "log.dirs": str(kraft_dir),
        }
    )
    props.update(extra_props or {})
    props_file = data_dir / "server.properties"
    props_file.write_text("".join(f"{k}={_fmt(v)}\n" for k, v in props.items()))

    java = _java()
    classpath = f"{libs}{os.sep}*"
    heap = heap or os.environ.get("STOCKSTREAM_KAFKA_HEAP") or "512m"
    jvm = [
        f"-Xmx{heap}",
        *(DEFAULT_JVM_OPTS if jvm_opts is None else jvm_opts),
        f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
        f"-Dkafka.logs.dir={log_dir}",
    ]

    if not (kraft_dir / "meta.properties").exists():
        fmt = [
            java,
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            *jvm[-2:],
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _cluster_id(),
            "-c",
            str(props_file),
        ]
        res = subprocess.run(fmt, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if res.returncode != 0:
            raise RuntimeError(
                f"kafka storage format failed (exit {res.returncode}):\n{res.stdout}"
            )

    cmd = [java, *jvm, "-cp", classpath, "kafka.Kafka", str(props_file)]
    t0 = time.monotonic()
    out = open(log_dir / "stdout.log", "ab")
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            preexec_fn=_die_with_parent if (die_with_parent and sys.platform == "linux") else None,
        )
    finally:
        out.close()
    b = Broker(proc, port, controller_port, data_dir, props_file, log_dir, cmd)

    deadline = t0 + timeout
    last_err = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"kafka broker exited with {proc.returncode} during start\n{b.tail()}"
            )
        try:
            md = metadata("127.0.0.1", port, timeout=1.0)
            if md["brokers"] and md["controller_id"] >= 0:
                b.ready_seconds = time.monotonic() - t0
                return b
            last_err = f"metadata without brokers/controller: {md}"
        except (OSError, ConnectionError, struct.error) as e:
            last_err = repr(e)
        time.sleep(0.1)
    b.kill()
    raise TimeoutError(f"kafka broker not ready after {timeout}s ({last_err})\n{b.tail()}")


if __name__ == "__main__":  # python tests/kafka/broker.py [resolve]  -- manual check
    cache = default_cache_dir()
    t = time.monotonic()
    print("libs:", resolve(cache, quiet=False), f"({time.monotonic() - t:.1f}s)")
    if sys.argv[1:] != ["resolve"]:
        with tempfile.TemporaryDirectory(prefix="kafka-") as d:
            with start(cache, d) as b:
                md = metadata("127.0.0.1", b.port)
                print("ready:", b.bootstrap, f"{b.ready_seconds:.2f}s", md)
