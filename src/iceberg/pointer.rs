//! Where an Iceberg catalog keeps each table's pointer: the location of its current
//! metadata file, moved from one file to the next by compare-and-swap, which is all the
//! concurrency control Iceberg needs. SQLite here, laid out as pyiceberg's `SqlCatalog`
//! lays it out, so pyiceberg (and anything using it, such as Polars) opens the same tables.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use ::iceberg::spec::TableMetadata;
use rusqlite::{params, Connection, OptionalExtension};

use super::table::Version;

use crate::error::{Error, Result};

/// The catalog name pyiceberg is given for a lake's own catalog.
pub const CATALOG_NAME: &str = "stockstream";

/// How long a writer waits for another writer's transaction on the catalog file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A table's namespace and name.
pub type Name<'a> = (&'a str, &'a str);

/// A catalog's table pointers.
pub trait Pointers: Send + Sync {
    /// The table's current metadata file, if the table exists.
    fn current(&self, name: Name<'_>) -> Result<Option<String>>;

    /// Records a new table whose metadata file is `location` (holding `metadata`): false
    /// if the table exists already (another writer created it first).
    fn create(&self, name: Name<'_>, location: &str, metadata: &TableMetadata) -> Result<bool>;

    /// Moves the table from `read` to `new` if it is still at `read`: the metadata file it
    /// is at then (`new`'s, or one the catalog wrote itself), or `None` if another writer
    /// moved it first.
    fn swap(&self, name: Name<'_>, read: &Version, new: &Version) -> Result<Option<String>>;

    /// The names of the namespace's tables, in order.
    fn tables(&self, namespace: &str) -> Result<Vec<String>>;

    /// Whether each commit must add a snapshot, even one that only sets properties: a
    /// catalog that checks a commit's requirements (the main branch unchanged) rather than
    /// the metadata file it was read from would let two such commits both pass.
    fn commits_move_main(&self) -> bool {
        false
    }
}

/// pyiceberg's SQL catalog in a SQLite file (`SqlCatalog(name, uri="sqlite:///<path>")`).
pub struct SqlitePointers {
    path: PathBuf,
    name: String,
    connection: Mutex<Connection>,
}

impl SqlitePointers {
    /// Opens (creating if need be) the catalog file at `path`, as catalog `name`.
    pub fn open(path: &Path, name: &str) -> Result<Self> {
        let failed = |e: rusqlite::Error| sqlite_error(path, e);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::io(format!("cannot create {}: {e}", dir.display())).caused_by(e)
            })?;
        }
        let connection = Connection::open(path).map_err(failed)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
        // A write-ahead log: one sync per commit instead of the rollback journal's several,
        // and readers (pyiceberg, queries) do not wait for writers.
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(failed)?;
        // The tables and columns pyiceberg's SqlCatalog creates (its "v1" schema, with
        // `iceberg_type`), so either side can create the file.
        connection
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS iceberg_tables (
                    catalog_name VARCHAR(255) NOT NULL,
                    table_namespace VARCHAR(255) NOT NULL,
                    table_name VARCHAR(255) NOT NULL,
                    metadata_location VARCHAR(1000),
                    previous_metadata_location VARCHAR(1000),
                    iceberg_type VARCHAR(5),
                    PRIMARY KEY (catalog_name, table_namespace, table_name));
                 CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
                    catalog_name VARCHAR(255) NOT NULL,
                    namespace VARCHAR(255) NOT NULL,
                    property_key VARCHAR(255) NOT NULL,
                    property_value VARCHAR(1000) NOT NULL,
                    PRIMARY KEY (catalog_name, namespace, property_key));",
            )
            .map_err(failed)?;
        Ok(SqlitePointers {
            path: path.to_path_buf(),
            name: name.to_string(),
            connection: Mutex::new(connection),
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failed(&self, e: rusqlite::Error) -> Error {
        sqlite_error(&self.path, e)
    }
}

fn sqlite_error(path: &Path, e: rusqlite::Error) -> Error {
    let busy = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    Error::io(format!("Iceberg catalog {}: {e}", path.display()))
        .retryable(busy)
        .caused_by(e)
}

impl Pointers for SqlitePointers {
    fn current(&self, (namespace, table): Name<'_>) -> Result<Option<String>> {
        self.connection()
            .query_row(
                "SELECT metadata_location FROM iceberg_tables
                 WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3
                   AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL)",
                params![self.name, namespace, table],
                |row| row.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.failed(e))
    }

    fn create(&self, (namespace, table): Name<'_>, at: &str, _: &TableMetadata) -> Result<bool> {
        let mut connection = self.connection();
        let tx = connection.transaction().map_err(|e| self.failed(e))?;
        // The namespace row pyiceberg's create_namespace writes, so that it lists it.
        tx.execute(
            "INSERT OR IGNORE INTO iceberg_namespace_properties
             (catalog_name, namespace, property_key, property_value)
             VALUES (?1, ?2, 'exists', 'true')",
            params![self.name, namespace],
        )
        .map_err(|e| self.failed(e))?;
        let added = tx
            .execute(
                "INSERT OR IGNORE INTO iceberg_tables
                 (catalog_name, table_namespace, table_name, metadata_location,
                  previous_metadata_location, iceberg_type)
                 VALUES (?1, ?2, ?3, ?4, NULL, 'TABLE')",
                params![self.name, namespace, table, at],
            )
            .map_err(|e| self.failed(e))?;
        tx.commit().map_err(|e| self.failed(e))?;
        Ok(added == 1)
    }

    fn swap(&self, name: Name<'_>, read: &Version, new: &Version) -> Result<Option<String>> {
        let ((namespace, table), old, new) = (name, &read.location, &new.location);
        let moved = self
            .connection()
            .execute(
                "UPDATE iceberg_tables
                 SET metadata_location = ?4, previous_metadata_location = ?5
                 WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3
                   AND metadata_location = ?5",
                params![self.name, namespace, table, new, old],
            )
            .map_err(|e| self.failed(e))?;
        Ok((moved == 1).then(|| new.to_string()))
    }

    fn tables(&self, namespace: &str) -> Result<Vec<String>> {
        let connection = self.connection();
        let mut statement = connection
            .prepare(
                "SELECT table_name FROM iceberg_tables
                 WHERE catalog_name = ?1 AND table_namespace = ?2
                   AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL)
                 ORDER BY table_name",
            )
            .map_err(|e| self.failed(e))?;
        let names = statement
            .query_map(params![self.name, namespace], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.failed(e));
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table at metadata file `location`.
    fn at(location: &str) -> Version {
        Version {
            location: location.into(),
            metadata: metadata().into(),
        }
    }

    /// Metadata of some table: the SQL catalog records only where it is.
    fn metadata() -> TableMetadata {
        let schema = ::iceberg::spec::Schema::builder().build().unwrap();
        let spec = ::iceberg::spec::UnboundPartitionSpec::builder().build();
        let order = ::iceberg::spec::SortOrder::unsorted_order();
        let v2 = ::iceberg::spec::FormatVersion::V2;
        let builder = ::iceberg::spec::TableMetadataBuilder::new(
            schema,
            spec,
            order,
            "file:///t".into(),
            v2,
            Default::default(),
        );
        builder.unwrap().build().unwrap().metadata
    }

    #[test]
    fn a_table_is_created_once_and_moves_only_from_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let m = metadata();
        let a = SqlitePointers::open(&path, CATALOG_NAME).unwrap();
        let b = SqlitePointers::open(&path, CATALOG_NAME).unwrap();
        assert_eq!(a.current(("db", "t")).unwrap(), None);
        assert!(a.create(("db", "t"), "m0", &m).unwrap());
        assert!(!b.create(("db", "t"), "other", &m).unwrap());
        assert_eq!(b.current(("db", "t")).unwrap().as_deref(), Some("m0"));
        assert_eq!(
            b.swap(("db", "t"), &at("m0"), &at("m1"))
                .unwrap()
                .as_deref(),
            Some("m1")
        );
        // `a` read m0 before `b` moved the table: its swap is refused.
        assert_eq!(a.swap(("db", "t"), &at("m0"), &at("m2")).unwrap(), None);
        assert_eq!(a.current(("db", "t")).unwrap().as_deref(), Some("m1"));
        // Another catalog name in the same file is another catalog.
        let c = SqlitePointers::open(&path, "elsewhere").unwrap();
        assert_eq!(c.current(("db", "t")).unwrap(), None);
        assert!(a.create(("db", "a"), "m0", &m).unwrap());
        assert_eq!(b.tables("db").unwrap(), ["a", "t"]);
        assert!(c.tables("db").unwrap().is_empty());
    }
}
