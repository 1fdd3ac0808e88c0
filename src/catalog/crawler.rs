//! The crawler: finds tables (top-level folders) and Hive partitions (`key=value/` folders)
//! in the lake, reads each new object's schema (a Parquet footer, or a sample of JSON lines)
//! and merges it into the table: later columns are added, integers widen to doubles, and a
//! type conflict is reported with the files involved. What was read is remembered in
//! `_catalog/<database>/_crawler/<table>.json`, so the next crawl reads only new objects.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::schema::object_schema;
use super::{partition_column, table_name, Catalog, Column, HiveType, Merged, Table};
use crate::error::{Error, Result};
use crate::lake::document;
use crate::lake::{is_hidden, partition_of, Format, ObjectName, PartitionKey};
use crate::lake::{ObjectMeta, ObjectStore};
use crate::parallel;
use crate::progress::Counter;

choices! {
    /// What to do with an object that cannot be read.
    pub enum OnError as "on_error" {
        /// Report it by name, leave it out of the table, and go on.
        Skip = ["skip"],
        /// Stop the crawl with an error naming it.
        Raise = ["raise"],
    }
}

/// What to crawl.
#[derive(Debug, Clone)]
pub struct CrawlOptions {
    pub database: String,
    /// Only this table (by table or folder name); every folder when `None`.
    pub table: Option<String>,
    pub on_error: OnError,
    /// Counts the objects read, for a caller showing progress.
    pub read: Counter,
}

/// The folder below the lake root holding the crawler's memory of each table.
const CRAWLER_DIR: &str = "_crawler";

/// The crawler's memory of one table, kept in the lake beside the catalog.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CrawlState {
    /// Objects already read, with their sizes: a rewritten object is read again.
    pub objects: BTreeMap<String, u64>,
    /// The first object each column was seen in, to name the files of a type conflict.
    pub column_sources: BTreeMap<String, String>,
    /// Objects that could not be read, and why; queries leave them out.
    pub unreadable: BTreeMap<String, String>,
}

impl CrawlState {
    fn key(database: &str, table: &str) -> String {
        format!("{CRAWLER_DIR}/{database}/{table}")
    }

    /// The state of `table`, empty if it was never crawled.
    pub fn load(store: &dyn ObjectStore, database: &str, table: &str) -> Result<Self> {
        Ok(document::read(store, &Self::key(database, table))?
            .map(|(state, _)| state)
            .unwrap_or_default())
    }

    /// Saves what this crawl learnt, merged with what another crawl (or a sink, through
    /// the catalog) saved meanwhile: neither loses the other's objects.
    fn save(&self, store: &dyn ObjectStore, database: &str, table: &str) -> Result<()> {
        document::update(store, &Self::key(database, table), &mut |current| {
            let mut merged: CrawlState = current.take().unwrap_or_default();
            for key in self.objects.keys() {
                merged.unreadable.remove(key);
            }
            merged.objects.extend(self.objects.clone());
            merged.unreadable.extend(self.unreadable.clone());
            for (column, source) in &self.column_sources {
                merged
                    .column_sources
                    .entry(column.clone())
                    .or_insert_with(|| source.clone());
            }
            *current = Some(merged);
            Ok(true)
        })
        .map(|_| ())
    }
}

/// Two types found for one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub table: String,
    pub column: String,
    /// The type in the catalog, and the object it was first seen in.
    pub existing: HiveType,
    /// The type found in `files[1]`.
    pub found: HiveType,
    pub files: Vec<String>,
}

/// What a crawl (or a sink's registration) changed.
#[derive(Debug, Clone, Default)]
pub struct CrawlReport {
    pub tables_created: Vec<String>,
    pub tables_updated: Vec<String>,
    /// `(table, partition folder)`.
    pub partitions_added: Vec<(String, String)>,
    /// `(table, column, type)`.
    pub columns_added: Vec<(String, String, HiveType)>,
    pub conflicts: Vec<Conflict>,
    /// Objects left out of their table, by URL, and why.
    pub skipped: Vec<(String, String)>,
    /// Objects whose schema was read.
    pub objects_read: usize,
    /// Objects already crawled and unchanged, not read again.
    pub objects_unchanged: usize,
}

/// One new object of a table: where it is and what it holds.
pub struct Found {
    pub key: String,
    pub size: u64,
    /// The `key=value` folders between the table folder and the object.
    pub partition: Vec<(String, String)>,
    pub columns: Result<Vec<(String, HiveType)>>,
}

