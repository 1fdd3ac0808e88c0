//! Python face of tick sources and tick tables.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3_polars::PyDataFrame;

use polars::prelude::{DataFrame, ParquetReader, SerReader};

use super::schema::PyTickSchema;
use crate::error::{Error, Result};
use crate::record::time;
use crate::source::{
    Columns, Mode, Synthetic, SyntheticConfig, TableSource, TickSource, TickTable,
};

/// A `schema=` argument: a `TickSchema`, or None for the tutorial's columns.
type Schema<'py> = Option<PyRef<'py, PyTickSchema>>;

/// The schema of a source: `schema=`, or the tutorial's.
pub fn source_schema(schema: Option<&PyTickSchema>) -> Columns {
    schema.map_or_else(Columns::tutorial, |s| Columns::of(&s.schema))
}

/// A Polars frame of whatever frame the caller has: Polars (eager or lazy), pandas, a
/// pyarrow table, or anything with the Arrow C stream interface. Columns move as Arrow
/// buffers; no Python object is made per row.
pub fn polars_frame(frame: &Bound<'_, PyAny>) -> PyResult<DataFrame> {
    let py = frame.py();
    let pl = py.import("polars")?;
    let module: String = frame
        .get_type()
        .getattr("__module__")
        .and_then(|m| m.extract())
        .unwrap_or_default();
    let converted = if frame.is_instance(&pl.getattr("DataFrame")?)? {
        frame.clone()
    } else if frame.is_instance(&pl.getattr("LazyFrame")?)? {
        frame.call_method0("collect")?
    } else if module.starts_with("pandas") {
        pl.call_method1("from_pandas", (frame,))?
    } else if module.starts_with("pyarrow") {
        pl.call_method1("from_arrow", (frame,))?
    } else if frame.hasattr("__arrow_c_stream__")? {
        pl.call_method1("DataFrame", (frame,))?
    } else {
        return Err(Error::config(format!(
            "frame: expected a Polars DataFrame or LazyFrame, a pandas DataFrame or a pyarrow \
             Table, got {}",
            frame.get_type().name()?
        ))
        .into());
    };
    let PyDataFrame(df) = converted.extract()?;
    Ok(df)
}

fn synthetic_config(
    symbols: usize,
    seed: u64,
    start: &str,
    interval: f64,
) -> PyResult<SyntheticConfig> {
    let start_us = time::parse_micros(start)
        .ok_or_else(|| Error::config(format!("start: cannot parse {start:?} as a date or time")))?;
    if !(interval.is_finite() && interval > 0.0) {
        return Err(Error::config(format!(
            "interval must be a positive number of seconds, got {interval}"
        ))
        .into());
    }
    Ok(SyntheticConfig {
        symbols,
        seed,
        start_us,
        interval_us: (interval * 1e6).round() as i64,
    })
}

/// A stream of stock ticks to produce: rows of a CSV file (sampled or replayed) or synthetic bars.
///
/// Build one with ``TickSource.csv(...)``, ``.frame(...)``, ``.parquet(...)`` or
/// ``.synthetic(...)`` and pass it to
/// ``Producer.send``. A source remembers its position: sending from it again continues
/// where the previous send stopped.
#[pyclass(name = "TickSource", module = "stockstream._core", frozen)]
pub struct PyTickSource {
    pub inner: Mutex<Box<dyn TickSource>>,
    description: String,
}

impl PyTickSource {
    pub fn new(inner: Box<dyn TickSource>, description: String) -> Self {
        PyTickSource {
            inner: Mutex::new(inner),
            description,
        }
    }

    /// Validates a frame as a source (the GIL is released while checking it).
    fn load_frame(py: Python, df: DataFrame, mode: Mode, schema: Columns) -> PyResult<Self> {
        let (rows, columns) = (df.height(), df.width());
        let table = py.detach(|| TickTable::from_user_frame(df, &schema))?;
        Ok(Self::new(
            Box::new(TableSource::new(Arc::new(table), mode)),
            format!("TickSource.frame({rows} rows x {columns} columns, mode={mode:?})"),
        ))
    }
}

/// A whole Parquet file, its missing file named.
fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    ParquetReader::new(file).finish().map_err(|e| {
        Error::schema(format!(
            "{}: not a readable Parquet file: {e}",
            path.display()
        ))
    })
}

#[pymethods]
impl PyTickSource {
    /// Ticks from a CSV file.
    ///
    /// Args:
    ///     path: the CSV file. By default it must have the tutorial's columns
    ///         (``Index, Date, Open, High, Low, Close, Adj Close, Volume, CloseUSD``).
    ///     mode: ``"replay"`` sends every row once in event-time order; ``"sample"`` draws
    ///         random rows with replacement forever, like the tutorial's ``df.sample(1)`` loop.
    ///     seed: random seed for ``"sample"``.
    ///     schema: a ``TickSchema`` for other layouts: the symbol (Kafka key) and time
    ///         columns, the columns that must be numeric (checked up front) and how the
    ///         time is written. By default the tutorial's columns.
    ///
    /// Raises:
    ///     NotFoundError: the file does not exist.
    ///     SchemaError: a column is missing or a value does not parse (the message names the line).
    #[staticmethod]
    #[pyo3(signature = (path, mode="replay", *, seed=0, schema=None))]
    fn csv(py: Python, path: PathBuf, mode: &str, seed: u64, schema: Schema) -> PyResult<Self> {
        let (columns, mode) = (source_schema(schema.as_deref()), Mode::parse(mode, seed)?);
        // The GIL is released while the file is loaded and checked.
        let source = py.detach(|| TableSource::from_csv(&path, &columns, mode))?;
        let shown = path.display().to_string();
        let description = format!("TickSource.csv({shown:?}, mode={mode:?})");
        Ok(Self::new(Box::new(source), description))
    }

