//! A data file's column metrics as Iceberg keeps them in its manifest (value and null
//! counts, lower and upper bounds, by field id), taken from the statistics of the Parquet
//! footer the writer wrote, so that readers skip files without opening them.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;

use ::iceberg::spec::{Datum, PrimitiveType, Schema};
use polars::prelude::DataType;
use polars_parquet::parquet::statistics::Statistics;
use polars_parquet::read::{infer_schema, read_metadata};

use crate::error::{Error, Result};

/// The metrics of one data file, and the columns it holds.
#[derive(Debug, Default)]
pub struct Metrics {
    pub columns: Vec<(String, DataType)>,
    pub rows: u64,
    pub values: HashMap<i32, u64>,
    pub nulls: HashMap<i32, u64>,
    pub lower: HashMap<i32, Datum>,
    pub upper: HashMap<i32, Datum>,
}

/// The metrics of the Parquet file `body` for the columns of `schema` it holds; a column
/// some row group has no statistics for has no bounds (a reader then keeps the file).
pub fn metrics(key: &str, body: &[u8], schema: &Schema) -> Result<Metrics> {
    let footer = read_metadata(&mut Cursor::new(body))
        .map_err(|e| Error::schema(format!("landed object {key} is not readable Parquet: {e}")))?;
    let arrow = infer_schema(&footer).map_err(|e| {
        Error::schema(format!(
            "landed object {key} has no schema Polars reads: {e}"
        ))
    })?;
    let mut metrics = Metrics {
        columns: (arrow.iter())
            .map(|(name, field)| (name.to_string(), DataType::from_arrow_dtype(field.dtype())))
            .collect(),
        rows: footer.num_rows as u64,
        ..Metrics::default()
    };
    let mut unknown = HashSet::new();
    for group in &footer.row_groups {
        for chunk in group.parquet_columns() {
            let [name] = chunk.descriptor().path_in_schema.as_slice() else {
                continue;
            };
            let Some(field) = schema.field_by_name(name) else {
                continue;
            };
            let id = field.id;
            *metrics.values.entry(id).or_default() += chunk.num_values() as u64;
            let stats = chunk.statistics(&footer.footer_buf).and_then(|s| s.ok());
            let kind = field.field_type.as_primitive_type();
            let bounds = stats.as_ref().zip(kind).and_then(|(s, k)| bounds(s, k));
            match (bounds, stats.as_ref().and_then(null_count)) {
                (Some((low, high)), Some(nulls)) => {
                    *metrics.nulls.entry(id).or_default() += nulls;
                    widen(&mut metrics.lower, id, low, |new, old| new < old);
                    widen(&mut metrics.upper, id, high, |new, old| new > old);
                }
                _ => {
                    unknown.insert(id);
                }
            }
        }
    }
    for id in unknown {
        metrics.lower.remove(&id);
        metrics.upper.remove(&id);
        metrics.nulls.remove(&id);
    }
    Ok(metrics)
}

fn widen(
    bounds: &mut HashMap<i32, Datum>,
    id: i32,
    value: Datum,
    beyond: fn(&Datum, &Datum) -> bool,
) {
    match bounds.get(&id) {
        Some(old) if !beyond(&value, old) => {}
        _ => {
            bounds.insert(id, value);
        }
    }
}

fn null_count(stats: &Statistics) -> Option<u64> {
    let count = match stats {
        Statistics::Binary(s) => s.null_count,
        Statistics::Boolean(s) => s.null_count,
        Statistics::Int32(s) => s.null_count,
        Statistics::Int64(s) => s.null_count,
        Statistics::Double(s) => s.null_count,
        _ => None,
    };
    count.and_then(|n| u64::try_from(n).ok())
}

/// The lowest and highest value of a row group's column as Iceberg values of `kind`.
fn bounds(stats: &Statistics, kind: &PrimitiveType) -> Option<(Datum, Datum)> {
    fn both<T: Copy>(
        min: Option<T>,
        max: Option<T>,
        f: impl Fn(T) -> Datum,
    ) -> Option<(Datum, Datum)> {
        Some((f(min?), f(max?)))
    }
    match (stats, kind) {
        (Statistics::Int64(s), PrimitiveType::Long) => both(s.min_value, s.max_value, Datum::long),
        (Statistics::Int64(s), PrimitiveType::Timestamp) => {
            both(s.min_value, s.max_value, Datum::timestamp_micros)
        }
        (Statistics::Int32(s), PrimitiveType::Int) => both(s.min_value, s.max_value, Datum::int),
        (Statistics::Int32(s), PrimitiveType::Date) => both(s.min_value, s.max_value, Datum::date),
        (Statistics::Double(s), PrimitiveType::Double) => {
            let (min, max) = (s.min_value?, s.max_value?);
            (!min.is_nan() && !max.is_nan()).then(|| (Datum::double(min), Datum::double(max)))
        }
        (Statistics::Boolean(s), PrimitiveType::Boolean) => {
            both(s.min_value, s.max_value, Datum::bool)
        }
        (Statistics::Binary(s), PrimitiveType::String) => {
            let text = |b: &Option<Vec<u8>>| String::from_utf8(b.clone()?).ok();
            Some((
                Datum::string(text(&s.min_value)?),
                Datum::string(text(&s.max_value)?),
            ))
        }
        _ => None,
    }
}
