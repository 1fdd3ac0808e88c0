//! Compaction: the many small objects a steady stream rolls into a partition folder (age
//! and idle rolls) are merged into objects of a target size, written to a new versioned
//! folder of the partition (`date=2021-01-04/_v<version>/`), and the partition's location
//! is switched in the catalog in one step, which is what Glue, Athena and `Lake.sql` read.
//! The old folder is deleted only after a grace period, so queries that listed it before
//! the switch can finish.
//!
//! Only registered objects are merged: a sink never rewrites them (it resumes after the
//! table's landed offsets, and creates objects only where none is). Objects not registered
//! yet are left to their sink, whose registration is refused for a moved partition and
//! which then rewrites them in the new folder. A compaction records the folder it writes
//! before writing it, and a versioned folder that no version of the table refers to, as a
//! partition's location, a retired folder within its grace period or a staged one, is
//! deleted: what a killed or outraced compaction left.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use polars::prelude::*;

use super::{table_name, Catalog, Retired, Table};
use crate::error::{Error, Result};
use crate::lake::{is_hidden, table_folder, Format, ObjectMeta, ObjectStore};
use crate::progress::Counter;
use crate::record::time::now_millis;

/// What to compact and how.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    pub database: String,
    /// Only this table; every table of the database when `None`.
    pub table: Option<String>,
    /// Merged objects are about this size (bytes of the objects merged into each).
    pub target_bytes: u64,
    /// A folder is compacted when it holds at least this many objects smaller than the target.
    pub min_objects: usize,
    /// Replaced folders are deleted this long after the switch.
    pub grace: Duration,
    /// Counts the partitions looked at, for a caller showing progress.
    pub done: Counter,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            database: super::DEFAULT_DATABASE.to_string(),
            table: None,
            target_bytes: 128 << 20,
            min_objects: 2,
            grace: Duration::from_secs(3600),
            done: Counter::default(),
        }
    }
}

impl CompactOptions {
    pub fn validate(&self) -> Result<()> {
        if self.target_bytes == 0 {
            return Err(Error::config("target_bytes must be positive"));
        }
        if self.min_objects < 2 {
            return Err(Error::config(
                "min_objects must be at least 2 (merging one object changes nothing)",
            ));
        }
        Ok(())
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Default)]
pub struct CompactReport {
    /// `(table, partition path)` of each partition moved to a new folder.
    pub partitions: Vec<(String, String)>,
    pub objects_merged: usize,
    pub objects_written: usize,
    /// Registered objects carried to the new folder unmerged (a sink may still rewrite them).
    pub objects_carried: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Replaced folders deleted (their grace period over), and their objects.
    pub folders_deleted: usize,
    pub objects_deleted: usize,
    /// Iceberg snapshots expired (older than the grace period).
    pub snapshots_expired: usize,
    /// Partitions another compaction moved first; their work was discarded.
    pub raced: usize,
    pub elapsed: Duration,
}

