"""Datasets shaped like real ones, shared by the benchmarks and the tests."""

from datetime import date
from pathlib import Path

# The tutorial's dataset (Kaggle indexProcessed.csv): 14 world indices, daily bars, each from
# its own start year to 2021.
START_YEARS = [1965, 1966, 1971, 1971, 1980, 1986, 1987, 1990, 1991, 1997, 1997, 2000, 2007, 2012]
INDICES = [
    "NYA",
    "IXIC",
    "HSI",
    "000001.SS",
    "GSPTSE",
    "399001.SZ",
    "NSEI",
    "GDAXI",
    "KS11",
    "SSMI",
    "TWII",
    "J203.JO",
    "N225",
    "N100",
]


def tutorial_daily(path: Path) -> int:
    """Business-day bars of the 14 indices from their start years to mid-2021, as a CSV;
    returns the number of rows (about 120,000)."""
    import polars as pl

    frames = []
    for i, (symbol, year) in enumerate(zip(INDICES, START_YEARS)):
        days = pl.date_range(date(year, 1, 1), date(2021, 6, 1), "1d", eager=True)
        days = days.filter(days.dt.weekday() <= 5)
        n = days.len()
        close = pl.Series(range(n), dtype=pl.Float64) * 0.01 + 100.0 * (i + 1)
        frames.append(
            pl.DataFrame(
                {
                    "Index": [symbol] * n,
                    "Date": days.dt.strftime("%Y-%m-%d"),
                    "Open": close - 0.5,
                    "High": close + 1.0,
                    "Low": close - 1.0,
                    "Close": close,
                    "Adj Close": close,
                    "Volume": pl.Series(range(n), dtype=pl.Float64) * 1000.0,
                    "CloseUSD": close * 1.1,
                }
            )
        )
    frame = pl.concat(frames)
    frame.write_csv(path)
    return frame.height
