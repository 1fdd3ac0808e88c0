"""Live charts of running jobs in a notebook.

A ``LiveChart`` is a small widget (anywidget and the bundled uPlot, so it works offline in
JupyterLab, Notebook 7 and VS Code) that a background thread of the kernel keeps up to date
from a job: other cells run meanwhile. It holds a rolling number of points, zooms (drag
across it; double-click resets) and shows each series' value under the cursor. Where
widgets are not rendered (nbconvert, CI, a saved notebook on GitHub) the same output
carries a PNG of the chart as it was when the job ended.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

try:
    import anywidget
    import traitlets
except ImportError:  # pragma: no cover - anywidget is a notebook extra
    anywidget = None

_STATIC = Path(__file__).parent / "static"

_RENDER = r"""
const COLORS = ["#777", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"];

function render({ model, el }) {
  el.classList.add("stockstream-chart");
  const title = document.createElement("div");
  title.className = "stockstream-chart-title";
  const area = document.createElement("div");
  el.append(title, area);
  const markers = document.createElement("div");
  let plot = null;
  let zoomed = false;

  function placeMarkers(u) {
    markers.replaceChildren();
    for (const a of model.get("alerts")) {
      const left = u.valToPos(a.x, "x");
      const top = u.valToPos(a.y, "y");
      if (!(left >= 0 && left <= u.over.clientWidth)) continue;
      const m = document.createElement("div");
      m.className = "stockstream-alert " + (a.up ? "up" : "down");
      m.title = a.label;
      m.textContent = a.up ? "\u25B2" : "\u25BC";
      m.style.left = left + "px";
      m.style.top = top + "px";
      markers.appendChild(m);
    }
  }

  function draw() {
    const names = model.get("series");
    let data = model.get("data");
    if (data.length !== names.length + 1) data = [[], ...names.map(() => [])];
    title.textContent = model.get("title");
    el.dataset.points = String(data[0].length);
    el.dataset.alerts = String(model.get("alerts").length);
    if (!plot || plot.series.length !== names.length + 1) {
      if (plot) plot.destroy();
      const opts = {
        width: Math.max(320, el.clientWidth || 800),
        height: model.get("height"),
        // The x range covers every marker (a window's alert is at its end, after its
        // last tick) unless the user zoomed in.
        scales: { x: { time: true, range: (u, min, max) => {
          const xs = zoomed ? [] : model.get("alerts").map((a) => a.x);
          return [Math.min(min, ...xs), Math.max(max, ...xs)];
        } } },
        series: [{}].concat(names.map((label, i) => ({
          label, stroke: COLORS[i % COLORS.length], width: i ? 1.5 : 1,
        }))),
        hooks: { draw: [placeMarkers], setSelect: [() => { zoomed = true; }] },
      };
      plot = new uPlot(opts, data, area);
      plot.over.appendChild(markers);
      plot.over.addEventListener("dblclick", () => { zoomed = false; });
    } else {
      plot.setData(data, !zoomed);
    }
  }

  model.on("change:data", draw);
  model.on("change:alerts", draw);
  model.on("change:title", draw);
  draw();
  return () => { if (plot) plot.destroy(); };
}

export default { render };
"""

_CSS = """
.stockstream-chart { position: relative; font: 12px sans-serif; }
.stockstream-chart-title { font-weight: bold; margin: 2px 0 4px; }
.stockstream-alert { position: absolute; transform: translate(-50%, -50%); font-size: 14px;
  pointer-events: auto; cursor: default; }
.stockstream-alert.up { color: #2ca02c; }
.stockstream-alert.down { color: #d62728; }
"""

Update = Callable[[], "tuple[pl.DataFrame, pl.DataFrame]"]
_NO_MARKERS = pl.DataFrame(
    schema={"time": pl.Datetime("us"), "value": pl.Float64, "label": pl.String, "up": pl.Boolean}
)


def _seconds(column: pl.Series) -> list[float | None]:
    return (column.dt.epoch("us") / 1e6).to_list()


if anywidget is not None:

    class LiveChart(anywidget.AnyWidget):
        """A chart that a background thread keeps up to date from a running job.

        ``update()`` returns two frames: the series (a first ``time`` column, then one
        numeric column per line) and the markers (``time``, ``value``, ``label``, ``up``).
        It is called every ``refresh`` seconds while ``running()`` holds, and once more
        after. Build one with ``chart(job, …)``.
        """

        _esm = (_STATIC / "uPlot.iife.min.js").read_text() + _RENDER
        _css = (_STATIC / "uPlot.min.css").read_text() + _CSS
        title = traitlets.Unicode("").tag(sync=True)
        series = traitlets.List(traitlets.Unicode()).tag(sync=True)
        data = traitlets.List().tag(sync=True)
        alerts = traitlets.List().tag(sync=True)
        height = traitlets.Int(320).tag(sync=True)

        def __init__(
            self,
            update: Update,
            running: Callable[[], bool],
            *,
            title: str = "",
            refresh: float = 0.5,
            height: int = 320,
        ) -> None:
            super().__init__(title=title, height=height)
            self._update = update
            self._running = running
            self._refresh = refresh
            self._lock = threading.Lock()
            self._stop = threading.Event()
            self._frames = (pl.DataFrame(), _NO_MARKERS)
            self.refresh()
            self._thread = threading.Thread(target=self._pump, name="stockstream-chart")
            self._thread.daemon = True
            self._thread.start()

        def refresh(self) -> None:
            """Redraw from the job now (the background thread does this every ``refresh``)."""
            series, markers = self._update()
            with self._lock:
                self._frames = (series, markers)
            columns = [_seconds(series["time"])] + [
                series[name].cast(pl.Float64).to_list() for name in series.columns[1:]
            ]
            alerts = [
                {"x": x, "y": row["value"], "label": row["label"], "up": row["up"]}
                for x, row in zip(_seconds(markers["time"]), markers.iter_rows(named=True))
            ]
            with self.hold_sync():
                self.series = series.columns[1:]
                self.data = columns
                self.alerts = alerts

        def stop(self) -> None:
            """Stop updating (the chart stays as it is)."""
            self._stop.set()
            self._thread.join()

        def wait(self, timeout: float | None = None) -> bool:
            """Wait until the job ended and the chart took its last update."""
            self._thread.join(timeout)
            return not self._thread.is_alive()

        def _pump(self) -> None:
            while True:
                running = self._running()
                if self._stop.wait(self._refresh):
                    return
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 - a chart must not end with a traceback
                    return
                if not running:
                    return

        def png(self) -> bytes:
            """Draw the chart as it is now into a PNG (what shows where widgets do not)."""
            import matplotlib

            matplotlib.use("Agg")
            from matplotlib.figure import Figure

            with self._lock:
                series, markers = self._frames
            fig = Figure(figsize=(9, self.height / 100))
            ax = fig.subplots()
            for name in series.columns[1:]:
                ax.plot(series["time"], series[name], label=name, linewidth=1)
            for up, marker, color in ((True, "^", "green"), (False, "v", "red")):
                at = markers.filter(pl.col("up") == up)
                if at.height:
                    ax.scatter(at["time"], at["value"], marker=marker, color=color, zorder=3)
            ax.set_title(self.title)
            if series.width > 1:
                ax.legend(loc="upper left", fontsize=8)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
            return buffer.getvalue()

        def _repr_mimebundle_(self, **kwargs: Any) -> Any:
            bundle = super()._repr_mimebundle_(**kwargs)
            data = bundle[0] if isinstance(bundle, tuple) else bundle
            data["image/png"] = self.png()
            return bundle


def _analytics_frames(
    analytics: Any, symbol: str | None, indicators: Sequence[str], points: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    ticks = analytics.indicators()
    if symbol is None and ticks.height:
        symbol = ticks["symbol"][0]
    ticks = ticks.filter(pl.col("symbol") == symbol).sort("time").tail(points)
    series = ticks.select("time", "price", *indicators)
    bars = analytics.windows().filter(pl.col("symbol") == symbol)
    if bars.height and series.height:
        # A window's close, from its end on: the bars drawn as a step line.
        closes = bars.select(pl.col("window_end").alias("time"), pl.col("close").alias("bar"))
        series = series.join_asof(closes.sort("time"), on="time", strategy="backward")
    alerts = analytics.alerts().filter(pl.col("symbol") == symbol)
    if series.height:
        alerts = alerts.filter(pl.col("time") >= series["time"][0])
    # Each marker sits on the price at its time (a move alert's value is a percentage).
    markers = (
        alerts.sort("time")
        .join_asof(ticks.select("time", "price"), on="time", strategy="backward")
        .select(
            "time",
            pl.col("price").alias("value"),
            pl.format("{} {} ({})", "rule", "direction", pl.col("value").round(4)).alias("label"),
            pl.col("direction").is_in(["above", "up"]).alias("up"),
        )
    )
    return series, markers


def chart(
    job: Any,
    symbol: str | None = None,
    *,
    indicators: Sequence[str] | None = None,
    sql: str | None = None,
    points: int = 2000,
    refresh: float = 0.5,
    height: int = 320,
) -> LiveChart:
    """Draw a running job live: a chart updated in the background while other cells run.

    Args:
        job: an ``Analytics`` job (price, indicators, window closes and alert markers of
            one symbol), a ``LakeSink`` (records consumed and written, and the lag, over
            time), or a ``Lake`` with ``sql``: the query's result, run again at each
            refresh (its first column, a date or time, across; its numeric columns as
            lines) until ``stop()``.
        symbol: the symbol to draw (the first one seen if None); analytics only.
        indicators: the indicator columns to draw with the price (by default the moving
            averages and bands the job computes); analytics only.
        sql: the query to draw; a ``Lake`` only.
        points: how many of the latest points the chart holds.
        refresh: seconds between updates.
        height: the chart's height in pixels.

    Returns:
        a ``LiveChart`` widget; display it (the last expression of a cell).

    Raises:
        ImportError: anywidget is not installed (``pip install anywidget``).
        TypeError: ``job`` is not a job this can chart.
        ValueError: an indicator the job does not compute.

    """
    if anywidget is None:
        raise ImportError("live charts need anywidget: pip install anywidget")
    from . import _core

    if isinstance(job, _core.Analytics):
        names = job.indicator_names
        drawn = list(indicators) if indicators is not None else [
            n for n in names if n.split("_")[0] in ("sma", "ema", "bb", "vwap")
        ][:4]  # fmt: skip
        unknown = sorted(set(drawn) - set(names))
        if unknown:
            raise ValueError(f"the job computes no {unknown}: it has {names}")

        def update() -> tuple[pl.DataFrame, pl.DataFrame]:
            return _analytics_frames(job, symbol, drawn, points)

        title = f"{symbol or 'first symbol'}: price, {', '.join(drawn) or 'no indicators'}"
        return LiveChart(update, lambda: job.running, title=title, refresh=refresh, height=height)
    if isinstance(job, _core.LakeSink):
        return _progress_chart(job, points, refresh, height)
    if isinstance(job, _core.Lake) and sql is not None:
        return _query_chart(job, sql, points, refresh, height)
    raise TypeError(
        f"cannot chart a {type(job).__name__}: give an Analytics job, a LakeSink, or a Lake "
        "and sql="
    )


def _query_chart(lake: Any, sql: str, points: int, refresh: float, height: int) -> LiveChart:
    def update() -> tuple[pl.DataFrame, pl.DataFrame]:
        result = lake.sql(sql)
        x = result.columns[0]
        if not result.schema[x].is_temporal():
            kind = result.schema[x]
            raise TypeError(f"the query's first column is the time axis: {x!r} is {kind}")
        lines = [c for c in result.columns[1:] if result.schema[c].is_numeric()]
        series = result.select(pl.col(x).cast(pl.Datetime("us")).alias("time"), *lines)
        return series.tail(points), _NO_MARKERS

    update()  # a query that cannot be drawn fails here, not in the background
    return LiveChart(update, lambda: True, title=sql, refresh=refresh, height=height)


def _progress_chart(sink: Any, points: int, refresh: float, height: int) -> LiveChart:
    samples: list[tuple[datetime, int, int, int | None]] = []

    def update() -> tuple[pl.DataFrame, pl.DataFrame]:
        status = sink.status()
        samples.append(
            (datetime.now(timezone.utc).replace(tzinfo=None), status.consumed, status.written,
             status.lag)
        )  # fmt: skip
        del samples[:-points]
        series = pl.DataFrame(
            samples,
            schema={"time": pl.Datetime("us"), "consumed": pl.Int64, "written": pl.Int64,
                    "lag": pl.Int64},
            orient="row",
        )  # fmt: skip
        return series, _NO_MARKERS

    return LiveChart(
        update, lambda: sink.running, title="sink: records consumed, written, lag",
        refresh=refresh, height=height,
    )  # fmt: skip
