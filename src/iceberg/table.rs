//! One Iceberg table in the lake: its metadata files, manifests and snapshots, written with
//! the `iceberg` crate's spec types into the lake's own store, and committed by moving the
//! catalog's pointer from the metadata a writer read to the one it wrote. A writer that
//! loses the race reads the table again and decides afresh.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use ::iceberg::spec::{
    DataFile, FormatVersion, ManifestEntry, ManifestFile, NestedField, PrimitiveType, Schema,
    SortOrder, TableMetadata, TableMetadataBuilder, Type, UnboundPartitionSpec, MAIN_BRANCH,
};

use super::pointer::{Name, Pointers};
use super::schema::{name_mapping, NAME_MAPPING};
use super::snapshot::{Files, NewFiles};
use crate::catalog::table_name;
use crate::error::{Error, Result};
use crate::lake::{ObjectStore, Put};

/// A table's metadata as last read, and where it was read from.
#[derive(Debug, Clone)]
pub struct Version {
    pub location: String,
    pub metadata: Arc<TableMetadata>,
}

/// What a commit changes in the table it read, in one metadata version: columns added,
/// table properties set, and a snapshot of data files added or replaced (if any) whose summary carries
/// `summary` (a landing's Kafka offsets).
#[derive(Default)]
pub struct Change {
    /// New optional columns, given the next field ids in this order.
    pub columns: Vec<(String, PrimitiveType)>,
    pub properties: HashMap<String, String>,
    pub files: Vec<DataFile>,
    /// Paths of current data files to remove (with `files`, a `replace` snapshot).
    pub removed: HashSet<String>,
    pub summary: HashMap<String, String>,
    /// Snapshots to expire.
    pub expired: Vec<i64>,
}

/// A namespace of Iceberg tables: the catalog holding their pointers, and the lake store
/// holding their files.
#[derive(Clone)]
pub struct IcebergCatalog {
    pub store: Arc<dyn ObjectStore>,
    pub pointers: Arc<dyn Pointers>,
    pub namespace: String,
    /// Metadata files and manifests read so far: they never change once written.
    pub(super) read: Arc<ReadFiles>,
}

/// Parsed metadata files and manifests, by location; forgotten wholesale when many.
#[derive(Default)]
pub(super) struct ReadFiles {
    pub metadata: Mutex<HashMap<String, Arc<TableMetadata>>>,
    pub lists: Mutex<HashMap<String, Arc<Vec<ManifestFile>>>>,
    pub manifests: Mutex<HashMap<String, Arc<Vec<ManifestEntry>>>>,
}

/// How many files of each kind `ReadFiles` keeps.
const READ_FILES: usize = 4096;

impl ReadFiles {
    /// `key`'s value in `map`, or `read()`'s, kept for next time.
    pub fn get<T>(
        map: &Mutex<HashMap<String, Arc<T>>>,
        key: &str,
        read: impl FnOnce() -> Result<T>,
    ) -> Result<Arc<T>> {
        let found = map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned();
        if let Some(found) = found {
            return Ok(found);
        }
        let value = Arc::new(read()?);
        let mut kept = map.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= READ_FILES {
            kept.clear();
        }
        kept.insert(key.to_string(), value.clone());
        Ok(value)
    }
}

impl IcebergCatalog {
    pub fn new(store: Arc<dyn ObjectStore>, pointers: Arc<dyn Pointers>, namespace: &str) -> Self {
        IcebergCatalog {
            store,
            pointers,
            namespace: namespace.to_string(),
            read: Arc::default(),
        }
    }

    /// The table a sink lands in lake folder `folder`, named as the folder's Hive table
    /// would be (`ticks-1` is `ticks_1`, which Glue and Athena accept).
    pub fn table(&self, folder: &str) -> IcebergTable {
        self.table_at(&table_name(folder), folder)
    }

    /// Table `name`, whose files are in lake folder `folder`.
    pub fn table_at(&self, name: &str, folder: &str) -> IcebergTable {
        IcebergTable {
            catalog: self.clone(),
            name: name.to_string(),
            folder: folder.trim_end_matches('/').to_string(),
        }
    }

