//! A validated table of ticks: a Polars frame plus, per row, its symbol and event time.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use polars::prelude::*;

use super::columns::Columns;
use super::json::RowEncoder;
use crate::error::{Error, Result};

type StrArray = <StringType as PolarsDataType>::Array;

/// Rows ready to be produced: each has a symbol (the Kafka key), an event time and a JSON value.
pub struct TickTable {
    df: DataFrame,
    symbols: StrArray,
    times_us: Vec<i64>,
    encoder: RowEncoder,
}

impl TickTable {
    /// Loads and validates a CSV file. Errors name the file, the line and the column.
    pub fn from_csv(path: &Path, schema: &Columns) -> Result<Self> {
        let header = read_header(path)?;
        for column in schema.required() {
            if !header.iter().any(|h| h == column) {
                return Err(Error::schema(format!(
                    "{}: missing column {column:?} (the header has {header:?})",
                    path.display()
                )));
            }
        }
        let typed = Schema::from_iter(
            [
                (&schema.symbol, DataType::String),
                (&schema.time, DataType::String),
            ]
            .into_iter()
            .chain(schema.numeric.iter().map(|c| (c, DataType::Float64)))
            .map(|(name, dtype)| Field::new(name.as_str().into(), dtype)),
        );
        let df = read_csv(path, Some(typed), None).map_err(|err| {
            locate_bad_number(path, schema).unwrap_or_else(|| polars_error(path, err))
        })?;
        if df.height() == 0 {
            return Err(Error::schema(format!(
                "{}: no data rows after the header",
                path.display()
            )));
        }
        Self::from_frame(df, schema, &path.display().to_string())
    }

    /// Validates a frame read from a file: its symbol and time columns are text.
    pub fn from_frame(df: DataFrame, schema: &Columns, origin: &str) -> Result<Self> {
        let origin = Path::new(origin);
        Self::validated(df, schema, &|row, column, what| {
            Error::at_row(origin, row + 1, column, what)
        })
    }

