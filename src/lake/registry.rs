//! What a writer tells the lake's catalog, without depending on which catalog it is: the
//! table's partition scheme (decided once, by whoever records it first, then followed by
//! every writer), the current folder of each partition (compaction moves them), which
//! writer owns each Kafka partition now (claims, which fence out the writers before it),
//! and each landing's objects and offsets. The table, not the consumer group, is the
//! source of truth for what is landed: a sink resumes from the table's offsets whatever
//! its group says.

use std::collections::{BTreeMap, HashMap};

use polars::prelude::DataType;
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

/// The offsets of one Kafka partition landed last: `[first, next)`. Records before `next`
/// are in registered objects; later ones only in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandedRange {
    pub first: i64,
    pub next: i64,
    /// The record at `next - 1`, to tell the topic these offsets belong to from another
    /// topic of the same name (deleted and created again, or on another cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<LastRecord>,
}

impl LandedRange {
    pub fn new(first: i64, next: i64) -> Self {
        LandedRange {
            first,
            next,
            last: None,
        }
    }
}

/// What identifies a record well enough to tell two logs apart: its Kafka timestamp and
/// the sizes of its key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    pub key_bytes: usize,
    pub value_bytes: usize,
}

/// What a writer needs to know of a table it lands into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableState {
    /// The partition folder keys.
    pub scheme: Vec<String>,
    /// Partitions compaction moved: partition path → folder.
    pub locations: BTreeMap<String, String>,
    /// Per Kafka partition, the range landed last.
    pub landed: BTreeMap<i32, LandedRange>,
    /// Per Kafka partition, the epoch of the writer that claimed it last.
    pub claims: BTreeMap<i32, u64>,
    /// The field id and type of each column, for tables whose readers find columns by id
    /// (Iceberg); empty for tables read by name.
    pub fields: Fields,
}

/// The columns of a table whose readers find them by id, and which holds one type per
/// column (Iceberg): each column's field id and type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(pub HashMap<String, (i32, DataType)>);

impl Fields {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn id(&self, name: &str) -> Option<i32> {
        self.0.get(name).map(|(id, _)| *id)
    }

    pub fn dtype(&self, name: &str) -> Option<&DataType> {
        self.0.get(name).map(|(_, dtype)| dtype)
    }
}

/// A writer's claim on Kafka partitions of a table: landings made under an older claim of
/// one of them are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub epoch: u64,
    /// The table as it was when claimed.
    pub table: TableState,
}

/// One object a landing wrote.
pub struct LandedObject<'a> {
    pub key: String,
    /// The Kafka partition whose records it holds.
    pub partition: i32,
    /// The partition path (`date=2021-01-04`, empty when unpartitioned) …
    pub path: String,
    /// … and the folder the object was written to (the partition's location then).
    pub folder: String,
    pub body: &'a [u8],
}

/// The offset ranges of Kafka partitions landed together, and the objects holding them:
/// registered in one catalog write, so a query sees all of it or none of it.
pub struct Landing<'a> {
    pub table: &'a str,
    pub format: Format,
    /// Per Kafka partition, the epoch of the writer's claim on it.
    pub epochs: BTreeMap<i32, u64>,
    /// Per Kafka partition, `[first, next)`: it must start where the table's range of the
    /// partition ends (or later, after a gap the topic's retention made).
    pub ranges: BTreeMap<i32, LandedRange>,
    pub objects: Vec<LandedObject<'a>>,
}

/// Why a landing of a partition was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// Another writer claimed the partition since (a newer member of the group, or a sink
    /// of another group): this writer no longer owns it.
    Claimed { by: u64 },
    /// The table's range already reaches `next`: the records are landed (by a writer that
    /// got there first).
    Behind { next: i64 },
}

/// The outcome of registering a landing.
#[derive(Debug, PartialEq, Eq)]
pub enum Registered {
    Done,
    /// These partitions were moved (compacted) since the objects were written: rewrite
    /// the objects in the new folders (partition path → folder) and register again.
    Moved(BTreeMap<String, String>),
    /// Nothing was registered: these Kafka partitions may not be landed by this writer
    /// from these offsets.
    Fenced(BTreeMap<i32, Fence>),
}

