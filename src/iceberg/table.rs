//! One Iceberg table in the lake: its metadata files, manifests and snapshots, written with
//! the `iceberg` crate's spec types into the lake's own store, and committed by moving the
//! catalog's pointer from the metadata a writer read to the one it wrote. A writer that
//! loses the race reads the table again and decides afresh.

use std::collections::HashMap;
use std::sync::Arc;

use ::iceberg::io::FileIO;
use ::iceberg::spec::{
    DataFile, FormatVersion, ManifestFile, ManifestList, ManifestListWriter, ManifestWriterBuilder,
    NestedField, Operation, PrimitiveType, Schema, Snapshot, SnapshotSummaryCollector, SortOrder,
    Summary, TableMetadata, TableMetadataBuilder, Type, UnboundPartitionSpec, MAIN_BRANCH,
};

use super::pointer::Pointers;
use super::schema::{name_mapping, NAME_MAPPING};
use crate::error::{Error, Result};
use crate::lake::ObjectStore;

/// A table's metadata as last read, and where it was read from.
#[derive(Debug, Clone)]
pub struct Version {
    pub location: String,
    pub metadata: TableMetadata,
}

/// What a commit changes in the table it read, in one metadata version: columns added,
/// table properties set, and a snapshot of data files added (if any) whose summary carries
/// `summary` (a landing's Kafka offsets).
#[derive(Default)]
pub struct Change {
    /// New optional columns, given the next field ids in this order.
    pub columns: Vec<(String, PrimitiveType)>,
    pub properties: HashMap<String, String>,
    pub files: Vec<DataFile>,
    pub summary: HashMap<String, String>,
}

/// A namespace of Iceberg tables: the catalog holding their pointers, and the lake store
/// holding their files.
#[derive(Clone)]
pub struct IcebergCatalog {
    pub store: Arc<dyn ObjectStore>,
    pub pointers: Arc<dyn Pointers>,
    pub namespace: String,
}

impl IcebergCatalog {
    /// Table `name`, in the lake folder of the same name.
    pub fn table(&self, name: &str) -> IcebergTable {
        IcebergTable {
            catalog: self.clone(),
            name: name.to_string(),
            folder: name.trim_end_matches('/').to_string(),
        }
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
    fn key_of(&self, location: &str) -> Result<String> {
        let table = self.location();
        match location.strip_prefix(&table) {
            Some(rest) => Ok(format!("{}{rest}", self.folder)),
            None => Err(Error::config(format!(
                "Iceberg table {}.{}: file {location:?} is not under the table's location \
                 {table:?}",
                self.catalog.namespace, self.name
            ))),
        }
    }

    fn read_location(&self, location: &str) -> Result<Vec<u8>> {
        self.catalog
            .store
            .read(&self.key_of(location)?, crate::lake::ByteRange::All)
    }

    /// The table as the catalog points at it now, if it exists.
    pub fn load(&self) -> Result<Option<Version>> {
        let Some(location) = self
            .catalog
            .pointers
            .current(&self.catalog.namespace, &self.name)?
        else {
            return Ok(None);
        };
        let bytes = self.read_location(&location)?;
        let metadata: TableMetadata = serde_json::from_slice(&bytes)
            .map_err(|e| Error::schema(format!("Iceberg metadata {location}: {e}")).caused_by(e))?;
        Ok(Some(Version { location, metadata }))
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
        let location = self.write_metadata(&metadata, 0)?;
        if self
            .catalog
            .pointers
            .create(&self.catalog.namespace, &self.name, &location)?
        {
            return Ok(Version { location, metadata });
        }
        self.load()?.ok_or_else(|| {
            Error::io(format!(
                "Iceberg table {}.{} was created and is gone",
                self.catalog.namespace, self.name
            ))
        })
    }

    /// Writes `metadata` as version `number` of the table's metadata files.
    fn write_metadata(&self, metadata: &TableMetadata, number: u64) -> Result<String> {
        let body = serde_json::to_vec(metadata)
            .map_err(|e| Error::io(format!("cannot write Iceberg metadata: {e}")))?;
        let name = format!("{number:05}-{}.metadata.json", uuid::Uuid::new_v4());
        let key = format!("{}/metadata/{name}", self.folder);
        self.catalog.store.put(&key, &body)?;
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
            let metadata = self.changed(&read, change)?;
            let number = version_number(&read.location) + 1;
            let location = self.write_metadata(&metadata, number)?;
            if self.catalog.pointers.swap(
                &self.catalog.namespace,
                &self.name,
                &read.location,
                &location,
            )? {
                return Ok(Version { location, metadata });
            }
            // Lost the race: the metadata file just written is referred to by nothing.
            let _ = self.catalog.store.delete(&[self.key_of(&location)?]);
        }
    }

    /// The table's next metadata: `change`'s columns (and the name mapping that finds
    /// them), its properties, and its files in a new snapshot.
    fn changed(&self, read: &Version, change: Change) -> Result<TableMetadata> {
        let mut builder = read
            .metadata
            .clone()
            .into_builder(Some(read.location.clone()));
        let mut properties = change.properties;
        if !change.columns.is_empty() {
            let schema = with_columns(&read.metadata, &change.columns)?;
            properties.insert(NAME_MAPPING.to_string(), name_mapping(&schema));
            builder = builder.add_current_schema(schema).map_err(iceberg_error)?;
        }
        if !properties.is_empty() {
            builder = builder.set_properties(properties).map_err(iceberg_error)?;
        }
        let metadata = builder.build().map_err(iceberg_error)?.metadata;
        if change.files.is_empty() {
            return Ok(metadata);
        }
        let snapshot = self.snapshot(&metadata, change.files, change.summary)?;
        (metadata.into_builder(None))
            .set_branch_snapshot(snapshot, MAIN_BRANCH)
            .and_then(|b| b.build())
            .map_err(iceberg_error)
            .map(|built| built.metadata)
    }

