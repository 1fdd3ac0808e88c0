//! Seeded geometric-Brownian-motion ticks in the tutorial's schema, for any number of
//! symbols and rows: benchmarks, tests and the bundled dataset.

use chrono::{DateTime, Datelike, Weekday};
use polars::prelude::*;

use super::columns::TUTORIAL_COLUMNS;
use super::rng::Rng;
use super::table::TickTable;
use crate::error::{Error, Result};

const DAY_US: i64 = 86_400_000_000;
/// Bounds that keep the generator's memory and clock arithmetic finite: a table of
/// `MAX_TABLE_ROWS` is ~5 GB, and a century of the longest interval stays within `i64` µs.
const MAX_SYMBOLS: usize = 1_000_000;
const MAX_INTERVAL_US: i64 = 366 * DAY_US;
const MAX_TABLE_ROWS: usize = 30_000_000;
/// 9999-12-31T00:00:00Z: dates beyond it cannot be written as the tutorial's four-digit years.
const LAST_US: i64 = 253_402_214_400_000_000;
/// Seconds of one trading year, to scale annual drift and volatility to one step.
const TRADING_YEAR_S: f64 = 252.0 * 86_400.0;

/// The 14 world indices of the tutorial's dataset: symbol, starting level, USD per unit of
/// the index's currency (for `CloseUSD`), typical daily volume.
const WORLD_INDICES: [(&str, f64, f64, f64); 14] = [
    ("NYA", 15_000.0, 1.0, 4.0e9),
    ("IXIC", 13_000.0, 1.0, 5.0e9),
    ("HSI", 28_000.0, 0.1289, 2.5e9),
    ("000001.SS", 3_500.0, 0.1555, 3.0e8),
    ("GSPTSE", 18_000.0, 0.8127, 2.0e8),
    ("399001.SZ", 14_000.0, 0.1555, 1.5e9),
    ("NSEI", 14_000.0, 0.0135, 5.0e8),
    ("GDAXI", 13_500.0, 1.2161, 9.0e7),
    ("KS11", 2_900.0, 0.00088, 8.0e8),
    ("SSMI", 10_800.0, 1.1088, 4.0e7),
    ("TWII", 15_000.0, 0.0360, 4.5e9),
    ("J203.JO", 60_000.0, 0.0737, 3.0e8),
    ("N225", 27_000.0, 0.0091, 8.0e8),
    ("N100", 1_200.0, 1.2161, 3.0e8),
];

/// How to generate: symbol count, seed, first timestamp and spacing of bars.
#[derive(Debug, Clone)]
pub struct SyntheticConfig {
    pub symbols: usize,
    pub seed: u64,
    pub start_us: i64,
    pub interval_us: i64,
}

struct Walk {
    name: String,
    close: f64,
    drift: f64,
    vol: f64,
    usd: f64,
    volume: f64,
}

/// An endless, deterministic stream of OHLCV bars; each time step has one bar per symbol.
pub struct Synthetic {
    rng: Rng,
    walks: Vec<Walk>,
    interval_us: i64,
    dt: f64,
    time_us: i64,
    next_symbol: usize,
}

impl Synthetic {
    /// A generator; fails on zero symbols or a non-positive interval.
    pub fn new(cfg: &SyntheticConfig) -> Result<Self> {
        if !(1..=MAX_SYMBOLS).contains(&cfg.symbols) {
            return Err(Error::config(format!(
                "symbols must be between 1 and {MAX_SYMBOLS}, got {}",
                cfg.symbols
            )));
        }
        if !(1..=MAX_INTERVAL_US).contains(&cfg.interval_us) {
            return Err(Error::config(format!(
                "interval must be between 1 µs and a year, got {} µs",
                cfg.interval_us
            )));
        }
        let mut rng = Rng::new(cfg.seed);
        let walks = (0..cfg.symbols)
            .map(|i| {
                let (name, level, usd, volume) = match WORLD_INDICES.get(i) {
                    Some(&(n, l, u, v)) => (n.to_string(), l, u, v),
                    None => (
                        format!("SYM{i:05}"),
                        50.0 + 450.0 * rng.uniform(),
                        1.0,
                        1.0e6,
                    ),
                };
                Walk {
                    name,
                    close: level,
                    drift: 0.02 + 0.08 * rng.uniform(),
                    vol: 0.12 + 0.2 * rng.uniform(),
                    usd,
                    volume,
                }
            })
            .collect();
        let mut s = Synthetic {
            rng,
            walks,
            interval_us: cfg.interval_us,
            dt: cfg.interval_us as f64 / 1e6 / TRADING_YEAR_S,
            time_us: cfg.start_us,
            next_symbol: 0,
        };
        s.skip_weekend();
        Ok(s)
    }

