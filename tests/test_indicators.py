"""The indicators a trader reaches for first, each compared with an independent computation
written here from its published definition (Polars expressions, or a plain loop for Wilder's
smoothing), on the same ticks, warm-up rows included, with ticks arriving out of order
within the allowed lateness."""

import uuid
from datetime import datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import stockstream as ss
from conftest import random_walk
from test_analytics import produce, shuffle_in_blocks

# 23:40 in New York: the ticks cross the exchange's midnight, where session VWAP resets.
BASE = datetime(2021, 3, 2, 4, 40)
SYMBOLS = ["NYA", "IXIC"]


def bars(n=300, step=7, seed=3):
    out = []
    for symbol, t, price, rng in random_walk(SYMBOLS, n, step, seed, BASE):
        t += timedelta(microseconds=rng.randrange(1000))
        spread = abs(rng.gauss(0, 0.003)) * price
        out.append(
            {
                "Index": symbol,
                "Date": t.strftime("%Y-%m-%d %H:%M:%S.%f"),
                "Close": round(price, 4),
                "High": round(price + spread, 4),
                "Low": round(price - spread * rng.random(), 4),
                "Volume": rng.randint(1, 1000),
            }
        )
    out.sort(key=lambda r: r["Date"])
    return out


def wilder(values, n):
    """Wilder's smoothing: the mean of the first n values, then (prev·(n−1) + x)/n."""
    out, avg = [], None
    for i, x in enumerate(values):
        if x is None:
            out.append(None)
            continue
        seen = sum(v is not None for v in values[: i + 1])
        if seen < n:
            out.append(None)
        elif seen == n:
            avg = sum(v for v in values[: i + 1] if v is not None) / n
            out.append(avg)
        else:
            avg = (avg * (n - 1) + x) / n
            out.append(avg)
    return out


def expected(ticks):
    df = (
        pl.DataFrame(ticks)
        .with_columns(
            pl.col("Date").str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us"),
            pl.col("Close", "High", "Low", "Volume").cast(pl.Float64),
        )
        .sort("Index", "Date")
    )
    frames = []
    for _, g in df.group_by("Index", maintain_order=True):
        close = g["Close"].to_list()
        change = [None] + [b - a for a, b in zip(close, close[1:])]
        gain = wilder([None if c is None else max(c, 0.0) for c in change], 14)
        loss = wilder([None if c is None else max(-c, 0.0) for c in change], 14)
        rsi = [
            None if g_ is None else (100.0 if l_ == 0 else 100 - 100 / (1 + g_ / l_))
            for g_, l_ in zip(gain, loss)
        ]
        prev = [None] + close[:-1]
        true_range = [
            h - lo if p is None else max(h - lo, abs(h - p), abs(lo - p))
            for h, lo, p in zip(g["High"], g["Low"], prev)
        ]
        frames.append(
            g.with_columns(rsi_14=pl.Series(rsi), atr_14=pl.Series(wilder(true_range, 14)))
        )
    df = pl.concat(frames)
    by = "Index"
    fast = pl.col("Close").ewm_mean(span=12, adjust=False).over(by)
    slow = pl.col("Close").ewm_mean(span=26, adjust=False).over(by)
    row = pl.int_range(pl.len()).over(by)
    df = df.with_columns(macd=pl.when(row >= 25).then(fast - slow))
    signal = pl.col("macd").ewm_mean(span=9, adjust=False, ignore_nulls=True).over(by)
    mean = pl.col("Close").rolling_mean(20).over(by)
    std = pl.col("Close").rolling_std(20, ddof=0).over(by)
    session = (
        pl.col("Date")
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone("America/New_York")
        .dt.date()
    )
    df = df.with_columns(
        macd_signal=pl.when(row >= 25 + 8).then(signal),
        bb_upper_20=mean + 2 * std,
        bb_lower_20=mean - 2 * std,
        bb_pctb_20=(pl.col("Close") - (mean - 2 * std)) / (4 * std),
        roc_10=pl.col("Close").pct_change(10).over(by) * 100,
        vwap=(pl.col("Close") * pl.col("Volume")).cum_sum().over(by, session)
        / pl.col("Volume").cum_sum().over(by, session),
    ).with_columns(macd_hist=pl.col("macd") - pl.col("macd_signal"))
    names = ["rsi_14", "macd", "macd_signal", "macd_hist", "bb_upper_20", "bb_lower_20",
             "bb_pctb_20", "atr_14", "vwap", "roc_10"]  # fmt: skip
    return df.select(pl.col("Index").alias("symbol"), pl.col("Date").alias("time"), *names).sort(
        "symbol", "time"
    )


