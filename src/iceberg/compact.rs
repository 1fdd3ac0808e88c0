//! Compaction of an Iceberg table. In each partition the data files smaller than the
//! target are merged into files of about the target size, which replace them in one
//! `replace` snapshot that keeps the landed offsets (a landing racing it just commits on
//! top). Snapshots older than the grace period then expire, and the files of the table's
//! folder that neither the current metadata nor a retained snapshot refers to, once older
//! than the grace period, are deleted: what an expired snapshot held, and what a killed
//! writer wrote but never committed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use ::iceberg::spec::{DataContentType, DataFile, DataFileBuilder, DataFileFormat};

use super::metrics::metrics;
use super::registry::{fields, landed_summary};
use super::table::{normal, Change, IcebergTable, Version};
use crate::catalog::{bins, merged_frame, CompactOptions, CompactReport};
use crate::error::{Error, Result};
use crate::lake::{is_hidden, ByteRange, ObjectMeta};
use crate::parallel;
use crate::record::time::now_millis;
use crate::sink::parquet_with_ids;

/// Compacts `table`, then expires its old snapshots and deletes its unreferenced files.
pub fn compact(
    table: &IcebergTable,
    options: &CompactOptions,
    report: &mut CompactReport,
) -> Result<()> {
    let Some(version) = table.load()? else {
        return Ok(());
    };
    if let Some(snapshot) = version.metadata.current_snapshot() {
        let by_partition = small_files(table.data_files(snapshot)?, options.target_bytes);
        let mut merged = Merged::default();
        for (_, files) in by_partition {
            if files.len() >= options.min_objects {
                merge_partition(table, &version, files, options, &mut merged)?;
            }
            options.done.add(1);
        }
        if !merged.removed.is_empty() {
            commit(table, merged, report)?;
        }
    }
    expire(table, options.grace, report)
}

/// Files merged so far, and the files written for them.
#[derive(Default)]
struct Merged {
    removed: HashSet<String>,
    added: Vec<DataFile>,
    partitions: Vec<String>,
    bytes_read: u64,
    bytes_written: u64,
}

/// The data files smaller than `target`, by partition (in a stable order).
fn small_files(files: Vec<DataFile>, target: u64) -> BTreeMap<String, Vec<DataFile>> {
    let mut by_partition: BTreeMap<String, Vec<DataFile>> = BTreeMap::new();
    for file in files
        .into_iter()
        .filter(|f| f.file_size_in_bytes() < target)
    {
        let partition = format!("{:?}", file.partition());
        by_partition.entry(partition).or_default().push(file);
    }
    for files in by_partition.values_mut() {
        files.sort_by(|a, b| a.file_path().cmp(b.file_path()));
    }
    by_partition
}