    /// Daily bars fall on trading days only.
    fn skip_weekend(&mut self) {
        if self.interval_us != DAY_US {
            return;
        }
        while matches!(weekday(self.time_us), Weekday::Sat | Weekday::Sun) {
            self.time_us += DAY_US;
        }
    }

    /// The next `rows` bars as a table, continuing where the previous call stopped.
    pub fn next_table(&mut self, rows: usize) -> Result<TickTable> {
        if rows > MAX_TABLE_ROWS {
            return Err(Error::config(format!(
                "rows must be at most {MAX_TABLE_ROWS} for one table in memory (got {rows}); \
                 send more by streaming: Producer.send(TickSource.synthetic(...), limit=...)"
            )));
        }
        let mut cols: [Vec<f64>; 7] = Default::default();
        let mut names = Vec::with_capacity(rows);
        let mut dates = Vec::with_capacity(rows);
        let mut times = Vec::with_capacity(rows);
        let mut date_text = format_time(self.time_us, self.interval_us);
        for _ in 0..rows {
            let sd = self.dt.sqrt();
            let rng = &mut self.rng;
            let w = &mut self.walks[self.next_symbol];
            let open = w.close * (0.2 * w.vol * sd * rng.normal()).exp();
            let close = open
                * ((w.drift - w.vol * w.vol / 2.0) * self.dt + w.vol * sd * rng.normal()).exp();
            let high = open.max(close) * (0.5 * w.vol * sd * rng.normal().abs()).exp();
            let low = open.min(close) * (-0.5 * w.vol * sd * rng.normal().abs()).exp();
            let volume = (w.volume * (0.3 * rng.normal()).exp()).round();
            w.close = close;
            let close = round(close, 2);
            for (col, v) in cols.iter_mut().zip([
                round(open, 2),
                round(high, 2),
                round(low, 2),
                close,
                close,
                volume,
                round(close * w.usd, 4),
            ]) {
                col.push(v);
            }
            names.push(w.name.clone());
            dates.push(date_text.clone());
            times.push(self.time_us);
            self.next_symbol += 1;
            if self.next_symbol == self.walks.len() {
                self.next_symbol = 0;
                self.time_us = self.time_us.saturating_add(self.interval_us);
                if self.time_us > LAST_US {
                    return Err(Error::config(
                        "synthetic ticks passed the year 9999 (start + rows × interval); \
                         use a shorter interval or fewer rows",
                    ));
                }
                self.skip_weekend();
                date_text = format_time(self.time_us, self.interval_us);
            }
        }
        let mut columns = vec![
            Column::new(TUTORIAL_COLUMNS[0].into(), names),
            Column::new(TUTORIAL_COLUMNS[1].into(), dates),
        ];
        columns.extend(
            TUTORIAL_COLUMNS[2..]
                .iter()
                .zip(cols)
                .map(|(name, values)| Column::new((*name).into(), values)),
        );
        let df = DataFrame::new_infer_height(columns).map_err(|e| Error::schema(e.to_string()))?;
        let symbols = df
            .column(TUTORIAL_COLUMNS[0])
            .and_then(|c| c.str().map(|s| s.rechunk().downcast_as_array().clone()))
            .map_err(|e| Error::schema(e.to_string()))?;
        TickTable::from_parts(df, symbols, times)
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

fn weekday(time_us: i64) -> Weekday {
    DateTime::from_timestamp_micros(time_us)
        .map(|t| t.weekday())
        .unwrap_or(Weekday::Mon)
}

/// Whole days print as dates (the tutorial's `Date` column), anything finer as date-times.
fn format_time(time_us: i64, interval_us: i64) -> String {
    let t = DateTime::from_timestamp_micros(time_us).unwrap_or_default();
    if interval_us % DAY_US == 0 && time_us % DAY_US == 0 {
        t.format("%Y-%m-%d").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S%.f").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::time::parse_micros;

    fn cfg(symbols: usize, interval_us: i64) -> SyntheticConfig {
        SyntheticConfig {
            symbols,
            seed: 42,
            start_us: parse_micros("2021-01-01").unwrap(),
            interval_us,
        }
    }

    #[test]
    fn bars_are_consistent_and_reproducible() {
        let t = Synthetic::new(&cfg(14, DAY_US))
            .unwrap()
            .next_table(14 * 50)
            .unwrap();
        let again = Synthetic::new(&cfg(14, DAY_US))
            .unwrap()
            .next_table(14 * 50)
            .unwrap();
        assert!(t.frame().equals(again.frame()));
        let f = |c: &str| {
            t.frame()
                .column(c)
                .unwrap()
                .f64()
                .unwrap()
                .to_vec_null_aware()
                .left()
                .unwrap()
        };
        let (o, h, l, c, v) = (f("Open"), f("High"), f("Low"), f("Close"), f("Volume"));
        for i in 0..t.len() {
            assert!(
                l[i] <= o[i].min(c[i]) && o[i].max(c[i]) <= h[i] && l[i] > 0.0,
                "row {i}"
            );
            assert!(v[i] >= 0.0 && v[i].fract() == 0.0);
        }
        // 2021-01-01 is a Friday: the next step skips the weekend to Monday the 4th.
        assert_eq!(t.symbol(0), "NYA");
        assert_eq!(t.symbol(13), "N100");
        assert_eq!(t.time_us(14) - t.time_us(0), 3 * DAY_US);
        let mut out = Vec::new();
        t.encode(14, &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with(r#"{"Index":"NYA","Date":"2021-01-04","#));
    }

    #[test]
    fn continues_across_calls_and_names_extra_symbols() {
        let mut g = Synthetic::new(&cfg(20, 60_000_000)).unwrap();
        let a = g.next_table(15).unwrap();
        let b = g.next_table(10).unwrap();
        assert_eq!(a.symbol(14), "SYM00014");
        assert_eq!(b.symbol(5), "NYA");
        assert_eq!(b.time_us(5) - a.time_us(0), 60_000_000);
        let mut out = Vec::new();
        b.encode(5, &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains(r#""Date":"2021-01-01 00:01:00""#));
    }

    #[test]
    fn daily_returns_have_the_configured_scale() {
        let mut g = Synthetic::new(&cfg(1, DAY_US)).unwrap();
        let t = g.next_table(5000).unwrap();
        let c = t
            .frame()
            .column("Close")
            .unwrap()
            .f64()
            .unwrap()
            .to_vec_null_aware()
            .left()
            .unwrap();
        let r: Vec<f64> = c.windows(2).map(|w| (w[1] / w[0]).ln()).collect();
        let mean = r.iter().sum::<f64>() / r.len() as f64;
        let sd = (r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / r.len() as f64).sqrt();
        // Annual volatility between 12% and 32% means a daily stdev of about 0.8%–2.0%
        // (plus the small overnight gap).
        assert!((0.006..0.025).contains(&sd), "daily stdev {sd}");
    }

    #[test]
    fn rejects_empty_configs() {
        assert!(Synthetic::new(&cfg(0, DAY_US)).is_err());
        assert!(Synthetic::new(&cfg(1, 0)).is_err());
    }
}