/// Compacts the tables of `options.database` (or one of them).
pub fn compact(
    store: &dyn ObjectStore,
    catalog: &dyn Catalog,
    options: &CompactOptions,
) -> Result<CompactReport> {
    options.validate()?;
    let started = Instant::now();
    let mut report = CompactReport::default();
    let tables = match &options.table {
        Some(name) => {
            let name = table_name(name);
            match catalog.table(&options.database, &name)? {
                Some(t) => vec![t],
                None => {
                    return Err(Error::not_found(format!(
                        "no table {name:?} in database {:?} of {}",
                        options.database,
                        catalog.describe()
                    )))
                }
            }
        }
        None => catalog.tables(&options.database)?,
    };
    for table in tables {
        delete_retired(store, catalog, &table, options.grace, &mut report)?;
        let paths: Vec<String> = if table.partition_keys.is_empty() {
            vec![String::new()]
        } else {
            table
                .partitions
                .iter()
                .map(|v| table.partition_path(v))
                .collect()
        };
        // One listing of the table serves every partition.
        let mut by_folder: BTreeMap<String, Vec<ObjectMeta>> = BTreeMap::new();
        for object in store.list(&format!("{}/", table.location))? {
            if let Some((folder, _)) = object.key.rsplit_once('/') {
                by_folder
                    .entry(folder.to_string())
                    .or_default()
                    .push(object);
            }
        }
        let mut partitions = Vec::new();
        for path in paths {
            let folder = table.folder(&path);
            let objects = by_folder.remove(&folder).unwrap_or_default();
            partitions.push((path, objects));
        }
        delete_orphans(store, catalog, &table, by_folder, &mut report)?;
        for (path, objects) in partitions {
            compact_partition(store, catalog, &table, &path, objects, options, &mut report)?;
            options.done.add(1);
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Data objects of `table` directly in one folder.
fn data_objects(table: &Table, objects: Vec<ObjectMeta>) -> Vec<ObjectMeta> {
    objects
        .into_iter()
        .filter(|o| {
            let name = o.key.rsplit('/').next().unwrap_or_default();
            !is_hidden(name) && Format::of(name) == Some(table.format)
        })
        .collect()
}

fn compact_partition(
    store: &dyn ObjectStore,
    catalog: &dyn Catalog,
    table: &Table,
    path: &str,
    objects: Vec<ObjectMeta>,
    options: &CompactOptions,
    report: &mut CompactReport,
) -> Result<()> {
    let old_folder = table.folder(path);
    let mut objects = data_objects(table, objects);
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    let small: Vec<&ObjectMeta> = objects
        .iter()
        .filter(|o| o.size < options.target_bytes && table.visible(&o.key))
        .collect();
    if small.len() < options.min_objects {
        return Ok(());
    }
    let version = version_name();
    let new_folder = format!("{}/_v{version}", table_folder(&table.location, path));
    // Recorded before anything is written in it, so that no cleanup takes it for nobody's.
    let staged = Retired {
        folder: new_folder.clone(),
        at_ms: now_millis(),
    };
    catalog.update(&table.database, &table.name, &mut |current| {
        let Some(current) = current else {
            return Ok(false);
        };
        current.staged.push(staged.clone());
        Ok(true)
    })?;
    let merged: BTreeSet<&str> = small.iter().map(|o| o.key.as_str()).collect();
    let mut written = Vec::new();
    let bins = bins(&small, options.target_bytes);
    for (seq, bin) in bins.iter().enumerate() {
        let body = merge(store, table.format, bin)?;
        let key = format!(
            "{new_folder}/compacted-{seq:05}.{}",
            table.format.extension()
        );
        store.put(&key, &body)?;
        report.bytes_read += bin.iter().map(|o| o.size).sum::<u64>();
        report.bytes_written += body.len() as u64;
        written.push(key);
    }
    // Carry what queries see in the old folder and was not merged, then switch, in one
    // catalog step that re-checks both against the table as it is then.
    let mut carried: BTreeSet<String> = BTreeSet::new();
    let mut raced = false;
    catalog.update(&table.database, &table.name, &mut |current| {
        raced = false;
        let Some(current) = current else {
            raced = true;
            return Ok(false);
        };
        current.staged.retain(|s| s.folder != new_folder);
        if current.folder(path) != old_folder {
            raced = true;
            return Ok(true);
        }
        let now = data_objects(current, store.list(&format!("{old_folder}/"))?);
        for object in now {
            let direct = object.key.rsplit_once('/').map(|(f, _)| f) == Some(old_folder.as_str());
            if !direct || merged.contains(object.key.as_str()) || carried.contains(&object.key) {
                continue;
            }
            if current.visible(&object.key) {
                let name = object.key.rsplit('/').next().unwrap_or_default();
                let body = store.read(&object.key, crate::lake::ByteRange::All)?;
                store.put(&format!("{new_folder}/{name}"), &body)?;
                carried.insert(object.key.clone());
            }
        }
        current
            .locations
            .insert(path.to_string(), new_folder.clone());
        current.retired.push(Retired {
            folder: old_folder.clone(),
            at_ms: now_millis(),
        });
        Ok(true)
    })?;
    if raced {
        // Another compaction switched this partition first: ours is nobody's.
        let ours: Vec<String> = written
            .into_iter()
            .chain(
                carried
                    .iter()
                    .map(|k| format!("{new_folder}/{}", k.rsplit('/').next().unwrap_or_default())),
            )
            .collect();
        store.delete(&ours)?;
        report.raced += 1;
        return Ok(());
    }
    report
        .partitions
        .push((table.name.clone(), path.to_string()));
    report.objects_merged += merged.len();
    report.objects_written += written.len();
    report.objects_carried += carried.len();
    Ok(())
}

/// One object holding the rows of `objects`, in their order.
fn merge(store: &dyn ObjectStore, format: Format, objects: &[&ObjectMeta]) -> Result<Vec<u8>> {
    let bodies = crate::parallel::map(objects, |o| store.read(&o.key, crate::lake::ByteRange::All));
    match format {
        // JSON lines concatenate as they are.
        Format::Ndjson => {
            let mut out = Vec::new();
            for body in bodies {
                let body = body?;
                out.extend_from_slice(&body);
                if !out.is_empty() && !out.ends_with(b"\n") {
                    out.push(b'\n');
                }
            }
            Ok(out)
        }
        Format::Parquet => {
            let mut frame = merged_frame(store, objects, bodies)?;
            let mut out = Vec::new();
            ParquetWriter::new(&mut out)
                .with_compression(ParquetCompression::Zstd(None))
                .finish(&mut frame)
                .map_err(|e| Error::io(format!("writing a merged object failed: {e}")))?;
            Ok(out)
        }
    }
}

/// `objects` in bins of about `target` bytes, in order.
pub(crate) fn bins<'o>(objects: &[&'o ObjectMeta], target: u64) -> Vec<Vec<&'o ObjectMeta>> {
    let mut bins: Vec<Vec<&ObjectMeta>> = vec![Vec::new()];
    let mut bin_bytes = 0u64;
    for object in objects {
        if bin_bytes > 0 && bin_bytes + object.size > target {
            bins.push(Vec::new());
            bin_bytes = 0;
        }
        bin_bytes += object.size;
        bins.last_mut().expect("one bin at least").push(object);
    }
    bins
}

