//! What the lake holds, described for query engines: tables with their columns, Hive
//! partition keys and registered partitions. The crawler fills the catalog from the objects;
//! the sink can register partitions as it lands them. Two backends share one interface: a
//! catalog kept as JSON in the lake itself, and AWS Glue (which Athena, Trino and Spark read).

mod compact;
mod crawler;
mod glue;
mod local;
mod registry;
mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use polars::prelude::{Field, Schema};
use serde::{Deserialize, Serialize};

pub(crate) use compact::{bins, merged_frame};
pub use compact::{compact, CompactOptions, CompactReport};
pub use crawler::{crawl, Conflict, CrawlOptions, CrawlReport, CrawlState, OnError};
pub(crate) use glue::is_iceberg;
pub use glue::GlueCatalog;
pub use local::LocalCatalog;
pub use registry::{partition_column, CatalogRegistry, Landed};
pub use schema::{body_schema, object_schema, HiveType};

use crate::aws::AwsOptions;
use crate::error::{Error, Result};
pub use crate::lake::LandedRange;
use crate::lake::{
    escape, table_folder, Fields, Format, LakeUrl, ObjectName, ObjectStore, Registered,
    TableSource, TableState,
};

/// The database tables are registered in unless another is named (the tutorial's).
pub const DEFAULT_DATABASE: &str = "stock_market";

/// A column and its catalog type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: HiveType,
}

impl Column {
    pub fn new(name: impl Into<String>, kind: HiveType) -> Self {
        Column {
            name: name.into(),
            kind,
        }
    }
}

/// One table: a folder of the lake, its objects' columns, and its partitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub database: String,
    pub name: String,
    /// The folder below the lake root holding the table's objects.
    pub location: String,
    pub format: Format,
    /// The columns stored in the objects.
    pub columns: Vec<Column>,
    /// The `key=value` folder levels, in order.
    pub partition_keys: Vec<Column>,
    /// Registered partitions, one value per key; objects in other folders are not part of
    /// the table until crawled or registered (as with Glue and Athena).
    pub partitions: BTreeSet<Vec<String>>,
    /// How the partition keys were chosen (`auto: …` with the density seen, or `given`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioning: Option<String>,
    /// Partitions moved by compaction: partition path → folder below the lake root.
    /// The others are in their default folder, `location/path`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub locations: BTreeMap<String, String>,
    /// Folders replaced by compaction, deleted once their grace period has passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<Retired>,
    /// Folders a compaction is writing, recorded before it writes them: a folder no
    /// version of the table refers to (current, retired or staged) is nobody's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub staged: Vec<Retired>,
    /// The topic a sink lands here, for live queries of what is not landed yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TableSource>,
    /// Per Kafka partition of the source, the last landed offset range. It only moves
    /// forward, and it is where a sink resumes whatever its consumer group says.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub landed: BTreeMap<i32, LandedRange>,
    /// Per Kafka partition, the epoch of the writer that claimed it last: landings under
    /// an older claim are refused (a zombie member, a sink of another group).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<i32, u64>,
    /// The last epoch handed out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// Columns read as text because objects disagree on their type (an undeclared field
    /// that is a number in some records and text in others).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub widened: BTreeSet<String>,
    /// For an Iceberg table, the metadata and snapshot this description was read from
    /// (its files are that snapshot's, not those a listing finds).
    #[serde(skip)]
    pub iceberg: Option<crate::iceberg::read::Reading>,
}