/// A table as its first writer proposes it: format, folder levels and why they were chosen,
/// the topic it lands, and the columns known before any record is written (the symbol,
/// the event time, declared columns, Kafka's), which a table with a schema starts from.
#[derive(Debug, Clone, Copy)]
pub struct Declaration<'a> {
    pub format: Format,
    pub keys: &'a [String],
    pub reason: &'a str,
    pub source: &'a TableSource,
    pub columns: &'a [(String, polars::prelude::DataType)],
}

/// A catalog as a writer sees it.
pub trait Registry: Send + Sync {
    /// The table, if it exists.
    fn state(&self, table: &str) -> Result<Option<TableState>>;

    /// Records the declared keys (and why they were chosen) as the table's scheme unless a
    /// scheme is already recorded, with a create that fails if another writer's is there,
    /// and claims `partitions` in the same write; returns the table and claim that hold. Two
    /// writers deciding at once agree on whichever was recorded first.
    fn declare(&self, table: &str, declared: &Declaration, partitions: &[i32]) -> Result<Claim>;

    /// Claims `partitions` of an existing table for this writer, fencing out earlier
    /// claims: `None` if the table does not exist yet.
    fn claim(&self, table: &str, source: &TableSource, partitions: &[i32])
        -> Result<Option<Claim>>;

    /// Registers the objects' partitions and columns and the landed ranges, in one step
    /// that queries see whole, if the writer's claim holds and each range continues the
    /// table's.
    fn register(&self, landing: &Landing) -> Result<Registered>;

    /// Gives `columns` field ids, adding those the table lacks: all the table's fields,
    /// for tables whose readers find columns by id (Iceberg); none for the others.
    fn fields(&self, _table: &str, _columns: &[(String, DataType)]) -> Result<Fields> {
        Ok(Fields::default())
    }
}

/// Checks `source` may become table `table`'s: the topic its unlanded records are in now (a
/// crawled table, or a sink's from another broker or group). A table whose landed offsets
/// (`landed`: it has some) are another topic's cannot take this one's.
pub fn check_source(
    table: &str,
    existing: Option<&TableSource>,
    landed: bool,
    source: &TableSource,
) -> Result<()> {
    match existing {
        Some(existing) if existing.topic != source.topic && landed => {
            Err(crate::error::Error::config(format!(
                "table {table:?} holds topic {:?} (its landed offsets are that topic's), not \
                 {:?}: land {:?} into another table",
                existing.topic, source.topic, source.topic
            )))
        }
        _ => Ok(()),
    }
}

/// Applies the landing rules to one Kafka partition: the claim must be the latest, and the
/// range must continue the table's (`landed`): ranges only move forward.
pub fn fence(
    claims: &BTreeMap<i32, u64>,
    landed: Option<&LandedRange>,
    partition: i32,
    epoch: Option<u64>,
    range: &LandedRange,
) -> Option<Fence> {
    let by = claims.get(&partition).copied().unwrap_or(0);
    if Some(by) != epoch {
        return Some(Fence::Claimed { by });
    }
    match landed {
        Some(l) if range.first < l.next => Some(Fence::Behind { next: l.next }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_landing_must_hold_the_latest_claim_and_continue_the_table() {
        let claims = BTreeMap::from([(0, 7), (1, 9)]);
        let landed = LandedRange::new(0, 100);
        let next = LandedRange::new(100, 150);
        assert_eq!(fence(&claims, Some(&landed), 0, Some(7), &next), None);
        // A later start: the topic's retention dropped records in between.
        let after_gap = LandedRange::new(120, 150);
        assert_eq!(fence(&claims, Some(&landed), 0, Some(7), &after_gap), None);
        // A zombie, or a sink of another group that started from offset 0.
        assert_eq!(
            fence(&claims, Some(&landed), 1, Some(7), &next),
            Some(Fence::Claimed { by: 9 })
        );
        let replay = LandedRange::new(0, 120);
        assert_eq!(
            fence(&claims, Some(&landed), 0, Some(7), &replay),
            Some(Fence::Behind { next: 100 })
        );
        // Nobody claimed partition 2: a writer that did not claim it is refused.
        assert_eq!(
            fence(&claims, None, 2, Some(7), &next),
            Some(Fence::Claimed { by: 0 })
        );
        assert_eq!(fence(&claims, None, 0, Some(7), &next), None);
        assert_eq!(
            fence(&claims, None, 0, None, &next),
            Some(Fence::Claimed { by: 7 })
        );
    }
}