/// Crawls the lake (or one table of it) into `catalog`.
pub fn crawl(
    store: &dyn ObjectStore,
    catalog: &dyn Catalog,
    options: &CrawlOptions,
) -> Result<CrawlReport> {
    let mut report = CrawlReport::default();
    let mut folders: BTreeMap<String, Vec<ObjectMeta>> = BTreeMap::new();
    let mut iceberg = BTreeSet::new();
    for object in store.list("")? {
        let Some((folder, rest)) = object.key.split_once('/') else {
            continue;
        };
        // An Iceberg table's snapshots say which of its files are the table: a listing
        // cannot, so such a folder is no Hive table.
        if rest.starts_with("metadata/") && rest.ends_with(".metadata.json") {
            iceberg.insert(folder.to_string());
        }
        if is_hidden(&object.key) || Format::of(&object.key).is_none() {
            continue;
        }
        if let Some(wanted) = &options.table {
            if folder != wanted && table_name(folder) != *wanted {
                continue;
            }
        }
        folders.entry(folder.to_string()).or_default().push(object);
    }
    folders.retain(|folder, _| !iceberg.contains(folder));
    if let Some(wanted) = &options.table {
        if iceberg.contains(wanted) {
            return Err(Error::config(format!(
                "{wanted} is an Iceberg table: its snapshots describe it, there is nothing \
                 to crawl"
            )));
        }
        if folders.is_empty() {
            return Err(Error::not_found(format!(
                "no table {wanted:?} in {}: no data objects in that folder",
                store.url("")
            )));
        }
    }
    for (folder, objects) in folders {
        let name = table_name(&folder);
        let state = CrawlState::load(store, &options.database, &name)?;
        let header = catalog.header(&options.database, &name)?;
        let (fresh, unchanged): (Vec<_>, Vec<_>) = objects.into_iter().partition(|o| {
            state.objects.get(&o.key) != Some(&o.size)
                && !header.as_ref().is_some_and(|t| landed_by_sink(t, &o.key))
        });
        report.objects_unchanged += unchanged.len();
        if fresh.is_empty() {
            continue;
        }
        let found = parallel::map(&fresh, |object| {
            let format = Format::of(&object.key).unwrap_or(Format::Parquet);
            Found {
                key: object.key.clone(),
                size: object.size,
                partition: partition_of(&folder, &object.key),
                columns: {
                    let columns = object_schema(store, &object.key, object.size, format);
                    options.read.add(1);
                    columns
                },
            }
        });
        if options.on_error == OnError::Raise {
            if let Some(i) = found.iter().position(|f| f.columns.is_err()) {
                return found.into_iter().nth(i).unwrap().columns.map(|_| report);
            }
        }
        record(
            store,
            catalog,
            &options.database,
            &folder,
            state,
            found,
            &mut report,
        )?;
    }
    Ok(report)
}

/// Merges `found` into the folder's table and saves the table and the crawl state. The
/// table is updated in one conditional step, so a sink registering partitions meanwhile
/// loses nothing.
fn record(
    store: &dyn ObjectStore,
    catalog: &dyn Catalog,
    database: &str,
    folder: &str,
    state: CrawlState,
    found: Vec<Found>,
    report: &mut CrawlReport,
) -> Result<()> {
    let name = table_name(folder);
    let start = report.clone();
    let mut final_state = state.clone();
    catalog.update(database, &name, &mut |existing| {
        // Applied afresh to each version of the table read.
        *report = start.clone();
        let mut state = state.clone();
        let created = existing.is_none();
        let mut table = match existing.take() {
            Some(table) => table,
            None => match new_table(database, folder, &found) {
                Some(table) => table,
                // Nothing readable yet: report why, and create the table once something is.
                None => {
                    for object in &found {
                        if let Err(e) = &object.columns {
                            report.skipped.push((store.url(&object.key), e.to_string()));
                        }
                    }
                    final_state = state;
                    return Ok(false);
                }
            },
        };
        let before = table.clone();
        for object in &found {
            let url = store.url(&object.key);
            let columns = match &object.columns {
                Ok(columns) => columns,
                // A corrupt object stays out until it is rewritten (its size changes); one
                // that could not be fetched is tried again by the next crawl.
                Err(e) if e.is(crate::error::Kind::Schema) => {
                    state.objects.insert(object.key.clone(), object.size);
                    state.unreadable.insert(object.key.clone(), e.to_string());
                    report.skipped.push((url, e.to_string()));
                    continue;
                }
                Err(e) => {
                    report.skipped.push((url, e.to_string()));
                    continue;
                }
            };
            state.objects.insert(object.key.clone(), object.size);
            state.unreadable.remove(&object.key);
            report.objects_read += 1;
            if let Err(why) = fits(&table, &object.key, &object.partition) {
                report.skipped.push((url, why));
                continue;
            }
            for (column, kind) in columns {
                merge_column(
                    &mut table,
                    &mut state,
                    report,
                    &object.key,
                    &url,
                    column.clone(),
                    *kind,
                    store,
                );
            }
            let values: Vec<String> = object.partition.iter().map(|(_, v)| v.clone()).collect();
            if table.partitions.insert(values.clone()) {
                report
                    .partitions_added
                    .push((name.clone(), table.partition_path(&values)));
            }
        }
        let changed = table != before || created;
        if changed {
            if created {
                report.tables_created.push(name.clone());
            } else {
                report.tables_updated.push(name.clone());
            }
        }
        final_state = state;
        *existing = Some(table);
        Ok(changed)
    })?;
    final_state.save(store, database, &name)
}

