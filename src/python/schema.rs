//! Python face of the tick schema: one object naming a tick's fields and how its time is
//! written, taken by sources, the producer, the sink and analytics alike.

use pyo3::prelude::*;

use crate::record::TickSchema;

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
    pub schema: TickSchema,
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
        time_format: Option<&str>,
        time_zone: Option<&str>,
    ) -> PyResult<Self> {
        let schema = TickSchema {
            numeric,
            ..TickSchema::named([symbol, time, price], volume)?
        };
        Ok(PyTickSchema {
            schema: schema.timed(time_format, time_zone)?,
        })
    }

    #[getter]
    fn symbol(&self) -> &str {
        &self.schema.symbol
    }

    #[getter]
    fn time(&self) -> &str {
        &self.schema.time
    }

    #[getter]
    fn price(&self) -> &str {
        &self.schema.price
    }

    #[getter]
    fn volume(&self) -> Option<&str> {
        self.schema.volume.as_deref()
    }

    #[getter]
    fn numeric(&self) -> Option<Vec<String>> {
        self.schema.numeric.clone()
    }

    #[getter]
    fn time_format(&self) -> Option<&str> {
        self.schema.time_format.format()
    }

    #[getter]
    fn time_zone(&self) -> Option<String> {
        self.schema.time_format.zone().map(|z| z.name().to_string())
    }

    fn __repr__(&self) -> String {
        let s = &self.schema;
        let mut parts = vec![
            format!("symbol={:?}", s.symbol),
            format!("time={:?}", s.time),
            format!("price={:?}", s.price),
            match &s.volume {
                Some(v) => format!("volume={v:?}"),
                None => "volume=None".into(),
            },
        ];
        if let Some(n) = &s.numeric {
            parts.push(format!("numeric={n:?}"));
        }
        if let Some(f) = self.time_format() {
            parts.push(format!("time_format={f:?}"));
        }
        if let Some(z) = self.time_zone() {
            parts.push(format!("time_zone={z:?}"));
        }
        format!("TickSchema({})", parts.join(", "))
    }
}
