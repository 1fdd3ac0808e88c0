"""Soak: analytics state handed over between members, run many times (not part of `make test`).

    python tests/soak/analytics_handover.py [--runs 10] [--broker kafka|embedded] [--load 2]

Runs `test_a_rebalance_hands_state_over_and_emits_nothing_twice` again and again on one
broker: a member takes half the ticks, a second joins and takes two partitions with their
state, both stop, and a last member closes the windows still open. Each run checks every
tick taken once and every window emitted once with Polars' values, and says how many
ticks the input topic holds out of event-time order (the producer must keep them in it).
`--load N` keeps N busy processes running meanwhile, as a full test run does. One line per
run; exit status 1 if any run failed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import polars as pl  # noqa: E402

import stockstream as ss  # noqa: E402
from conftest import Broker, kafka_broker, start_apache_kafka  # noqa: E402
from test_analytics import test_a_rebalance_hands_state_over_and_emits_nothing_twice  # noqa: E402


def spin() -> None:
    while True:
        pass


def inversions(broker: Broker, topic: str) -> int:
    """Ticks in the input topic that follow a later one in their partition's log."""
    log = ss.read_topic(broker.bootstrap_servers, topic).sort("partition", "offset")
    later = pl.col("Date") < pl.col("Date").shift(1).over("partition")
    return log.select(later.sum()).item()


def soak(broker: Broker, runs: int) -> int:
    failed = 0
    for run in range(1, runs + 1):
        topic = f"an-{uuid.uuid4().hex[:8]}"
        broker.create_topic(topic, 4)
        started = time.monotonic()
        try:
            test_a_rebalance_hands_state_over_and_emits_nothing_twice(broker, topic)
            verdict = "ok"
        except Exception:
            failed += 1
            verdict = "FAILED\n" + traceback.format_exc()
        took = time.monotonic() - started
        order = f"input out of order at {inversions(broker, topic)} ticks"
        print(f"run {run}: {took:.1f} s, {order}: {verdict}", flush=True)
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--broker", choices=["kafka", "embedded"], default="kafka")
    parser.add_argument("--load", type=int, default=0, help="busy processes meanwhile")
    args = parser.parse_args()
    hogs = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.load)]
    for h in hogs:
        h.start()
    try:
        if args.broker == "embedded":
            with ss.EmbeddedKafka(partitions=4) as k:
                failed = soak(Broker("embedded", k.bootstrap_servers, k.create_topic), args.runs)
        else:
            with (
                tempfile.TemporaryDirectory() as data,
                start_apache_kafka(Path(data)) as b,
            ):
                failed = soak(kafka_broker(b.bootstrap), args.runs)
    finally:
        for h in hogs:
            h.terminate()
    print(f"{args.runs - failed} of {args.runs} runs exact")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
