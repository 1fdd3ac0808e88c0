//! Running indicators, updated one tick at a time in event-time order, each in O(1) per
//! tick. Each matches the Polars expression or published definition named in its doc
//! comment, which the tests compare it with. Warm-up values are `None` (null), never NaN.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::spec::{BandPart, IndicatorKind, MacdPart, Span};
use super::tick::Tick;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum IndicatorState {
    /// `rolling_mean(n)`: null until n ticks.
    SmaTicks {
        n: usize,
        prices: VecDeque<f64>,
        sum: f64,
    },
    /// `rolling_mean_by(time, span)`: the ticks in (t - span, t].
    SmaSpan {
        span: i64,
        ticks: VecDeque<(i64, f64)>,
        sum: f64,
    },
    /// `ewm_mean(span=n, adjust=False)`.
    EmaTicks { alpha: f64, value: Option<f64> },
    /// `ewm_mean_by(time, half_life=span)`.
    EmaSpan {
        half_life: i64,
        last: Option<(i64, f64)>,
    },
    /// `pct_change().rolling_std(n)`: null until n returns.
    Volatility {
        n: usize,
        returns: VecDeque<f64>,
        last_price: Option<f64>,
    },
    /// Wilder's RSI: average gain and loss seeded with the mean of the first n changes,
    /// then smoothed as `(previous·(n−1) + current)/n`; null until n changes.
    Rsi {
        n: usize,
        last_price: Option<f64>,
        changes: usize,
        gain: f64,
        loss: f64,
    },
    /// MACD: `ewm_mean(span=fast) − ewm_mean(span=slow)` (adjust=False) from the slow
    /// span's n-th tick; the signal is the EMA of that line from its first value.
    Macd {
        fast: Ema,
        slow: Ema,
        signal: Ema,
        slow_span: usize,
        signal_span: usize,
        ticks: usize,
        lines: usize,
        part: MacdPart,
    },
    /// Bollinger bands: `rolling_mean(n)` ± k·`rolling_std(n, ddof=0)`; null until n ticks.
    Bollinger {
        n: usize,
        k: f64,
        prices: VecDeque<f64>,
        sum: f64,
        squares: f64,
        part: BandPart,
    },
    /// Wilder's ATR: true range `max(high−low, |high−prev close|, |low−prev close|)`
    /// (high−low on the first tick), seeded with the mean of n, then Wilder-smoothed.
    Atr {
        n: usize,
        last_close: Option<f64>,
        ranges: usize,
        atr: f64,
    },
    /// `cum_sum(price·volume) / cum_sum(volume)` over the ticks of the trading day.
    SessionVwap {
        session: Option<i32>,
        value: f64,
        volume: f64,
    },
    /// `pct_change(n) · 100`: null until n + 1 ticks.
    Roc { n: usize, prices: VecDeque<f64> },
}

/// An exponential mean with `α = 2/(span+1)` (`ewm_mean(span, adjust=False)`), starting at
/// the first value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ema {
    alpha: f64,
    value: Option<f64>,
}

impl Ema {
    fn new(span: usize) -> Self {
        Ema {
            alpha: 2.0 / (span as f64 + 1.0),
            value: None,
        }
    }

    fn add(&mut self, x: f64) -> f64 {
        let next = self
            .value
            .map_or(x, |v| self.alpha * x + (1.0 - self.alpha) * v);
        self.value = Some(next);
        next
    }
}

impl IndicatorState {
    pub fn new(kind: IndicatorKind) -> Self {
        match kind {
            IndicatorKind::Sma(Span::Ticks(n)) => IndicatorState::SmaTicks {
                n,
                prices: VecDeque::with_capacity(n + 1),
                sum: 0.0,
            },
            IndicatorKind::Sma(Span::Micros(span)) => IndicatorState::SmaSpan {
                span,
                ticks: VecDeque::new(),
                sum: 0.0,
            },
            IndicatorKind::Ema(Span::Ticks(n)) => IndicatorState::EmaTicks {
                alpha: 2.0 / (n as f64 + 1.0),
                value: None,
            },
            IndicatorKind::Ema(Span::Micros(half_life)) => IndicatorState::EmaSpan {
                half_life,
                last: None,
            },
            IndicatorKind::Volatility(n) => IndicatorState::Volatility {
                n,
                returns: VecDeque::with_capacity(n + 1),
                last_price: None,
            },
            IndicatorKind::Rsi(n) => IndicatorState::Rsi {
                n,
                last_price: None,
                changes: 0,
                gain: 0.0,
                loss: 0.0,
            },
            IndicatorKind::Macd {
                fast,
                slow,
                signal,
                part,
            } => IndicatorState::Macd {
                fast: Ema::new(fast),
                slow: Ema::new(slow),
                signal: Ema::new(signal),
                slow_span: slow,
                signal_span: signal,
                ticks: 0,
                lines: 0,
                part,
            },
            IndicatorKind::Bollinger { n, k_cents, part } => IndicatorState::Bollinger {
                n,
                k: f64::from(k_cents) / 100.0,
                prices: VecDeque::with_capacity(n + 1),
                sum: 0.0,
                squares: 0.0,
                part,
            },
            IndicatorKind::Atr(n) => IndicatorState::Atr {
                n,
                last_close: None,
                ranges: 0,
                atr: 0.0,
            },
            IndicatorKind::SessionVwap => IndicatorState::SessionVwap {
                session: None,
                value: 0.0,
                volume: 0.0,
            },
            IndicatorKind::Roc(n) => IndicatorState::Roc {
                n,
                prices: VecDeque::with_capacity(n + 2),
            },
        }
    }

