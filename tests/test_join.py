"""As-of joins of a tick topic with a table topic, checked against Polars' ``join_asof``.

The expected values come from Polars over the records the test produced, never from
stockstream itself.
"""

import random
from datetime import timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import stockstream as ss
from test_analytics import (
    BASE,
    FORMAT,
    SYMBOLS,
    analytics,
    frame_of,
    make_ticks,
    produce,
    shuffle_in_blocks,
)

CURRENCY = {"NYA": "USD", "IXIC": "EUR", "N225": "JPY"}


def fx_records(minutes=50, every=5, gap=("EUR", 20, 35), seed=3):
    """A rate per currency every ``every`` minutes (jittered), none for ``gap``'s currency
    between its two minutes, in random arrival order."""
    rng = random.Random(seed)
    records = []
    for currency, level in [("USD", 1.0), ("EUR", 1.1), ("JPY", 0.0091)]:
        rate = level
        for m in range(-every, minutes, every):
            if currency == gap[0] and gap[1] <= m < gap[2]:
                continue
            rate *= 1 + rng.gauss(0, 0.01) if currency != "USD" else 1
            t = BASE + timedelta(minutes=m, seconds=rng.random() * 30)
            date = t.strftime(FORMAT) + f".{t.microsecond:06d}"
            records.append({"currency": currency, "Date": date, "rate": round(rate, 6)})
    rng.shuffle(records)
    return records


def fx_frame(records):
    return pl.DataFrame(records).with_columns(
        pl.col("Date").str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us")
    )


def with_currency(ticks):
    return [dict(t, Currency=CURRENCY[t["Index"]]) for t in ticks]


def produce_fx(bootstrap, topic, records):
    produce(bootstrap, topic, [dict(r, Index=r["currency"]) for r in records])


@pytest.fixture
def fx_topic(kafka, topic):
    kafka.create_topic(f"{topic}-fx", 2)
    return f"{topic}-fx"


def test_an_asof_join_on_shuffled_ticks_matches_polars_join_asof(kafka, topic, fx_topic):
    ticks = with_currency(make_ticks(n_per_symbol=300))
    rates = fx_records()
    produce_fx(kafka.bootstrap_servers, fx_topic, rates)
    produce(kafka.bootstrap_servers, topic, shuffle_in_blocks(ticks, 8))
    a = analytics(
        kafka.bootstrap_servers,
        topic,
        indicators=["sma_5"],
        alerts=["rate crosses 1.1 for IXIC"],
        allowed_lateness="10m",
        join=ss.AsOf(fx_topic, by=("Currency", "currency"), fields="rate", tolerance="10m"),
        price="Close * rate",
    )
    status = a.run(stop_at_end=True)

    joined = (
        frame_of(ticks)
        .sort("Date")
        .join_asof(
            fx_frame(rates).sort("Date"),
            on="Date",
            by_left="Currency",
            by_right="currency",
            strategy="backward",
            tolerance="10m",
            check_sortedness=False,
        )
        .sort("Index", "Date")
    )
    matched = joined.filter(pl.col("rate").is_not_null())
    want = (
        matched.select(
            symbol="Index",
            time="Date",
            price=pl.col("Close") * pl.col("rate"),
            rate="rate",
        )
        .with_columns(sma_5=pl.col("price").rolling_mean(5).over("symbol"))
        .select("symbol", "time", "price", "sma_5", "rate")
    )
    unmatched = joined.height - matched.height
    assert 0 < unmatched < 100, "EUR's pause is longer than the tolerance"
    assert (status.ticks, status.rejected) == (matched.height, unmatched)
    assert "older than the join's tolerance" in status.last_rejected
    got = a.indicators().sort("symbol", "time")
    assert got.columns == ["symbol", "time", "price", "sma_5", "rate"]
    assert_frame_equal(got, want.cast(got.schema), rel_tol=1e-9)

    ixic = want.filter(pl.col("symbol") == "IXIC")
    above = (ixic["rate"] >= 1.1).to_list()
    crossings = sum(1 for was, now in zip(above, above[1:]) if was != now)
    alerts = a.alerts()
    assert crossings > 0
    assert alerts.height == crossings
    assert set(alerts["symbol"]) == {"IXIC"}