/// The rows of the Parquet `objects` (read as `bodies`), in their order, with every
/// column any of them has.
pub(crate) fn merged_frame(
    store: &dyn ObjectStore,
    objects: &[&ObjectMeta],
    bodies: Vec<Result<Vec<u8>>>,
) -> Result<DataFrame> {
    let frames = bodies
        .into_iter()
        .zip(objects)
        .map(|(body, o)| {
            ParquetReader::new(Cursor::new(body?))
                .finish()
                .map(|f| f.lazy())
                .map_err(|e| Error::schema(format!("{} cannot be read: {e}", store.url(&o.key))))
        })
        .collect::<Result<Vec<_>>>()?;
    // Objects written before a column appeared lack it: the union has every column.
    concat(
        frames,
        UnionArgs {
            diagonal: true,
            to_supertypes: true,
            ..Default::default()
        },
    )
    .and_then(|lf| lf.collect())
    .map_err(|e| Error::io(format!("merging objects failed: {e}")))
}

/// Deletes the versioned folders the table does not refer to: not a partition's location,
/// not retired or staged (those go when their grace period is over).
fn delete_orphans(
    store: &dyn ObjectStore,
    catalog: &dyn Catalog,
    table: &Table,
    others: BTreeMap<String, Vec<ObjectMeta>>,
    report: &mut CompactReport,
) -> Result<()> {
    // The table as it is now, read after the listing: a concurrent compaction records its
    // folder before writing into it, and a switch or a sink's rewrite into a moved folder
    // is recorded before the listing could show it, so nothing listed is missed here.
    let Some(now) = catalog.table(&table.database, &table.name)? else {
        return Ok(());
    };
    let referred: BTreeSet<&str> = (now.retired.iter().chain(&now.staged))
        .map(|r| r.folder.as_str())
        .chain(now.locations.values().map(String::as_str))
        .collect();
    for (folder, objects) in others {
        let versioned = folder
            .rsplit('/')
            .next()
            .is_some_and(|v| v.starts_with("_v"));
        if !versioned || referred.contains(folder.as_str()) {
            continue;
        }
        let keys: Vec<String> = objects.into_iter().map(|o| o.key).collect();
        report.objects_deleted += keys.len();
        report.folders_deleted += 1;
        store.delete(&keys)?;
    }
    Ok(())
}

/// Deletes the folders whose grace period is over (retired ones, and staged ones of
/// compactions that never switched), then forgets them in the catalog.
fn delete_retired(
    store: &dyn ObjectStore,
    catalog: &dyn Catalog,
    table: &Table,
    grace: Duration,
    report: &mut CompactReport,
) -> Result<()> {
    let due_before = now_millis() - grace.as_millis() as i64;
    let current: BTreeSet<String> = table.locations.values().cloned().collect();
    let due: Vec<&Retired> = table
        .retired
        .iter()
        .chain(&table.staged)
        .filter(|r| r.at_ms <= due_before && !current.contains(&r.folder))
        .collect();
    if due.is_empty() {
        return Ok(());
    }
    for retired in &due {
        // Only the folder's own objects: newer versions live in folders below it.
        let keys: Vec<String> = store
            .list(&format!("{}/", retired.folder))?
            .into_iter()
            .filter(|o| o.key.rsplit_once('/').map(|(f, _)| f) == Some(retired.folder.as_str()))
            .map(|o| o.key)
            .collect();
        report.objects_deleted += keys.len();
        store.delete(&keys)?;
        report.folders_deleted += 1;
    }
    let done: BTreeSet<String> = due.iter().map(|r| r.folder.clone()).collect();
    catalog.update(&table.database, &table.name, &mut |current| {
        let Some(current) = current else {
            return Ok(false);
        };
        let before = current.retired.len() + current.staged.len();
        current.retired.retain(|r| !done.contains(&r.folder));
        current.staged.retain(|r| !done.contains(&r.folder));
        Ok(current.retired.len() + current.staged.len() != before)
    })?;
    Ok(())
}