    /// Checks the symbols and reads the times of `df`; `at(row, column, why)` is the error
    /// for a bad value (`row` counted from 0).
    fn validated(
        df: DataFrame,
        schema: &Columns,
        at: &dyn Fn(usize, &str, String) -> Error,
    ) -> Result<Self> {
        let text_column = |name: &str| -> Result<StrArray> {
            let col = df
                .column(name)
                .map_err(|_| at(0, name, "missing column".into()))?
                .as_materialized_series()
                .cast(&DataType::String)
                .map_err(|e| at(0, name, e.to_string()))?
                .rechunk();
            Ok(col
                .str()
                .expect("cast to String")
                .downcast_as_array()
                .clone())
        };
        let symbols = text_column(&schema.symbol)?;
        if let Some(row) = symbols.iter().position(|s| s.is_none()) {
            return Err(at(row, &schema.symbol, "the symbol is empty".into()));
        }
        let times = text_column(&schema.time)?;
        let times_us = times
            .iter()
            .enumerate()
            .map(|(row, t)| {
                schema
                    .time_format
                    .parse(t.unwrap_or(""))
                    .map(|(micros, _)| micros)
                    .map_err(|why| at(row, &schema.time, why))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::from_parts(df, symbols, times_us)
    }

    /// Validates a frame handed over by the caller (from Polars, pandas or Arrow). Date and
    /// date-time columns are taken as they are (zone-aware ones converted to UTC); text
    /// and integer times are read as from a file. Errors name the row (0-based, as the
    /// frame counts them) and the column.
    pub fn from_user_frame(mut df: DataFrame, schema: &Columns) -> Result<Self> {
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        for column in schema.required() {
            if !names.iter().any(|n| n == column) {
                return Err(Error::schema(format!(
                    "the frame has no column {column:?} (its columns are {names:?})"
                )));
            }
        }
        if df.height() == 0 {
            return Err(Error::schema("the frame has no rows"));
        }
        let at = |row: usize, column: &str, what: String| {
            Error::schema(format!("frame row {row}, column {column:?}: {what}"))
        };
        for name in &schema.numeric {
            let column = df
                .column(name)
                .expect("checked above")
                .as_materialized_series();
            let numbers = column
                .cast(&DataType::Float64)
                .map_err(|e| at(0, name, e.to_string()))?;
            if let Some(row) = (0..column.len()).find(|&i| {
                numbers.get(i).is_ok_and(|v| v.is_null())
                    && column.get(i).is_ok_and(|v| !v.is_null())
            }) {
                let value = match column.get(row) {
                    Ok(AnyValue::String(text)) => format!("{text:?}"),
                    Ok(other) => other.to_string(),
                    Err(_) => String::new(),
                };
                return Err(at(row, name, format!("cannot read {value} as a number")));
            }
            df.with_column(numbers.with_name(name.as_str().into()).into())
                .map_err(|e| at(0, name, e.to_string()))?;
        }
        let time = df
            .column(&schema.time)
            .expect("checked above")
            .as_materialized_series();
        let text = match time.dtype() {
            DataType::Date => time.cast(&DataType::String),
            DataType::Datetime(_, _) => {
                // Stored as UTC whatever the zone: written as a naive date-time, which is
                // UTC by this project's rule.
                let utc = time
                    .datetime()
                    .expect("a datetime")
                    .cast_time_unit(TimeUnit::Microseconds);
                utc.physical()
                    .clone()
                    .into_datetime(TimeUnit::Microseconds, None)
                    .into_series()
                    .cast(&DataType::String)
            }
            _ => Ok(time.clone()),
        }
        .map_err(|e| at(0, &schema.time, e.to_string()))?;
        df.with_column(text.with_name(schema.time.as_str().into()).into())
            .map_err(|e| at(0, &schema.time, e.to_string()))?;
        Self::validated(df, schema, &|row, column, what| at(row, column, what))
    }

    pub(super) fn from_parts(df: DataFrame, symbols: StrArray, times_us: Vec<i64>) -> Result<Self> {
        let encoder = RowEncoder::new(&df)?;
        Ok(TickTable {
            df,
            symbols,
            times_us,
            encoder,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.times_us.len()
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.times_us.is_empty()
    }

    /// The symbol of a row: the message key.
    pub fn symbol(&self, row: usize) -> &str {
        self.symbols.value(row)
    }

    /// The event time of a row, microseconds since the epoch (UTC).
    pub fn time_us(&self, row: usize) -> i64 {
        self.times_us[row]
    }

    /// Appends the JSON value of a row to `out`.
    pub fn encode(&self, row: usize, out: &mut Vec<u8>) {
        self.encoder.encode(row, out)
    }

    /// A table of these rows, in this order: gathered column by column, so that encoding
    /// them reads memory in order (rows taken at random would miss the cache on every field).
    pub fn gather(&self, rows: &[u32]) -> Result<TickTable> {
        let index = IdxCa::from_vec("".into(), rows.iter().map(|&r| r as IdxSize).collect());
        let failed = |e: PolarsError| Error::schema(format!("cannot gather rows: {e}"));
        let df = self.df.take(&index).map_err(failed)?;
        let symbols = StringChunked::with_chunk("".into(), self.symbols.clone())
            .take(&index)
            .map_err(failed)?
            .rechunk()
            .downcast_as_array()
            .clone();
        let times_us = rows.iter().map(|&r| self.times_us[r as usize]).collect();
        Self::from_parts(df, symbols, times_us)
    }

    /// The rows as loaded.
    pub fn frame(&self) -> &DataFrame {
        &self.df
    }

    /// Row numbers sorted by event time; rows with equal times keep their file order.
    pub fn chronological_order(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.len() as u32).collect();
        order.sort_by_key(|&r| self.times_us[r as usize]);
        order
    }
}

impl std::fmt::Debug for TickTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TickTable({} rows, columns {:?})",
            self.len(),
            self.df.get_column_names()
        )
    }
}

fn read_header(path: &Path) -> Result<Vec<String>> {
    let mut first = String::new();
    BufReader::new(File::open(path).map_err(|e| Error::file(path, e))?)
        .read_line(&mut first)
        .map_err(|e| Error::file(path, e))?;
    if first.trim().is_empty() {
        return Err(Error::schema(format!(
            "{}: the file is empty (expected a header line of column names)",
            path.display()
        )));
    }
    let names = read_csv(path, None, Some(0)).map_err(|e| polars_error(path, e))?;
    Ok(names
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect())
}

