//! A table's snapshots as files: the data files a snapshot holds, read from its manifest
//! list and manifests, and the next snapshot's manifest and manifest list, which either
//! append files (a landing) or replace some with others (compaction), carrying every
//! manifest it does not touch as it is.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ::iceberg::io::FileIO;
use ::iceberg::spec::{
    DataFile, FormatVersion, Manifest, ManifestEntry, ManifestFile, ManifestList,
    ManifestListWriter, ManifestStatus, ManifestWriterBuilder, Operation, Snapshot,
    SnapshotSummaryCollector, Summary, TableMetadata,
};

use super::table::{iceberg_error, IcebergTable, ReadFiles};
use crate::error::{Error, Result};
use crate::parallel;

/// How many small manifests a snapshot carries before the next one merges them into its
/// own: a query reads every manifest, and a stream of small landings adds one each.
const MERGE_AT: usize = 100;

/// A manifest of fewer live files than this is small: merged once there are `MERGE_AT`.
/// A larger one is carried as it is, so that a merge's cost does not grow with the table.
const MERGE_BELOW_FILES: u32 = 1_000;

fn is_small(manifest: &ManifestFile) -> bool {
    let files =
        manifest.added_files_count.unwrap_or(0) + manifest.existing_files_count.unwrap_or(0);
    files < MERGE_BELOW_FILES
}

/// A manifest of a snapshot with its entries, the values entries inherit from the
/// manifest list filled in.
pub struct Listed {
    pub manifest: ManifestFile,
    pub entries: Arc<Vec<ManifestEntry>>,
}

/// Files a new snapshot needs written (key below the lake root, body): its manifests.
pub type NewFiles = Vec<(String, Vec<u8>)>;

/// What a new snapshot does to the current one's data files.
#[derive(Default)]
pub struct Files {
    pub added: Vec<DataFile>,
    /// Paths of current data files the snapshot removes.
    pub removed: HashSet<String>,
}

/// Runs `future` to its end on a runtime of this thread: the crate's writers are async,
/// the lake's store is not.
pub fn block_on<T>(future: impl std::future::Future<Output = ::iceberg::Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| Error::io(format!("cannot start a runtime: {e}")))?
        .block_on(future)
        .map_err(iceberg_error)
}

impl IcebergTable {
    /// The manifests `snapshot`'s manifest list names.
    fn manifest_list(&self, snapshot: &Snapshot) -> Result<Arc<Vec<ManifestFile>>> {
        let location = snapshot.manifest_list();
        ReadFiles::get(&self.catalog().read.lists, location, || {
            let bytes = self.read_location(location)?;
            let list = ManifestList::parse_with_version(&bytes, FormatVersion::V2);
            Ok(list
                .map_err(iceberg_error)?
                .consume_entries()
                .into_iter()
                .collect())
        })
    }

    /// The manifests of `snapshot`, read several at once.
    pub fn manifests(&self, snapshot: &Snapshot) -> Result<Vec<Listed>> {
        self.read_manifests(self.manifest_list(snapshot)?)
    }

    fn read_manifests(&self, list: Arc<Vec<ManifestFile>>) -> Result<Vec<Listed>> {
        let cache = &self.catalog().read.manifests;
        let read = parallel::map(&list, |m: &ManifestFile| {
            ReadFiles::get(cache, &m.manifest_path, || {
                let bytes = self.read_location(&m.manifest_path)?;
                let parsed = Manifest::parse_avro(&bytes).map_err(iceberg_error)?;
                let entries = parsed.entries().iter();
                Ok(entries.map(|e| inherited(e.as_ref().clone(), m)).collect())
            })
        });
        (list.iter().zip(read))
            .map(|(manifest, entries)| {
                Ok(Listed {
                    manifest: manifest.clone(),
                    entries: entries?,
                })
            })
            .collect()
    }

    /// The data files of `snapshot`.
    pub fn data_files(&self, snapshot: &Snapshot) -> Result<Vec<DataFile>> {
        let manifests = self.manifests(snapshot)?;
        let entries = manifests.iter().flat_map(|listed| listed.entries.iter());
        let alive = entries.filter(|e| e.is_alive());
        Ok(alive.map(|entry| entry.data_file.clone()).collect())
    }

