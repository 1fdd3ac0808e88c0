//! What a writer tells the lake's catalog, without depending on which catalog it is: the
//! table's partition scheme (decided once, then followed by every writer), the current
//! folder of each partition (compaction moves them), and each landing's objects and offsets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Format;
use crate::error::Result;

/// Where a table's records come from: enough for a query to read the records Kafka holds
/// but the lake does not yet, and to decode them as the sink does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSource {
    pub bootstrap_servers: String,
    pub topic: String,
    pub group_id: String,
    pub symbol_field: String,
    pub time_field: String,
    /// Declared column types by name (`float`, `int`, `string`, `bool`).
    pub columns: BTreeMap<String, String>,
    #[serde(default)]
    pub kafka_metadata: bool,
    /// How the time field is written (strftime) and the zone of times without an offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// One object a landing wrote.
pub struct LandedObject<'a> {
    pub key: String,
    /// The partition path (`date=2021-01-04`, empty when unpartitioned) …
    pub path: String,
    /// … and the folder the object was written to (the partition's location then).
    pub folder: String,
    pub body: &'a [u8],
}

/// A landed offset range of one Kafka partition and the objects holding it.
pub struct Landing<'a> {
    pub table: &'a str,
    pub format: Format,
    pub partition: i32,
    /// The range is `[first_offset, next_offset)`. Every earlier range of this partition is
    /// committed in Kafka (a range is started only after the previous one committed), so
    /// objects named below `first_offset` can no longer be rewritten by a replay.
    pub first_offset: i64,
    pub next_offset: i64,
    pub objects: Vec<LandedObject<'a>>,
}

/// The outcome of registering a landing.
#[derive(Debug, PartialEq, Eq)]
pub enum Registered {
    Done,
    /// These partitions were moved (compacted) since the objects were written: rewrite
    /// the objects in the new folders (partition path → folder) and register again.
    Moved(BTreeMap<String, String>),
}

/// A catalog as a writer sees it.
pub trait Registry: Send + Sync {
    /// The table's partition folder keys, if the table exists.
    fn scheme(&self, table: &str) -> Result<Option<Vec<String>>>;

    /// Records `keys` (and why they were chosen) as the table's scheme unless a scheme is
    /// already recorded; returns the scheme that holds. Two writers deciding at once agree
    /// on whichever was recorded first.
    fn declare(
        &self,
        table: &str,
        format: Format,
        keys: &[String],
        reason: &str,
        source: &TableSource,
    ) -> Result<Vec<String>>;

    /// The current folder of each partition path that has moved (others are in their
    /// default folder, `table/path`).
    fn locations(&self, table: &str) -> Result<BTreeMap<String, String>>;

    /// Registers the objects' partitions and columns and the landed range, in one step
    /// that queries see whole.
    fn register(&self, landing: &Landing) -> Result<Registered>;
}
