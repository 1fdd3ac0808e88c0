//! The AWS Glue Data Catalog as a catalog backend: tables with a StorageDescriptor and SerDe
//! that Athena, Trino and Spark understand, partition keys, and partitions registered in
//! batches. Tables read back from Glue can be queried locally too.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_glue::types::{
    BatchUpdatePartitionRequestEntry, Column as GlueColumn, DatabaseInput, PartitionInput,
    PartitionValueList, SerDeInfo, StorageDescriptor, TableInput,
};
use aws_sdk_glue::Client;
use tokio::runtime::Runtime;

use super::{table_name, Catalog, Column, Edit, HiveType, Landed, Table};
use crate::aws::{self, AwsOptions};
use crate::error::{Error, Result};
use crate::lake::{path_values, Format, Registered};

/// Table parameter naming the folder keys of partition columns renamed for Glue.
const FOLDERS_PARAMETER: &str = "stockstream.partition_folders";
/// Table parameters holding what stockstream records beside Glue's own fields (JSON).
const SOURCE_PARAMETER: &str = "stockstream.source";
const LANDED_PARAMETER: &str = "stockstream.landed";
const RETIRED_PARAMETER: &str = "stockstream.retired";
const STAGED_PARAMETER: &str = "stockstream.staged";
const PARTITIONING_PARAMETER: &str = "stockstream.partitioning";
const WIDENED_PARAMETER: &str = "stockstream.widened";
const CLAIMS_PARAMETER: &str = "stockstream.claims";
const EPOCH_PARAMETER: &str = "stockstream.epoch";
/// Partition moves a compaction committed (partition path → folder) whose Glue partitions
/// may not point there yet: the table's version decides a switch, and the partitions follow.
const MOVING_PARAMETER: &str = "stockstream.moving";
/// Glue takes at most this many bytes in one table parameter.
const PARAMETER_BYTES: usize = 512_000;
/// Writers racing for one table (sink members, a compaction) retry this often.
const UPDATE_ATTEMPTS: usize = 100;
/// Glue accepts at most this many partitions per batch_get_partition call.
const GET_BATCH: usize = 1000;
/// Glue accepts at most this many partitions per batch_create_partition call.
const PARTITION_BATCH: usize = 100;

/// A Glue Data Catalog describing a lake at `s3://bucket/prefix`.
pub struct GlueCatalog {
    client: Client,
    runtime: Runtime,
    options: AwsOptions,
    /// `s3://bucket/prefix/`: table locations are below it.
    root: String,
}

impl GlueCatalog {
    pub fn new(bucket: &str, prefix: &str, options: &AwsOptions) -> Result<Self> {
        let runtime = aws::runtime("stockstream-glue")?;
        let sdk = runtime.block_on(aws::sdk_config(options));
        let root = if prefix.is_empty() {
            format!("s3://{bucket}/")
        } else {
            format!("s3://{bucket}/{prefix}/")
        };
        Ok(GlueCatalog {
            client: Client::new(&sdk),
            runtime,
            options: options.clone(),
            root,
        })
    }

