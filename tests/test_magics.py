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


def test_sql_magic_binds_notebook_values_as_literals(ip, lake):
    ip.user_ns.update(symbol="NYA", day="2021-01-05", quoted="NYA' OR '1'='1")
    got = ip.run_cell_magic(
        "sql", f"-l {lake}", 'SELECT "Close" FROM ticks WHERE "Index" = {symbol} AND date = {day}'
    )
    assert got["Close"].to_list() == [2.5]
    # A value with quotes is one string, not SQL: it matches no row instead of every row.
    none = ip.run_cell_magic("sql", f"-l {lake}", 'SELECT * FROM ticks WHERE "Index" = {quoted}')
    assert none.height == 0
    # Placeholders inside string literals are text; a missing variable is named.
    text = ip.run_cell_magic("sql", f"-l {lake}", "SELECT '{symbol}' AS t FROM ticks LIMIT 1")
    assert text["t"].to_list() == ["{symbol}"]
    with pytest.raises(ss.QueryError, match="no value for {nowhere}"):
        ip.run_cell_magic("sql", f"-l {lake}", "SELECT * FROM ticks WHERE x = {nowhere}")
    # The same from Python, with a dict.
    got = ss.Lake(str(lake)).sql(
        'SELECT count(*) AS n FROM ticks WHERE "Close" > {x}', params={"x": 2}
    )
    assert got["n"].to_list() == [1]


def test_sql_magic_errors_are_the_query_errors(ip, lake):
    with pytest.raises(ss.QueryError, match="no_such_column"):
        ip.run_cell_magic("sql", f"-l {lake}", "SELECT no_such_column FROM ticks")
    with pytest.raises(ValueError, match="unknown option"):
        ip.run_line_magic("stockstream", f"lake {lake} --colour red")
    # --as-of reaches the query, by value or by variable: a Hive table has no past.
    ip.user_ns["then"] = 12345
    for as_of in ("2021-01-05T10:00:00", "12345", "then"):
        with pytest.raises(ss.QueryError, match="ticks is a Hive table"):
            ip.run_cell_magic("sql", f"-l {lake} --as-of {as_of}", "SELECT * FROM ticks")


@pytest.mark.parametrize("kind", ["LakeSink", "Analytics"])
def test_status_and_stop_cover_every_background_pipeline(ip, kafka, topic, tmp_path, kind):
    ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV, limit=500)
    group = f"g-{uuid.uuid4().hex[:6]}"
    if kind == "LakeSink":
        pipeline = ss.LakeSink(kafka.bootstrap_servers, topic, group, str(tmp_path))
    else:
        pipeline = ss.Analytics(kafka.bootstrap_servers, topic, group)
    pipeline.start()
    assert ss.running_pipelines() == [pipeline]
    with capture_output() as shown:
        ip.run_line_magic("stockstream", "status")
    assert kind in shown.outputs[0].data["text/html"]

    with capture_output() as shown:
        ip.run_line_magic("stockstream", "stop")
    assert not pipeline.running and ss.running_pipelines() == []
    assert "stopped" in shown.outputs[0].data["text/html"]
    with capture_output() as shown:
        ip.run_line_magic("stockstream", "status")
    assert "no background pipelines" in shown.outputs[0].data["text/html"]


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


def test_a_send_shows_a_bar_by_default_in_a_notebook_kernel_and_false_silences_it(
    kafka, topic, monkeypatch, capsys
):
    import stockstream.progress

    monkeypatch.setattr(stockstream.progress, "in_notebook", lambda: True)
    producer = ss.Producer(kafka.bootstrap_servers, topic)
    producer.send_csv(ss.BUNDLED_CSV, limit=200)
    assert "200/200" in capsys.readouterr().err
    producer.send_csv(ss.BUNDLED_CSV, limit=200, progress=False)
    assert "acked" not in capsys.readouterr().err
    # Awaitable sends too.
    import asyncio

    async def send():
        return await producer.send_csv_async(ss.BUNDLED_CSV, limit=200)

    asyncio.run(send())
    assert "200/200" in capsys.readouterr().err
    # Outside a notebook nothing is drawn unless asked for.
    monkeypatch.setattr(stockstream.progress, "in_notebook", lambda: False)
    producer.send_csv(ss.BUNDLED_CSV, limit=200)
    assert "acked" not in capsys.readouterr().err


def test_a_foreground_run_shows_its_status_in_a_notebook_kernel(
    kafka, topic, tmp_path, monkeypatch, capsys
):
    import stockstream.progress

    monkeypatch.setattr(stockstream.progress, "in_notebook", lambda: True)
    ss.Producer(kafka.bootstrap_servers, topic).send_csv(ss.BUNDLED_CSV, limit=300, progress=False)
    capsys.readouterr()
    group = f"g-{uuid.uuid4().hex[:6]}"
    ss.LakeSink(kafka.bootstrap_servers, topic, group, str(tmp_path / "a")).run(stop_at_end=True)
    shown = capsys.readouterr().out
    assert "SinkStatus(" in shown and "written=300" in shown
    quiet = ss.LakeSink(kafka.bootstrap_servers, topic, f"{group}-b", str(tmp_path / "b"))
    assert quiet.run(stop_at_end=True, progress=False).written == 300
    assert "SinkStatus(" not in capsys.readouterr().out


def test_crawls_and_compactions_count_their_work_in_a_notebook_kernel(lake, monkeypatch, capsys):
    import stockstream.progress

    drawn = []

    class Recorder:
        def __init__(self, desc):
            self.desc, self.n = desc, 0

        def update_to(self, n):
            self.n = n

        def close(self):
            drawn.append((self.desc, self.n))

    monkeypatch.setattr(stockstream.progress, "default_counter", Recorder)
    (lake / "_catalog").rename(lake / "_old_catalog")
    (lake / "_crawler").rename(lake / "_old_crawler")
    report = ss.crawl(str(lake))
    assert drawn == [("objects read", report.objects_read)] and report.objects_read == 2
    ss.Lake(str(lake)).compact()
    assert drawn[-1] == ("partitions", 2)
    drawn.clear()
    ss.crawl(str(lake), progress=False)
    assert drawn == []


def test_watch_follows_an_analytics_job_and_an_awaitable_send(kafka, topic, capsys):
    import asyncio

    producer = ss.Producer(kafka.bootstrap_servers, topic)

    async def send_and_watch():
        task = asyncio.ensure_future(producer.send_csv_async(ss.BUNDLED_CSV, limit=3000, rate=3000))
        await asyncio.sleep(0.3)
        report = await asyncio.get_running_loop().run_in_executor(
            None, lambda: ss.watch(producer, duration=30, every=0.1)
        )
        await task
        return report

    report = asyncio.run(send_and_watch())
    assert isinstance(report, ss.SendReport) and report.delivered > 0
    a = ss.Analytics(
        kafka.bootstrap_servers, topic, f"g-{uuid.uuid4().hex[:6]}", window="1d", idle_timeout=0.5
    )
    a.start(stop_at_end=True)
    status = ss.watch(a, duration=60, every=0.2)
    assert not a.running and status.ticks == 3000
    assert "AnalyticsStatus(" in capsys.readouterr().out


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
