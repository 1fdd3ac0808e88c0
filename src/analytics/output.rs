//! What an analytics job emits: closed window bars, per-tick indicator values, alerts and
//! late ticks. Each becomes one JSON record keyed by its symbol, with ISO 8601 times.

use polars::prelude::{AnyValue, Column, DataFrame, DataType, PolarsResult, Series, TimeUnit};

use crate::error::{Error, Result};
use crate::source::json::write_str;

/// One closed window of one symbol.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub symbol: String,
    pub start: i64,
    pub end: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    /// Volume-weighted average price; `None` when the window traded no volume.
    pub vwap: Option<f64>,
    pub count: u64,
    /// Open to close, in percent.
    pub change_pct: f64,
}

/// A tick with the running indicators after it, in the job's indicator order.
#[derive(Debug, Clone, PartialEq)]
pub struct Indicators {
    pub symbol: String,
    pub time: i64,
    pub price: f64,
    /// `None` until an indicator has seen enough ticks.
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub symbol: String,
    /// The rule as written (normalised).
    pub rule: String,
    /// The event time of the tick (or the end of the window) that fired it.
    pub time: i64,
    /// The crossing series' value, or the window's change in percent.
    pub value: f64,
    /// `above` / `below` for crossings, `up` / `down` for moves.
    pub direction: &'static str,
}

/// A tick whose event time was behind the watermark when it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Late {
    pub symbol: String,
    pub time: i64,
    pub price: f64,
    pub volume: f64,
    pub partition: i32,
    pub offset: i64,
    pub watermark: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Window(Bar),
    Indicators(Indicators),
    Alert(Alert),
    Late(Late),
}

/// The kinds of output, for routing and for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Window,
    Indicators,
    Alert,
    Late,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Window, Kind::Indicators, Kind::Alert, Kind::Late];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Window => "window",
            Kind::Indicators => "indicators",
            Kind::Alert => "alert",
            Kind::Late => "late",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A kind by name, singular or plural (`"alert"`, `"windows"`).
impl std::str::FromStr for Kind {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let name = text.trim().to_ascii_lowercase();
        let name = name.trim_end_matches('s');
        Kind::ALL
            .into_iter()
            .find(|k| k.name().trim_end_matches('s') == name)
            .ok_or_else(|| {
                Error::config(format!(
                    "callback kind {text:?}: use \"window\", \"indicators\", \"alert\" or \"late\""
                ))
            })
    }
}

/// An event time (microseconds since the epoch, UTC) as `2021-03-01T09:30:00[.ffffff]`.
pub fn iso(micros: i64) -> String {
    let mut out = String::with_capacity(26);
    write_iso(&mut out, micros);
    out
}

/// Appends [`iso`]`(micros)` to `out`.
fn write_iso(out: &mut impl std::fmt::Write, micros: i64) {
    use chrono::{Datelike, Timelike};
    let Some(t) = chrono::DateTime::from_timestamp_micros(micros) else {
        let _ = write!(out, "{micros}");
        return;
    };
    // By hand: chrono's `format` parses its pattern on every call, once per output.
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let fraction = micros.rem_euclid(1_000_000);
    if fraction != 0 {
        let _ = write!(out, ".{fraction:06}");
    }
}

/// Lets [`write_iso`] append to a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A field value of an output record, as Python and Polars see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(&'a str),
    Time(i64),
    Float(Option<f64>),
    Int(i64),
}

impl Value<'_> {
    /// The Polars type of a column of values like this one.
    fn dtype(&self) -> DataType {
        match self {
            Value::Str(_) => DataType::String,
            Value::Time(_) => DataType::Datetime(TimeUnit::Microseconds, None),
            Value::Float(_) => DataType::Float64,
            Value::Int(_) => DataType::Int64,
        }
    }

    fn cell(&self) -> AnyValue<'_> {
        match *self {
            Value::Str(s) => AnyValue::String(s),
            Value::Time(t) => AnyValue::Datetime(t, TimeUnit::Microseconds, None),
            Value::Float(f) => f.map_or(AnyValue::Null, AnyValue::Float64),
            Value::Int(i) => AnyValue::Int64(i),
        }
    }
}

impl Output {
    pub fn kind(&self) -> Kind {
        match self {
            Output::Window(_) => Kind::Window,
            Output::Indicators(_) => Kind::Indicators,
            Output::Alert(_) => Kind::Alert,
            Output::Late(_) => Kind::Late,
        }
    }

    pub fn symbol(&self) -> &str {
        match self {
            Output::Window(b) => &b.symbol,
            Output::Indicators(i) => &i.symbol,
            Output::Alert(a) => &a.symbol,
            Output::Late(l) => &l.symbol,
        }
    }

