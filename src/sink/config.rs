//! What a lake sink does: its layout, rolling policy and record schema.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::lake::{Format, PartitionKey};
use crate::record::time::TimeFormat;
use crate::record::TickSchema;

/// How a table's folders are chosen when the sink first lands it; afterwards every
/// writer follows the scheme recorded in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitioning {
    /// Chosen from the event-time density of the first records landed (`symbol=` first
    /// if `symbol`).
    Auto { symbol: bool },
    /// These folder levels, in order (none: one folder).
    Keys(Vec<PartitionKey>),
}

impl Partitioning {
    /// From a list such as `["auto"]`, `["symbol", "auto"]`, `["year"]` or `[]`.
    pub fn parse(names: &[String]) -> Result<Self> {
        let auto = names
            .iter()
            .filter(|n| n.trim().eq_ignore_ascii_case("auto"))
            .count();
        let keys = names
            .iter()
            .filter(|n| !n.trim().eq_ignore_ascii_case("auto"))
            .map(|n| str::parse::<PartitionKey>(n))
            .collect::<Result<Vec<_>>>()?;
        if keys.contains(&PartitionKey::Hour) && !keys.contains(&PartitionKey::Date) {
            return Err(Error::config(format!(
                "partition_by {names:?}: an hour folder without a date folder would hold that \
                 hour of every day; use [\"date\", \"hour\"]"
            )));
        }
        if auto == 0 {
            return Ok(Partitioning::Keys(keys));
        }
        if auto > 1 || keys.iter().any(|k| *k != PartitionKey::Symbol) {
            return Err(Error::config(format!(
                "partition_by {names:?}: \"auto\" chooses the time folders itself; it can only \
                 be combined with \"symbol\""
            )));
        }
        Ok(Partitioning::Auto {
            symbol: !keys.is_empty(),
        })
    }
}

/// A comma list such as `"symbol,auto"` or `"year,month"`; empty for no folders.
impl std::str::FromStr for Partitioning {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let names: Vec<String> = (text.split(','))
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .collect();
        Partitioning::parse(&names)
    }
}

choices! {
    /// The type a column must have; records whose value does not fit are rejected.
    pub enum ColumnType as "column type" {
        String = ["string", "str", "utf8"],
        Float = ["float", "float64", "double"],
        Int = ["int", "int64", "bigint"],
        Bool = ["bool", "boolean"],
    }
}

impl ColumnType {
    /// The declared type a column of this type holds, if any.
    pub fn of(dtype: &polars::prelude::DataType) -> Option<Self> {
        use polars::prelude::DataType;
        Some(match dtype {
            DataType::String => ColumnType::String,
            DataType::Float64 => ColumnType::Float,
            DataType::Int64 => ColumnType::Int,
            DataType::Boolean => ColumnType::Bool,
            _ => return None,
        })
    }

    /// The type of the column the sink writes for it.
    pub fn dtype(self) -> polars::prelude::DataType {
        use polars::prelude::DataType;
        match self {
            ColumnType::String => DataType::String,
            ColumnType::Float => DataType::Float64,
            ColumnType::Int => DataType::Int64,
            ColumnType::Bool => DataType::Boolean,
        }
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
            return Err(Error::config(
                "RollPolicy: records, bytes and buffer_bytes must be positive",
            ));
        }
        if self.age.is_zero() || self.idle.is_zero() {
            return Err(Error::config("RollPolicy: age and idle must be positive"));
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
    pub partition_by: Partitioning,
    pub roll: RollPolicy,
    /// The field holding the symbol (`Index` in the tutorial's data).
    pub symbol_field: String,
    /// The field holding the event date or time (`Date`).
    pub time_field: String,
    /// How the time field's text is written.
    pub time_format: TimeFormat,
    /// Declared column types; other columns take the type of their first value in each file.
    pub columns: Vec<(String, ColumnType)>,
    /// Add `_kafka_partition`, `_kafka_offset` and `_kafka_timestamp` columns.
    pub kafka_metadata: bool,
}

impl SinkConfig {
    /// A configuration with the defaults: Parquet, folders chosen from the data, the
    /// tutorial's columns.
    pub fn new(topic: &str, group_id: &str) -> Self {
        let tutorial = TickSchema::default();
        SinkConfig {
            topic: topic.to_string(),
            group_id: group_id.to_string(),
            table: topic.to_string(),
            format: Format::Parquet,
            partition_by: Partitioning::Auto { symbol: false },
            roll: RollPolicy::default(),
            symbol_field: tutorial.symbol,
            time_field: tutorial.time,
            time_format: tutorial.time_format,
            columns: TUTORIAL_COLUMNS
                .iter()
                .map(|(n, t)| (n.to_string(), *t))
                .collect(),
            kafka_metadata: false,
        }
    }

    /// Reads ticks as `schema` names them: the symbol and time fields, the time's format,
    /// and its numeric fields declared as floats (in place of the tutorial's columns).
    pub fn with_schema(mut self, schema: &TickSchema) -> Self {
        self.symbol_field = schema.symbol.clone();
        self.time_field = schema.time.clone();
        self.time_format = schema.time_format.clone();
        self.columns = (schema.numbers().into_iter())
            .map(|n| (n, ColumnType::Float))
            .collect();
        self
    }

    pub fn validate(&self) -> Result<()> {
        crate::error::non_empty(&[
            ("topic", &self.topic),
            ("group_id", &self.group_id),
            ("table", &self.table),
            ("symbol_field", &self.symbol_field),
            ("time_field", &self.time_field),
        ])?;
        crate::kafka::check_topic("topic", &self.topic)?;
        if self.table.starts_with(['_', '.'])
            || self.table.contains(['/', '\\', '='])
            || self.table.chars().any(char::is_control)
            || self.table.len() > 255
        {
            return Err(Error::config(format!(
                "table {:?}: a table name may not start with '_' or '.', contain '/', '\\', '=' \
                 or control characters, or be longer than 255 bytes",
                self.table
            )));
        }
        self.roll.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_levels_are_read_from_a_comma_list() {
        let parsed = |text: &str| text.parse::<Partitioning>();
        assert_eq!(
            parsed("symbol, auto").unwrap(),
            Partitioning::Auto { symbol: true }
        );
        assert_eq!(
            parsed("year,month").unwrap(),
            Partitioning::Keys(vec![PartitionKey::Year, PartitionKey::Month])
        );
        assert_eq!(parsed("").unwrap(), Partitioning::Keys(vec![]));
        for bad in ["auto,auto", "date,auto", "region", "hour", "symbol,hour"] {
            assert!(
                parsed(bad).unwrap_err().is(crate::error::Kind::Config),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_schema_names_the_fields_and_declares_its_numbers_as_floats() {
        let schema = TickSchema::named(["sym", "ts", "px"], None).unwrap();
        let config = SinkConfig::new("t", "g").with_schema(&schema);
        assert_eq!(
            (config.symbol_field.as_str(), config.time_field.as_str()),
            ("sym", "ts")
        );
        assert_eq!(config.columns, [("px".to_string(), ColumnType::Float)]);
        assert!(
            SinkConfig::new("t", "g").columns.len() > 1,
            "the tutorial's columns"
        );
    }
}