def test_a_late_table_record_counts_for_the_ticks_read_after_it(kafka, topic, fx_topic):
    join = ss.AsOf(fx_topic, by=("Currency", "currency"), fields=["rate"])
    eur = [t for t in with_currency(make_ticks(n_per_symbol=40)) if t["Currency"] == "EUR"]
    first, second = eur[:20], eur[20:]
    day_start = BASE.strftime(FORMAT)
    produce_fx(
        kafka.bootstrap_servers, fx_topic, [{"currency": "EUR", "Date": day_start, "rate": 1.1}]
    )
    produce(kafka.bootstrap_servers, topic, first)
    a = analytics(kafka.bootstrap_servers, topic, join=join, price="Close * rate")
    before = a.run(stop_at_end=True, collect=True)["indicators"]
    assert before["rate"].to_list() == [1.1] * len(first)

    # A correction dated before every tick of both batches arrives between them.
    produce_fx(
        kafka.bootstrap_servers,
        fx_topic,
        [{"currency": "EUR", "Date": (BASE + timedelta(seconds=1)).strftime(FORMAT), "rate": 1.2}],
    )
    produce(kafka.bootstrap_servers, topic, second)
    after = a.run(stop_at_end=True, collect=True)["indicators"]
    assert after["rate"].to_list() == [1.2] * len(second)
    # What was emitted before the correction stands: nothing is emitted again.
    assert a.indicators().height == len(eur)
    assert_frame_equal(a.indicators().head(len(first)), before)


def test_join_options_and_a_missing_join_topic_are_refused_clearly(kafka, topic, fx_topic):
    join = ss.AsOf(fx_topic, "currency", "rate", tolerance=3600)
    assert (join.by, join.fields, join.tolerance) == (("currency", "currency"), ["rate"], 3600.0)
    for args, message in [
        (dict(by="currency", fields=[]), "name the fields"),
        (dict(by=3, fields="rate"), "by is a field name"),
        (dict(by="currency", fields="rate", tolerance="soon"), "duration"),
        (dict(by="", fields="rate"), "by"),
    ]:
        with pytest.raises(ss.ConfigError, match=message):
            ss.AsOf(fx_topic, **args)
    with pytest.raises(ss.ConfigError, match="also the input"):
        ss.Analytics(kafka.bootstrap_servers, topic, join=ss.AsOf(topic, "currency", "rate"))
    with pytest.raises(ss.ConfigError, match="price"):
        ss.Analytics(kafka.bootstrap_servers, topic, join=join, price="Close * (rate")
    with pytest.raises(ss.ConfigError, match="nor a joined field"):
        ss.Analytics(kafka.bootstrap_servers, topic, alerts=["rate crosses 1"])
    with pytest.raises(ss.NotFoundError, match="no-such-fx"):
        ss.Analytics(kafka.bootstrap_servers, topic, join=ss.AsOf("no-such-fx", "currency", "rate"))


def test_ticks_and_table_records_the_join_cannot_use_are_rejected_saying_why(
    kafka, topic, fx_topic
):
    produce(
        kafka.bootstrap_servers,
        fx_topic,
        [
            {"Index": "x", "currency": "EUR", "Date": BASE.strftime(FORMAT), "rate": 1.1},
            {"Index": "x", "currency": "EUR", "Date": BASE.strftime(FORMAT), "rate": "n/a"},
        ],
    )
    ticks = [
        dict(t, Currency="EUR") for t in make_ticks(n_per_symbol=2) if t["Index"] == SYMBOLS[0]
    ]
    ticks.append({k: v for k, v in ticks[0].items() if k != "Currency"})
    produce(kafka.bootstrap_servers, topic, ticks)
    a = analytics(
        kafka.bootstrap_servers,
        topic,
        join=ss.AsOf(fx_topic, ("Currency", "currency"), "rate"),
        price="Close * rate",
    )
    status = a.run(stop_at_end=True)
    assert (status.ticks, status.rejected) == (2, 2)
    assert 'missing field "Currency"' in status.last_rejected
    assert a.indicators()["rate"].to_list() == [1.1, 1.1]
