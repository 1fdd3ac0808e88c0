"""Live charts: the widget's data model, kept up to date from a background job, and the
static image shown where widgets are not. (The browser side is tested in a browser.)"""

import time
import uuid

import polars as pl
import pytest

import stockstream as ss
from test_analytics import make_ticks, produce


def job(kafka, topic, **options):
    ticks = make_ticks(n_per_symbol=150)
    produce(kafka.bootstrap_servers, topic, ticks)
    a = ss.Analytics(
        kafka.bootstrap_servers,
        topic,
        f"chart-{uuid.uuid4().hex[:8]}",
        window="1m",
        indicators=["sma_5", "ema_10", "volatility_5"],
        alerts=["sma_5 crosses ema_10"],
        idle_timeout=0.5,
        **options,
    )
    return a, ticks


def test_a_chart_follows_a_background_job_to_its_end(kafka, topic):
    a, ticks = job(kafka, topic)
    a.start(stop_at_end=True)
    w = ss.chart(a, "NYA", refresh=0.2)
    assert w.wait(60) and not a.running
    assert w.series == ["price", "sma_5", "ema_10", "bar"]
    want = a.indicators().filter(pl.col("symbol") == "NYA").sort("time")
    assert w.data[1] == want["price"].to_list()
    assert w.data[0] == (want["time"].dt.epoch("us") / 1e6).to_list()
    assert len(w.data[0]) == sum(t["Index"] == "NYA" for t in ticks)
    alerts = a.alerts().filter(pl.col("symbol") == "NYA")
    assert alerts.height > 0 and len(w.alerts) == alerts.height
    assert {m["up"] for m in w.alerts} == {True, False}
    # Each marker sits on the price line at its time.
    prices = dict(zip(w.data[0], w.data[1]))
    assert all(m["y"] == prices[m["x"]] for m in w.alerts)


def test_a_chart_holds_a_rolling_number_of_points(kafka, topic):
    a, _ = job(kafka, topic)
    a.run(stop_at_end=True)
    w = ss.chart(a, "IXIC", indicators=["ema_10"], points=40, refresh=0.1)
    assert w.wait(10)
    last = a.indicators().filter(pl.col("symbol") == "IXIC").sort("time").tail(40)
    assert w.series == ["price", "ema_10", "bar"]
    assert w.data[2] == last["ema_10"].to_list()


def test_where_widgets_are_not_shown_the_chart_is_a_png(kafka, topic):
    a, _ = job(kafka, topic)
    a.run(stop_at_end=True)
    w = ss.chart(a, "N225")
    bundle = w._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["image/png"].startswith(b"\x89PNG\r\n\x1a\n") and len(data["image/png"]) > 5000


def test_a_sink_charts_its_progress(kafka, topic, tmp_path):
    ss.Producer(kafka.bootstrap_servers, topic).send(ss.TickSource.synthetic(4), limit=500)
    sink = ss.LakeSink(kafka.bootstrap_servers, topic, f"c-{uuid.uuid4().hex[:8]}", str(tmp_path))
    sink.start(stop_at_end=True)
    w = ss.chart(sink, refresh=0.2)
    assert w.wait(60)
    assert w.series == ["consumed", "written", "lag"]
    assert w.data[2][-1] == 500 and w.data[1][-1] == 500


def test_what_cannot_be_charted_is_refused(kafka, topic, tmp_path):
    a, _ = job(kafka, topic)
    with pytest.raises(ValueError, match="computes no"):
        ss.chart(a, indicators=["sma_50"])
    with pytest.raises(TypeError, match="cannot chart a Lake"):
        ss.chart(ss.Lake(str(tmp_path)))


def test_a_query_chart_runs_its_query_again_until_stopped(kafka, topic, tmp_path):
    lake, group = str(tmp_path / "lake"), f"q-{uuid.uuid4().hex[:8]}"
    producer = ss.Producer(kafka.bootstrap_servers, topic)

    def land(n, seed):
        producer.send(ss.TickSource.synthetic(2, seed=seed), limit=n)
        ss.LakeSink(kafka.bootstrap_servers, topic, group, lake).run(stop_at_end=True)

    land(100, 1)
    db = ss.Lake(lake)
    sql = f'SELECT "Date", count(*) AS ticks FROM {topic.replace("-", "_")} GROUP BY 1 ORDER BY 1'
    w = ss.chart(db, sql=sql, refresh=0.2)
    assert w.series == ["ticks"] and sum(w.data[1]) == 100
    land(60, 2)
    deadline = time.monotonic() + 30
    while sum(w.data[1]) != 160 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sum(w.data[1]) == 160
    w.stop()
    assert w.wait(0)
    with pytest.raises(TypeError, match="first column is the time axis"):
        ss.chart(db, sql=f"SELECT count(*) AS n FROM {topic.replace('-', '_')}")