    /// Table `name` of the catalog as it is now, found where its metadata is, if it exists.
    pub fn existing(&self, name: &str) -> Result<Option<(IcebergTable, Version)>> {
        let Some(location) = self.pointers.current((&self.namespace, name))? else {
            return Ok(None);
        };
        let location = normal(&location).into_owned();
        let root = location_url(&self.store.url(""));
        let folder = (location.rsplit_once("/metadata/"))
            .and_then(|(table, _)| table.strip_prefix(root.trim_end_matches('/')))
            .map(|folder| folder.trim_start_matches('/'))
            .ok_or_else(|| {
                Error::config(format!(
                    "Iceberg table {}.{name}: its metadata {location:?} is not in this lake \
                     ({root})",
                    self.namespace
                ))
            })?;
        let table = self.table_at(name, folder);
        let version = table.load_at(&location)?;
        Ok(Some((table, version)))
    }
}

/// One table: its name in the catalog and its folder in the store.
pub struct IcebergTable {
    catalog: IcebergCatalog,
    name: String,
    /// The table's folder below the lake root.
    folder: String,
}

impl IcebergTable {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table's namespace and name.
    fn qualified(&self) -> Name<'_> {
        (&self.catalog.namespace, &self.name)
    }

    /// The table's folder below the lake root.
    pub fn folder(&self) -> &str {
        &self.folder
    }

    pub fn catalog(&self) -> &IcebergCatalog {
        &self.catalog
    }

    /// The location of the object at `key` below the lake root, as the table records it.
    pub fn url_of(&self, key: &str) -> String {
        location_url(&self.catalog.store.url(key))
    }

    /// The table's location as engines read it: `s3://bucket/prefix/table` or
    /// `file:///path/table`.
    pub fn location(&self) -> String {
        location_url(&self.catalog.store.url(&self.folder))
    }

    /// The key below the lake root of a file of this table at `location`.
    pub(super) fn key_of(&self, location: &str) -> Result<String> {
        let table = self.location();
        match normal(location).strip_prefix(&table) {
            Some(rest) => Ok(format!("{}{rest}", self.folder)),
            None => Err(Error::config(format!(
                "Iceberg table {}.{}: file {location:?} is not under the table's location \
                 {table:?}",
                self.catalog.namespace, self.name
            ))),
        }
    }

    pub(super) fn read_location(&self, location: &str) -> Result<Vec<u8>> {
        self.catalog
            .store
            .read(&self.key_of(location)?, crate::lake::ByteRange::All)
    }

    /// The table as the catalog points at it now, if it exists.
    pub fn load(&self) -> Result<Option<Version>> {
        let current = (self.catalog.pointers).current(self.qualified())?;
        current
            .map(|location| self.load_at(&normal(&location)))
            .transpose()
    }

    /// The table as the metadata file at `location` describes it.
    pub fn load_at(&self, location: &str) -> Result<Version> {
        let metadata = ReadFiles::get(&self.catalog.read.metadata, location, || {
            let bytes = self.read_location(location)?;
            serde_json::from_slice(&bytes).map_err(|e| {
                Error::schema(format!("Iceberg metadata {location}: {e}")).caused_by(e)
            })
        })?;
        Ok(Version {
            location: location.to_string(),
            metadata,
        })
    }

    /// Creates the table with `schema`, `spec` and `properties` unless it exists; returns the
    /// table as it is then (another writer's, if it created the table first).
    pub fn create(
        &self,
        schema: Schema,
        spec: UnboundPartitionSpec,
        properties: HashMap<String, String>,
    ) -> Result<Version> {
        if let Some(existing) = self.load()? {
            return Ok(existing);
        }
        let metadata = TableMetadataBuilder::new(
            schema,
            spec,
            SortOrder::unsorted_order(),
            self.location(),
            FormatVersion::V2,
            properties,
        )
        .and_then(|b| b.build())
        .map_err(iceberg_error)?
        .metadata;
        let location = self.write_metadata(&metadata, 0, Vec::new())?;
        if (self.catalog.pointers).create(self.qualified(), &location, &metadata)? {
            let metadata = Arc::new(metadata);
            return Ok(Version { location, metadata });
        }
        self.load()?.ok_or_else(|| {
            Error::io(format!(
                "Iceberg table {}.{} was created and is gone",
                self.catalog.namespace, self.name
            ))
        })
    }

    /// Writes `metadata` as version `number` of the table's metadata files, together with
    /// `files` (the manifests it refers to): several at once, each durable when this returns.
    fn write_metadata(
        &self,
        metadata: &TableMetadata,
        number: u64,
        mut files: NewFiles,
    ) -> Result<String> {
        let body = serde_json::to_vec(metadata)
            .map_err(|e| Error::io(format!("cannot write Iceberg metadata: {e}")))?;
        let name = format!("{number:05}-{}.metadata.json", uuid::Uuid::new_v4());
        files.push((format!("{}/metadata/{name}", self.folder), body));
        let objects: Vec<(&str, &[u8])> = (files.iter())
            .map(|(key, body)| (key.as_str(), body.as_slice()))
            .collect();
        let written = (self.catalog.store).put_all(&objects, Put::Replace, &mut || false);
        for result in written.into_iter().flatten() {
            result?;
        }
        Ok(format!("{}/metadata/{name}", self.location()))
    }

    /// Commits `change(version)` as the table's next metadata version, reading the table
    /// again and asking `change` again whenever another writer committed first. `change`
    /// returns `None` when there is nothing to commit (another writer landed the same
    /// records). Returns the table as committed, or as read when nothing was.
    pub fn commit(
        &self,
        change: &mut dyn FnMut(&Version) -> Result<Option<Change>>,
    ) -> Result<Version> {
        loop {
            let read = self.load()?.ok_or_else(|| {
                Error::not_found(format!(
                    "Iceberg table {}.{} does not exist",
                    self.catalog.namespace, self.name
                ))
            })?;
            let Some(change) = change(&read)? else {
                return Ok(read);
            };
            let (metadata, files) = self.changed(&read, change)?;
            let number = version_number(&read.location) + 1;
            let location = self.write_metadata(&metadata, number, files)?;
            let metadata = Arc::new(metadata);
            let new = Version { location, metadata };
            let now = (self.catalog.pointers).swap(self.qualified(), &read, &new)?;
            if now.as_ref() == Some(&new.location) {
                return Ok(new);
            }
            // Lost the race, or the catalog wrote its own metadata file: the one just
            // written is referred to by nothing.
            let _ = self.catalog.store.delete(&[self.key_of(&new.location)?]);
            if let Some(location) = now {
                let location = normal(&location).into_owned();
                return Ok(Version { location, ..new });
            }
        }
    }

    /// The table's next metadata: `change`'s columns (and the name mapping that finds
    /// them), its properties, and its files in a new snapshot; and the files to write with
    /// it (the snapshot's manifests).
    fn changed(&self, read: &Version, change: Change) -> Result<(TableMetadata, NewFiles)> {
        let mut builder =
            (read.metadata.as_ref().clone()).into_builder(Some(read.location.clone()));
        let data = !change.files.is_empty() || !change.removed.is_empty();
        let set = !change.columns.is_empty() || !change.properties.is_empty();
        let mut properties = change.properties;
        if !change.columns.is_empty() {
            let schema = with_columns(&read.metadata, &change.columns)?;
            properties.insert(NAME_MAPPING.to_string(), name_mapping(&schema));
            builder = builder.add_current_schema(schema).map_err(iceberg_error)?;
        }
        if !properties.is_empty() {
            builder = builder.set_properties(properties).map_err(iceberg_error)?;
        }
        if !change.expired.is_empty() {
            builder = builder.remove_snapshots(&change.expired);
        }
        let metadata = builder.build().map_err(iceberg_error)?.metadata;
        let snapshot = data || (set && self.catalog.pointers.commits_move_main());
        if !snapshot {
            return Ok((metadata, Vec::new()));
        }
        let files = Files {
            added: change.files,
            removed: change.removed,
        };
        let (snapshot, written) = self.next_snapshot(&metadata, files, change.summary)?;
        (metadata.into_builder(None))
            .set_branch_snapshot(snapshot, MAIN_BRANCH)
            .and_then(|b| b.build())
            .map_err(iceberg_error)
            .map(|built| (built.metadata, written))
    }
}

