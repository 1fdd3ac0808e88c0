//! A tick (one input record of an analytics job), and reading it from one JSON message:
//! which fields hold the symbol, the event time, the price and the volume, and why a
//! message does not make a tick.

use std::cmp::Ordering;

use chrono::TimeZone as _;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::expr::Expr;
use super::join::Join;
use crate::record::time::TimeFormat;
use crate::record::TickSchema;
use crate::record::{Record, Scalar};

/// One decoded input record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tick {
    pub symbol: String,
    /// Event time, microseconds since the epoch (UTC).
    pub time: i64,
    pub price: f64,
    pub volume: f64,
    pub offset: i64,
    /// The tick's high and low, when it carries them (bars); ATR uses them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<(f64, f64)>,
    /// The trading day in the session zone (days since the epoch): session VWAP resets
    /// when it changes.
    #[serde(default)]
    pub session: i32,
    /// The values an as-of join took for it, in the join's field order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joined: Vec<f64>,
}

/// Release order: event time, then arrival.
impl Ord for Tick {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.time, self.offset).cmp(&(other.time, other.offset))
    }
}
impl PartialOrd for Tick {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Tick {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Tick {}

/// The input fields; the defaults are the tutorial's columns.
#[derive(Debug, Clone)]
pub struct TickFields {
    pub symbol: String,
    pub time: String,
    /// A field, or arithmetic over the tick's fields and the joined ones.
    pub price: Expr,
    /// `None`: ticks carry no volume (VWAP is then empty).
    pub volume: Option<String>,
    /// How the time field's text is written.
    pub time_format: TimeFormat,
    /// The fields of a bar's high and low, used when a record carries them.
    pub high: String,
    pub low: String,
    /// Where trading days begin and end (UTC if `None`).
    pub session_zone: Option<Tz>,
}

/// The fields of a tick as a schema names them; a bar's high and low are `High` and `Low`,
/// and trading days begin in UTC.
impl From<&TickSchema> for TickFields {
    fn from(schema: &TickSchema) -> Self {
        TickFields {
            symbol: schema.symbol.clone(),
            time: schema.time.clone(),
            price: Expr::Field(schema.price.clone()),
            volume: schema.volume.clone(),
            time_format: schema.time_format.clone(),
            high: "High".into(),
            low: "Low".into(),
            session_zone: None,
        }
    }
}

/// The tutorial's fields.
impl Default for TickFields {
    fn default() -> Self {
        TickFields::from(&TickSchema::default())
    }
}

impl TickFields {
    /// Decodes one message, joined with `join`'s table if given; the error says which
    /// field is missing or wrong, or why the join found no value.
    pub fn decode(
        &self,
        payload: Option<&[u8]>,
        offset: i64,
        join: Option<&Join>,
    ) -> Result<Tick, String> {
        let record = Record::parse(payload.unwrap_or_default())?;
        let symbol = record.symbol(&self.symbol)?.to_string();
        let time = record.event_time(&self.time, &self.time_format)?.micros;
        let joined = match join {
            Some(join) => join.lookup(record.symbol(&join.spec.by.0)?, time)?.to_vec(),
            None => Vec::new(),
        };
        let price = self.price.eval(&|name| {
            let fields = join.map_or(&[][..], |j| &j.spec.fields[..]);
            match fields.iter().position(|f| f == name) {
                Some(i) => joined
                    .get(i)
                    .copied()
                    .ok_or_else(|| format!("the join gave no {name:?}")),
                None => number(&record, name),
            }
        })?;
        let volume = match &self.volume {
            Some(field) => number(&record, field)?,
            None => 0.0,
        };
        let range = match (number(&record, &self.high), number(&record, &self.low)) {
            (Ok(high), Ok(low)) => Some((high, low)),
            _ => None,
        };
        Ok(Tick {
            symbol,
            time,
            price,
            volume,
            offset,
            range,
            session: self.session_of(time),
            joined,
        })
    }

    /// The trading day of an event time, as days since the epoch in the session zone.
    fn session_of(&self, micros: i64) -> i32 {
        const DAY: i64 = 86_400_000_000;
        let local = self
            .session_zone
            .map(|zone| zone.timestamp_micros(micros).single())
            .and_then(|t| t.map(|t| t.naive_local().and_utc().timestamp_micros()));
        local.unwrap_or(micros).div_euclid(DAY) as i32
    }
}

fn number(record: &Record, field: &str) -> Result<f64, String> {
    match record.get(field) {
        Some(Scalar::Float(v)) if v.is_finite() => Ok(*v),
        Some(Scalar::Int(v)) => Ok(*v as f64),
        other => Err(wrong(field, other, "a number")),
    }
}

fn wrong(field: &str, found: Option<&Scalar>, expected: &str) -> String {
    match found {
        None => format!("missing field {field:?}"),
        Some(v) => format!("{field:?} is {}, not {expected}", v.describe()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_tutorial_record() {
        let f = TickFields::default();
        let t = f
            .decode(
                Some(br#"{"Index":"NYA","Date":"1970-01-02","Close":1.5,"Volume":3}"#),
                7,
                None,
            )
            .unwrap();
        assert_eq!(
            (t.symbol.as_str(), t.time, t.price, t.volume, t.offset),
            ("NYA", 86_400_000_000, 1.5, 3.0, 7)
        );
    }

    #[test]
    fn says_what_is_wrong() {
        let f = TickFields::default();
        let cases: [(&[u8], &str); 5] = [
            (b"nope", "not valid JSON"),
            (
                br#"{"Date":"2021-01-01","Close":1,"Volume":1}"#,
                "missing field \"Index\"",
            ),
            (
                br#"{"Index":"A","Date":"soon","Close":1,"Volume":1}"#,
                "cannot parse \"soon\"",
            ),
            (
                br#"{"Index":"A","Date":"2021-01-01","Close":"x","Volume":1}"#,
                "\"Close\" is a string",
            ),
            (
                br#"{"Index":"A","Date":"2021-01-01","Close":1}"#,
                "missing field \"Volume\"",
            ),
        ];
        for (input, expected) in cases {
            let err = f.decode(Some(input), 0, None).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }
}