/// What adding a column found in an object did to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// A new column; or one already there, possibly widened to a wider number.
    Added,
    Kept,
    /// The types conflicted: the column is text from now on; `was` its type before.
    Widened {
        was: HiveType,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A folder compaction replaced, and when (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    pub folder: String,
    pub at_ms: i64,
}

impl Table {
    /// The folder of a partition below the table's location (`date=2021-01-04`).
    pub fn partition_path(&self, values: &[String]) -> String {
        self.partition_keys
            .iter()
            .zip(values)
            .map(|(k, v)| format!("{}={}", k.name, escape(v)))
            .collect::<Vec<_>>()
            .join("/")
    }

    /// A table with no partitions registered yet.
    pub fn new(
        database: &str,
        name: &str,
        location: &str,
        format: Format,
        partition_keys: Vec<Column>,
    ) -> Self {
        Table {
            database: database.to_string(),
            name: name.to_string(),
            location: location.to_string(),
            format,
            columns: Vec::new(),
            partition_keys,
            partitions: BTreeSet::new(),
            partitioning: None,
            locations: BTreeMap::new(),
            retired: Vec::new(),
            staged: Vec::new(),
            source: None,
            landed: BTreeMap::new(),
            claims: BTreeMap::new(),
            epoch: 0,
            widened: BTreeSet::new(),
            iceberg: None,
        }
    }

    /// Adds a column found in an object, or widens its type to hold both: numbers to the
    /// wider number, anything else to text. Partition keys come from folder names and are
    /// left alone.
    pub fn merge_column(&mut self, name: &str, kind: HiveType) -> Merged {
        if self.partition_keys.iter().any(|k| k.name == name) {
            return Merged::Kept;
        }
        let Some(existing) = self.columns.iter_mut().find(|c| c.name == name) else {
            self.columns.push(Column {
                name: name.to_string(),
                kind,
            });
            return Merged::Added;
        };
        match existing.kind.unify(kind) {
            // Already text because objects disagreed: one more stored type changes nothing.
            None if self.widened.contains(name) => Merged::Kept,
            Some(wider) => {
                existing.kind = wider;
                Merged::Kept
            }
            None => {
                let was = existing.kind;
                existing.kind = HiveType::String;
                self.widened.insert(name.to_string());
                Merged::Widened { was }
            }
        }
    }

    /// The folder (below the lake root) holding a partition's objects now.
    pub fn folder(&self, path: &str) -> String {
        self.locations
            .get(path)
            .cloned()
            .unwrap_or_else(|| table_folder(&self.location, path))
    }

    /// Whether a query reads `key`: an object a sink has written but not registered
    /// (named at or beyond its partition's landed offset, or in a partition nothing was
    /// registered for) is left to the topic's tail, which starts at that offset.
    pub fn visible(&self, key: &str) -> bool {
        let Some(source) = &self.source else {
            return true;
        };
        match ObjectName::parse(key, &source.topic) {
            Some(name) => self
                .landed
                .get(&name.partition)
                .is_some_and(|l| name.first_offset < l.next),
            None => true,
        }
    }

    /// Hands out a new epoch and claims `partitions` with it.
    pub fn claim(&mut self, partitions: &[i32]) -> u64 {
        self.epoch += 1;
        for p in partitions {
            self.claims.insert(*p, self.epoch);
        }
        self.epoch
    }

    /// What a writer needs to know of the table.
    pub fn state(&self) -> TableState {
        TableState {
            scheme: self.partition_keys.iter().map(|k| k.name.clone()).collect(),
            locations: self.locations.clone(),
            landed: self.landed.clone(),
            claims: self.claims.clone(),
            fields: Fields::default(),
        }
    }

    /// The columns stored in the objects, as Polars types.
    pub fn file_schema(&self) -> Schema {
        fields(&self.columns)
    }

    /// The partition columns, as Polars types.
    pub fn partition_schema(&self) -> Schema {
        fields(&self.partition_keys)
    }
}

fn fields(columns: &[Column]) -> Schema {
    columns
        .iter()
        .map(|c| Field::new(c.name.as_str().into(), c.kind.to_polars()))
        .collect()
}

/// A table name from a folder name: Athena and Glue accept lowercase letters, digits and
/// underscores, so `stock-market` becomes `stock_market`.
pub fn table_name(folder: &str) -> String {
    folder
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Checks a database name: Glue and Athena accept lowercase letters, digits and
/// underscores, and the local catalog uses it as a folder name.
pub fn check_database(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::config(format!(
            "database {name:?} is not a valid name: use lowercase letters, digits and underscores"
        )))
    }
}

/// An edit of a stored table: given the table as read (`None`: there is none), changes it in
/// place and says whether it changed. It may run again, on what another writer left.
pub type Edit<'a> = dyn FnMut(&mut Option<Table>) -> Result<bool> + 'a;

/// Where table definitions are kept.
pub trait Catalog: Send + Sync {
    /// The catalog, for messages (`local catalog in ./lake`, `AWS Glue`).
    fn describe(&self) -> String;

    /// Every table of `database` (none if the database does not exist).
    fn tables(&self, database: &str) -> Result<Vec<Table>>;

    /// One table, if it exists.
    fn table(&self, database: &str, name: &str) -> Result<Option<Table>>;

    /// The table's definition; its partitions may be left out where reading them costs
    /// more than the definition (Glue).
    fn header(&self, database: &str, name: &str) -> Result<Option<Table>> {
        self.table(database, name)
    }

    /// Reads the table, lets `change` modify (or create) it, and writes it back in one
    /// step, unless `change` returns false. If another writer changed the table in
    /// between, the change is applied again to the new version, so no writer's change is
    /// lost. Returns the table as written (or as read, if unchanged).
    fn update(&self, database: &str, name: &str, change: &mut Edit) -> Result<Option<Table>>;

