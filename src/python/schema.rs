//! Python face of the tick schema: one object naming a tick's fields and how its time is
//! written, taken by sources, the producer, the sink and analytics alike.

use pyo3::prelude::*;

use crate::analytics::TickFields;
use crate::error::Error;
use crate::record::time::TimeFormat;
use crate::source::TickSchema;

/// What a tick looks like: which field is the symbol (the Kafka key), the event time, the
/// price and the volume, and how the time is written.
///
/// The same object describes a CSV's or a frame's columns to the producer, and a message's
/// fields to ``LakeSink`` and ``Analytics``. The defaults are the tutorial's columns.
///
/// Args:
///     symbol, time, price: field names (``Index``, ``Date``, ``Close``).
///     volume: the volume field (``Volume``), or None if ticks carry none (VWAP is then
///         empty).
///     numeric: the columns a source must find numeric (checked up front); by default the
///         price and the volume.
///     time_format: the time as strftime (``"%d.%m.%Y %H:%M"``); by default ISO dates and
///         times, ``MM/DD/YYYY``, ``DD.MM.YYYY``, ``YYYYMMDD``, month names
///         (``Jan 4 2021``) and integer epochs (s, ms, µs or ns, by magnitude) are
///         recognised.
///     time_zone: the IANA zone of times written without an offset (UTC by default).
///
/// Raises:
///     ConfigError: an empty field name, or a bad format or zone.
#[pyclass(
    name = "TickSchema",
    module = "stockstream._core",
    frozen,
    eq,
    skip_from_py_object
)]
#[derive(Clone, PartialEq)]
pub struct PyTickSchema {
    #[pyo3(get)]
    symbol: String,
    #[pyo3(get)]
    time: String,
    #[pyo3(get)]
    price: String,
    #[pyo3(get)]
    volume: Option<String>,
    #[pyo3(get)]
    numeric: Option<Vec<String>>,
    #[pyo3(get)]
    time_format: Option<String>,
    #[pyo3(get)]
    time_zone: Option<String>,
    parsed: TimeFormat,
}

#[pymethods]
impl PyTickSchema {
    #[new]
    #[pyo3(signature = (symbol="Index", time="Date", price="Close", volume=Some("Volume"), *,
                        numeric=None, time_format=None, time_zone=None))]
    fn new(
        symbol: &str,
        time: &str,
        price: &str,
        volume: Option<&str>,
        numeric: Option<Vec<String>>,
        time_format: Option<String>,
        time_zone: Option<String>,
    ) -> PyResult<Self> {
        for (name, value) in [("symbol", symbol), ("time", time), ("price", price)] {
            if value.trim().is_empty() {
                return Err(Error::config(format!("TickSchema: {name} is empty")).into());
            }
        }
        let parsed = TimeFormat::new(time_format.as_deref(), time_zone.as_deref())?;
        Ok(PyTickSchema {
            symbol: symbol.to_string(),
            time: time.to_string(),
            price: price.to_string(),
            volume: volume.filter(|v| !v.is_empty()).map(str::to_string),
            numeric,
            time_format,
            time_zone,
            parsed,
        })
    }

    fn __repr__(&self) -> String {
        let mut parts = vec![
            format!("symbol={:?}", self.symbol),
            format!("time={:?}", self.time),
            format!("price={:?}", self.price),
            match &self.volume {
                Some(v) => format!("volume={v:?}"),
                None => "volume=None".into(),
            },
        ];
        if let Some(n) = &self.numeric {
            parts.push(format!("numeric={n:?}"));
        }
        if let Some(f) = &self.time_format {
            parts.push(format!("time_format={f:?}"));
        }
        if let Some(z) = &self.time_zone {
            parts.push(format!("time_zone={z:?}"));
        }
        format!("TickSchema({})", parts.join(", "))
    }
}

impl PyTickSchema {
    /// The columns a source checks.
    pub fn source(&self) -> TickSchema {
        let mut schema = TickSchema::custom(&self.symbol, &self.time, &self.numbers());
        schema.time_format = self.parsed.clone();
        schema
    }

    /// The fields analytics reads.
    pub fn fields(&self) -> TickFields {
        TickFields {
            symbol: self.symbol.clone(),
            time: self.time.clone(),
            price: self.price.clone(),
            volume: self.volume.clone(),
            time_format: self.parsed.clone(),
            ..TickFields::default()
        }
    }

    /// The sink's symbol field, time field and time format.
    pub fn sink_fields(&self) -> (String, String, TimeFormat) {
        (self.symbol.clone(), self.time.clone(), self.parsed.clone())
    }

    /// The numeric fields: `numeric`, or the price and the volume.
    pub fn numbers(&self) -> Vec<String> {
        self.numeric.clone().unwrap_or_else(|| {
            std::iter::once(self.price.clone())
                .chain(self.volume.clone())
                .collect()
        })
    }
}
