import polars as pl
from polars.testing import assert_frame_equal

import stockstream as ss


def test_read_ticks_matches_an_independent_polars_read():
    ours = ss.read_ticks(ss.BUNDLED_CSV)
    theirs = pl.read_csv(ss.BUNDLED_CSV)
    assert_frame_equal(ours, theirs)
    assert ",".join(ours.columns) == "Index,Date,Open,High,Low,Close,Adj Close,Volume,CloseUSD"


def test_bundled_data_is_rebuilt_exactly_from_its_seed():
    # data/README.md documents this call as how the bundled file was made.
    rebuilt = ss.synthetic_ticks(14 * 260, 14, seed=2021, start="2021-01-04")
    assert_frame_equal(rebuilt, pl.read_csv(ss.BUNDLED_CSV))


def test_synthetic_ticks_are_realistic_bars():
    df = ss.synthetic_ticks(14 * 100, 14, seed=9)
    assert df["Index"].n_unique() == 14 and df.height == 1400
    assert df.select((pl.col("Low") <= pl.min_horizontal("Open", "Close")).all()).item()
    assert df.select((pl.col("High") >= pl.max_horizontal("Open", "Close")).all()).item()
    dates = pl.Series(df["Date"].unique()).str.to_date()
    assert dates.dt.weekday().max() <= 5  # trading days only
    intraday = ss.synthetic_ticks(6, 2, interval=60.0, start="2024-01-02 09:30:00")
    assert intraday["Date"].to_list()[::2] == [
        "2024-01-02 09:30:00",
        "2024-01-02 09:31:00",
        "2024-01-02 09:32:00",
    ]


def test_read_ticks_of_a_custom_layout(write_csv):
    path = write_csv("sym,when,px\nA,2024-01-02 10:00:00,1.5\n")
    df = ss.read_ticks(path, schema=ss.TickSchema("sym", "when", numeric=[]))
    assert df.to_dicts() == [{"sym": "A", "when": "2024-01-02 10:00:00", "px": 1.5}]