/// A version folder name no other compaction picks: the time, and randomness.
fn version_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let random = std::collections::hash_map::RandomState::new();
    let salt = std::hash::BuildHasher::hash_one(&random, (nanos, std::process::id()));
    format!("{}-{:08x}", nanos / 1_000_000, salt as u32)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::catalog::{Column, HiveType, LocalCatalog, DEFAULT_DATABASE as DB};
    use crate::lake::{ByteRange, LandedRange, TableSource};

    struct Lake {
        _dir: tempfile::TempDir,
        store: Arc<dyn ObjectStore>,
        catalog: LocalCatalog,
    }

    fn lake(table: Table) -> Lake {
        let (dir, store) = crate::testing::local_lake();
        let catalog = LocalCatalog::new(store.clone());
        catalog
            .update(DB, &table.name, &mut |t| {
                *t = Some(table.clone());
                Ok(true)
            })
            .unwrap();
        Lake {
            _dir: dir,
            store,
            catalog,
        }
    }

    impl Lake {
        fn compact(&self, grace: Duration) -> CompactReport {
            let options = CompactOptions {
                grace,
                ..CompactOptions::default()
            };
            compact(self.store.as_ref(), &self.catalog, &options).unwrap()
        }

        fn table(&self, name: &str) -> Table {
            self.catalog.table(DB, name).unwrap().unwrap()
        }

        fn text(&self, key: &str) -> String {
            String::from_utf8(self.store.read(key, ByteRange::All).unwrap()).unwrap()
        }

        fn keys(&self, prefix: &str) -> Vec<String> {
            self.store
                .list(prefix)
                .unwrap()
                .into_iter()
                .map(|o| o.key)
                .collect()
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn small_objects_merge_into_a_new_folder_and_the_old_one_goes_after_its_grace() {
        let date = Column::new("date", HiveType::String);
        let mut table = Table::new(DB, "ticks", "ticks", Format::Ndjson, vec![date]);
        table.partitions.insert(vec!["2021-01-04".into()]);
        let lake = lake(table);
        let old = "ticks/date=2021-01-04";
        // The middle object lacks its last newline: lines must not run together.
        for (name, body) in [
            ("a", "{\"v\":1}\n"),
            ("b", "{\"v\":2}"),
            ("c", "{\"v\":3}\n"),
        ] {
            lake.store
                .put(&format!("{old}/{name}.json"), body.as_bytes())
                .unwrap();
        }
        let report = lake.compact(HOUR);
        assert_eq!(
            report.partitions,
            [("ticks".to_string(), "date=2021-01-04".to_string())]
        );
        assert_eq!((report.objects_merged, report.objects_written), (3, 1));
        let table = lake.table("ticks");
        let new = table.folder("date=2021-01-04");
        assert!(new.starts_with(&format!("{old}/_v")), "{new}");
        assert_eq!(
            lake.text(&format!("{new}/compacted-00000.json")),
            "{\"v\":1}\n{\"v\":2}\n{\"v\":3}\n"
        );
        assert_eq!(table.retired.len(), 1);
        assert_eq!(table.retired[0].folder, old);
        assert!(table.staged.is_empty());
        // Readers that listed the old folder before the switch can still read it.
        assert_eq!(lake.keys(&format!("{old}/a")).len(), 1);

        let report = lake.compact(Duration::ZERO);
        assert_eq!((report.folders_deleted, report.objects_deleted), (1, 3));
        assert!(
            report.partitions.is_empty(),
            "one object is nothing to merge"
        );
        // The new folder lies below the retired one, and survives its deletion.
        assert_eq!(
            lake.keys(&format!("{old}/")),
            [format!("{new}/compacted-00000.json")]
        );
        assert!(lake.table("ticks").retired.is_empty());
    }

    fn part(first_offset: i64) -> String {
        format!("events/part-t-0-{first_offset:020}.json")
    }

    #[test]
    fn objects_a_sink_has_not_registered_are_left_to_it() {
        let mut table = Table::new(DB, "events", "events", Format::Ndjson, Vec::new());
        table.source = Some(TableSource {
            bootstrap_servers: "localhost:9092".into(),
            topic: "t".into(),
            group_id: "g".into(),
            symbol_field: "Index".into(),
            time_field: "Date".into(),
            columns: Default::default(),
            kafka_metadata: false,
            time_format: None,
            time_zone: None,
        });
        table.landed.insert(0, LandedRange::new(0, 10));
        let lake = lake(table);
        for first in [0, 10, 20] {
            let line = format!("{{\"offset\":{first}}}\n");
            lake.store.put(&part(first), line.as_bytes()).unwrap();
        }
        // One registered object alone is not worth merging.
        assert!(lake.compact(HOUR).partitions.is_empty());

        lake.catalog
            .update(DB, "events", &mut |t| {
                t.as_mut()
                    .unwrap()
                    .landed
                    .insert(0, LandedRange::new(10, 20));
                Ok(true)
            })
            .unwrap();
        let report = lake.compact(HOUR);
        assert_eq!((report.objects_merged, report.objects_carried), (2, 0));
        let new = lake.table("events").folder("");
        assert!(new.starts_with("events/_v"), "{new}");
        assert_eq!(
            lake.text(&format!("{new}/compacted-00000.json")),
            "{\"offset\":0}\n{\"offset\":10}\n"
        );
        // Its sink registers it later, is told the partition moved, and rewrites it there.
        assert_eq!(lake.keys(&format!("{new}/")).len(), 1);
        assert_eq!(lake.text(&part(20)), "{\"offset\":20}\n");
    }

    fn parquet(frame: &mut DataFrame) -> Vec<u8> {
        let mut out = Vec::new();
        ParquetWriter::new(&mut out).finish(frame).unwrap();
        out
    }

    #[test]
    fn parquet_objects_merge_with_every_column_and_large_ones_are_carried_over() {
        let lake = lake(Table::new(DB, "bars", "bars", Format::Parquet, Vec::new()));
        let a = parquet(&mut df!("v" => [1i64, 2]).unwrap());
        let b = parquet(&mut df!("v" => [3i64], "note" => ["new"]).unwrap());
        let values: Vec<i64> = (0..50_000).map(|i| i * 7919 % 100_003).collect();
        let big = parquet(&mut df!("v" => values).unwrap());
        let target = (a.len() + b.len()) as u64;
        assert!(big.len() as u64 >= target);
        for (name, body) in [("a", &a), ("b", &b), ("big", &big)] {
            lake.store
                .put(&format!("bars/{name}.parquet"), body)
                .unwrap();
        }
        let options = CompactOptions {
            target_bytes: target,
            ..CompactOptions::default()
        };
        let report = compact(lake.store.as_ref(), &lake.catalog, &options).unwrap();
        assert_eq!(
            (
                report.objects_merged,
                report.objects_written,
                report.objects_carried
            ),
            (2, 1, 1)
        );
        let new = lake.table("bars").folder("");
        assert_eq!(
            lake.keys(&format!("{new}/")),
            [
                format!("{new}/big.parquet"),
                format!("{new}/compacted-00000.parquet")
            ]
        );
        let merged = lake
            .store
            .read(&format!("{new}/compacted-00000.parquet"), ByteRange::All)
            .unwrap();
        let frame = ParquetReader::new(Cursor::new(merged)).finish().unwrap();
        let v: Vec<Option<i64>> = frame.column("v").unwrap().i64().unwrap().iter().collect();
        assert_eq!(v, [Some(1), Some(2), Some(3)]);
        let note = crate::testing::strings(&frame, "note");
        assert_eq!(note, [None, None, Some("new".to_string())]);
    }

    #[test]
    fn a_version_folder_no_version_of_the_table_refers_to_is_deleted() {
        let mut table = Table::new(DB, "t", "t", Format::Ndjson, Vec::new());
        table.staged.push(Retired {
            folder: "t/_v2-live".into(),
            at_ms: now_millis(),
        });
        let lake = lake(table);
        for key in [
            "t/a.json",
            "t/_v1-dead/compacted-00000.json",
            "t/_v2-live/compacted-00000.json",
            "t/raw/x.json",
        ] {
            lake.store.put(key, b"{}\n").unwrap();
        }
        let report = lake.compact(HOUR);
        assert_eq!((report.folders_deleted, report.objects_deleted), (1, 1));
        assert_eq!(
            lake.keys("t/"),
            [
                "t/_v2-live/compacted-00000.json",
                "t/a.json",
                "t/raw/x.json"
            ]
        );
        let missing = CompactOptions {
            table: Some("nope".into()),
            ..CompactOptions::default()
        };
        let e = compact(lake.store.as_ref(), &lake.catalog, &missing).unwrap_err();
        assert!(e.is(crate::error::Kind::NotFound), "{e}");
    }
}
