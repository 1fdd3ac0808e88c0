//! Encodes one row of a Polars frame as the tutorial's message value: a JSON object with
//! the CSV's own column names, strings as strings and numbers as JSON numbers.
//!
//! The hot path of the producer: it writes straight from Arrow buffers into a reused byte
//! buffer, with no per-row allocation and no intermediate JSON value.

use polars::prelude::*;

use crate::error::{Error, Result};

type StrArray = <StringType as PolarsDataType>::Array;
type F64Array = <Float64Type as PolarsDataType>::Array;
type I64Array = <Int64Type as PolarsDataType>::Array;
type BoolArray = <BooleanType as PolarsDataType>::Array;

enum Values {
    Str(StrArray),
    F64(F64Array),
    I64(I64Array),
    Bool(BoolArray),
}

struct Field {
    /// `"name":` (or `,"name":`), escaped once up front.
    prefix: Vec<u8>,
    values: Values,
}

/// Writes rows of one frame as JSON objects.
pub struct RowEncoder {
    fields: Vec<Field>,
}

impl RowEncoder {
    /// Prepares an encoder for every column of `df`. Columns that are not text, floats,
    /// integers or booleans are rendered as their text form.
    pub fn new(df: &DataFrame) -> Result<Self> {
        let fields = df
            .columns()
            .iter()
            .enumerate()
            .map(|(i, col)| {
                let mut prefix = Vec::with_capacity(col.name().len() + 4);
                prefix.push(if i == 0 { b'{' } else { b',' });
                write_str(&mut prefix, col.name());
                prefix.push(b':');
                Ok(Field {
                    prefix,
                    values: values_of(col.as_materialized_series())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RowEncoder { fields })
    }

    /// Appends row `row` as one JSON object to `out`.
    pub fn encode(&self, row: usize, out: &mut Vec<u8>) {
        if self.fields.is_empty() {
            out.extend_from_slice(b"{");
        }
        for field in &self.fields {
            out.extend_from_slice(&field.prefix);
            match &field.values {
                Values::Str(a) => match a.get(row) {
                    Some(s) => write_str(out, s),
                    None => out.extend_from_slice(b"null"),
                },
                Values::F64(a) => match a.get(row) {
                    Some(v) if v.is_finite() => {
                        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes())
                    }
                    // JSON has no NaN or infinity; pandas would write the invalid token `NaN`.
                    _ => out.extend_from_slice(b"null"),
                },
                Values::I64(a) => match a.get(row) {
                    Some(v) => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
                    None => out.extend_from_slice(b"null"),
                },
                Values::Bool(a) => match a.get(row) {
                    Some(true) => out.extend_from_slice(b"true"),
                    Some(false) => out.extend_from_slice(b"false"),
                    None => out.extend_from_slice(b"null"),
                },
            }
        }
        out.push(b'}');
    }
}

fn values_of(series: &Series) -> Result<Values> {
    let cast = |dtype: &DataType| {
        series
            .cast(dtype)
            .map(|s| s.rechunk())
            .map_err(|e| Error::schema(format!("column {:?}: {e}", series.name().as_str())))
    };
    Ok(match series.dtype() {
        DataType::Float32 | DataType::Float64 => Values::F64(
            cast(&DataType::Float64)?
                .f64()
                .unwrap()
                .downcast_as_array()
                .clone(),
        ),
        dt if dt.is_integer() => Values::I64(
            cast(&DataType::Int64)?
                .i64()
                .unwrap()
                .downcast_as_array()
                .clone(),
        ),
        DataType::Boolean => {
            Values::Bool(series.rechunk().bool().unwrap().downcast_as_array().clone())
        }
        _ => Values::Str(
            cast(&DataType::String)?
                .str()
                .unwrap()
                .downcast_as_array()
                .clone(),
        ),
    })
}

/// Writes `s` as a JSON string literal.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_rows_as_json_objects_with_column_names() {
        let df = df! {
            "Index" => ["NYA", "N\"225"],
            "Adj Close" => [Some(1.5), None],
            "Volume" => [Some(10i64), Some(-3)],
            "Up" => [true, false],
            "Odd" => [f64::NAN, 1e21],
        }
        .unwrap();
        let enc = RowEncoder::new(&df).unwrap();
        let mut out = Vec::new();
        enc.encode(0, &mut out);
        out.push(b'\n');
        enc.encode(1, &mut out);
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            rows[0],
            serde_json::json!({"Index": "NYA", "Adj Close": 1.5, "Volume": 10, "Up": true, "Odd": null})
        );
        assert_eq!(
            rows[1],
            serde_json::json!({"Index": "N\"225", "Adj Close": null, "Volume": -3, "Up": false, "Odd": 1e21})
        );
        // Column order is the file's order, as pandas' to_dict(orient="records") keeps it.
        assert!(text.starts_with(r#"{"Index":"NYA","Adj Close":1.5,"#));
    }

    #[test]
    fn floats_round_trip_exactly() {
        let values = [0.1, 528.690002, 1.0 / 3.0, 12345678.9, 5e-324];
        let df = df! { "x" => values }.unwrap();
        let enc = RowEncoder::new(&df).unwrap();
        for (i, v) in values.iter().enumerate() {
            let mut out = Vec::new();
            enc.encode(i, &mut out);
            let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(parsed["x"].as_f64().unwrap().to_bits(), f64::to_bits(*v));
        }
    }
}
