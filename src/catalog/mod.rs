//! What the lake holds, described for query engines: tables with their columns, Hive
//! partition keys and registered partitions. The crawler fills the catalog from the objects;
//! the sink can register partitions as it lands them. Two backends share one interface: a
//! catalog kept as JSON in the lake itself, and AWS Glue (which Athena, Trino and Spark read).

mod crawler;
mod glue;
mod local;
mod schema;

use std::collections::BTreeSet;
use std::sync::Arc;

use polars::prelude::{Field, Schema};
use serde::{Deserialize, Serialize};

pub use crawler::{
    crawl, is_hidden, partition_of, register, Conflict, CrawlOptions, CrawlReport, CrawlState,
    Found, OnError,
};
pub use glue::GlueCatalog;
pub use local::LocalCatalog;
pub use schema::{body_schema, object_schema, HiveType};

use crate::aws::AwsOptions;
use crate::error::{Error, Result};
use crate::lake::{LakeUrl, ObjectStore};
use crate::sink::{escape, Format};

/// The database tables are registered in unless another is named (the tutorial's).
pub const DEFAULT_DATABASE: &str = "stock_market";

/// A column and its catalog type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: HiveType,
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
        Err(Error::Config(format!(
            "database {name:?} is not a valid name: use lowercase letters, digits and underscores"
        )))
    }
}

/// Where table definitions are kept.
pub trait Catalog: Send + Sync {
    /// The catalog, for messages (`local catalog in ./lake`, `AWS Glue`).
    fn describe(&self) -> String;

    /// Every table of `database` (none if the database does not exist).
    fn tables(&self, database: &str) -> Result<Vec<Table>>;

    /// One table, if it exists.
    fn table(&self, database: &str, name: &str) -> Result<Option<Table>>;

    /// Creates the table or replaces its definition, and registers `new_partitions`
    /// (already included in `table.partitions`).
    fn save(&self, table: &Table, new_partitions: &[Vec<String>]) -> Result<()>;
}

/// Which catalog backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogKind {
    /// JSON files under `_catalog/` in the lake.
    Local,
    /// The AWS Glue Data Catalog of the configured account and region.
    Glue,
}

impl CatalogKind {
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "local" | "lake" => Ok(CatalogKind::Local),
            "glue" | "aws" => Ok(CatalogKind::Glue),
            other => Err(Error::Config(format!(
                "catalog {other:?} is not supported: use \"local\" or \"glue\""
            ))),
        }
    }
}

/// Opens the catalog describing the lake at `lake` (whose objects are in `store`).
pub fn open(
    kind: CatalogKind,
    store: Arc<dyn ObjectStore>,
    lake: &str,
    aws: &AwsOptions,
) -> Result<Arc<dyn Catalog>> {
    Ok(match kind {
        CatalogKind::Local => Arc::new(LocalCatalog::new(store)),
        CatalogKind::Glue => {
            let LakeUrl::S3 { bucket, prefix } = LakeUrl::parse(lake)? else {
                return Err(Error::Config(format!(
                    "AWS Glue can only describe a lake in S3, not {lake:?}: use catalog=\"local\" \
                     or an s3:// lake"
                )));
            };
            Arc::new(GlueCatalog::new(&bucket, &prefix, aws)?)
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
                matches!(check_database(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn table_names_are_what_athena_accepts() {
        assert_eq!(table_name("stock-market"), "stock_market");
        assert_eq!(table_name("Ticks.2021"), "ticks_2021");
    }

    #[test]
    fn partition_paths_follow_the_keys() {
        let table = Table {
            database: DEFAULT_DATABASE.into(),
            name: "t".into(),
            location: "t".into(),
            format: Format::Parquet,
            columns: vec![],
            partition_keys: vec![
                Column {
                    name: "symbol".into(),
                    kind: HiveType::String,
                },
                Column {
                    name: "month".into(),
                    kind: HiveType::String,
                },
            ],
            partitions: BTreeSet::new(),
        };
        assert_eq!(
            table.partition_path(&["NYA".into(), "2021-01".into()]),
            "symbol=NYA/month=2021-01"
        );
    }
}