/// `metadata`'s current schema with `columns` added (optional, the next field ids).
fn with_columns(metadata: &TableMetadata, columns: &[(String, PrimitiveType)]) -> Result<Schema> {
    let fields = (columns.iter().zip(metadata.last_column_id() + 1..)).map(|((name, kind), id)| {
        NestedField::optional(id, name, Type::Primitive(kind.clone())).into()
    });
    (**metadata.current_schema())
        .clone()
        .into_builder()
        .with_fields(fields)
        .build()
        .map_err(iceberg_error)
}

/// The version number at the start of a metadata file's name (`00003-<uuid>.metadata.json`).
fn version_number(location: &str) -> u64 {
    let name = location.rsplit('/').next().unwrap_or("");
    name.split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `location` as this crate writes locations: Java's `file:/path` is `file:///path`.
pub fn normal(location: &str) -> std::borrow::Cow<'_, str> {
    match location.strip_prefix("file:/") {
        Some(path) if !path.starts_with('/') => format!("file:///{path}").into(),
        _ => location.into(),
    }
}

/// A store URL as an Iceberg location: local paths become `file://` URLs.
fn location_url(url: &str) -> String {
    if url.starts_with('/') {
        format!("file://{url}")
    } else {
        url.to_string()
    }
}

pub fn iceberg_error(e: ::iceberg::Error) -> Error {
    Error::io(format!("Iceberg: {e}"))
}