    pub(crate) fn failed<E>(
        &self,
        what: &str,
        err: &aws_sdk_glue::error::SdkError<E, aws_sdk_glue::config::http::HttpResponse>,
    ) -> Error
    where
        E: aws_sdk_glue::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        aws::request_failed(&self.options, &format!("AWS Glue {what}"), err)
    }

    /// The client, its runtime and its error reports, for Glue's Iceberg tables.
    pub(crate) fn client(&self) -> (&Client, &Runtime) {
        (&self.client, &self.runtime)
    }

    /// Every Glue table of `database` (none if the database does not exist), Hive or
    /// Iceberg.
    pub(crate) async fn glue_tables(
        &self,
        database: &str,
    ) -> Result<Vec<aws_sdk_glue::types::Table>> {
        let mut pages = (self.client.get_tables().database_name(database))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => out.extend(page.table_list().iter().cloned()),
                Err(e) if aws::error_code(&e) == Some("EntityNotFoundException") => break,
                Err(e) => return Err(self.failed(&format!("get_tables {database}"), &e)),
            }
        }
        Ok(out)
    }

    pub(crate) async fn ensure_database(&self, database: &str) -> Result<()> {
        let input = DatabaseInput::builder()
            .name(database)
            .description("Stock-market tables written by stockstream")
            .build()
            .map_err(|e| Error::config(format!("bad Glue database {database:?}: {e}")))?;
        match self
            .client
            .create_database()
            .database_input(input)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if aws::error_code(&e) == Some("AlreadyExistsException") => Ok(()),
            Err(e) => Err(self.failed(&format!("create_database {database}"), &e)),
        }
    }

    /// Creates the table; false if another writer created it first.
    async fn create_table(&self, table: &Table) -> Result<bool> {
        let input = table_input(table, &self.root, &BTreeMap::new())?;
        match self
            .client
            .create_table()
            .database_name(&table.database)
            .table_input(input)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if aws::error_code(&e) == Some("AlreadyExistsException") => Ok(false),
            Err(e) => Err(self.failed(&format!("create_table {}", table.name), &e)),
        }
    }

    /// Replaces the table's definition if it is still at `version`; false if another
    /// writer changed it since.
    async fn update_table(
        &self,
        table: &Table,
        version: &str,
        moving: &BTreeMap<String, String>,
    ) -> Result<bool> {
        let input = table_input(table, &self.root, moving)?;
        match self
            .client
            .update_table()
            .database_name(&table.database)
            .table_input(input)
            .version_id(version)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if aws::error_code(&e) == Some("ConcurrentModificationException") => Ok(false),
            Err(e) => Err(self.failed(&format!("update_table {}", table.name), &e)),
        }
    }

    fn partition_input(&self, table: &Table, values: &[String]) -> PartitionInput {
        let location = format!(
            "{}{}/",
            self.root,
            table.folder(&table.partition_path(values))
        );
        PartitionInput::builder()
            .set_values(Some(values.to_vec()))
            .storage_descriptor(storage_descriptor(table, location, false))
            .build()
    }

    /// Points moved partitions at their new folders, in batches Athena reads whole.
    async fn move_partitions(&self, table: &Table, partitions: &[Vec<String>]) -> Result<()> {
        for batch in partitions.chunks(PARTITION_BATCH) {
            let entries = batch
                .iter()
                .map(|values| {
                    BatchUpdatePartitionRequestEntry::builder()
                        .set_partition_value_list(Some(values.clone()))
                        .partition_input(self.partition_input(table, values))
                        .build()
                        .map_err(|e| Error::io(format!("bad Glue partition update: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .client
                .batch_update_partition()
                .database_name(&table.database)
                .table_name(&table.name)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.failed(&format!("batch_update_partition {}", table.name), &e))?;
            if let Some(e) = out.errors().first() {
                return Err(Error::io(format!(
                    "AWS Glue refused to move partition {:?} of {}.{}: {}",
                    e.partition_value_list(),
                    table.database,
                    table.name,
                    e.error_detail()
                        .and_then(|d| d.error_message())
                        .unwrap_or("unknown error")
                )));
            }
        }
        Ok(())
    }

    /// A partition's folder below the lake root, if its location lies in this lake.
    fn folder_of(&self, p: &aws_sdk_glue::types::Partition) -> Option<String> {
        p.storage_descriptor()
            .and_then(|sd| sd.location())
            .and_then(|l| l.strip_prefix(self.root.as_str()))
            .map(|l| l.trim_end_matches('/').to_string())
    }

    /// The folders (below the lake root) of those of `partitions` that exist.
    async fn partition_folders(
        &self,
        table: &Table,
        partitions: &[Vec<String>],
    ) -> Result<HashMap<Vec<String>, String>> {
        let mut out = HashMap::new();
        for batch in partitions.chunks(GET_BATCH) {
            let values = batch
                .iter()
                .map(|v| {
                    PartitionValueList::builder()
                        .set_values(Some(v.clone()))
                        .build()
                        .map_err(|e| Error::io(format!("bad Glue partition values: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let got = self
                .client
                .batch_get_partition()
                .database_name(&table.database)
                .table_name(&table.name)
                .set_partitions_to_get(Some(values))
                .send()
                .await
                .map_err(|e| self.failed(&format!("batch_get_partition {}", table.name), &e))?;
            for p in got.partitions() {
                if let Some(folder) = self.folder_of(p) {
                    out.insert(p.values().to_vec(), folder);
                }
            }
        }
        Ok(out)
    }

    async fn add_partitions(&self, table: &Table, partitions: &[Vec<String>]) -> Result<()> {
        for batch in partitions.chunks(PARTITION_BATCH) {
            let inputs = batch
                .iter()
                .map(|values| self.partition_input(table, values))
                .collect();
            let out = self
                .client
                .batch_create_partition()
                .database_name(&table.database)
                .table_name(&table.name)
                .set_partition_input_list(Some(inputs))
                .send()
                .await
                .map_err(|e| self.failed(&format!("batch_create_partition {}", table.name), &e))?;
            let failures: Vec<String> = out
                .errors()
                .iter()
                .filter(|e| {
                    e.error_detail().and_then(|d| d.error_code()) != Some("AlreadyExistsException")
                })
                .map(|e| {
                    format!(
                        "{:?}: {}",
                        e.partition_values(),
                        e.error_detail()
                            .and_then(|d| d.error_message())
                            .unwrap_or("unknown error")
                    )
                })
                .collect();
            if !failures.is_empty() {
                return Err(Error::io(format!(
                    "AWS Glue refused partitions of {}.{}: {}",
                    table.database,
                    table.name,
                    failures.join("; ")
                )));
            }
        }
        Ok(())
    }

    /// Every partition of a table, and the folder of each.
    async fn partitions(
        &self,
        database: &str,
        name: &str,
    ) -> Result<Vec<(Vec<String>, Option<String>)>> {
        let mut pages = self
            .client
            .get_partitions()
            .database_name(database)
            .table_name(name)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.failed(&format!("get_partitions {name}"), &e))?;
            out.extend(
                page.partitions()
                    .iter()
                    .map(|p| (p.values().to_vec(), self.folder_of(p))),
            );
        }
        Ok(out)
    }

    /// A Glue table as a stockstream table, if it lies in this lake, with its version and
    /// the partition moves not yet applied to its Glue partitions (all recorded ones when
    /// its partitions are not read).
    async fn read_table(
        &self,
        database: &str,
        glue: &aws_sdk_glue::types::Table,
        with_partitions: bool,
    ) -> Result<Option<Versioned>> {
        // Iceberg tables are read from their snapshots (`iceberg::glue`), not as folders.
        if is_iceberg(glue) {
            return Ok(None);
        }
        let Some(sd) = glue.storage_descriptor() else {
            return Ok(None);
        };
        let Some(location) = sd
            .location()
            .and_then(|l| l.strip_prefix(self.root.as_str()))
        else {
            return Ok(None);
        };
        let format = if sd
            .serde_info()
            .and_then(|s| s.serialization_library())
            .is_some_and(|l| l.to_ascii_lowercase().contains("parquet"))
        {
            Format::Parquet
        } else {
            Format::Ndjson
        };
        let what = format!("{database}.{}", glue.name());
        let folders: Vec<String> = glue
            .parameters()
            .and_then(|p| p.get(FOLDERS_PARAMETER))
            .map(|f| f.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        let mut partition_keys = columns(glue.partition_keys(), &what)?;
        for (key, folder) in partition_keys.iter_mut().zip(folders) {
            key.name = folder;
        }
        let parameter = |name: &str| glue.parameters().and_then(|p| p.get(name));
        let json = |name: &str| -> Result<Option<serde_json::Value>> {
            parameter(name)
                .map(|v| {
                    serde_json::from_str(v).map_err(|e| {
                        Error::schema(format!(
                            "Glue table {what}: parameter {name} is not valid: {e}"
                        ))
                    })
                })
                .transpose()
        };
        let decode = |name: &str| -> Result<serde_json::Value> {
            Ok(json(name)?.unwrap_or(serde_json::Value::Null))
        };
        let mut table = Table::new(database, glue.name(), "", format, partition_keys);
        // The table's own folder: its location, unless compaction moved an unpartitioned
        // table's objects to a versioned folder below it.
        let location = location.trim_end_matches('/').to_string();
        table.source = serde_json::from_value(decode(SOURCE_PARAMETER)?).unwrap_or(None);
        table.landed = serde_json::from_value(decode(LANDED_PARAMETER)?).unwrap_or_default();
        table.retired = serde_json::from_value(decode(RETIRED_PARAMETER)?).unwrap_or_default();
        table.staged = serde_json::from_value(decode(STAGED_PARAMETER)?).unwrap_or_default();
        table.partitioning = parameter(PARTITIONING_PARAMETER).cloned();
        table.widened = serde_json::from_value(decode(WIDENED_PARAMETER)?).unwrap_or_default();
        table.claims = serde_json::from_value(decode(CLAIMS_PARAMETER)?).unwrap_or_default();
        table.epoch = parameter(EPOCH_PARAMETER)
            .and_then(|e| e.parse().ok())
            .unwrap_or_default();
        let mut moving: BTreeMap<String, String> =
            serde_json::from_value(decode(MOVING_PARAMETER)?).unwrap_or_default();
        table.location = match &table.source {
            Some(_) if table.partition_keys.is_empty() => {
                base_folder(&location).unwrap_or(location.clone())
            }
            _ => location.clone(),
        };
        if table.location != location {
            table.locations.insert(String::new(), location);
        }
        table.columns = columns(sd.columns(), &what)?;
        if with_partitions {
            for (values, folder) in self.partitions(database, glue.name()).await? {
                let path = table.partition_path(&values);
                if let Some(folder) = folder.filter(|f| *f != table.folder(&path)) {
                    if moving.get(&path) == Some(&folder) {
                        moving.remove(&path);
                    }
                    table.locations.insert(path, folder);
                }
                table.partitions.insert(values);
            }
        }
        // A committed switch holds even before the partition points to its folder.
        table
            .locations
            .extend(moving.iter().map(|(p, f)| (p.clone(), f.clone())));
        Ok(Some(Versioned {
            table,
            version: glue.version_id().unwrap_or_default().to_string(),
            moving,
        }))
    }
}

fn columns(glue: &[GlueColumn], table: &str) -> Result<Vec<Column>> {
    glue.iter()
        .map(|c| {
            let kind = c.r#type().unwrap_or("string");
            HiveType::parse(kind)
                .map(|kind| Column {
                    name: c.name().to_string(),
                    kind,
                })
                .ok_or_else(|| {
                    Error::schema(format!(
                        "column {:?} of Glue table {table} has type {kind}, which stockstream \
                         cannot read",
                        c.name()
                    ))
                })
        })
        .collect()
}

/// Glue (like Athena) compares column names without case, so a partition key equal to a
/// data column (`date` folders over a `Date` column) is registered as `partition_<key>`.
fn glue_partition_name(table: &Table, key: &str) -> String {
    let clash = table
        .columns
        .iter()
        .any(|c| c.name.eq_ignore_ascii_case(key));
    if clash {
        format!("partition_{key}")
    } else {
        key.to_string()
    }
}

fn glue_column(name: &str, kind: HiveType) -> GlueColumn {
    GlueColumn::builder()
        .name(name)
        .r#type(kind.name())
        .build()
        .expect("a column has a name")
}

fn storage_descriptor(table: &Table, location: String, with_columns: bool) -> StorageDescriptor {
    let (input, output, serde) = match table.format {
        Format::Parquet => (
            "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
        ),
        Format::Ndjson => (
            "org.apache.hadoop.mapred.TextInputFormat",
            "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
            "org.openx.data.jsonserde.JsonSerDe",
        ),
    };
    let mut sd = StorageDescriptor::builder()
        .location(location)
        .input_format(input)
        .output_format(output)
        .serde_info(
            SerDeInfo::builder()
                .serialization_library(serde)
                .parameters("serialization.format", "1")
                .build(),
        );
    if with_columns {
        sd = sd.set_columns(Some(
            table
                .columns
                .iter()
                .map(|c| glue_column(&c.name, c.kind))
                .collect(),
        ));
    }
    sd.build()
}

/// A table as read from Glue, with what a conditional update needs.
struct Versioned {
    table: Table,
    /// Glue's version of the table definition.
    version: String,
    /// Recorded partition moves whose partitions may not follow yet.
    moving: BTreeMap<String, String>,
}

impl GlueCatalog {
    fn get(&self, database: &str, name: &str, with_partitions: bool) -> Result<Option<Versioned>> {
        self.runtime.block_on(async {
            let got = self
                .client
                .get_table()
                .database_name(database)
                .name(name)
                .send()
                .await;
            match got {
                Ok(out) => match out.table() {
                    Some(glue) => self.read_table(database, glue, with_partitions).await,
                    None => Ok(None),
                },
                Err(e) if aws::error_code(&e) == Some("EntityNotFoundException") => Ok(None),
                Err(e) => Err(self.failed(&format!("get_table {database}.{name}"), &e)),
            }
        })
    }
}

/// Whether a Glue table is an Iceberg table (`table_type=ICEBERG`, as Athena marks them).
pub(crate) fn is_iceberg(glue: &aws_sdk_glue::types::Table) -> bool {
    (glue.parameters().and_then(|p| p.get("table_type")))
        .is_some_and(|t| t.eq_ignore_ascii_case("iceberg"))
}

/// The table folder of a versioned folder (`t/_v…` → `t`).
fn base_folder(folder: &str) -> Option<String> {
    let (base, last) = folder.rsplit_once('/')?;
    last.starts_with("_v").then(|| base.to_string())
}

fn table_input(table: &Table, root: &str, moving: &BTreeMap<String, String>) -> Result<TableInput> {
    let folders: Vec<&str> = table
        .partition_keys
        .iter()
        .map(|k| k.name.as_str())
        .collect();
    let parameters = HashMap::from([
        (
            "classification".to_string(),
            match table.format {
                Format::Parquet => "parquet",
                Format::Ndjson => "json",
            }
            .to_string(),
        ),
        (FOLDERS_PARAMETER.to_string(), folders.join(",")),
    ]);
    let mut parameters = parameters;
    let mut record = |name: &str, value: serde_json::Value| {
        parameters.insert(name.to_string(), value.to_string());
    };
    if let Some(source) = &table.source {
        record(SOURCE_PARAMETER, serde_json::json!(source));
        record(LANDED_PARAMETER, serde_json::json!(table.landed));
        record(CLAIMS_PARAMETER, serde_json::json!(table.claims));
        record(EPOCH_PARAMETER, serde_json::json!(table.epoch));
    }
    if !moving.is_empty() {
        record(MOVING_PARAMETER, serde_json::json!(moving));
    }
    if !table.retired.is_empty() {
        record(RETIRED_PARAMETER, serde_json::json!(table.retired));
    }
    if !table.staged.is_empty() {
        record(STAGED_PARAMETER, serde_json::json!(table.staged));
    }
    if !table.widened.is_empty() {
        record(WIDENED_PARAMETER, serde_json::json!(table.widened));
    }
    if let Some(p) = &table.partitioning {
        parameters.insert(PARTITIONING_PARAMETER.to_string(), p.clone());
    }
    if let Some((name, value)) = parameters.iter().find(|(_, v)| v.len() > PARAMETER_BYTES) {
        return Err(Error::config(format!(
            "table {}: Glue takes at most {PARAMETER_BYTES} bytes in a table parameter, and \
             {name} needs {} (one entry per Kafka partition of the topic): use the local \
             catalog for topics with this many partitions",
            table.name,
            value.len()
        )));
    }
    TableInput::builder()
        .name(&table.name)
        .description("Written by stockstream; partitions registered as they land")
        .table_type("EXTERNAL_TABLE")
        .set_parameters(Some(parameters))
        .set_partition_keys(Some(
            table
                .partition_keys
                .iter()
                .map(|k| glue_column(&glue_partition_name(table, &k.name), k.kind))
                .collect(),
        ))
        .storage_descriptor(storage_descriptor(
            table,
            format!("{root}{}/", table.folder("")),
            true,
        ))
        .build()
        .map_err(|e| Error::config(format!("bad Glue table {:?}: {e}", table.name)))
}

impl Catalog for GlueCatalog {
    fn describe(&self) -> String {
        "AWS Glue".to_string()
    }

    fn tables(&self, database: &str) -> Result<Vec<Table>> {
        self.runtime.block_on(async {
            let mut out = Vec::new();
            for glue in self.glue_tables(database).await? {
                if let Some(read) = self.read_table(database, &glue, true).await? {
                    out.push(read.table);
                }
            }
            Ok(out)
        })
    }

    fn table(&self, database: &str, name: &str) -> Result<Option<Table>> {
        Ok(self.get(database, name, true)?.map(|v| v.table))
    }

    fn header(&self, database: &str, name: &str) -> Result<Option<Table>> {
        Ok(self.get(database, name, false)?.map(|v| v.table))
    }

    /// A conditional write: a new table is created only if no other writer created it
    /// (`CreateTable`), an existing one is replaced only at the version read (`VersionId`);
    /// otherwise `change` is applied again to what the other writer left. Partitions are
    /// added before the table that records them; moves are recorded in the table first
    /// (the version decides which of two compactions switched a partition) and applied to
    /// the partitions after.
    fn update(&self, database: &str, name: &str, change: &mut Edit) -> Result<Option<Table>> {
        for _ in 0..UPDATE_ATTEMPTS {
            let read = self.get(database, name, true)?;
            let before = read.as_ref().map(|v| v.table.clone());
            let mut after = before.clone();
            if !change(&mut after)? {
                return Ok(after);
            }
            let Some(table) = &after else {
                return Ok(None);
            };
            let old = before.unwrap_or_else(|| {
                Table::new(database, name, &table.location, table.format, Vec::new())
            });
            let added: Vec<Vec<String>> = table
                .partitions
                .difference(&old.partitions)
                .cloned()
                .collect();
            let mut moving = read.as_ref().map(|v| v.moving.clone()).unwrap_or_default();
            for values in table.partitions.intersection(&old.partitions) {
                let path = table.partition_path(values);
                if table.folder(&path) != old.folder(&path) {
                    moving.insert(path.clone(), table.folder(&path));
                }
            }
            let won = self.runtime.block_on(async {
                self.ensure_database(database).await?;
                match &read {
                    None => {
                        if !self.create_table(table).await? {
                            return Ok(false);
                        }
                        self.add_partitions(table, &added).await?;
                        Ok(true)
                    }
                    Some(read) => {
                        // Partitions need their table; a table's recorded state (landed
                        // offsets) must not get ahead of the partitions it describes.
                        self.add_partitions(table, &added).await?;
                        self.update_table(table, &read.version, &moving).await
                    }
                }
            })?;
            if !won {
                continue;
            }
            let moves: Vec<Vec<String>> = table
                .partitions
                .iter()
                .filter(|v| moving.contains_key(&table.partition_path(v)))
                .cloned()
                .collect();
            self.runtime.block_on(self.move_partitions(table, &moves))?;
            return Ok(after);
        }
        Err(Error::io(format!(
            "AWS Glue table {database}.{name} kept changing under {UPDATE_ATTEMPTS} attempts to \
             update it"
        )))
    }

    /// Costs the same whatever the table's size: the partitions the landing touched are
    /// looked up (to learn whether compaction moved them), missing ones created, and the
    /// table's columns and landed offsets updated.
    fn register_landing(&self, database: &str, landed: &Landed) -> Result<Registered> {
        let landing = landed.landing;
        let name = table_name(landing.table);
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(read) = self.get(database, &name, false)? else {
                return Err(Error::not_found(format!(
                    "table {name} is not in AWS Glue database {database} (declare it first)"
                )));
            };
            let mut table = read.table;
            let touched: Vec<Vec<String>> = landing
                .objects
                .iter()
                .map(|o| path_values(&o.path))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let existing = if table.partition_keys.is_empty() {
                HashMap::new()
            } else {
                self.runtime
                    .block_on(self.partition_folders(&table, &touched))?
            };
            for (values, folder) in &existing {
                let path = table.partition_path(values);
                if *folder != table.folder(&path) && !read.moving.contains_key(&path) {
                    table.locations.insert(path, folder.clone());
                }
                table.partitions.insert(values.clone());
            }
            let added = match landed.apply(&mut table) {
                Ok(added) => added,
                Err(refused) => return Ok(refused),
            };
            let won = self.runtime.block_on(async {
                self.add_partitions(&table, &added).await?;
                self.update_table(&table, &read.version, &read.moving).await
            })?;
            if won {
                return Ok(Registered::Done);
            }
        }
        Err(Error::io(format!(
            "AWS Glue table {database}.{name} kept changing under {UPDATE_ATTEMPTS} attempts to \
             register a landing"
        )))
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_glue::config::{BehaviorVersion, Region};
    use aws_sdk_glue::types::Table as GlueTable;

    use super::*;
    use crate::catalog::Retired;
    use crate::lake::{LandedRange, LastRecord, TableSource};
    use crate::testing;

    const ROOT: &str = "s3://bucket/lake/";

    /// A catalog that is never sent a request: only what it reads is tested.
    fn catalog() -> GlueCatalog {
        let config = aws_sdk_glue::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .build();
        GlueCatalog {
            client: Client::from_conf(config),
            runtime: aws::runtime("test-glue").unwrap(),
            options: AwsOptions::default(),
            root: ROOT.into(),
        }
    }

    /// What Glue would hand back for a table written with `input`.
    fn stored(input: &TableInput, location: Option<&str>) -> GlueTable {
        let mut sd = input.storage_descriptor().cloned().unwrap();
        if let Some(location) = location {
            sd.location = Some(location.into());
        }
        GlueTable::builder()
            .name(input.name())
            .set_storage_descriptor(Some(sd))
            .set_partition_keys(Some(input.partition_keys().to_vec()))
            .set_parameters(input.parameters().cloned())
            .version_id("7")
            .build()
            .unwrap()
    }

    fn read_back(glue: &GlueTable) -> Option<Versioned> {
        let catalog = catalog();
        catalog
            .runtime
            .block_on(catalog.read_table("db", glue, false))
            .unwrap()
    }

    fn source() -> TableSource {
        TableSource {
            bootstrap_servers: "broker:9092".into(),
            topic: "ticks".into(),
            group_id: "g".into(),
            symbol_field: "Index".into(),
            time_field: "Date".into(),
            columns: [("Close".to_string(), "float".to_string())].into(),
            kafka_metadata: true,
            time_format: Some("%Y-%m-%d".into()),
            time_zone: None,
        }
    }

    #[test]
    fn a_sinks_table_reads_back_from_glue_as_it_was_written() {
        let columns = [
            ("Date", HiveType::Date),
            ("Close", HiveType::Double),
            ("note", HiveType::String),
        ];
        let mut table = testing::ticks_table("db", &[("date", HiveType::String)], &columns);
        table.source = Some(source());
        let last = LastRecord {
            timestamp: Some(1_609_718_400_000),
            key_bytes: 3,
            value_bytes: 60,
        };
        table.landed.insert(
            0,
            LandedRange {
                first: 5,
                next: 10,
                last: Some(last),
            },
        );
        table.claims.insert(0, 3);
        table.epoch = 3;
        table.widened.insert("note".into());
        table.partitioning = Some("auto: date".into());
        table.retired.push(Retired {
            folder: "ticks/date=2021-01-01".into(),
            at_ms: 42,
        });
        // A switch is committed in the table before its partition points to the new folder.
        let moving = BTreeMap::from([(
            "date=2021-01-04".to_string(),
            "ticks/date=2021-01-04/_v9".to_string(),
        )]);
        table.locations = moving.clone();

        let input = table_input(&table, ROOT, &moving).unwrap();
        // Athena compares names without case: `date` folders cannot be named like `Date`.
        let keys: Vec<&str> = input.partition_keys().iter().map(|c| c.name()).collect();
        assert_eq!(keys, ["partition_date"]);
        let sd = input.storage_descriptor().unwrap();
        assert_eq!(sd.location(), Some("s3://bucket/lake/ticks/"));
        assert!(sd
            .serde_info()
            .and_then(|s| s.serialization_library())
            .unwrap()
            .contains("Parquet"));

        let read = read_back(&stored(&input, None)).unwrap();
        assert_eq!(read.version, "7");
        assert_eq!(read.moving, moving);
        assert_eq!(read.table, table);
    }

    #[test]
    fn only_tables_in_this_lake_are_read_and_a_compacted_one_keeps_its_own_folder() {
        let mut table = Table::new("db", "events", "events", Format::Ndjson, Vec::new());
        table.source = Some(source());
        table
            .locations
            .insert(String::new(), "events/_v1-ab".into());
        let input = table_input(&table, ROOT, &BTreeMap::new()).unwrap();
        let sd = input.storage_descriptor().unwrap();
        assert_eq!(sd.location(), Some("s3://bucket/lake/events/_v1-ab/"));
        assert_eq!(input.parameters().unwrap()["classification"], "json");

        let read = read_back(&stored(&input, None)).unwrap().table;
        assert_eq!(read.location, "events");
        assert_eq!(read.folder(""), "events/_v1-ab");
        assert_eq!(read.format, Format::Ndjson);

        let elsewhere = stored(&input, Some("s3://other-bucket/events/"));
        assert!(read_back(&elsewhere).is_none());
        assert_eq!(base_folder("events/_v1-ab").as_deref(), Some("events"));
        assert_eq!(base_folder("events/raw"), None);
        assert_eq!(base_folder("events"), None);
    }

    #[test]
    fn a_parameter_larger_than_glue_takes_is_refused_before_any_request() {
        let mut table = Table::new("db", "wide", "wide", Format::Parquet, Vec::new());
        // Without a source, nothing a sink records goes into the parameters.
        table.claims.insert(0, 1);
        let input = table_input(&table, ROOT, &BTreeMap::new()).unwrap();
        let parameters = input.parameters().unwrap();
        assert!(!parameters.contains_key(CLAIMS_PARAMETER));
        assert!(!parameters.contains_key(LANDED_PARAMETER));

        table.source = Some(source());
        for p in 0..30_000 {
            table
                .landed
                .insert(p, LandedRange::new(1_000_000, 2_000_000));
        }
        let e = table_input(&table, ROOT, &BTreeMap::new()).unwrap_err();
        let message = e.to_string();
        assert!(e.is(crate::error::Kind::Config), "{message}");
        assert!(
            message.contains(LANDED_PARAMETER) && message.contains("local catalog"),
            "{message}"
        );
    }

    #[test]
    fn columns_of_types_stockstream_cannot_read_are_refused_by_name() {
        let glue = |name: &str, kind: Option<&str>| {
            GlueColumn::builder()
                .name(name)
                .set_type(kind.map(str::to_string))
                .build()
                .unwrap()
        };
        let read = columns(
            &[
                glue("a", Some("varchar(10)")),
                glue("b", None),
                glue("c", Some("BIGINT")),
            ],
            "db.t",
        )
        .unwrap();
        let kinds: Vec<HiveType> = read.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [HiveType::String, HiveType::String, HiveType::Bigint]
        );
        let e = columns(&[glue("tags", Some("array<string>"))], "db.t").unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("\"tags\"")
                && message.contains("db.t")
                && message.contains("array<string>"),
            "{message}"
        );
    }
}