/// Whether a sink registered `key` when it landed it (its columns are in the catalog).
fn landed_by_sink(table: &Table, key: &str) -> bool {
    let Some(source) = &table.source else {
        return false;
    };
    ObjectName::parse(key, &source.topic).is_some_and(|n| {
        table
            .landed
            .get(&n.partition)
            .is_some_and(|l| n.first_offset < l.next)
    })
}

/// A table for a folder seen for the first time: its partition keys come from the first
/// readable object's folders. The sink's own folder keys get the sink's types (a symbol is
/// text even when the first ones look like numbers, as `0700` does); others are typed from
/// all the values found.
fn new_table(database: &str, folder: &str, found: &[Found]) -> Option<Table> {
    let first = found.iter().find(|f| f.columns.is_ok())?;
    let format = Format::of(&first.key)?;
    let keys: Vec<&str> = first.partition.iter().map(|(k, _)| k.as_str()).collect();
    let partition_keys = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            if str::parse::<PartitionKey>(key).is_ok_and(|k| k.name() == *key) {
                return partition_column(key);
            }
            let values: Vec<&str> = found
                .iter()
                .filter(|f| f.partition.len() == keys.len())
                .filter(|f| f.partition[i].0 == *key)
                .map(|f| f.partition[i].1.as_str())
                .collect();
            Column {
                name: key.to_string(),
                kind: HiveType::infer_partition(&values),
            }
        })
        .collect();
    Some(Table::new(
        database,
        &table_name(folder),
        folder,
        format,
        partition_keys,
    ))
}

/// Why an object cannot belong to `table`, if it cannot.
fn fits(
    table: &Table,
    key: &str,
    partition: &[(String, String)],
) -> std::result::Result<(), String> {
    if Format::of(key) != Some(table.format) {
        return Err(format!(
            "not {} like the rest of table {}",
            table.format.name(),
            table.name
        ));
    }
    let names: Vec<&str> = partition.iter().map(|(k, _)| k.as_str()).collect();
    let expected: Vec<&str> = table
        .partition_keys
        .iter()
        .map(|k| k.name.as_str())
        .collect();
    if names != expected {
        return Err(format!(
            "its folders are {names:?}, but table {} is partitioned by {expected:?}",
            table.name
        ));
    }
    for ((k, v), column) in partition.iter().zip(&table.partition_keys) {
        if !column.kind.accepts_partition_value(v) {
            return Err(format!(
                "partition value {k}={v} is not a {}",
                column.kind.name()
            ));
        }
    }
    Ok(())
}

/// Adds a column or widens its type; a conflict (the column becomes text) is reported
/// with both files.
#[allow(clippy::too_many_arguments)]
fn merge_column(
    table: &mut Table,
    state: &mut CrawlState,
    report: &mut CrawlReport,
    key: &str,
    url: &str,
    column: String,
    kind: HiveType,
    store: &dyn ObjectStore,
) {
    match table.merge_column(&column, kind) {
        Merged::Kept => {}
        Merged::Added => {
            report
                .columns_added
                .push((table.name.clone(), column.clone(), kind));
            state.column_sources.insert(column, key.to_string());
        }
        Merged::Widened { was } => {
            let first = state
                .column_sources
                .get(&column)
                .map_or_else(|| "an earlier object".to_string(), |k| store.url(k));
            report.conflicts.push(Conflict {
                table: table.name.clone(),
                column,
                existing: was,
                found: kind,
                files: vec![first, url.to_string()],
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crawl_states_saved_from_stale_reads_keep_each_others_objects() {
        let (_dir, store) = crate::testing::local_lake();
        let mut a = CrawlState::load(store.as_ref(), "db", "t").unwrap();
        let mut b = CrawlState::load(store.as_ref(), "db", "t").unwrap();
        a.objects.insert("t/a.parquet".into(), 1);
        a.unreadable.insert("t/c.parquet".into(), "corrupt".into());
        b.objects.insert("t/b.parquet".into(), 2);
        b.objects.insert("t/c.parquet".into(), 3);
        a.save(store.as_ref(), "db", "t").unwrap();
        b.save(store.as_ref(), "db", "t").unwrap();
        let both = CrawlState::load(store.as_ref(), "db", "t").unwrap();
        assert_eq!(both.objects.len(), 3);
        // b read c (rewritten, size 3) after a found it unreadable.
        assert!(both.unreadable.is_empty());
    }
}