#[cfg(test)]
mod tests {
    use ::iceberg::spec::{DataContentType, DataFileBuilder, DataFileFormat};

    use super::*;
    use crate::iceberg::pointer::{SqlitePointers, CATALOG_NAME};

    fn schema() -> Schema {
        Schema::builder()
            .with_fields([
                NestedField::optional(1, "symbol", Type::Primitive(PrimitiveType::String)).into(),
                NestedField::optional(2, "price", Type::Primitive(PrimitiveType::Double)).into(),
            ])
            .build()
            .unwrap()
    }

    /// A table `t` of an empty lake, created with `schema()` and no partitions.
    fn created() -> (tempfile::TempDir, IcebergTable) {
        let (dir, store) = crate::testing::local_lake();
        let pointers = SqlitePointers::open(&dir.path().join("catalog.db"), CATALOG_NAME).unwrap();
        let catalog = IcebergCatalog::new(store, Arc::new(pointers), "db");
        let table = catalog.table("t");
        let unpartitioned = UnboundPartitionSpec::builder().build();
        table
            .create(schema(), unpartitioned, HashMap::new())
            .unwrap();
        (dir, table)
    }

    fn file(table: &IcebergTable, name: &str, rows: u64) -> DataFile {
        DataFileBuilder::default()
            .content(DataContentType::Data)
            .file_path(format!("{}/data/{name}", table.location()))
            .file_format(DataFileFormat::Parquet)
            .record_count(rows)
            .file_size_in_bytes(100)
            .build()
            .unwrap()
    }

