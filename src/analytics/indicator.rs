//! Running indicators, updated one tick at a time in event-time order. Each matches the
//! Polars expression named in its doc comment, which the tests compare it with.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::spec::{IndicatorKind, Span};

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
        }
    }

    /// Takes the next tick (never earlier than the previous one) and returns the value.
    pub fn update(&mut self, time: i64, price: f64) -> Option<f64> {
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
        ticks.iter().map(|&(t, p)| state.update(t, p)).collect()
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
