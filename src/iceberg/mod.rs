//! Iceberg tables in the lake, beside the Hive-style ones: a catalog pointer per table
//! (`pointer`), and the table's metadata, manifests and snapshots (`table`), whose summaries
//! carry the Kafka offsets landed, so the table is where a sink resumes.

pub mod compact;
pub mod glue;
pub mod metrics;
pub mod pointer;
pub mod read;
pub mod registry;
pub mod rest;
pub mod schema;
pub mod snapshot;
pub mod table;

use std::path::PathBuf;
use std::sync::Arc;

use crate::aws::AwsOptions;
use crate::catalog::{glue_location, CatalogKind, GlueCatalog};
use crate::error::{Error, Result};
use crate::lake::{LakeUrl, ObjectStore};
use pointer::{Pointers, SqlitePointers, CATALOG_NAME};
use table::IcebergCatalog;

/// Where a lake's Iceberg tables are catalogued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogAt {
    /// pyiceberg's SQL catalog in a SQLite file.
    Sqlite(PathBuf),
    /// The AWS Glue Data Catalog (tables Athena reads as Iceberg).
    Glue,
    /// A REST catalog at this URL.
    Rest(String),
}

/// The Iceberg catalog that `catalog` (and `uri`) name for the lake at `url`: the SQLite
/// file `catalog.db` in a local lake, or the SQLite file `uri` names (an `s3://` lake tried
/// without AWS), or Glue for an `s3://` lake.
pub fn catalog_at(
    url: &LakeUrl,
    catalog: Option<CatalogKind>,
    uri: Option<&str>,
) -> Result<CatalogAt> {
    let file = uri.map(|u| {
        PathBuf::from(
            u.strip_prefix("sqlite:///")
                .map_or(u.to_string(), |p| format!("/{p}")),
        )
    });
    match (catalog, url, file) {
        (Some(CatalogKind::Local), _, Some(path)) => Ok(CatalogAt::Sqlite(path)),
        (Some(CatalogKind::Local), LakeUrl::Local(dir), None) => {
            Ok(CatalogAt::Sqlite(dir.join("catalog.db")))
        }
        (Some(CatalogKind::Glue), _, None) => glue_location(url).map(|_| CatalogAt::Glue),
        (Some(CatalogKind::Glue), _, Some(_)) => Err(Error::config(
            "catalog_uri names a SQLite catalog file: leave it unset with catalog=\"glue\"",
        )),
        (Some(CatalogKind::Local), _, None) => Err(Error::config(format!(
            "the Iceberg tables of lake {:?} need a catalog: catalog=\"glue\", or \
             catalog_uri=<the path of a SQLite catalog file> with catalog=\"local\"",
            url.to_string()
        ))),
        (Some(CatalogKind::Rest), _, Some(_)) => {
            Ok(CatalogAt::Rest(uri.unwrap_or_default().to_string()))
        }
        (Some(CatalogKind::Rest), _, None) => Err(Error::config(
            "catalog=\"rest\" needs catalog_uri=<the catalog's URL> (http://host:8181)",
        )),
        (None, _, _) => Err(Error::config(
            "an Iceberg table needs a catalog (its pointer to the current metadata): \
             catalog=\"local\" or \"glue\"",
        )),
    }
}

/// The Iceberg catalog `at`, namespace `database`, its tables' files in `store`.
pub fn open_catalog(
    at: &CatalogAt,
    url: &LakeUrl,
    store: Arc<dyn ObjectStore>,
    database: &str,
    aws: &AwsOptions,
) -> Result<IcebergCatalog> {
    let pointers: Arc<dyn Pointers> = match at {
        CatalogAt::Sqlite(path) => Arc::new(SqlitePointers::open(path, CATALOG_NAME)?),
        CatalogAt::Glue => {
            let (bucket, prefix) = glue_location(url)?;
            Arc::new(glue::GluePointers(GlueCatalog::new(bucket, prefix, aws)?))
        }
        CatalogAt::Rest(uri) => Arc::new(rest::RestPointers::open(uri)?),
    };
    Ok(IcebergCatalog::new(store, pointers, database))
}
