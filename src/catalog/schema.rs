//! Column types as catalogs name them (Hive's names, which Glue, Athena, Trino and Spark
//! share), their Polars equivalents, and reading an object's schema without reading its data.

use std::io::Cursor;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lake::Format;
use crate::lake::{ByteRange, ObjectStore};

/// A column type in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HiveType {
    Boolean,
    Int,
    Bigint,
    Float,
    Double,
    String,
    Date,
    Timestamp,
}

impl HiveType {
    /// The Hive / Glue type name.
    pub fn name(self) -> &'static str {
        match self {
            HiveType::Boolean => "boolean",
            HiveType::Int => "int",
            HiveType::Bigint => "bigint",
            HiveType::Float => "float",
            HiveType::Double => "double",
            HiveType::String => "string",
            HiveType::Date => "date",
            HiveType::Timestamp => "timestamp",
        }
    }

    /// A type name read from a catalog; `None` for types stockstream does not read
    /// (decimals, arrays, maps, structs).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "boolean" => HiveType::Boolean,
            "tinyint" | "smallint" | "int" | "integer" => HiveType::Int,
            "bigint" => HiveType::Bigint,
            "float" | "real" => HiveType::Float,
            "double" => HiveType::Double,
            "string" | "varchar" | "char" => HiveType::String,
            "date" => HiveType::Date,
            "timestamp" => HiveType::Timestamp,
            other if other.starts_with("varchar(") || other.starts_with("char(") => {
                HiveType::String
            }
            _ => return None,
        })
    }

    /// The catalog type of a Polars column type, if it has one.
    pub fn from_polars(dtype: &DataType) -> Option<Self> {
        Some(match dtype {
            DataType::Boolean => HiveType::Boolean,
            DataType::Int8 | DataType::Int16 | DataType::Int32 => HiveType::Int,
            DataType::UInt8 | DataType::UInt16 => HiveType::Int,
            DataType::Int64 | DataType::UInt32 => HiveType::Bigint,
            DataType::Float32 => HiveType::Float,
            DataType::Float64 => HiveType::Double,
            DataType::String => HiveType::String,
            DataType::Date => HiveType::Date,
            DataType::Datetime(_, _) => HiveType::Timestamp,
            _ => return None,
        })
    }

    /// The Polars type a column of this type is read as.
    pub fn to_polars(self) -> DataType {
        match self {
            HiveType::Boolean => DataType::Boolean,
            HiveType::Int => DataType::Int32,
            HiveType::Bigint => DataType::Int64,
            HiveType::Float => DataType::Float32,
            HiveType::Double => DataType::Float64,
            HiveType::String => DataType::String,
            HiveType::Date => DataType::Date,
            HiveType::Timestamp => DataType::Datetime(TimeUnit::Microseconds, None),
        }
    }

    /// The type holding values of both `self` and `other` without loss (wider integers,
    /// integers as doubles, as the sink widens them), or `None` if they conflict.
    pub fn unify(self, other: Self) -> Option<Self> {
        use HiveType::*;
        if self == other {
            return Some(self);
        }
        let rank = |t: HiveType| match t {
            Int => Some(0),
            Bigint => Some(1),
            Float => Some(2),
            Double => Some(3),
            _ => None,
        };
        let (a, b) = (rank(self)?, rank(other)?);
        Some(match a.max(b) {
            0 => Int,
            1 => Bigint,
            // A float cannot hold every integer exactly.
            _ => Double,
        })
    }

    /// The type of a partition folder's values: dates, integers, or text.
    pub fn infer_partition(values: &[&str]) -> Self {
        let is_date = |v: &str| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok();
        let is_int =
            |v: &str| !v.is_empty() && v.len() < 19 && v.bytes().all(|b| b.is_ascii_digit());
        if !values.is_empty() && values.iter().all(|v| is_date(v)) {
            HiveType::Date
        } else if !values.is_empty() && values.iter().all(|v| is_int(v)) {
            HiveType::Bigint
        } else {
            HiveType::String
        }
    }

    /// Whether a partition value can be read as a partition column of this type.
    pub fn accepts_partition_value(self, value: &str) -> bool {
        match self {
            HiveType::String => true,
            HiveType::Date => Self::infer_partition(&[value]) == HiveType::Date,
            HiveType::Int | HiveType::Bigint => Self::infer_partition(&[value]) == HiveType::Bigint,
            _ => false,
        }
    }
}

/// The Parquet tail read first; footers of the sink's files are a few KiB.
const FOOTER_GUESS: u64 = 64 << 10;
/// How much of a JSON-lines object is sampled for its schema.
const NDJSON_SAMPLE: u64 = 1 << 20;

/// The columns of one object, read from its Parquet footer or a sample of its JSON lines.
pub fn object_schema(
    store: &dyn ObjectStore,
    key: &str,
    size: u64,
    format: Format,
) -> Result<Vec<(String, HiveType)>> {
    let schema = match format {
        Format::Parquet => parquet_schema(store, key, size)?,
        Format::Ndjson => {
            let sample = store.read(key, ByteRange::Head(NDJSON_SAMPLE))?;
            ndjson_schema(&sample, (sample.len() as u64) < size)
                .map_err(|e| unreadable(&store.url(key), e))?
        }
    };
    columns(&schema, &store.url(key))
}

