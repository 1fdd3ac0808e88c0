//! What an analytics job computes, written the way users write it: durations (`"1m"`),
//! indicator names (`"sma_20"`, `"ema_5m"`, `"volatility_20"`) and alert rules
//! (`"price crosses 15000"`, `"sma_5 crosses sma_20"`, `"move 2%"`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const MICROS_PER_UNIT: [(&str, i64); 7] = [
    ("us", 1),
    ("ms", 1_000),
    ("s", 1_000_000),
    ("m", 60_000_000),
    ("h", 3_600_000_000),
    ("d", 86_400_000_000),
    ("w", 7 * 86_400_000_000),
];

/// Parses `"500ms"`, `"30s"`, `"1m"`, `"1h30m"`, `"1d"`, `"0s"` to microseconds.
pub fn parse_duration(text: &str) -> Result<i64> {
    let bad = || {
        Error::config(format!(
            "duration {text:?} is not valid: write a number and a unit (us, ms, s, m, h, d, w), \
             e.g. \"30s\", \"1m\", \"1h30m\""
        ))
    };
    let mut rest = text.trim();
    let mut total = 0i64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let number: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale = MICROS_PER_UNIT
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, s)| *s)
            .ok_or_else(bad)?;
        total = number
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// How far back a moving statistic looks: the last N ticks, or a span of event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Span {
    Ticks(usize),
    Micros(i64),
}

impl Span {
    fn parse(text: &str) -> Result<Self> {
        match text.parse::<usize>() {
            Ok(0) => Err(Error::config(format!(
                "{text:?}: a tick count must be positive"
            ))),
            Ok(n) => Ok(Span::Ticks(n)),
            Err(_) => match parse_duration(text)? {
                0 => Err(Error::config(format!("{text:?}: a span must be positive"))),
                micros => Ok(Span::Micros(micros)),
            },
        }
    }
}

/// A running per-tick indicator; its name (`sma_20`) is also its output column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndicatorKind {
    /// Mean of the last N prices, or of the prices in the last span of event time.
    Sma(Span),
    /// Exponential mean: over N ticks α = 2/(N+1); over a span, the span is the half-life.
    Ema(Span),
    /// Sample standard deviation of the last N simple returns.
    Volatility(usize),
    /// Wilder's relative strength index over N price changes.
    Rsi(usize),
    /// One part of MACD: EMA(fast) − EMA(slow), its EMA(signal), or their difference.
    Macd {
        fast: usize,
        slow: usize,
        signal: usize,
        part: MacdPart,
    },
    /// One part of Bollinger bands: the N-tick mean, the mean ± k population standard
    /// deviations (`k` in hundredths), or %b (where the price sits between the bands).
    Bollinger {
        n: usize,
        k_cents: u32,
        part: BandPart,
    },
    /// Wilder's average true range over N ticks (from high, low and close).
    Atr(usize),
    /// VWAP since the start of the tick's trading day (in the session zone).
    SessionVwap,
    /// Rate of change: percent change from the price N ticks before.
    Roc(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MacdPart {
    Line,
    Signal,
    Histogram,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BandPart {
    Middle,
    Upper,
    Lower,
    PercentB,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indicator {
    pub name: String,
    pub kind: IndicatorKind,
}

impl std::str::FromStr for Indicator {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        let name = name.trim().to_ascii_lowercase();
        let bad = |why: &str| {
            Error::config(format!(
                "indicator {name:?}: {why}; write sma_N, ema_N (N ticks), sma_5m, ema_5m (a \
                 span of event time), volatility_N, rsi_N, macd[_F_S_G], macd_signal[_F_S_G], \
                 macd_hist[_F_S_G], bb_middle_N, bb_upper_N[_K], bb_lower_N[_K], bb_pctb_N[_K], \
                 atr_N, roc_N or vwap (since the session's start)"
            ))
        };
        let count = |text: &str| -> Result<usize> {
            match text.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad(&format!("{text:?} is not a positive tick count"))),
            }
        };
        let parts: Vec<&str> = name.split('_').collect();
        let macd = |part: MacdPart, spans: &[&str]| -> Result<IndicatorKind> {
            let (fast, slow, signal) = match spans {
                [] => (12, 26, 9),
                [f, s, g] => (count(f)?, count(s)?, count(g)?),
                _ => return Err(bad("MACD takes three spans (fast, slow, signal) or none")),
            };
            if fast >= slow {
                return Err(bad("the fast span must be shorter than the slow one"));
            }
            Ok(IndicatorKind::Macd {
                fast,
                slow,
                signal,
                part,
            })
        };
        let band = |part: BandPart, rest: &[&str]| -> Result<IndicatorKind> {
            let (n, k) = match rest {
                [n] => (count(n)?, 2.0),
                [n, k] => (
                    count(n)?,
                    k.parse::<f64>().map_err(|_| bad("K is not a number"))?,
                ),
                _ => return Err(bad("Bollinger bands take N and an optional K")),
            };
            if !(k > 0.0 && k <= 10.0) || n < 2 {
                return Err(bad("Bollinger bands need N ≥ 2 and 0 < K ≤ 10"));
            }
            Ok(IndicatorKind::Bollinger {
                n,
                k_cents: (k * 100.0).round() as u32,
                part,
            })
        };
        let kind = match parts[..] {
            ["vwap"] => IndicatorKind::SessionVwap,
            ["macd", "signal", ref spans @ ..] => macd(MacdPart::Signal, spans)?,
            ["macd", "hist", ref spans @ ..] => macd(MacdPart::Histogram, spans)?,
            ["macd", ref spans @ ..] => macd(MacdPart::Line, spans)?,
            ["bb", "middle", ref rest @ ..] => band(BandPart::Middle, rest)?,
            ["bb", "upper", ref rest @ ..] => band(BandPart::Upper, rest)?,
            ["bb", "lower", ref rest @ ..] => band(BandPart::Lower, rest)?,
            ["bb", "pctb", ref rest @ ..] => band(BandPart::PercentB, rest)?,
            ["rsi", n] => IndicatorKind::Rsi(count(n)?),
            ["atr", n] => IndicatorKind::Atr(count(n)?),
            ["roc", n] => IndicatorKind::Roc(count(n)?),
            ["sma", arg] => IndicatorKind::Sma(Span::parse(arg)?),
            ["ema", arg] => IndicatorKind::Ema(Span::parse(arg)?),
            ["volatility" | "vol", arg] => match Span::parse(arg)? {
                Span::Ticks(n) if n >= 2 => IndicatorKind::Volatility(n),
                _ => return Err(bad("volatility needs at least 2 returns")),
            },
            [_] => return Err(bad("no length")),
            _ => return Err(bad("unknown kind")),
        };
        Ok(Indicator { name, kind })
    }
}