    #[test]
    fn appends_keep_every_files_manifest_and_their_offsets_in_the_summary() {
        let (dir, store) = crate::testing::local_lake();
        let pointers =
            Arc::new(SqlitePointers::open(&dir.path().join("catalog.db"), CATALOG_NAME).unwrap());
        let catalog = IcebergCatalog::new(store, pointers, "db");
        let table = catalog.table("ticks");
        assert!(table.load().unwrap().is_none());
        let created = table
            .create(
                schema(),
                UnboundPartitionSpec::builder().build(),
                HashMap::new(),
            )
            .unwrap();
        assert!(created.location.ends_with(".metadata.json"));
        assert!(created.metadata.current_snapshot().is_none());
        // A second writer creating the same table gets the first one's.
        let again = catalog
            .table("ticks")
            .create(
                schema(),
                UnboundPartitionSpec::builder().build(),
                HashMap::new(),
            )
            .unwrap();
        assert_eq!(again.location, created.location);

        for (name, rows, next) in [("a.parquet", 3, "3"), ("b.parquet", 5, "8")] {
            table
                .commit(&mut |_| {
                    Ok(Some(Change {
                        files: vec![file(&table, name, rows)],
                        summary: HashMap::from([("kafka.offsets".into(), next.into())]),
                        ..Change::default()
                    }))
                })
                .unwrap();
        }
        let now = table.load().unwrap().unwrap();
        assert_eq!(version_number(&now.location), 2);
        let snapshot = now.metadata.current_snapshot().unwrap();
        let summary = &snapshot.summary().additional_properties;
        assert_eq!(summary["kafka.offsets"], "8");
        assert_eq!(summary["total-records"], "8");
        assert_eq!(summary["total-data-files"], "2");
        let mut paths: Vec<String> = (table.data_files(snapshot).unwrap().iter())
            .map(|f| f.file_path().to_string())
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            ["a.parquet", "b.parquet"].map(|n| format!("{}/data/{n}", table.location()))
        );
    }

    #[test]
    fn a_writer_that_read_an_older_version_decides_again_on_the_new_one() {
        let (_dir, table) = created();
        let mut asked = 0;
        let committed = table
            .commit(&mut |read| {
                asked += 1;
                if asked == 1 {
                    // Another writer commits between this writer's read and its swap.
                    table
                        .commit(&mut |_| {
                            Ok(Some(Change {
                                files: vec![file(&table, "other.parquet", 1)],
                                ..Change::default()
                            }))
                        })
                        .unwrap();
                }
                let landed = read.metadata.current_snapshot().is_some();
                Ok((!landed).then(|| Change {
                    files: vec![file(&table, "mine.parquet", 1)],
                    ..Change::default()
                }))
            })
            .unwrap();
        // The swap from the version read first failed; on the new version the change saw
        // the other writer's snapshot and committed nothing.
        assert_eq!(asked, 2);
        let summary = &committed.metadata.current_snapshot().unwrap().summary();
        assert_eq!(summary.additional_properties["total-data-files"], "1");
    }

    #[test]
    fn a_commit_adds_columns_with_new_ids_and_properties_without_a_snapshot() {
        let (_dir, table) = created();
        let changed = table
            .commit(&mut |_| {
                Ok(Some(Change {
                    columns: vec![("Volume".into(), PrimitiveType::Long)],
                    properties: HashMap::from([("stockstream.claims".into(), "{}".into())]),
                    ..Change::default()
                }))
            })
            .unwrap();
        let now = table.load().unwrap().unwrap();
        assert_eq!(changed.location, now.location);
        assert!(now.metadata.current_snapshot().is_none());
        assert_eq!(
            now.metadata.current_schema().field_id_by_name("Volume"),
            Some(3)
        );
        assert_eq!(now.metadata.properties()["stockstream.claims"], "{}");
        let mapping = &now.metadata.properties()[NAME_MAPPING];
        assert!(
            mapping.contains(r#"{"field-id":3,"names":["Volume"]}"#),
            "{mapping}"
        );
    }

    #[test]
    fn a_stream_of_landings_merges_its_small_manifests_and_carries_a_large_one() {
        let (_dir, table) = created();
        let commit = |files: Vec<DataFile>| {
            (table.commit(&mut |_| {
                Ok(Some(Change {
                    files: files.clone(),
                    ..Change::default()
                }))
            }))
            .unwrap()
        };
        // A table's history, landed at once: one manifest of 1,000 files.
        commit(
            (0..1_000)
                .map(|i| file(&table, &format!("h{i}.parquet"), 1))
                .collect(),
        );
        let history = table.load().unwrap().unwrap();
        let history = table.manifests(history.metadata.current_snapshot().unwrap());
        let large = history.unwrap()[0].manifest.manifest_path.clone();
        for i in 0..101 {
            commit(vec![file(&table, &format!("{i}.parquet"), 1)]);
        }
        let now = table.load().unwrap().unwrap();
        let snapshot = now.metadata.current_snapshot().unwrap();
        // The 101st landing found 100 small manifests and merged them into its own; the
        // large one is carried as it is, not read and written again.
        let manifests = table.manifests(snapshot).unwrap();
        let paths: Vec<&str> = manifests
            .iter()
            .map(|m| m.manifest.manifest_path.as_str())
            .collect();
        assert_eq!(paths.len(), 2);
        assert!(paths.contains(&large.as_str()));
        let sizes: Vec<usize> = manifests.iter().map(|m| m.entries.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 1_101);
        assert!(sizes.contains(&101), "{sizes:?}");
        assert_eq!(table.data_files(snapshot).unwrap().len(), 1_101);
        assert_eq!(
            snapshot.summary().additional_properties["total-data-files"],
            "1101"
        );
    }

    #[test]
    fn java_file_locations_read_as_this_crate_writes_them() {
        assert_eq!(normal("file:/tmp/t/x.json"), "file:///tmp/t/x.json");
        assert_eq!(normal("file:///tmp/t/x.json"), "file:///tmp/t/x.json");
        assert_eq!(normal("s3://b/t/x.json"), "s3://b/t/x.json");
    }
}
