import asyncio

import stockstream as ss
from conftest import end_offsets


def test_send_async_leaves_the_event_loop_free(kafka, topic):
    producer = ss.Producer(kafka.bootstrap_servers, topic)

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        report = await producer.send_async(ss.TickSource.synthetic(4), rate=200.0, limit=60)
        t.cancel()
        return report, ticks

    report, ticks = asyncio.run(main())
    assert report.delivered == 60
    # The send took ~0.3 s; the loop kept running other tasks meanwhile.
    assert ticks >= 5


def test_cancelling_the_task_stops_the_send_after_flushing(kafka, topic):
    producer = ss.Producer(kafka.bootstrap_servers, topic)

    async def main():
        task = asyncio.ensure_future(producer.send_csv_async(ss.BUNDLED_CSV, "sample", rate=100.0))
        await asyncio.sleep(0.4)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        # The worker notices within ~100 ms and flushes.
        for _ in range(50):
            if producer.last_report is not None:
                break
            await asyncio.sleep(0.05)

    asyncio.run(main())
    report = producer.last_report
    assert report.interrupted and 0 < report.delivered == report.sent
    assert (
        sum(h - lo for lo, h in end_offsets(kafka.bootstrap_servers, topic).values()) == report.sent
    )