/// The columns of an object held in memory (one the sink has just written).
pub fn body_schema(format: Format, body: &[u8], url: &str) -> Result<Vec<(String, HiveType)>> {
    let schema = match format {
        Format::Parquet => footer_schema(body.to_vec()),
        Format::Ndjson => ndjson_schema(body, false),
    }
    .map_err(|e| unreadable(url, e))?;
    columns(&schema, url)
}

/// Catalog columns of a Polars schema; a type the catalog cannot describe is an error.
fn columns(schema: &Schema, url: &str) -> Result<Vec<(String, HiveType)>> {
    schema
        .iter()
        .map(|(name, dtype)| {
            HiveType::from_polars(dtype)
                .map(|t| (name.to_string(), t))
                .ok_or_else(|| {
                    Error::schema(format!(
                        "{url}: column {name:?} has type {dtype}, which the catalog cannot describe"
                    ))
                })
        })
        .collect()
}

fn parquet_schema(store: &dyn ObjectStore, key: &str, size: u64) -> Result<Schema> {
    let mut tail = store.read(key, ByteRange::Tail(FOOTER_GUESS))?;
    if tail.len() >= 8 && (tail.len() as u64) < size {
        let footer = u32::from_le_bytes(tail[tail.len() - 8..tail.len() - 4].try_into().unwrap());
        if u64::from(footer) + 8 > tail.len() as u64 {
            tail = store.read(key, ByteRange::Tail(u64::from(footer) + 8))?;
        }
    }
    footer_schema(tail).map_err(|e| unreadable(&store.url(key), e))
}

/// Parquet metadata is read from the end, so the tail of a file is enough.
fn footer_schema(tail: Vec<u8>) -> PolarsResult<Schema> {
    if tail.len() < 12 || &tail[tail.len() - 4..] != b"PAR1" {
        polars_bail!(ComputeError: "no Parquet footer (the file does not end in PAR1)");
    }
    let arrow = ParquetReader::new(Cursor::new(tail)).schema()?;
    Ok(Schema::from_arrow_schema(&arrow))
}

fn ndjson_schema(sample: &[u8], truncated: bool) -> PolarsResult<Schema> {
    // Only whole lines: the sample may end mid-record.
    let end = if truncated {
        sample
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
    } else {
        sample.len()
    };
    polars::io::ndjson::infer_schema(&mut Cursor::new(&sample[..end]), None)
}

fn unreadable(url: &str, err: PolarsError) -> Error {
    Error::schema(format!("{url} cannot be read: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unifies_numbers_and_refuses_other_mixes() {
        use HiveType::*;
        assert_eq!(Int.unify(Bigint), Some(Bigint));
        assert_eq!(Bigint.unify(Double), Some(Double));
        assert_eq!(Double.unify(Int), Some(Double));
        assert_eq!(Float.unify(Bigint), Some(Double));
        assert_eq!(String.unify(String), Some(String));
        assert_eq!(String.unify(Double), None);
        assert_eq!(Date.unify(Timestamp), None);
    }

    #[test]
    fn infers_partition_value_types() {
        assert_eq!(
            HiveType::infer_partition(&["2021-01-04", "2021-01-05"]),
            HiveType::Date
        );
        assert_eq!(HiveType::infer_partition(&["2021", "07"]), HiveType::Bigint);
        assert_eq!(HiveType::infer_partition(&["2021-01"]), HiveType::String);
        assert_eq!(
            HiveType::infer_partition(&["2021-01-04", "NYA"]),
            HiveType::String
        );
        assert!(HiveType::Date.accepts_partition_value("2021-02-28"));
        assert!(!HiveType::Date.accepts_partition_value("2021-02-30"));
        assert!(HiveType::String.accepts_partition_value("2021-02-30"));
        assert!(!HiveType::Bigint.accepts_partition_value("x"));
    }

    #[test]
    fn reads_a_schema_from_a_parquet_tail_and_an_ndjson_sample() {
        let mut frame = df!(
            "Index" => ["NYA", "IXIC"],
            "Close" => [1.5, 2.5],
            "Volume" => [1i64, 2],
        )
        .unwrap();
        let mut body = Vec::new();
        ParquetWriter::new(&mut body).finish(&mut frame).unwrap();
        // Only the footer and its length: what a range request for the tail fetches.
        let n = body.len();
        let footer = u32::from_le_bytes(body[n - 8..n - 4].try_into().unwrap()) as usize;
        assert!(footer + 8 < n);
        let schema = footer_schema(body[n - footer - 8..].to_vec()).unwrap();
        assert_eq!(schema.get("Close"), Some(&DataType::Float64));
        let columns = body_schema(Format::Parquet, &body, "mem").unwrap();
        assert_eq!(columns[2], ("Volume".to_string(), HiveType::Bigint));
        let err = body_schema(Format::Parquet, b"not parquet at all", "mem/x.parquet");
        assert!(err.unwrap_err().to_string().contains("mem/x.parquet"));

        let sample = b"{\"a\": 1, \"b\": \"x\"}\n{\"a\": 2.5, \"c\": true}\n{\"a\": 3, \"b";
        let schema = ndjson_schema(sample, true).unwrap();
        assert_eq!(schema.get("a"), Some(&DataType::Float64));
        assert_eq!(schema.get("c"), Some(&DataType::Boolean));
        assert!(ndjson_schema(b"{not json\n", false).is_err());
    }
}