    /// Ticks from a frame already in memory: a Polars ``DataFrame`` or ``LazyFrame``, a
    /// pandas ``DataFrame`` or a pyarrow ``Table``.
    ///
    /// Args:
    ///     frame: the rows; date and date-time columns are used as they are (zone-aware
    ///         ones converted to UTC), text and integer times are read as from a CSV.
    ///     mode, seed, schema: as for ``TickSource.csv``.
    ///
    /// Raises:
    ///     SchemaError: a column is missing or a value does not parse (the message names
    ///         the row, counted from 0, and the column).
    #[staticmethod]
    #[pyo3(signature = (frame, mode="replay", *, seed=0, schema=None))]
    fn frame(
        py: Python<'_>,
        frame: &Bound<'_, PyAny>,
        mode: &str,
        seed: u64,
        schema: Schema,
    ) -> PyResult<Self> {
        let (columns, mode) = (source_schema(schema.as_deref()), Mode::parse(mode, seed)?);
        Self::load_frame(py, polars_frame(frame)?, mode, columns)
    }

    /// Ticks from a Parquet file; the same arguments and errors as ``TickSource.frame``.
    #[staticmethod]
    #[pyo3(signature = (path, mode="replay", *, seed=0, schema=None))]
    fn parquet(py: Python, path: PathBuf, mode: &str, seed: u64, schema: Schema) -> PyResult<Self> {
        let (columns, mode) = (source_schema(schema.as_deref()), Mode::parse(mode, seed)?);
        let df = py.detach(|| read_parquet(&path))?;
        Self::load_frame(py, df, mode, columns)
    }

    /// Endless synthetic OHLCV bars (geometric Brownian motion) in the tutorial's schema.
    ///
    /// Args:
    ///     symbols: how many symbols; the first 14 are the tutorial's world indices.
    ///     seed: the same seed gives the same ticks.
    ///     start: first bar's date or date-time (UTC).
    ///     interval: seconds between bars of one symbol (86400 = daily bars on weekdays).
    #[staticmethod]
    #[pyo3(signature = (symbols=14, *, seed=42, start="2021-01-04", interval=86400.0))]
    fn synthetic(symbols: usize, seed: u64, start: &str, interval: f64) -> PyResult<Self> {
        let generator = Synthetic::new(&synthetic_config(symbols, seed, start, interval)?)?;
        Ok(Self::new(
            Box::new(generator),
            format!("TickSource.synthetic({symbols}, seed={seed}, start={start:?}, interval={interval})"),
        ))
    }

    fn __repr__(&self) -> String {
        self.description.clone()
    }
}

/// Loads a tick CSV into a Polars DataFrame, validated like the producer validates it.
///
/// Args:
///     path: the CSV file (the tutorial's columns unless the column arguments are given).
///     schema: a ``TickSchema`` for other layouts, as for ``TickSource.csv``.
///
/// Returns:
///     polars.DataFrame with the file's columns; the tutorial's price and volume columns are Float64.
///
/// Raises:
///     NotFoundError, SchemaError: as for ``TickSource.csv``.
#[pyfunction]
#[pyo3(signature = (path, *, schema=None))]
pub fn read_ticks(
    py: Python<'_>,
    path: PathBuf,
    schema: Option<PyRef<'_, PyTickSchema>>,
) -> PyResult<PyDataFrame> {
    let schema = source_schema(schema.as_deref());
    let table = py.detach(|| TickTable::from_csv(&path, &schema))?;
    Ok(PyDataFrame(table.frame().clone()))
}

/// Generates ``rows`` synthetic bars as a Polars DataFrame in the tutorial's schema.
///
/// The same arguments always give the same frame, so a dataset can be rebuilt from its seed
/// (``data/README.md`` shows how the bundled file was made).
#[pyfunction]
#[pyo3(signature = (rows, symbols=14, *, seed=42, start="2021-01-04", interval=86400.0))]
pub fn synthetic_ticks(
    py: Python<'_>,
    rows: usize,
    symbols: usize,
    seed: u64,
    start: &str,
    interval: f64,
) -> PyResult<PyDataFrame> {
    let cfg = synthetic_config(symbols, seed, start, interval)?;
    let table = py.detach(|| Synthetic::new(&cfg).and_then(|mut g| g.next_table(rows)))?;
    Ok(PyDataFrame(table.frame().clone()))
}
