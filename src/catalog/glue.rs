//! The AWS Glue Data Catalog as a catalog backend: tables with a StorageDescriptor and SerDe
//! that Athena, Trino and Spark understand, partition keys, and partitions registered in
//! batches. Tables read back from Glue can be queried locally too.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_glue::types::{
    Column as GlueColumn, DatabaseInput, PartitionInput, SerDeInfo, StorageDescriptor, TableInput,
};
use aws_sdk_glue::Client;
use tokio::runtime::Runtime;

use super::{Catalog, Column, HiveType, Table};
use crate::aws::{self, AwsOptions};
use crate::error::{Error, Result};
use crate::sink::Format;

/// Table parameter naming the folder keys of partition columns renamed for Glue.
const FOLDERS_PARAMETER: &str = "stockstream.partition_folders";
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

    fn failed<E, R>(&self, what: &str, err: &aws_sdk_glue::error::SdkError<E, R>) -> Error
    where
        E: aws_sdk_glue::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        aws::request_failed(&self.options, &format!("AWS Glue {what}"), err)
    }

    async fn ensure_database(&self, database: &str) -> Result<()> {
        let input = DatabaseInput::builder()
            .name(database)
            .description("Stock-market tables written by stockstream")
            .build()
            .map_err(|e| Error::Config(format!("bad Glue database {database:?}: {e}")))?;
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

    async fn put_table(&self, table: &Table) -> Result<()> {
        let input = table_input(table, &self.root)?;
        let exists = match self
            .client
            .get_table()
            .database_name(&table.database)
            .name(&table.name)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e) if aws::error_code(&e) == Some("EntityNotFoundException") => false,
            Err(e) => return Err(self.failed(&format!("get_table {}", table.name), &e)),
        };
        if exists {
            self.client
                .update_table()
                .database_name(&table.database)
                .table_input(input)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.failed(&format!("update_table {}", table.name), &e))
        } else {
            self.client
                .create_table()
                .database_name(&table.database)
                .table_input(input)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.failed(&format!("create_table {}", table.name), &e))
        }
    }

    async fn add_partitions(&self, table: &Table, partitions: &[Vec<String>]) -> Result<()> {
        for batch in partitions.chunks(PARTITION_BATCH) {
            let inputs = batch
                .iter()
                .map(|values| {
                    let location = format!(
                        "{}{}/{}/",
                        self.root,
                        table.location,
                        table.partition_path(values)
                    );
                    PartitionInput::builder()
                        .set_values(Some(values.clone()))
                        .storage_descriptor(storage_descriptor(table, location, false))
                        .build()
                })
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
                return Err(Error::Io(format!(
                    "AWS Glue refused partitions of {}.{}: {}",
                    table.database,
                    table.name,
                    failures.join("; ")
                )));
            }
        }
        Ok(())
    }

    async fn partitions(&self, database: &str, name: &str) -> Result<BTreeSet<Vec<String>>> {
        let mut pages = self
            .client
            .get_partitions()
            .database_name(database)
            .table_name(name)
            .into_paginator()
            .send();
        let mut out = BTreeSet::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.failed(&format!("get_partitions {name}"), &e))?;
            out.extend(page.partitions().iter().map(|p| p.values().to_vec()));
        }
        Ok(out)
    }

    /// A Glue table as a stockstream table, if it lies in this lake.
    async fn read_table(
        &self,
        database: &str,
        glue: &aws_sdk_glue::types::Table,
    ) -> Result<Option<Table>> {
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
        Ok(Some(Table {
            database: database.to_string(),
            name: glue.name().to_string(),
            location: location.trim_end_matches('/').to_string(),
            format,
            columns: columns(sd.columns(), &what)?,
            partition_keys,
            partitions: self.partitions(database, glue.name()).await?,
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
                    Error::Schema(format!(
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

fn table_input(table: &Table, root: &str) -> Result<TableInput> {
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
            format!("{root}{}/", table.location),
            true,
        ))
        .build()
        .map_err(|e| Error::Config(format!("bad Glue table {:?}: {e}", table.name)))
}

impl Catalog for GlueCatalog {
    fn describe(&self) -> String {
        "AWS Glue".to_string()
    }

    fn tables(&self, database: &str) -> Result<Vec<Table>> {
        self.runtime.block_on(async {
            let mut pages = self
                .client
                .get_tables()
                .database_name(database)
                .into_paginator()
                .send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let page = match page {
                    Ok(page) => page,
                    Err(e) if aws::error_code(&e) == Some("EntityNotFoundException") => break,
                    Err(e) => return Err(self.failed(&format!("get_tables {database}"), &e)),
                };
                for glue in page.table_list() {
                    if let Some(table) = self.read_table(database, glue).await? {
                        out.push(table);
                    }
                }
            }
            Ok(out)
        })
    }

    fn table(&self, database: &str, name: &str) -> Result<Option<Table>> {
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
                    Some(glue) => self.read_table(database, glue).await,
                    None => Ok(None),
                },
                Err(e) if aws::error_code(&e) == Some("EntityNotFoundException") => Ok(None),
                Err(e) => Err(self.failed(&format!("get_table {database}.{name}"), &e)),
            }
        })
    }

    fn save(&self, table: &Table, new_partitions: &[Vec<String>]) -> Result<()> {
        self.runtime.block_on(async {
            self.ensure_database(&table.database).await?;
            self.put_table(table).await?;
            self.add_partitions(table, new_partitions).await
        })
    }
}