NAMES = ["rsi_14", "macd", "macd_signal", "macd_hist", "bb_upper_20", "bb_lower_20",
         "bb_pctb_20", "atr_14", "vwap", "roc_10"]  # fmt: skip


@pytest.mark.parametrize("order", ["in order", "out of order"])
def test_each_indicator_matches_its_published_definition(kafka, topic, order):
    ticks = bars()
    sent = ticks if order == "in order" else shuffle_in_blocks(ticks, 4)
    produce(kafka.bootstrap_servers, topic, sent)
    a = ss.Analytics(
        kafka.bootstrap_servers,
        topic,
        f"g-{uuid.uuid4().hex[:8]}",
        indicators=NAMES,
        allowed_lateness="1m",
        session_zone="America/New_York",
        idle_timeout=0.5,
        keep=100_000,
    )
    status = a.run(stop_at_end=True)
    assert (status.ticks, status.late) == (len(ticks), 0)
    got = a.indicators().sort("symbol", "time").select("symbol", "time", *NAMES)
    want = expected(ticks)
    assert got.height == want.height
    # Warm-up rows are null in both, never NaN.
    for name in NAMES:
        assert got[name].is_nan().sum() == 0, name
        assert got[name].is_null().to_list() == want[name].is_null().to_list(), name
    assert_frame_equal(got, want, rel_tol=1e-9, abs_tol=1e-9)
    # The session VWAP started again at New York's midnight.
    first_after = (
        want.filter(pl.col("time") >= datetime(2021, 3, 2, 5, 0)).group_by("symbol").first()
    )
    assert first_after.height == len(SYMBOLS)


def test_alert_rules_use_the_new_indicators(kafka, topic):
    ticks = bars()
    produce(kafka.bootstrap_servers, topic, ticks)
    rules = ["rsi_14 crosses 50", "price crosses bb_upper_20"]
    a = ss.Analytics(
        kafka.bootstrap_servers,
        topic,
        f"g-{uuid.uuid4().hex[:8]}",
        alerts=rules,
        idle_timeout=0.5,
        keep=100_000,
    )
    a.run(stop_at_end=True)
    alerts = a.alerts()
    want = expected(ticks).with_columns(price=pl.Series(sorted_prices(ticks)))
    for rule, left, right in [
        (rules[0], pl.col("rsi_14"), pl.lit(50.0)),
        (rules[1], pl.col("price"), pl.col("bb_upper_20")),
    ]:
        side = (
            want.with_columns(
                above=pl.when(left.is_not_null() & right.is_not_null()).then(left >= right)
            )
            .filter(pl.col("above").is_not_null())
            .with_columns(prev=pl.col("above").shift(1).over("symbol"))
        )
        crossings = side.filter(pl.col("prev").is_not_null() & (pl.col("above") != pl.col("prev")))
        got = alerts.filter(pl.col("rule") == rule).sort("symbol", "time")
        assert got.height == crossings.height > 0, rule
        assert got["time"].to_list() == crossings.sort("symbol", "time")["time"].to_list()


def sorted_prices(ticks):
    return (
        pl.DataFrame(ticks)
        .with_columns(pl.col("Date").str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us"))
        .sort("Index", "Date")["Close"]
        .cast(pl.Float64)
        .to_list()
    )


def test_unknown_or_malformed_indicators_are_config_errors(kafka, topic):
    for bad in ["rsi_0", "macd_26_12_9", "bb_upper", "vwap_5"]:
        with pytest.raises(ss.ConfigError, match="indicator"):
            ss.Analytics(kafka.bootstrap_servers, topic, "g", indicators=[bad])
    with pytest.raises(ss.ConfigError, match="session_zone"):
        ss.Analytics(kafka.bootstrap_servers, topic, "g", session_zone="Nowhere/City")
