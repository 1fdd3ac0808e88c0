//! The catalog as the sink's registry: the table's scheme is declared once, each landing
//! registers its partitions, new columns and landed offsets in one catalog write, and a
//! landing into a partition that compaction has moved meanwhile is told where it went.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::schema::body_schema;
use super::{table_name, Catalog, Column, HiveType, LandedRange, Table};
use crate::error::{Error, Result};
use crate::lake::{path_values, Format, Landing, ObjectStore, Registered, Registry, TableSource};

/// A catalog database seen through the sink's [`Registry`] interface.
pub struct CatalogRegistry {
    catalog: Arc<dyn Catalog>,
    store: Arc<dyn ObjectStore>,
    database: String,
}

impl CatalogRegistry {
    pub fn new(catalog: Arc<dyn Catalog>, store: Arc<dyn ObjectStore>, database: &str) -> Self {
        CatalogRegistry {
            catalog,
            store,
            database: database.to_string(),
        }
    }
}

impl Registry for CatalogRegistry {
    fn scheme(&self, table: &str) -> Result<Option<Vec<String>>> {
        Ok(self
            .catalog
            .header(&self.database, &table_name(table))?
            .map(|t| t.partition_keys.into_iter().map(|k| k.name).collect()))
    }

    fn declare(
        &self,
        table: &str,
        format: Format,
        keys: &[String],
        reason: &str,
        source: &TableSource,
    ) -> Result<Vec<String>> {
        // The common case, a restart: nothing to write, and no partitions to read.
        if let Some(existing) = self.catalog.header(&self.database, &table_name(table))? {
            if existing.source.as_ref() == Some(source) {
                return Ok(existing
                    .partition_keys
                    .into_iter()
                    .map(|k| k.name)
                    .collect());
            }
        }
        let declared = self
            .catalog
            .update(&self.database, &table_name(table), &mut |t| {
                match t {
                    // A crawled table, or a sink's from another broker or group: this sink's
                    // topic is where its unlanded records are now.
                    Some(existing) => {
                        let changed = existing.source.as_ref() != Some(source);
                        existing.source = Some(source.clone());
                        Ok(changed)
                    }
                    None => {
                        let mut new = Table::new(
                            &self.database,
                            &table_name(table),
                            table,
                            format,
                            keys.iter().map(|k| partition_column(k)).collect(),
                        );
                        new.partitioning = Some(reason.to_string());
                        new.source = Some(source.clone());
                        *t = Some(new);
                        Ok(true)
                    }
                }
            })?;
        let table = declared.ok_or_else(|| Error::Io(format!("table {table} vanished")))?;
        Ok(table.partition_keys.into_iter().map(|k| k.name).collect())
    }

    fn locations(&self, table: &str) -> Result<BTreeMap<String, String>> {
        Ok(self
            .catalog
            .header(&self.database, &table_name(table))?
            .map(|t| t.locations)
            .unwrap_or_default())
    }

    fn register(&self, landing: &Landing) -> Result<Registered> {
        self.catalog
            .register_landing(&self.database, self.store.as_ref(), landing)
    }
}

/// A partition key column as the sink writes it: symbols are strings, whatever they look
/// like (`0700` stays `0700`); years are numbers; dates are dates; months and hours are
/// strings (`2021-01`, `09`).
pub fn partition_column(key: &str) -> Column {
    let kind = match key {
        "year" => HiveType::Bigint,
        "date" => HiveType::Date,
        _ => HiveType::String,
    };
    Column {
        name: key.to_string(),
        kind,
    }
}

/// The columns of the landing's objects, read from the bytes just written.
pub fn landed_columns(
    store: &dyn ObjectStore,
    landing: &Landing,
) -> Result<Vec<Vec<(String, HiveType)>>> {
    landing
        .objects
        .iter()
        .map(|o| body_schema(landing.format, o.body, &store.url(&o.key)))
        .collect()
}

/// Applies a landing to a table: `Moved` if a partition it wrote to now lives elsewhere,
/// else adds its partitions and columns and records its offset range. Returns the
/// partitions added.
pub fn apply_landing(
    table: &mut Table,
    landing: &Landing,
    columns: &[Vec<(String, HiveType)>],
) -> std::result::Result<Vec<Vec<String>>, Registered> {
    let moved: BTreeMap<String, String> = landing
        .objects
        .iter()
        .filter(|o| table.folder(&o.path) != o.folder)
        .map(|o| (o.path.clone(), table.folder(&o.path)))
        .collect();
    if !moved.is_empty() {
        return Err(Registered::Moved(moved));
    }
    for found in columns {
        merge_columns(table, found);
    }
    let mut added = Vec::new();
    for object in &landing.objects {
        let values = path_values(&object.path);
        if table.partitions.insert(values.clone()) {
            added.push(values);
        }
    }
    let range = table
        .landed
        .entry(landing.partition)
        .or_insert(LandedRange {
            first: landing.first_offset,
            next: landing.next_offset,
        });
    // A replay after a crash may land a shorter range than the one it replaces: what
    // holds now is what was just written.
    *range = LandedRange {
        first: landing.first_offset,
        next: landing.next_offset,
    };
    Ok(added)
}

/// Adds new columns and widens types (a conflict makes the column text).
fn merge_columns(table: &mut Table, found: &[(String, HiveType)]) {
    for (name, kind) in found {
        table.merge_column(name, *kind);
    }
}
