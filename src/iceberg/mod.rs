//! Iceberg tables in the lake, beside the Hive-style ones: a catalog pointer per table
//! (`pointer`), and the table's metadata, manifests and snapshots (`table`), whose summaries
//! carry the Kafka offsets landed, so the table is where a sink resumes.

pub mod compact;
pub mod metrics;
pub mod pointer;
pub mod read;
pub mod registry;
pub mod schema;
pub mod snapshot;
pub mod table;

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Result;
use crate::lake::{LakeUrl, ObjectStore};
use pointer::{SqlitePointers, CATALOG_NAME};
use table::IcebergCatalog;

/// Where a lake's own Iceberg catalog is: `catalog.db` at the root of a local lake.
pub fn catalog_path(url: &LakeUrl) -> Option<PathBuf> {
    match url {
        LakeUrl::Local(dir) => Some(dir.join("catalog.db")),
        _ => None,
    }
}

/// The Iceberg catalog at `path` (created if need be), namespace `database`, its tables'
/// files in `store`.
pub fn open_catalog(
    path: &std::path::Path,
    store: Arc<dyn ObjectStore>,
    database: &str,
) -> Result<IcebergCatalog> {
    Ok(IcebergCatalog {
        store,
        pointers: Arc::new(SqlitePointers::open(path, CATALOG_NAME)?),
        namespace: database.to_string(),
    })
}