/// Tumbling (`slide == size`) or hopping windows, aligned to the Unix epoch; or session
/// windows: per symbol, from a tick until `size` passes without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// The window's length, or a session's gap.
    pub size: i64,
    pub slide: i64,
    pub session: bool,
}

impl WindowSpec {
    /// Sessions that close once `gap` passes without a tick of their symbol.
    pub fn session(gap: i64) -> Result<Self> {
        if gap <= 0 {
            return Err(Error::config("a session's gap must be a positive duration"));
        }
        Ok(WindowSpec {
            size: gap,
            slide: gap,
            session: true,
        })
    }

    pub fn new(size: i64, slide: Option<i64>) -> Result<Self> {
        let slide = slide.unwrap_or(size);
        if size <= 0 || slide <= 0 {
            return Err(Error::config(
                "the window and its slide must be positive durations",
            ));
        }
        if slide > size {
            return Err(Error::config(
                "the window slide may not be longer than the window: gaps would drop ticks",
            ));
        }
        Ok(WindowSpec {
            size,
            slide,
            session: false,
        })
    }

    /// The start of the latest window holding `t`.
    pub fn last_start(&self, t: i64) -> i64 {
        t.div_euclid(self.slide) * self.slide
    }

    /// The end of the latest window holding `t`, were `t` its last tick.
    pub fn latest_end(&self, t: i64) -> i64 {
        match self.session {
            true => t + self.size,
            false => self.last_start(t) + self.size,
        }
    }
}

/// One side of a crossing rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Price,
    Indicator(String),
    Level(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// Fires when `left - right` changes sign between two ticks.
    Crosses(Operand, Operand),
    /// Fires when a closed window's open-to-close change is at least this many percent.
    Move(f64),
}

/// An alert rule; `text` (normalised) is the `rule` field of the alerts it fires.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub text: String,
    pub kind: RuleKind,
    /// Only these symbols (all if empty).
    pub symbols: Vec<String>,
}

impl Rule {
    pub fn applies_to(&self, symbol: &str) -> bool {
        self.symbols.is_empty() || self.symbols.iter().any(|s| s == symbol)
    }

    /// The indicators this rule reads.
    pub fn indicators(&self) -> Vec<&str> {
        match &self.kind {
            RuleKind::Crosses(a, b) => [a, b]
                .into_iter()
                .filter_map(|o| match o {
                    Operand::Indicator(n) => Some(n.as_str()),
                    _ => None,
                })
                .collect(),
            RuleKind::Move(_) => Vec::new(),
        }
    }
}