    /// A snapshot of `metadata`'s table with `files` added in a new manifest, on top of the
    /// manifests of the current snapshot (both written to the store).
    fn snapshot(
        &self,
        metadata: &TableMetadata,
        files: Vec<DataFile>,
        extra: HashMap<String, String>,
    ) -> Result<Snapshot> {
        let parent = metadata.current_snapshot();
        let snapshot_id = new_snapshot_id();
        let sequence = metadata.next_sequence_number();
        let schema = metadata.current_schema().clone();
        let spec = metadata.default_partition_spec().as_ref().clone();
        let io = FileIO::new_with_memory();
        let commit = uuid::Uuid::new_v4();
        let meta_dir = format!("{}/metadata", self.location());

        let mut summary = SnapshotSummaryCollector::default();
        for file in &files {
            summary.add_file(file, schema.clone(), Arc::new(spec.clone()));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| Error::io(format!("cannot start a runtime: {e}")))?;
        let (manifest_bytes, manifest, list_bytes, list_location) = runtime
            .block_on(async {
                let manifest_location = format!("{meta_dir}/{commit}-m0.avro");
                let mut writer = ManifestWriterBuilder::new(
                    io.new_output(&manifest_location)?,
                    Some(snapshot_id),
                    schema.clone(),
                    spec.clone(),
                )
                .build_v2_data();
                for file in files {
                    writer.add_file(file, sequence)?;
                }
                let manifest = writer.write_manifest_file().await?;
                let manifest_bytes = io.new_input(&manifest_location)?.read().await?;

                let mut manifests: Vec<ManifestFile> = Vec::new();
                if let Some(parent) = parent {
                    let bytes = self.read_location(parent.manifest_list()).map_err(|e| {
                        ::iceberg::Error::new(::iceberg::ErrorKind::Unexpected, e.to_string())
                    })?;
                    let list = ManifestList::parse_with_version(&bytes, FormatVersion::V2)?;
                    manifests.extend(list.consume_entries());
                }
                manifests.insert(0, manifest.clone());
                let list_location = format!("{meta_dir}/snap-{snapshot_id}-1-{commit}.avro");
                let output = io.new_output(&list_location)?;
                let mut list = ManifestListWriter::v2(
                    output.writer().await?,
                    snapshot_id,
                    parent.map(|p| p.snapshot_id()),
                    sequence,
                );
                list.add_manifests(manifests.into_iter())?;
                list.close().await?;
                let list_bytes = io.new_input(&list_location)?.read().await?;
                Ok::<_, ::iceberg::Error>((manifest_bytes, manifest, list_bytes, list_location))
            })
            .map_err(iceberg_error)?;
        self.catalog
            .store
            .put(&self.key_of(&manifest.manifest_path)?, &manifest_bytes)?;
        self.catalog
            .store
            .put(&self.key_of(&list_location)?, &list_bytes)?;

        let mut properties = summary.build();
        add_totals(&mut properties, parent.map(|p| p.summary()));
        properties.extend(extra);
        Ok(Snapshot::builder()
            .with_snapshot_id(snapshot_id)
            .with_parent_snapshot_id(parent.map(|p| p.snapshot_id()))
            .with_sequence_number(sequence)
            .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
            .with_manifest_list(list_location)
            .with_schema_id(metadata.current_schema_id())
            .with_summary(Summary {
                operation: Operation::Append,
                additional_properties: properties,
            })
            .build())
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

/// `total-records` and `total-data-files` of the new snapshot: its parent's and what it adds.
fn add_totals(properties: &mut HashMap<String, String>, parent: Option<&Summary>) {
    for (total, added) in [
        ("total-records", "added-records"),
        ("total-data-files", "added-data-files"),
        ("total-files-size", "added-files-size"),
    ] {
        let number = |map: &HashMap<String, String>, key: &str| {
            map.get(key)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let before = parent.map_or(0, |p| number(&p.additional_properties, total));
        let sum = before + number(properties, added);
        properties.insert(total.to_string(), sum.to_string());
    }
}

/// The version number at the start of a metadata file's name (`00003-<uuid>.metadata.json`).
fn version_number(location: &str) -> u64 {
    let name = location.rsplit('/').next().unwrap_or("");
    name.split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A positive snapshot id, unique enough (Iceberg's own clients draw them at random too).
fn new_snapshot_id() -> i64 {
    let bits = uuid::Uuid::new_v4().as_u64_pair();
    ((bits.0 ^ bits.1) & (i64::MAX as u64)) as i64
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
        let catalog = IcebergCatalog {
            store,
            pointers: Arc::new(pointers),
            namespace: "db".into(),
        };
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
        let catalog = IcebergCatalog {
            store,
            pointers,
            namespace: "db".into(),
        };
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
        let list = ManifestList::parse_with_version(
            &table.read_location(snapshot.manifest_list()).unwrap(),
            FormatVersion::V2,
        )
        .unwrap();
        let mut paths: Vec<String> = Vec::new();
        for manifest in list.entries() {
            let bytes = table.read_location(&manifest.manifest_path).unwrap();
            let parsed = ::iceberg::spec::Manifest::parse_avro(&bytes).unwrap();
            paths.extend(
                parsed
                    .entries()
                    .iter()
                    .map(|e| e.data_file().file_path().to_string()),
            );
        }
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
}
