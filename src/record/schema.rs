//! What a tick looks like, once for every stage: which field is the symbol (the Kafka key),
//! the event time, the price and the volume, which must be numbers, and how the time is
//! written. The producer reads a file's columns by it, the sink a message's fields, and
//! analytics its ticks.

use super::time::TimeFormat;
use crate::error::Result;

/// A tick's fields; the default is the tutorial's (`Index`, `Date`, `Close`, `Volume`).
#[derive(Debug, Clone, PartialEq)]
pub struct TickSchema {
    pub symbol: String,
    pub time: String,
    pub price: String,
    /// `None`: ticks carry no volume.
    pub volume: Option<String>,
    /// The fields that must be numbers; `None`: the price and the volume.
    pub numeric: Option<Vec<String>>,
    pub time_format: TimeFormat,
}

impl Default for TickSchema {
    fn default() -> Self {
        TickSchema {
            symbol: "Index".into(),
            time: "Date".into(),
            price: "Close".into(),
            volume: Some("Volume".into()),
            numeric: None,
            time_format: TimeFormat::default(),
        }
    }
}

impl TickSchema {
    /// A schema of these fields (symbol, time, price), times in the common shapes, UTC;
    /// an empty field name is an error, an empty volume name means no volume.
    pub fn named([symbol, time, price]: [&str; 3], volume: Option<&str>) -> Result<Self> {
        crate::error::non_empty(&[
            ("TickSchema: symbol", symbol),
            ("TickSchema: time", time),
            ("TickSchema: price", price),
        ])?;
        Ok(TickSchema {
            symbol: symbol.to_string(),
            time: time.to_string(),
            price: price.to_string(),
            volume: volume.filter(|v| !v.is_empty()).map(str::to_string),
            ..TickSchema::default()
        })
    }

    /// Times written as `format` (strftime), in `zone` when they carry no offset.
    pub fn timed(mut self, format: Option<&str>, zone: Option<&str>) -> Result<Self> {
        self.time_format = TimeFormat::new(format, zone)?;
        Ok(self)
    }

    /// The fields that must be numbers: those named, or the price and the volume.
    pub fn numbers(&self) -> Vec<String> {
        self.numeric.clone().unwrap_or_else(|| {
            std::iter::once(self.price.clone())
                .chain(self.volume.clone())
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_the_numbers_default_to_price_and_volume() {
        assert!(TickSchema::named([" ", "t", "p"], None).is_err());
        let s = TickSchema::named(["s", "t", "p"], Some("")).unwrap();
        assert!(s.clone().timed(None, Some("Nowhere/X")).is_err());
        assert!(s
            .clone()
            .timed(Some("%d.%m.%Y"), Some("Europe/Berlin"))
            .is_ok());
        assert_eq!((s.volume.as_deref(), s.numbers()), (None, vec!["p".into()]));
        assert_eq!(TickSchema::default().numbers(), ["Close", "Volume"]);
        let named = TickSchema {
            numeric: Some(vec![]),
            ..TickSchema::default()
        };
        assert!(named.numbers().is_empty(), "none asked for");
    }
}