impl std::str::FromStr for Rule {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::config(format!(
                "alert rule {text:?}: {why}; write \"price crosses 15000\", \
                 \"sma_5 crosses sma_20\" or \"move 2%\", optionally followed by \"for NYA,IXIC\""
            ))
        };
        let (body, symbols) = match text.split_once(" for ") {
            Some((body, list)) => (
                body,
                list.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
            ),
            None => (text, Vec::new()),
        };
        let words: Vec<&str> = body.split_whitespace().collect();
        let kind = match words.as_slice() {
            [left, "crosses", right] => {
                let left = operand(left).map_err(|e| bad(&e))?;
                let right = operand(right).map_err(|e| bad(&e))?;
                if matches!(left, Operand::Level(_)) {
                    return Err(bad("the left side must be price or an indicator"));
                }
                RuleKind::Crosses(left, right)
            }
            ["move", pct] | ["move", ">", pct] | ["move", ">=", pct] => {
                let pct: f64 = pct
                    .trim_end_matches('%')
                    .parse()
                    .map_err(|_| bad("the move must be a percentage"))?;
                if !(pct > 0.0 && pct.is_finite()) {
                    return Err(bad("the move must be a positive percentage"));
                }
                RuleKind::Move(pct)
            }
            _ => return Err(bad("not understood")),
        };
        let mut normal = words.join(" ");
        if !symbols.is_empty() {
            normal = format!("{normal} for {}", symbols.join(","));
        }
        Ok(Rule {
            text: normal,
            kind,
            symbols,
        })
    }
}

fn operand(word: &str) -> std::result::Result<Operand, String> {
    if word.eq_ignore_ascii_case("price") {
        return Ok(Operand::Price);
    }
    if let Ok(level) = word.parse::<f64>() {
        return Ok(Operand::Level(level));
    }
    match str::parse::<Indicator>(word) {
        Ok(i) => Ok(Operand::Indicator(i.name)),
        // Perhaps a joined field: the job's spec knows.
        Err(_) if word.chars().all(|c| c.is_alphanumeric() || c == '_') => {
            Ok(Operand::Indicator(word.to_string()))
        }
        Err(_) => Err(format!(
            "{word:?} is neither price, a number, an indicator nor a field name"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m").unwrap(), 60_000_000);
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000_000);
        assert_eq!(parse_duration("250ms").unwrap(), 250_000);
        assert_eq!(parse_duration("0s").unwrap(), 0);
        assert!(WindowSpec::new(0, None).is_err());
        for bad in ["", "1", "m", "1y", "-1s", "1.5m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn indicators() {
        assert_eq!(
            str::parse::<Indicator>("SMA_20").unwrap().kind,
            IndicatorKind::Sma(Span::Ticks(20))
        );
        assert_eq!(
            str::parse::<Indicator>("ema_5m").unwrap().kind,
            IndicatorKind::Ema(Span::Micros(300_000_000))
        );
        assert_eq!(
            str::parse::<Indicator>("volatility_20").unwrap().kind,
            IndicatorKind::Volatility(20)
        );
        assert_eq!(
            str::parse::<Indicator>("macd_hist").unwrap().kind,
            IndicatorKind::Macd {
                fast: 12,
                slow: 26,
                signal: 9,
                part: MacdPart::Histogram
            }
        );
        assert_eq!(
            str::parse::<Indicator>("bb_upper_20_2.5").unwrap().kind,
            IndicatorKind::Bollinger {
                n: 20,
                k_cents: 250,
                part: BandPart::Upper
            }
        );
        assert_eq!(
            str::parse::<Indicator>("vwap").unwrap().kind,
            IndicatorKind::SessionVwap
        );
        assert_eq!(
            str::parse::<Indicator>("rsi_14").unwrap().kind,
            IndicatorKind::Rsi(14)
        );
        for bad in [
            "sma",
            "sma_0",
            "ema_0s",
            "wma_3",
            "volatility_1m",
            "volatility_1",
            "rsi_0",
            "rsi_5m",
            "macd_26_12_9",
            "macd_12_26",
            "bb_upper",
            "bb_upper_20_0",
            "bb_upper_1",
            "vwap_5",
        ] {
            assert!(str::parse::<Indicator>(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rules() {
        let r = str::parse::<Rule>("price  crosses 15000 for NYA, IXIC").unwrap();
        assert_eq!(r.text, "price crosses 15000 for NYA,IXIC");
        assert_eq!(
            r.kind,
            RuleKind::Crosses(Operand::Price, Operand::Level(15000.0))
        );
        assert!(r.applies_to("IXIC") && !r.applies_to("HSI"));
        let r = str::parse::<Rule>("sma_5 crosses ema_20").unwrap();
        assert_eq!(r.indicators(), ["sma_5", "ema_20"]);
        for (text, kind) in [
            ("move > 2%", RuleKind::Move(2.0)),
            ("move 0.5%", RuleKind::Move(0.5)),
        ] {
            assert_eq!(str::parse::<Rule>(text).unwrap().kind, kind, "{text:?}");
        }
        for bad in [
            "price above 3",
            "15000 crosses price",
            "move -2%",
            "sma-x crosses 3",
        ] {
            assert!(str::parse::<Rule>(bad).is_err(), "{bad:?}");
        }
        // A name that is no indicator may be a joined field: the job's spec decides.
        let r = str::parse::<Rule>("rate crosses 7").unwrap();
        assert_eq!(r.indicators(), ["rate"]);
    }
}
