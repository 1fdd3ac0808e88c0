"""The notebook experience through IPython's own API: ``%load_ext stockstream``, ``%%sql``,
``%stockstream status|stop|lake``, progress bars and live status, and interrupts."""

import _thread
import threading
import time
import uuid

import polars as pl
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import stockstream as ss


@pytest.fixture
def ip():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "stockstream")
    yield shell
    shell.run_line_magic("stockstream", "stop")


@pytest.fixture
def lake(tmp_path):
    root = tmp_path / "lake"
    for day, close in (("2021-01-04", 1.5), ("2021-01-05", 2.5)):
        folder = root / "ticks" / f"date={day}"
        folder.mkdir(parents=True)
        pl.DataFrame({"Index": ["NYA"], "Close": [close]}).write_parquet(folder / "p.parquet")
    ss.crawl(str(root))
    return root


def test_sql_cell_magic_returns_and_stores_the_frame(ip, lake):
    got = ip.run_cell_magic("sql", f"-l {lake} -o total", 'SELECT sum("Close") AS c FROM ticks')
    assert got["c"][0] == 4.0
    assert ip.user_ns["total"].equals(got)
    # The default lake can be set once for the notebook.
    ip.run_line_magic("stockstream", f"lake {lake} --database stock_market")
    again = ip.run_cell_magic(
        "sql", "", "SELECT count(*) AS n FROM ticks WHERE date = '2021-01-05'"
    )
    assert again["n"][0] == 1


def test_sql_magic_errors_are_the_query_errors(ip, lake):
    with pytest.raises(ss.QueryError, match="no_such_column"):
        ip.run_cell_magic("sql", f"-l {lake}", "SELECT no_such_column FROM ticks")
    with pytest.raises(ValueError, match="unknown option"):
        ip.run_line_magic("stockstream", f"lake {lake} --colour red")


def test_status_and_stop_cover_every_background_pipeline(ip, kafka, topic, tmp_path):
    ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV, limit=500)
    sink = ss.LakeSink(kafka.bootstrap_servers, topic, f"g-{uuid.uuid4().hex[:6]}", str(tmp_path))
    sink.start()
    assert ss.running_pipelines() == [sink]
    with capture_output() as shown:
        ip.run_line_magic("stockstream", "status")
    assert "LakeSink" in shown.outputs[0].data["text/html"]

    with capture_output() as shown:
        ip.run_line_magic("stockstream", "stop")
    assert not sink.running and ss.running_pipelines() == []
    assert "written" in shown.outputs[0].data["text/html"]
    with capture_output() as shown:
        ip.run_line_magic("stockstream", "status")
    assert "no background pipelines" in shown.outputs[0].data["text/html"]


def test_status_and_stop_cover_a_background_analytics_job(ip, kafka, topic):
    analytics = ss.Analytics(kafka.bootstrap_servers, topic, f"g-{uuid.uuid4().hex[:6]}")
    analytics.start()
    assert ss.running_pipelines() == [analytics]
    with capture_output() as shown:
        ip.run_line_magic("stockstream", "status")
    assert "Analytics" in shown.outputs[0].data["text/html"]

    with capture_output() as shown:
        ip.run_line_magic("stockstream", "stop")
    assert not analytics.running and ss.running_pipelines() == []
    assert "stopped" in shown.outputs[0].data["text/html"]


def test_an_interrupted_cell_stops_only_its_own_work(kafka, topic, tmp_path, sigint_raises):
    sink = ss.LakeSink(kafka.bootstrap_servers, topic, f"g-{uuid.uuid4().hex[:6]}", str(tmp_path))
    sink.start()
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    threading.Timer(1.0, _thread.interrupt_main).start()
    with pytest.raises(KeyboardInterrupt):
        producer.send_csv(ss.BUNDLED_CSV, mode="sample", rate=50)
    assert not producer.running
    assert sink.running and ss.running_pipelines() == [sink]
    assert sink.stop().state == "stopped"


def test_progress_bar_follows_acknowledgements(kafka, topic):
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    with ss.ProgressBar(total=1000) as bar:
        report = producer.send_csv(ss.BUNDLED_CSV, limit=1000, progress=bar)
        bar(report)
    assert bar.bar.n == report.delivered == 1000


def test_watch_redraws_until_the_sink_stops(kafka, topic, tmp_path, capsys):
    ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV, limit=300)
    sink = ss.LakeSink(kafka.bootstrap_servers, topic, f"g-{uuid.uuid4().hex[:6]}", str(tmp_path))
    sink.start(stop_at_end=True)
    began = time.monotonic()
    status = ss.watch(sink, duration=60, every=0.2)
    assert time.monotonic() - began < 60 and not sink.running
    assert status.written == 300
    assert "SinkStatus(" in capsys.readouterr().out


def test_async_sends_are_listed_while_they_run(kafka, topic):
    import asyncio

    producer = ss.Producer(kafka.bootstrap_servers, topic)

    async def main():
        task = asyncio.ensure_future(
            producer.send_csv_async(ss.BUNDLED_CSV, mode="sample", rate=100, duration=2)
        )
        await asyncio.sleep(0.5)
        listed = ss.running_pipelines()
        report = await task
        return listed, report

    listed, report = asyncio.run(main())
    assert listed == [producer] and report.delivered > 0
    assert ss.running_pipelines() == []


def test_kernel_exit_stops_background_sinks_cleanly(tmp_path):
    """With the extension loaded, a kernel that exits lands what its sinks still buffer."""
    import subprocess
    import sys

    script = f"""
import time
from IPython.core.interactiveshell import InteractiveShell
import stockstream as ss
InteractiveShell.instance().run_line_magic("load_ext", "stockstream")
kafka = ss.EmbeddedKafka(partitions=2, topics=["t"])
ss.Producer(kafka.bootstrap_servers, "t").send_csv(ss.BUNDLED_CSV, limit=500)
sink = ss.LakeSink(kafka.bootstrap_servers, "t", "g", {str(tmp_path / "lake")!r})
sink.start()
while sink.status().consumed < 500:
    time.sleep(0.05)
assert sink.status().written == 0  # still buffered: the idle flush is 10 s away
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    landed = pl.read_parquet(tmp_path / "lake" / "t" / "**" / "*.parquet")
    assert landed.height == 500