/// Merges one partition's small `files` into files of about the target size, written
/// beside them.
fn merge_partition(
    table: &IcebergTable,
    version: &Version,
    files: Vec<DataFile>,
    options: &CompactOptions,
    merged: &mut Merged,
) -> Result<()> {
    let store = table.catalog().store.as_ref();
    let objects = (files.iter())
        .map(|f| {
            Ok(ObjectMeta {
                key: table.key_of(f.file_path())?,
                size: f.file_size_in_bytes(),
                modified_ms: 0,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&ObjectMeta> = objects.iter().collect();
    let by_key: HashMap<&str, &DataFile> = (objects.iter().map(|o| o.key.as_str()))
        .zip(&files)
        .collect();
    let schema = version.metadata.current_schema();
    let fields = fields(schema);
    let mut partition_merged = false;
    for bin in bins(&refs, options.target_bytes) {
        if bin.len() < 2 {
            continue;
        }
        let bodies = parallel::map(&bin, |o| store.read(&o.key, ByteRange::All));
        let frame = merged_frame(store, &bin, bodies)?;
        let body = parquet_with_ids(&frame, &fields)?;
        let folder = (bin[0].key.rsplit_once('/')).map_or(table.folder(), |(folder, _)| folder);
        let key = format!("{folder}/compacted-{}.parquet", uuid::Uuid::new_v4());
        store.put(&key, &body)?;
        let first = by_key[bin[0].key.as_str()];
        let metrics = metrics(&key, &body, schema)?;
        let file = DataFileBuilder::default()
            .content(DataContentType::Data)
            .file_path(table.url_of(&key))
            .file_format(DataFileFormat::Parquet)
            .partition(first.partition().clone())
            .partition_spec_id(version.metadata.default_partition_spec_id())
            .record_count(metrics.rows)
            .file_size_in_bytes(body.len() as u64)
            .value_counts(metrics.values)
            .null_value_counts(metrics.nulls)
            .lower_bounds(metrics.lower)
            .upper_bounds(metrics.upper)
            .build()
            .map_err(|e| Error::io(format!("Iceberg data file {key}: {e}")))?;
        merged.added.push(file);
        for object in &bin {
            merged.removed.insert(table.url_of(&object.key));
            merged.bytes_read += object.size;
        }
        merged.bytes_written += body.len() as u64;
        partition_merged = true;
    }
    if partition_merged {
        merged.partitions.push(folder_of(table, &files[0]));
    }
    Ok(())
}

fn folder_of(table: &IcebergTable, file: &DataFile) -> String {
    let key = table.key_of(file.file_path()).unwrap_or_default();
    let folder = key.rsplit_once('/').map_or("", |(folder, _)| folder);
    folder
        .strip_prefix(table.folder())
        .unwrap_or(folder)
        .trim_start_matches('/')
        .to_string()
}

/// Commits the merged files in place of theirs, unless another compaction replaced one of
/// them first (then the merged files are nobody's, and go).
fn commit(table: &IcebergTable, merged: Merged, report: &mut CompactReport) -> Result<()> {
    let mut raced = false;
    table.commit(&mut |version| {
        let Some(current) = version.metadata.current_snapshot() else {
            raced = true;
            return Ok(None);
        };
        let live: HashSet<String> = (table.data_files(current)?.iter())
            .map(|f| f.file_path().to_string())
            .collect();
        raced = !merged.removed.iter().all(|path| live.contains(path));
        if raced {
            return Ok(None);
        }
        Ok(Some(Change {
            files: merged.added.clone(),
            removed: merged.removed.clone(),
            summary: landed_summary(current),
            ..Change::default()
        }))
    })?;
    if raced {
        let ours = (merged.added.iter())
            .map(|f| table.key_of(f.file_path()))
            .collect::<Result<Vec<_>>>()?;
        table.catalog().store.delete(&ours)?;
        report.raced += 1;
        return Ok(());
    }
    let name = table.name();
    (report.partitions).extend(merged.partitions.into_iter().map(|p| (name.to_string(), p)));
    report.objects_merged += merged.removed.len();
    report.objects_written += merged.added.len();
    report.bytes_read += merged.bytes_read;
    report.bytes_written += merged.bytes_written;
    Ok(())
}

/// Expires the snapshots older than `grace` (never the current one), then deletes the
/// files of the table's folder nothing retained refers to, older than `grace`.
fn expire(table: &IcebergTable, grace: Duration, report: &mut CompactReport) -> Result<()> {
    let cutoff = now_millis() - grace.as_millis() as i64;
    let mut expired = Vec::new();
    let version = table.commit(&mut |version| {
        let current = version.metadata.current_snapshot_id();
        expired = (version.metadata.snapshots())
            .filter(|s| Some(s.snapshot_id()) != current && s.timestamp_ms() < cutoff)
            .map(|s| s.snapshot_id())
            .collect();
        Ok((!expired.is_empty()).then(|| Change {
            expired: expired.clone(),
            ..Change::default()
        }))
    })?;
    report.snapshots_expired += expired.len();
    let referenced = referenced(table, &version)?;
    let store = &table.catalog().store;
    let unreferenced: Vec<String> = (store.list(&format!("{}/", table.folder()))?.into_iter())
        .filter(|o| {
            let name = o.key.rsplit('/').next().unwrap_or_default();
            !is_hidden(name)
                && o.modified_ms > 0
                && o.modified_ms < cutoff
                && !referenced.contains(&table.url_of(&o.key))
        })
        .map(|o| o.key)
        .collect();
    store.delete(&unreferenced)?;
    report.objects_deleted += unreferenced.len();
    Ok(())
}

/// Every file `version` refers to: its metadata file and those of its log, and each
/// retained snapshot's manifest list, manifests and data files.
fn referenced(table: &IcebergTable, version: &Version) -> Result<HashSet<String>> {
    let metadata = &version.metadata;
    let mut files = HashSet::from([normal(&version.location).into_owned()]);
    let log = metadata.metadata_log().iter();
    files.extend(log.map(|m| normal(&m.metadata_file).into_owned()));
    for snapshot in metadata.snapshots() {
        files.insert(snapshot.manifest_list().to_string());
        for listed in table.manifests(snapshot)? {
            files.insert(listed.manifest.manifest_path.clone());
            let alive = listed.entries.iter().filter(|e| e.is_alive());
            files.extend(alive.map(|e| e.file_path().to_string()));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ::iceberg::spec::{
        Datum, NestedField, Operation, PrimitiveType, Schema, Type, UnboundPartitionSpec,
    };
    use polars::prelude::{df, ParquetReader, SerReader};

    use super::*;
    use crate::catalog::CatalogKind;
    use crate::iceberg::open_catalog;
    use crate::lake::LakeUrl;

    fn schema() -> Schema {
        let field = |id, name: &str, kind| NestedField::optional(id, name, Type::Primitive(kind));
        Schema::builder()
            .with_fields([
                field(1, "Index", PrimitiveType::String).into(),
                field(2, "Close", PrimitiveType::Double).into(),
            ])
            .build()
            .unwrap()
    }

    /// Appends a file of `closes` as one landing whose summary says `landed`.
    fn land(table: &IcebergTable, name: &str, closes: &[f64], landed: &str) {
        let frame = df!("Index" => vec!["NYA"; closes.len()], "Close" => closes).unwrap();
        let body = parquet_with_ids(&frame, &fields(&schema())).unwrap();
        let key = format!("{}/{name}", table.folder());
        table.catalog().store.put(&key, &body).unwrap();
        let metrics = metrics(&key, &body, &schema()).unwrap();
        let file = DataFileBuilder::default()
            .content(DataContentType::Data)
            .file_path(table.url_of(&key))
            .file_format(DataFileFormat::Parquet)
            .record_count(metrics.rows)
            .file_size_in_bytes(body.len() as u64)
            .lower_bounds(metrics.lower)
            .upper_bounds(metrics.upper)
            .build()
            .unwrap();
        table
            .commit(&mut |_| {
                Ok(Some(Change {
                    files: vec![file.clone()],
                    summary: HashMap::from([("stockstream.landed".into(), landed.into())]),
                    ..Change::default()
                }))
            })
            .unwrap();
    }

    fn closes(table: &IcebergTable, snapshot: &::iceberg::spec::Snapshot) -> Vec<f64> {
        let mut all = Vec::new();
        for file in table.data_files(snapshot).unwrap() {
            let key = table.key_of(file.file_path()).unwrap();
            let body = table.catalog().store.read(&key, ByteRange::All).unwrap();
            let frame = ParquetReader::new(std::io::Cursor::new(body))
                .finish()
                .unwrap();
            all.extend(
                frame
                    .column("Close")
                    .unwrap()
                    .f64()
                    .unwrap()
                    .into_no_null_iter(),
            );
        }
        all.sort_by(f64::total_cmp);
        all
    }

    #[test]
    fn small_files_are_replaced_keeping_rows_and_offsets_and_old_ones_go_after_the_grace() {
        let (dir, store) = crate::testing::local_lake();
        let url = LakeUrl::Local(dir.path().to_path_buf());
        let at = crate::iceberg::catalog_at(&url, Some(CatalogKind::Local), None).unwrap();
        let catalog = open_catalog(&at, &url, store, "db", &Default::default()).unwrap();
        let table = catalog.table("ticks");
        let spec = UnboundPartitionSpec::builder().build();
        table.create(schema(), spec, HashMap::new()).unwrap();
        land(
            &table,
            "a.parquet",
            &[1.0, 2.0],
            r#"{"0":{"start":0,"next":2}}"#,
        );
        land(&table, "b.parquet", &[3.0], r#"{"0":{"start":2,"next":3}}"#);
        land(
            &table,
            "c.parquet",
            &[4.0, 5.0],
            r#"{"0":{"start":3,"next":5}}"#,
        );

        let options = CompactOptions {
            grace: Duration::from_secs(3600),
            ..CompactOptions::default()
        };
        let mut report = CompactReport::default();
        compact(&table, &options, &mut report).unwrap();
        assert_eq!((report.objects_merged, report.objects_written), (3, 1));
        assert_eq!(report.snapshots_expired, 0, "all within the grace period");
        let version = table.load().unwrap().unwrap();
        let snapshot = version.metadata.current_snapshot().unwrap();
        assert_eq!(snapshot.summary().operation, Operation::Replace);
        let summary = &snapshot.summary().additional_properties;
        assert_eq!(
            summary["stockstream.landed"],
            r#"{"0":{"start":3,"next":5}}"#
        );
        assert_eq!(summary["total-records"], "5");
        assert_eq!(summary["total-data-files"], "1");
        assert_eq!(closes(&table, snapshot), [1.0, 2.0, 3.0, 4.0, 5.0]);
        // The merged file has the bounds of all its rows.
        let merged = &table.data_files(snapshot).unwrap()[0];
        assert_eq!(merged.lower_bounds()[&2], Datum::double(1.0));
        assert_eq!(merged.upper_bounds()[&2], Datum::double(5.0));
        // The snapshot before compaction still reads the old files.
        let parent = version
            .metadata
            .snapshot_by_id(snapshot.parent_snapshot_id().unwrap());
        assert_eq!(closes(&table, parent.unwrap()), [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!(dir.path().join("ticks/a.parquet").is_file());

        // An uncommitted file (a killed writer's) goes too, once older than the grace.
        std::fs::write(dir.path().join("ticks/orphan.parquet"), b"x").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let now = CompactOptions {
            grace: Duration::ZERO,
            ..options
        };
        let mut report = CompactReport::default();
        compact(&table, &now, &mut report).unwrap();
        assert_eq!(report.objects_merged, 0, "one file left: nothing to merge");
        assert_eq!(report.snapshots_expired, 3, "three landings, one replace");
        let version = table.load().unwrap().unwrap();
        assert_eq!(version.metadata.snapshots().count(), 1);
        for gone in ["a.parquet", "b.parquet", "c.parquet", "orphan.parquet"] {
            assert!(!dir.path().join("ticks").join(gone).exists(), "{gone}");
        }
        let snapshot = version.metadata.current_snapshot().unwrap();
        assert_eq!(closes(&table, snapshot), [1.0, 2.0, 3.0, 4.0, 5.0]);
        // What is left is what the current metadata refers to.
        let referenced = referenced(&table, &version).unwrap();
        for object in table.catalog().store.list("ticks/").unwrap() {
            assert!(
                referenced.contains(&table.url_of(&object.key)),
                "{}",
                object.key
            );
        }
    }
}