fn read_csv(path: &Path, types: Option<Schema>, n_rows: Option<usize>) -> PolarsResult<DataFrame> {
    CsvReadOptions::default()
        .with_has_header(true)
        .with_schema_overwrite(types.map(Arc::new))
        .with_infer_schema_length(if n_rows == Some(0) {
            Some(0)
        } else {
            Some(1000)
        })
        .with_n_rows(n_rows)
        .try_into_reader_with_file_path(Some(path.into()))?
        .finish()
}

fn polars_error(path: &Path, err: PolarsError) -> Error {
    Error::schema(format!("{}: {err}", path.display()))
}

/// Runs only after a typed read failed: re-reads every column as text to name the first
/// value that is not a number, since Polars' own message does not give the row.
fn locate_bad_number(path: &Path, schema: &Columns) -> Option<Error> {
    let text = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .try_into_reader_with_file_path(Some(path.into()))
        .and_then(|r| r.finish())
        .ok()?;
    schema
        .numeric
        .iter()
        .filter_map(|name| {
            let col = text.column(name).ok()?.str().ok()?.clone();
            let bad = col.iter().enumerate().find_map(|(row, v)| {
                let v = v?;
                v.trim()
                    .parse::<f64>()
                    .is_err()
                    .then(|| (row, name, v.to_string()))
            });
            bad
        })
        .min_by_key(|(row, _, _)| *row)
        .map(|(row, name, v)| {
            Error::at_row(
                path,
                row + 1,
                name,
                format!("cannot parse {v:?} as a number"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn csv(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    const HEADER: &str = "Index,Date,Open,High,Low,Close,Adj Close,Volume,CloseUSD\n";

    #[test]
    fn loads_the_tutorial_schema() {
        let f = csv(&format!(
            "{HEADER}NYA,1966-01-03,528.69,528.69,528.69,528.69,528.69,0.0,528.69\n\
             HSI,1966-01-02,2.5,3,2,2.75,2.75,100,0.35\n"
        ));
        let t = TickTable::from_csv(f.path(), &Columns::tutorial()).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.symbol(1), "HSI");
        assert_eq!(t.chronological_order(), vec![1, 0]);
        let mut out = Vec::new();
        t.encode(1, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"Index":"HSI","Date":"1966-01-02","Open":2.5,"High":3.0,"Low":2.0,"Close":2.75,"Adj Close":2.75,"Volume":100.0,"CloseUSD":0.35}"#
        );
    }

    #[test]
    fn names_a_missing_column() {
        let f = csv("Index,Date,Open\nNYA,1966-01-03,1\n");
        let err = TickTable::from_csv(f.path(), &Columns::tutorial())
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing column \"High\""), "{err}");
    }

    #[test]
    fn names_the_line_and_column_of_a_bad_number_or_time() {
        let bad_number =
            format!("{HEADER}NYA,1966-01-03,1,1,1,1,1,0,1\nNYA,1966-01-04,1,1,1,oops,1,0,1\n");
        let bad_time = "sym,ts,px\nA,2021-01-01 10:00:00,1\nA,not a time,2\n".to_string();
        for (text, columns, why) in [
            (
                bad_number,
                Columns::tutorial(),
                r#"line 3, column "Close": cannot parse "oops""#,
            ),
            (
                bad_time,
                Columns::custom("sym", "ts", &[]),
                r#"line 3, column "ts": cannot parse "not a time""#,
            ),
        ] {
            let f = csv(&text);
            let err = TickTable::from_csv(f.path(), &columns)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn rejects_empty_and_header_only_files() {
        let empty = csv("");
        let err = TickTable::from_csv(empty.path(), &Columns::tutorial()).unwrap_err();
        assert!(err.to_string().contains("the file is empty"), "{err}");
        let header_only = csv(HEADER);
        let err = TickTable::from_csv(header_only.path(), &Columns::tutorial()).unwrap_err();
        assert!(err.to_string().contains("no data rows"), "{err}");
    }

    #[test]
    fn reports_a_missing_file_as_not_found() {
        let err = TickTable::from_csv(Path::new("/nonexistent/x.csv"), &Columns::tutorial());
        assert!(
            matches!(err, Err(e) if e.is(crate::error::Kind::NotFound) && e.message().contains("/nonexistent/x.csv"))
        );
    }
}