    /// Takes the next tick (never earlier than the previous one) and returns the value.
    pub fn update(&mut self, tick: &Tick) -> Option<f64> {
        let (time, price) = (tick.time, tick.price);
        match self {
            IndicatorState::SmaTicks { n, prices, sum } => {
                prices.push_back(price);
                *sum += price;
                if prices.len() > *n {
                    *sum -= prices.pop_front().unwrap_or(0.0);
                }
                (prices.len() == *n).then(|| *sum / *n as f64)
            }
            IndicatorState::SmaSpan { span, ticks, sum } => {
                ticks.push_back((time, price));
                *sum += price;
                while ticks.front().is_some_and(|(t, _)| *t <= time - *span) {
                    *sum -= ticks.pop_front().map_or(0.0, |(_, p)| p);
                }
                Some(*sum / ticks.len() as f64)
            }
            IndicatorState::EmaTicks { alpha, value } => {
                let next = value.map_or(price, |v| *alpha * price + (1.0 - *alpha) * v);
                *value = Some(next);
                Some(next)
            }
            IndicatorState::EmaSpan { half_life, last } => {
                let next = match *last {
                    None => price,
                    Some((t0, v)) => {
                        let decay = (-(std::f64::consts::LN_2) * (time - t0) as f64
                            / *half_life as f64)
                            .exp();
                        (1.0 - decay) * price + decay * v
                    }
                };
                *last = Some((time, next));
                Some(next)
            }
            IndicatorState::Volatility {
                n,
                returns,
                last_price,
            } => {
                if let Some(prev) = last_price.replace(price) {
                    returns.push_back(price / prev - 1.0);
                    if returns.len() > *n {
                        returns.pop_front();
                    }
                }
                (returns.len() == *n).then(|| sample_std(returns))
            }
            IndicatorState::Rsi {
                n,
                last_price,
                changes,
                gain,
                loss,
            } => {
                let change = price - last_price.replace(price)?;
                let (up, down) = (change.max(0.0), (-change).max(0.0));
                *changes += 1;
                let n = *n as f64;
                if *changes <= n as usize {
                    // The first averages are plain means of the first n changes.
                    *gain += up / n;
                    *loss += down / n;
                    if *changes < n as usize {
                        return None;
                    }
                } else {
                    *gain = (*gain * (n - 1.0) + up) / n;
                    *loss = (*loss * (n - 1.0) + down) / n;
                }
                match (*gain, *loss) {
                    (g, l) if l > 0.0 => Some(100.0 - 100.0 / (1.0 + g / l)),
                    (g, _) if g > 0.0 => Some(100.0),
                    // No movement at all: no strength either way.
                    _ => None,
                }
            }
            IndicatorState::Macd {
                fast,
                slow,
                signal,
                slow_span,
                signal_span,
                ticks,
                lines,
                part,
            } => {
                let line = fast.add(price) - slow.add(price);
                *ticks += 1;
                if *ticks < *slow_span {
                    return None;
                }
                let smoothed = signal.add(line);
                *lines += 1;
                let signalled = *lines >= *signal_span;
                match part {
                    MacdPart::Line => Some(line),
                    MacdPart::Signal => signalled.then_some(smoothed),
                    MacdPart::Histogram => signalled.then_some(line - smoothed),
                }
            }
            IndicatorState::Bollinger {
                n,
                k,
                prices,
                sum,
                squares,
                part,
            } => {
                prices.push_back(price);
                *sum += price;
                *squares += price * price;
                if prices.len() > *n {
                    let old = prices.pop_front().unwrap_or(0.0);
                    *sum -= old;
                    *squares -= old * old;
                }
                if prices.len() < *n {
                    return None;
                }
                let count = *n as f64;
                let mean = *sum / count;
                let std = (*squares / count - mean * mean).max(0.0).sqrt();
                let (upper, lower) = (mean + *k * std, mean - *k * std);
                match part {
                    BandPart::Middle => Some(mean),
                    BandPart::Upper => Some(upper),
                    BandPart::Lower => Some(lower),
                    BandPart::PercentB => {
                        (upper > lower).then(|| (price - lower) / (upper - lower))
                    }
                }
            }
            IndicatorState::Atr {
                n,
                last_close,
                ranges,
                atr,
            } => {
                let (high, low) = tick.range.unwrap_or((price, price));
                let range = match last_close.replace(price) {
                    None => high - low,
                    Some(close) => (high - low)
                        .max((high - close).abs())
                        .max((low - close).abs()),
                };
                *ranges += 1;
                let n = *n as f64;
                if *ranges <= n as usize {
                    *atr += range / n;
                    (*ranges == n as usize).then_some(*atr)
                } else {
                    *atr = (*atr * (n - 1.0) + range) / n;
                    Some(*atr)
                }
            }
            IndicatorState::SessionVwap {
                session,
                value,
                volume,
            } => {
                if session.replace(tick.session) != Some(tick.session) {
                    (*value, *volume) = (0.0, 0.0);
                }
                *value += price * tick.volume;
                *volume += tick.volume;
                (*volume > 0.0).then(|| *value / *volume)
            }
            IndicatorState::Roc { n, prices } => {
                prices.push_back(price);
                if prices.len() > *n + 1 {
                    prices.pop_front();
                }
                let first = *prices.front()?;
                (prices.len() == *n + 1 && first != 0.0).then(|| (price / first - 1.0) * 100.0)
            }
        }
    }
}

