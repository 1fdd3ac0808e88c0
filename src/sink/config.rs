//! What a lake sink does: its file format, layout, rolling policy and record schema.

use std::time::Duration;

use crate::error::{Error, Result};

/// The file format of the lake's data objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Parquet with zstd compression and typed columns.
    Parquet,
    /// One newline-terminated JSON object per line.
    Ndjson,
}

impl Format {
    pub fn parse(text: &str) -> Result<Self> {
        match text.to_ascii_lowercase().as_str() {
            "parquet" => Ok(Format::Parquet),
            "ndjson" | "jsonl" | "json" => Ok(Format::Ndjson),
            other => Err(Error::Config(format!(
                "format {other:?} is not supported: use \"parquet\" or \"ndjson\""
            ))),
        }
    }

    /// The object name suffix.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Ndjson => "json",
        }
    }

    /// The format of an object, from its name.
    pub fn of(key: &str) -> Option<Self> {
        if key.ends_with(".parquet") {
            Some(Format::Parquet)
        } else if [".json", ".ndjson", ".jsonl"]
            .iter()
            .any(|e| key.ends_with(e))
        {
            Some(Format::Ndjson)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Ndjson => "ndjson",
        }
    }
}

/// One level of the lake's Hive-style folders (`key=value/`), taken from each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKey {
    Symbol,
    Year,
    Month,
    Date,
    Hour,
}

impl PartitionKey {
    pub fn parse(text: &str) -> Result<Self> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "symbol" => PartitionKey::Symbol,
            "year" => PartitionKey::Year,
            "month" => PartitionKey::Month,
            "date" | "day" => PartitionKey::Date,
            "hour" => PartitionKey::Hour,
            other => {
                return Err(Error::Config(format!(
                "partition key {other:?} is not supported: use symbol, year, month, date or hour"
            )))
            }
        })
    }

    /// The folder key, as Hive, Athena and Polars will name the partition column.
    pub fn name(self) -> &'static str {
        match self {
            PartitionKey::Symbol => "symbol",
            PartitionKey::Year => "year",
            PartitionKey::Month => "month",
            PartitionKey::Date => "date",
            PartitionKey::Hour => "hour",
        }
    }
}

/// The type a column must have; records whose value does not fit are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    String,
    Float,
    Int,
    Bool,
}

impl ColumnType {
    pub fn parse(text: &str) -> Result<Self> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "string" | "str" | "utf8" => ColumnType::String,
            "float" | "float64" | "double" => ColumnType::Float,
            "int" | "int64" | "bigint" => ColumnType::Int,
            "bool" | "boolean" => ColumnType::Bool,
            other => {
                return Err(Error::Config(format!(
                    "column type {other:?} is not supported: use string, float, int or bool"
                )))
            }
        })
    }
}

/// The declared types of the tutorial's CSV columns (the symbol and date fields excepted).
pub const TUTORIAL_COLUMNS: [(&str, ColumnType); 7] = [
    ("Open", ColumnType::Float),
    ("High", ColumnType::Float),
    ("Low", ColumnType::Float),
    ("Close", ColumnType::Float),
    ("Adj Close", ColumnType::Float),
    ("Volume", ColumnType::Float),
    ("CloseUSD", ColumnType::Float),
];

/// When a buffered range of one Kafka partition becomes files in the lake.
#[derive(Debug, Clone)]
pub struct RollPolicy {
    /// Records buffered for one Kafka partition.
    pub records: usize,
    /// Message bytes buffered for one Kafka partition.
    pub bytes: usize,
    /// Time since the first buffered record: bounds how stale the lake can be.
    pub age: Duration,
    /// Time since the last record: a stream that stops is landed without waiting for `age`.
    pub idle: Duration,
    /// Message bytes buffered over all partitions; beyond it the largest range is landed early.
    pub memory: usize,
}

impl Default for RollPolicy {
    /// A steady 1 msg/s stream is visible within a minute; a fast one writes files of tens of MB.
    fn default() -> Self {
        RollPolicy {
            records: 1_000_000,
            bytes: 128 << 20,
            age: Duration::from_secs(60),
            idle: Duration::from_secs(10),
            memory: 256 << 20,
        }
    }
}

impl RollPolicy {
    pub fn validate(&self) -> Result<()> {
        if self.records == 0 || self.bytes == 0 || self.memory == 0 {
            return Err(Error::Config(
                "flush_records, flush_bytes and buffer_bytes must be positive".into(),
            ));
        }
        if self.age.is_zero() || self.idle.is_zero() {
            return Err(Error::Config(
                "flush_age and flush_idle must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Everything a sink needs besides Kafka and the object store.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub topic: String,
    pub group_id: String,
    /// The lake folder (table) the topic lands in; the topic name by default.
    pub table: String,
    pub format: Format,
    pub partition_by: Vec<PartitionKey>,
    pub roll: RollPolicy,
    /// The field holding the symbol (`Index` in the tutorial's data).
    pub symbol_field: String,
    /// The field holding the event date or time (`Date`).
    pub time_field: String,
    /// Declared column types; other columns take the type of their first value in each file.
    pub columns: Vec<(String, ColumnType)>,
    /// Add `_kafka_partition`, `_kafka_offset` and `_kafka_timestamp` columns.
    pub kafka_metadata: bool,
}

impl SinkConfig {
    /// A configuration with the defaults: Parquet, `date=` folders, the tutorial's columns.
    pub fn new(topic: &str, group_id: &str) -> Self {
        SinkConfig {
            topic: topic.to_string(),
            group_id: group_id.to_string(),
            table: topic.to_string(),
            format: Format::Parquet,
            partition_by: vec![PartitionKey::Date],
            roll: RollPolicy::default(),
            symbol_field: "Index".into(),
            time_field: "Date".into(),
            columns: TUTORIAL_COLUMNS
                .iter()
                .map(|(n, t)| (n.to_string(), *t))
                .collect(),
            kafka_metadata: false,
        }
    }

    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("topic", &self.topic),
            ("group_id", &self.group_id),
            ("table", &self.table),
            ("symbol_field", &self.symbol_field),
            ("time_field", &self.time_field),
        ] {
            if value.trim().is_empty() {
                return Err(Error::Config(format!("{name} is empty")));
            }
        }
        if self.table.starts_with(['_', '.']) || self.table.contains(['/', '=']) {
            return Err(Error::Config(format!(
                "table {:?}: a table name may not start with '_' or '.' or contain '/' or '='",
                self.table
            )));
        }
        self.roll.validate()
    }
}
