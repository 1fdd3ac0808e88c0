//! Which columns a tick file must have and how they are typed.

/// The columns of the Kaggle "Stock Exchange Data" `indexProcessed.csv`, used by the tutorial.
pub const TUTORIAL_COLUMNS: [&str; 9] = [
    "Index",
    "Date",
    "Open",
    "High",
    "Low",
    "Close",
    "Adj Close",
    "Volume",
    "CloseUSD",
];

use crate::record::time::TimeFormat;
use crate::record::TickSchema;

/// Names the symbol column (the Kafka key), the event-time column and how it is written,
/// and the columns that must hold numbers. Any other column is carried through with the
/// type Polars infers.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    pub symbol: String,
    pub time: String,
    pub numeric: Vec<String>,
    pub time_format: TimeFormat,
}

impl Columns {
    /// The tutorial's schema: `Index` is the symbol, `Date` the event time, the rest numbers.
    pub fn tutorial() -> Self {
        Columns {
            symbol: TUTORIAL_COLUMNS[0].to_string(),
            time: TUTORIAL_COLUMNS[1].to_string(),
            numeric: TUTORIAL_COLUMNS[2..]
                .iter()
                .map(|c| c.to_string())
                .collect(),
            time_format: TimeFormat::default(),
        }
    }

    /// Any CSV: a symbol column, a date/time column, and optionally columns that must be numeric.
    pub fn custom(symbol: &str, time: &str, numeric: &[String]) -> Self {
        Columns {
            symbol: symbol.to_string(),
            time: time.to_string(),
            numeric: numeric.to_vec(),
            time_format: TimeFormat::default(),
        }
    }

    /// The columns a [`TickSchema`] names: its symbol and time, and its numbers.
    pub fn of(schema: &TickSchema) -> Self {
        Columns {
            symbol: schema.symbol.clone(),
            time: schema.time.clone(),
            numeric: schema.numbers(),
            time_format: schema.time_format.clone(),
        }
    }

    /// Every column the file must contain, in the order they are checked.
    pub fn required(&self) -> impl Iterator<Item = &str> {
        [self.symbol.as_str(), self.time.as_str()]
            .into_iter()
            .chain(self.numeric.iter().map(String::as_str))
    }
}