    /// Registers a sink's landing: its partitions, new columns and offset ranges, in one
    /// write, if the writer's claim holds.
    fn register_landing(&self, database: &str, landed: &Landed) -> Result<Registered> {
        let landing = landed.landing;
        let mut outcome = Registered::Done;
        self.update(database, &table_name(landing.table), &mut |table| {
            let Some(table) = table else {
                return Err(Error::not_found(format!(
                    "table {} is not in the catalog (declare it first)",
                    landing.table
                )));
            };
            match landed.apply(table) {
                Ok(_) => {
                    outcome = Registered::Done;
                    Ok(true)
                }
                Err(refused) => {
                    outcome = refused;
                    Ok(false)
                }
            }
        })?;
        Ok(outcome)
    }
}

choices! {
    /// Which catalog backend to use.
    pub enum CatalogKind as "catalog" {
        /// JSON files under `_catalog/` in the lake.
        Local = ["local", "lake"],
        /// The AWS Glue Data Catalog of the configured account and region.
        Glue = ["glue", "aws"],
        /// An Iceberg REST catalog (`catalog_uri`), for Iceberg tables.
        Rest = ["rest"],
    }
}

/// The bucket and prefix of a lake AWS Glue can describe: only one in S3.
pub fn glue_location(lake: &LakeUrl) -> Result<(&str, &str)> {
    match lake {
        LakeUrl::S3 { bucket, prefix } => Ok((bucket, prefix)),
        LakeUrl::Local(_) => Err(Error::config(format!(
            "AWS Glue can only describe a lake in S3, not {:?}: use catalog=\"local\" or an \
             s3:// lake",
            lake.to_string()
        ))),
    }
}

/// Opens the catalog describing the lake at `lake` (whose objects are in `store`).
pub fn open(
    kind: CatalogKind,
    store: Arc<dyn ObjectStore>,
    lake: &LakeUrl,
    aws: &AwsOptions,
) -> Result<Arc<dyn Catalog>> {
    Ok(match kind {
        // A REST catalog holds Iceberg tables only; the lake's Hive tables, if any, are in
        // the lake.
        CatalogKind::Local | CatalogKind::Rest => Arc::new(LocalCatalog::new(store)),
        CatalogKind::Glue => {
            let (bucket, prefix) = glue_location(lake)?;
            Arc::new(GlueCatalog::new(bucket, prefix, aws)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_checked() {
        assert!(check_database("stock_market_2").is_ok());
        for bad in ["", "../x", "Markets", "a-b"] {
            assert!(
                matches!(check_database(bad), Err(e) if e.is(crate::error::Kind::Config)),
                "{bad}"
            );
        }
    }

    #[test]
    fn merged_columns_widen_numbers_and_turn_conflicts_into_text() {
        let key = Column::new("symbol", HiveType::String);
        let mut table = Table::new(DEFAULT_DATABASE, "t", "t", Format::Parquet, vec![key]);
        assert_eq!(table.merge_column("qty", HiveType::Int), Merged::Added);
        assert_eq!(table.merge_column("qty", HiveType::Double), Merged::Kept);
        assert_eq!(table.columns[0].kind, HiveType::Double);
        assert_eq!(
            table.merge_column("qty", HiveType::String),
            Merged::Widened {
                was: HiveType::Double
            }
        );
        assert_eq!(table.merge_column("qty", HiveType::Bigint), Merged::Kept);
        assert_eq!(table.columns[0].kind, HiveType::String);
        assert!(table.widened.contains("qty"));
        // A partition key's type comes from its folders, whatever an object stores.
        assert_eq!(table.merge_column("symbol", HiveType::Bigint), Merged::Kept);
        assert_eq!(table.columns.len(), 1);
    }

    #[test]
    fn table_names_are_what_athena_accepts() {
        assert_eq!(table_name("stock-market"), "stock_market");
        assert_eq!(table_name("Ticks.2021"), "ticks_2021");
    }

    #[test]
    fn partition_paths_follow_the_keys() {
        let table = Table::new(
            DEFAULT_DATABASE,
            "t",
            "t",
            Format::Parquet,
            vec![
                Column {
                    name: "symbol".into(),
                    kind: HiveType::String,
                },
                Column {
                    name: "month".into(),
                    kind: HiveType::String,
                },
            ],
        );
        assert_eq!(
            table.partition_path(&["NYA".into(), "2021-01".into()]),
            "symbol=NYA/month=2021-01"
        );
    }
}