    /// The snapshot after `metadata`'s current one that makes `files` of it: a new
    /// manifest with the added files, and, when files are removed, with the removed ones
    /// as deleted and the rest of their manifests as existing (and the files of every small
    /// manifest once there are `MERGE_AT` of them); its summary holds `extra`.
    pub(super) fn next_snapshot(
        &self,
        metadata: &TableMetadata,
        files: Files,
        extra: HashMap<String, String>,
    ) -> Result<(Snapshot, NewFiles)> {
        let parent = metadata.current_snapshot();
        let snapshot_id = new_snapshot_id();
        let sequence = metadata.next_sequence_number();
        let schema = metadata.current_schema().clone();
        let spec = metadata.default_partition_spec().as_ref().clone();

        let (mut deleted, mut existing) = (Vec::new(), Vec::new());
        let parents = parent.map(|p| self.manifest_list(p)).transpose()?;
        let parents = parents.unwrap_or_default();
        let merge_small = parents.iter().filter(|m| is_small(m)).count() >= MERGE_AT;
        // An append reads the manifest list only, and a merge the small manifests only:
        // neither cost grows with the table. Removing files reads every manifest.
        let (read, mut kept): (Vec<ManifestFile>, Vec<ManifestFile>) =
            match (files.removed.is_empty(), merge_small) {
                (false, _) => (parents.as_ref().clone(), Vec::new()),
                (true, true) => parents.iter().cloned().partition(is_small),
                (true, false) => (Vec::new(), parents.as_ref().clone()),
            };
        for listed in self.read_manifests(Arc::new(read))? {
            let touched = (merge_small && is_small(&listed.manifest))
                || (listed.entries.iter())
                    .any(|e| e.is_alive() && files.removed.contains(e.file_path()));
            if !touched {
                kept.push(listed.manifest);
                continue;
            }
            for entry in listed.entries.iter().filter(|e| e.is_alive()).cloned() {
                match files.removed.contains(entry.file_path()) {
                    true => deleted.push(entry),
                    false => existing.push(entry),
                }
            }
        }
        if deleted.len() != files.removed.len() {
            return Err(Error::io(format!(
                "{} of the files to replace are no longer in the table",
                files.removed.len() - deleted.len()
            )));
        }

        let mut summary = SnapshotSummaryCollector::default();
        let spec_ref = Arc::new(spec.clone());
        for file in &files.added {
            summary.add_file(file, schema.clone(), spec_ref.clone());
        }
        for entry in &deleted {
            summary.remove_file(entry.data_file(), schema.clone(), spec_ref.clone());
        }
        let operation = match files.removed.is_empty() {
            true => Operation::Append,
            false => Operation::Replace,
        };

        // A commit that moves the main branch without changing its files (`commits_move_main`)
        // lists the parent's manifests only.
        let empty = files.added.is_empty() && deleted.is_empty() && existing.is_empty();
        let io = FileIO::new_with_memory();
        let commit = uuid::Uuid::new_v4();
        let meta_dir = format!("{}/metadata", self.location());
        let manifest_location = format!("{meta_dir}/{commit}-m0.avro");
        let list_location = format!("{meta_dir}/snap-{snapshot_id}-1-{commit}.avro");
        let (manifest, manifest_bytes, list_bytes) = block_on(async {
            let output = io.new_output(&manifest_location)?;
            let mut writer =
                ManifestWriterBuilder::new(output, Some(snapshot_id), schema.clone(), spec)
                    .build_v2_data();
            for file in files.added {
                writer.add_file(file, sequence)?;
            }
            for entry in deleted {
                let number = entry.sequence_number.unwrap_or_default();
                writer.add_delete_file(entry.data_file, number, entry.file_sequence_number)?;
            }
            for entry in existing {
                writer.add_existing_file(
                    entry.data_file,
                    entry.snapshot_id.unwrap_or_default(),
                    entry.sequence_number.unwrap_or_default(),
                    entry.file_sequence_number,
                )?;
            }
            let manifest = match empty {
                true => None,
                false => Some(writer.write_manifest_file().await?),
            };
            let manifest_bytes = match empty {
                true => Default::default(),
                false => io.new_input(&manifest_location)?.read().await?,
            };

            let output = io.new_output(&list_location)?;
            let mut list = ManifestListWriter::v2(
                output.writer().await?,
                snapshot_id,
                parent.map(|p| p.snapshot_id()),
                sequence,
            );
            list.add_manifests(manifest.clone().into_iter().chain(kept))?;
            list.close().await?;
            let list_bytes = io.new_input(&list_location)?.read().await?;
            Ok((manifest, manifest_bytes, list_bytes))
        })?;
        let mut written = vec![(self.key_of(&list_location)?, list_bytes.to_vec())];
        if let Some(manifest) = &manifest {
            written.push((
                self.key_of(&manifest.manifest_path)?,
                manifest_bytes.to_vec(),
            ));
        }

        let mut properties = summary.build();
        add_totals(&mut properties, parent.map(|p| p.summary()));
        properties.extend(extra);
        let snapshot = Snapshot::builder()
            .with_snapshot_id(snapshot_id)
            .with_parent_snapshot_id(parent.map(|p| p.snapshot_id()))
            .with_sequence_number(sequence)
            .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
            .with_manifest_list(list_location)
            .with_schema_id(metadata.current_schema_id())
            .with_summary(Summary {
                operation,
                additional_properties: properties,
            })
            .build();
        Ok((snapshot, written))
    }
}

/// `entry` with the snapshot id and sequence numbers it inherits from its manifest.
fn inherited(mut entry: ManifestEntry, manifest: &ManifestFile) -> ManifestEntry {
    entry.snapshot_id.get_or_insert(manifest.added_snapshot_id);
    if entry.status == ManifestStatus::Added {
        entry
            .sequence_number
            .get_or_insert(manifest.sequence_number);
        entry
            .file_sequence_number
            .get_or_insert(manifest.sequence_number);
    }
    entry
}

/// The totals of the new snapshot: its parent's, plus what it adds, less what it removes.
fn add_totals(properties: &mut HashMap<String, String>, parent: Option<&Summary>) {
    for (total, added, removed) in [
        ("total-records", "added-records", "deleted-records"),
        ("total-data-files", "added-data-files", "deleted-data-files"),
        ("total-files-size", "added-files-size", "removed-files-size"),
    ] {
        let number = |map: &HashMap<String, String>, key: &str| {
            map.get(key)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let before = parent.map_or(0, |p| number(&p.additional_properties, total));
        let sum = (before + number(properties, added)).saturating_sub(number(properties, removed));
        properties.insert(total.to_string(), sum.to_string());
    }
}

/// A positive snapshot id, unique enough (Iceberg's own clients draw them at random too).
fn new_snapshot_id() -> i64 {
    let bits = uuid::Uuid::new_v4().as_u64_pair();
    ((bits.0 ^ bits.1) & (i64::MAX as u64)) as i64
}