fn sample_std(values: &VecDeque<f64>) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let squares: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (squares / (n - 1.0)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: IndicatorKind, ticks: &[(i64, f64)]) -> Vec<Option<f64>> {
        let mut state = IndicatorState::new(kind);
        ticks
            .iter()
            .map(|&(time, price)| {
                state.update(&Tick {
                    symbol: "A".into(),
                    time,
                    price,
                    volume: 1.0,
                    offset: 0,
                    range: None,
                    session: 0,
                    joined: Vec::new(),
                })
            })
            .collect()
    }

    #[test]
    fn rsi_is_wilder_smoothed_and_null_while_warming_up() {
        // Changes +1, −1, +2: the first mean of two is (gain 0.5, loss 0.5), then
        // gain (0.5 + 2)/2 = 1.25, loss 0.25.
        let rsi = run(
            IndicatorKind::Rsi(2),
            &[(0, 10.0), (1, 11.0), (2, 10.0), (3, 12.0)],
        );
        assert_eq!(rsi[..2], [None, None]);
        assert!((rsi[2].unwrap() - 50.0).abs() < 1e-12);
        assert!((rsi[3].unwrap() - (100.0 - 100.0 / (1.0 + 5.0))).abs() < 1e-12);
    }

    #[test]
    fn rate_of_change_and_bands() {
        let ticks = [(0, 100.0), (1, 110.0), (2, 99.0)];
        let roc = run(IndicatorKind::Roc(1), &ticks);
        assert_eq!(roc[0], None);
        assert!((roc[1].unwrap() - 10.0).abs() < 1e-12);
        let band = |part| IndicatorKind::Bollinger {
            n: 2,
            k_cents: 200,
            part,
        };
        // Prices 100 and 110: mean 105, population std 5.
        assert_eq!(run(band(BandPart::Upper), &ticks)[1], Some(115.0));
        assert_eq!(run(band(BandPart::Lower), &ticks)[1], Some(95.0));
        assert_eq!(run(band(BandPart::PercentB), &ticks)[1], Some(0.75));
    }

    #[test]
    fn simple_moving_averages() {
        let ticks = [(0, 1.0), (10, 2.0), (20, 3.0), (30, 5.0)];
        assert_eq!(
            run(IndicatorKind::Sma(Span::Ticks(2)), &ticks),
            [None, Some(1.5), Some(2.5), Some(4.0)]
        );
        // A 15 µs span holds the ticks in (t - 15, t].
        assert_eq!(
            run(IndicatorKind::Sma(Span::Micros(15)), &ticks),
            [Some(1.0), Some(1.5), Some(2.5), Some(4.0)]
        );
    }

    #[test]
    fn exponential_moving_averages() {
        let ema = run(IndicatorKind::Ema(Span::Ticks(3)), &[(0, 1.0), (1, 3.0)]);
        assert_eq!(ema, [Some(1.0), Some(2.0)]);
        // One half-life later the old value weighs one half.
        let ema = run(IndicatorKind::Ema(Span::Micros(10)), &[(0, 0.0), (10, 4.0)]);
        assert!((ema[1].unwrap() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn volatility_of_returns() {
        let v = run(
            IndicatorKind::Volatility(2),
            &[(0, 100.0), (1, 110.0), (2, 99.0)],
        );
        assert_eq!(v[..2], [None, None]);
        let expected = sample_std(&VecDeque::from([0.1, -0.1]));
        assert!((v[2].unwrap() - expected).abs() < 1e-12);
        assert!((expected - 0.1414213562373095).abs() < 1e-12);
    }
}