    /// The record's fields in order; `indicator_names` name the indicator values.
    pub fn fields<'a>(&'a self, indicator_names: &'a [String]) -> Vec<(&'a str, Value<'a>)> {
        use Value::*;
        match self {
            Output::Window(b) => vec![
                ("symbol", Str(&b.symbol)),
                ("window_start", Time(b.start)),
                ("window_end", Time(b.end)),
                ("open", Float(Some(b.open))),
                ("high", Float(Some(b.high))),
                ("low", Float(Some(b.low))),
                ("close", Float(Some(b.close))),
                ("volume", Float(Some(b.volume))),
                ("vwap", Float(b.vwap)),
                ("count", Int(b.count as i64)),
                ("change_pct", Float(Some(b.change_pct))),
            ],
            Output::Indicators(i) => {
                let mut fields = vec![
                    ("symbol", Str(&i.symbol)),
                    ("time", Time(i.time)),
                    ("price", Float(Some(i.price))),
                ];
                fields.extend(
                    indicator_names
                        .iter()
                        .zip(&i.values)
                        .map(|(n, v)| (n.as_str(), Float(*v))),
                );
                fields
            }
            Output::Alert(a) => vec![
                ("symbol", Str(&a.symbol)),
                ("rule", Str(&a.rule)),
                ("time", Time(a.time)),
                ("value", Float(Some(a.value))),
                ("direction", Str(a.direction)),
            ],
            Output::Late(l) => vec![
                ("symbol", Str(&l.symbol)),
                ("time", Time(l.time)),
                ("price", Float(Some(l.price))),
                ("volume", Float(Some(l.volume))),
                ("partition", Int(l.partition as i64)),
                ("offset", Int(l.offset)),
                ("watermark", Time(l.watermark)),
            ],
        }
    }

    /// The record as one JSON object (non-finite numbers become null, as JSON has none).
    /// Appends this output as one JSON object to `out`; non-finite numbers are null.
    pub fn write_json(&self, indicator_names: &[String], out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (name, value)) in self.fields(indicator_names).iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, name);
            out.push(b':');
            match value {
                Value::Str(s) => write_str(out, s),
                Value::Time(t) => {
                    out.push(b'"');
                    write_iso(&mut Bytes(out), *t);
                    out.push(b'"');
                }
                Value::Float(Some(v)) if v.is_finite() => {
                    out.extend_from_slice(ryu::Buffer::new().format_finite(*v).as_bytes())
                }
                Value::Float(_) => out.extend_from_slice(b"null"),
                Value::Int(v) => out.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
            }
        }
        out.push(b'}');
    }
}

impl Kind {
    /// An output of this kind with every field present, to read its field list from.
    fn example(self, indicators: usize) -> Output {
        let (symbol, time, x) = (String::new(), 0, 0.0);
        match self {
            Kind::Window => Output::Window(Bar {
                symbol,
                start: time,
                end: time,
                open: x,
                high: x,
                low: x,
                close: x,
                volume: x,
                vwap: None,
                count: 0,
                change_pct: x,
            }),
            Kind::Indicators => Output::Indicators(Indicators {
                symbol,
                time,
                price: x,
                values: vec![None; indicators],
            }),
            Kind::Alert => Output::Alert(Alert {
                symbol,
                rule: String::new(),
                time,
                value: x,
                direction: "",
            }),
            Kind::Late => Output::Late(Late {
                symbol,
                time,
                price: x,
                volume: x,
                partition: 0,
                offset: 0,
                watermark: time,
            }),
        }
    }
}

/// Outputs of one kind as a frame: one column per field, times as UTC datetimes.
pub fn frame(
    kind: Kind,
    outputs: &[Output],
    indicator_names: &[String],
) -> PolarsResult<DataFrame> {
    let example = kind.example(indicator_names.len());
    let rows: Vec<Vec<(&str, Value)>> = outputs
        .iter()
        .filter(|o| o.kind() == kind)
        .map(|o| o.fields(indicator_names))
        .collect();
    let columns = example
        .fields(indicator_names)
        .into_iter()
        .enumerate()
        .map(|(j, (name, shape))| {
            let cells: Vec<AnyValue> = rows.iter().map(|r| r[j].1.cell()).collect();
            Series::from_any_values_and_dtype(name.into(), &cells, &shape.dtype(), true)
                .map(Column::from)
        })
        .collect::<PolarsResult<Vec<_>>>()?;
    DataFrame::new_infer_height(columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_singular_or_plural() {
        assert_eq!(" Alerts".parse::<Kind>().unwrap(), Kind::Alert);
        assert_eq!("window".parse::<Kind>().unwrap(), Kind::Window);
        assert_eq!("indicators".parse::<Kind>().unwrap(), Kind::Indicators);
        assert!(matches!("bars".parse::<Kind>(), Err(e) if e.is(crate::error::Kind::Config)));
    }

    #[test]
    fn json_records() {
        let out = Output::Indicators(Indicators {
            symbol: "NYA".into(),
            time: 90_000_000,
            price: 1.5,
            values: vec![None, Some(2.0)],
        });
        let mut json = Vec::new();
        out.write_json(&["sma_2".into(), "ema_2".into()], &mut json);
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"symbol":"NYA","time":"1970-01-01T00:01:30","price":1.5,"sma_2":null,"ema_2":2.0}"#
        );
        assert_eq!(iso(1_500), "1970-01-01T00:00:00.001500");
        let names = ["sma_2".to_string(), "ema_2".to_string()];
        let df = frame(Kind::Indicators, &[out], &names).unwrap();
        assert_eq!(df.shape(), (1, 5));
        assert_eq!(
            df.column("time").unwrap().dtype(),
            &DataType::Datetime(TimeUnit::Microseconds, None)
        );
        let cell = |name: &str| df.column(name).unwrap().get(0).unwrap().into_static();
        assert_eq!(cell("symbol"), AnyValue::StringOwned("NYA".into()));
        assert_eq!(cell("price"), AnyValue::Float64(1.5));
        assert_eq!(cell("sma_2"), AnyValue::Null);
        assert_eq!(cell("ema_2"), AnyValue::Float64(2.0));
        assert_eq!(frame(Kind::Alert, &[], &names).unwrap().shape(), (0, 5));
    }
}
