"""Where a benchmark's topics live, chosen by its ``--broker`` option:

- not given: the embedded broker inside the benchmark's own process (it shares the 2 cores
  and the process with the contender measured there);
- ``process``: the embedded broker in a child process of its own;
- ``kafka``: Apache Kafka's own broker (single node, KRaft), the one the tests start
  (``tests/kafka/broker.py``), in a fresh folder, with the JVM's full JIT and a 1 GiB heap;
- ``HOST:PORT``: a broker already running elsewhere (Apache Kafka, a real cluster), whose admin API
  creates the topics.

Every benchmark prints which one it used, so runs can be compared side by side.
"""

import argparse
import multiprocessing
import sys
from contextlib import contextmanager


def parser(doc, rows):
    """A bench's argument parser: its description, ``--rows`` and ``--broker``."""
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=rows)
    add_option(p)
    return p


def child_or_parser(doc, child, rows):
    """For a bench that measures each contender in a child process of its own (its own
    script run with ``--child ARGS``): in such a child, runs ``child(ARGS)`` and exits;
    otherwise returns the bench's parser."""
    if sys.argv[1:2] == ["--child"]:
        sys.exit(child(sys.argv[2:]))
    return parser(doc, rows)


def add_option(parser):
    """Adds ``--broker`` and ``--json`` to an argparse parser."""
    parser.add_argument(
        "--json",
        metavar="PATH",
        help="also write the run's rates and ratios to PATH as JSON (read by benches/table.py)",
    )
    parser.add_argument(
        "--broker",
        metavar="HOST:PORT|process|kafka",
        help="run against this broker (default: the embedded one in this process; "
        "'process': the embedded one in a child process; 'kafka': Apache Kafka, started "
        "for the run)",
    )


def save(path, **results):
    """Writes a run's named results (rates, ratios) to `path` as JSON, if a path is given."""
    if path:
        import json

        with open(path, "w") as f:
            json.dump(results, f, indent=1)


def describe(address):
    """How a run's broker is named in reports."""
    if not address:
        return "embedded broker in the benchmark's process"
    if address == "process":
        return "embedded broker in a child process"
    if address == "kafka":
        return "Apache Kafka (single node, started for the run)"
    return f"broker at {address}"


def _serve(conn, partitions):
    import stockstream as ss

    with ss.EmbeddedKafka(partitions=partitions) as kafka:
        conn.send(kafka.bootstrap_servers)
        while (request := conn.recv()) is not None:
            name, count = request
            try:
                kafka.create_topic(name, count)
                conn.send(None)
            except Exception as e:  # noqa: BLE001 - reported to the parent
                conn.send(str(e))


class ChildBroker:
    """The embedded broker in a child process; topics are created by asking it."""

    def __init__(self, partitions):
        self._conn, child = multiprocessing.Pipe()
        self._proc = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(child, partitions), daemon=True
        )
        self._proc.start()
        self.bootstrap_servers = self._conn.recv()

    def create_topic(self, name, partitions=None):
        self._conn.send((name, partitions))
        error = self._conn.recv()
        if error:
            raise RuntimeError(error)

    def close(self):
        self._conn.send(None)
        self._proc.join(10)


class RemoteBroker:
    """A running broker; topics are created with the Kafka admin API."""

    def __init__(self, address, partitions):
        self.bootstrap_servers = address
        self.partitions = partitions

    def create_topic(self, name, partitions=None):
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        futures = admin.create_topics([NewTopic(name, partitions or self.partitions, 1)])
        try:
            futures[name].result(30)
        except Exception as e:
            raise SystemExit(
                f"cannot create topic {name!r} on {self.bootstrap_servers} ({e}); "
                "an embedded broker of another process cannot create topics for clients: "
                "use --broker process for it"
            ) from e

    def close(self):
        pass


class ApacheKafka(RemoteBroker):
    """Apache Kafka's broker started for the run (the tests' single node), stopped on close."""

    def __init__(self, partitions):
        import importlib.util
        import tempfile
        from pathlib import Path

        # Loaded by path: this module is `broker` too.
        path = Path(__file__).resolve().parent.parent / "tests" / "kafka" / "broker.py"
        spec = importlib.util.spec_from_file_location("apache_kafka_broker", path)
        kafka = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(kafka)

        self._folder = tempfile.TemporaryDirectory(prefix="bench-kafka-")
        # The tests' broker trades the JIT's peak for a quick start; a benchmark wants the peak.
        self._broker = kafka.start(
            kafka.default_cache_dir(),
            Path(self._folder.name),
            # Ticks carry their event times (years back) as Kafka timestamps, which
            # time-based retention would delete at its next check, mid-run.
            extra_props={
                "num.partitions": partitions,
                "num.io.threads": 4,
                "log.retention.ms": -1,
                # Kafka's shipped default (the tests' broker has none): members started
                # together join before the first assignment instead of one taking it all.
                "group.initial.rebalance.delay.ms": 3000,
            },
            heap="1g",
            jvm_opts=["-XX:+UseParallelGC", "-Djava.awt.headless=true"],
        )
        super().__init__(self._broker.bootstrap, partitions)

    def close(self):
        self._broker.stop()
        self._folder.cleanup()


@contextmanager
def open_broker(address, partitions, topics=()):
    """The broker `address` names (see the module's doc), with `topics` created."""
    if not address:
        import stockstream as ss

        with ss.EmbeddedKafka(partitions=partitions) as kafka:
            for t in topics:
                kafka.create_topic(t, partitions)
            yield kafka
        return
    if address == "process":
        broker = ChildBroker(partitions)
    elif address == "kafka":
        broker = ApacheKafka(partitions)
    else:
        broker = RemoteBroker(address, partitions)
    try:
        for t in topics:
            broker.create_topic(t, partitions)
        yield broker
    finally:
        broker.close()
