//! Iceberg tables in the AWS Glue Data Catalog, as Athena creates and reads them: a Glue
//! table with `table_type=ICEBERG` whose `metadata_location` parameter points at the
//! current metadata file (`previous_metadata_location` at the one before), its location
//! and columns in the storage descriptor for the console and for engines that list them.
//! A commit is an `UpdateTable` at the version read, which Glue refuses when another writer
//! updated the table first.

use std::collections::HashMap;

use ::iceberg::spec::{PrimitiveType, TableMetadata, Type};
use aws_sdk_glue::types::{Column, StorageDescriptor, TableInput};

use super::pointer::{Name, Pointers};
use super::read::hive_type;
use super::table::Version;
use crate::aws;
use crate::catalog::{is_iceberg, GlueCatalog, HiveType};
use crate::error::{Error, Result};

const METADATA: &str = "metadata_location";
const PREVIOUS: &str = "previous_metadata_location";

/// Glue as an Iceberg catalog of one account and region.
pub struct GluePointers(pub GlueCatalog);

impl GluePointers {
    /// The Glue table of `table` with its metadata file at `location` (`previous` before).
    fn input(
        table: &str,
        location: &str,
        previous: Option<&str>,
        metadata: &TableMetadata,
    ) -> Result<TableInput> {
        let mut parameters = HashMap::from([
            ("table_type".to_string(), "ICEBERG".to_string()),
            (METADATA.to_string(), location.to_string()),
        ]);
        parameters.extend(previous.map(|p| (PREVIOUS.to_string(), p.to_string())));
        let columns = (metadata.current_schema().as_struct().fields().iter())
            .map(|f| {
                Column::builder()
                    .name(&f.name)
                    .r#type(glue_type(&f.field_type))
                    .build()
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::config(format!("Glue columns of {table}: {e}")))?;
        let storage = StorageDescriptor::builder()
            .location(metadata.location())
            .set_columns(Some(columns))
            .build();
        TableInput::builder()
            .name(table)
            .table_type("EXTERNAL_TABLE")
            .set_parameters(Some(parameters))
            .storage_descriptor(storage)
            .build()
            .map_err(|e| Error::config(format!("Glue table {table}: {e}")))
    }

    /// The table's current metadata file and Glue version, if it is an Iceberg table.
    fn read(&self, namespace: &str, table: &str) -> Result<Option<(String, Option<String>)>> {
        let (client, runtime) = self.0.client();
        let got = runtime.block_on(
            client
                .get_table()
                .database_name(namespace)
                .name(table)
                .send(),
        );
        let glue = match got {
            Ok(out) => match out.table {
                Some(glue) => glue,
                None => return Ok(None),
            },
            Err(e) if aws::error_code(&e) == Some("EntityNotFoundException") => return Ok(None),
            Err(e) => return Err(self.0.failed(&format!("get_table {namespace}.{table}"), &e)),
        };
        if !is_iceberg(&glue) {
            return Err(Error::config(format!(
                "Glue table {namespace}.{table} exists and is not an Iceberg table"
            )));
        }
        let location = (glue.parameters().and_then(|p| p.get(METADATA))).ok_or_else(|| {
            Error::schema(format!("Glue table {namespace}.{table} has no {METADATA}"))
        })?;
        Ok(Some((
            location.clone(),
            glue.version_id().map(str::to_string),
        )))
    }
}

impl Pointers for GluePointers {
    fn current(&self, (namespace, table): Name<'_>) -> Result<Option<String>> {
        Ok(self.read(namespace, table)?.map(|(location, _)| location))
    }

    fn create(&self, name: Name<'_>, location: &str, metadata: &TableMetadata) -> Result<bool> {
        let (namespace, table) = name;
        let input = Self::input(table, location, None, metadata)?;
        let (client, runtime) = self.0.client();
        runtime.block_on(async {
            self.0.ensure_database(namespace).await?;
            let created = (client.create_table().database_name(namespace))
                .table_input(input)
                .send()
                .await;
            match created {
                Ok(_) => Ok(true),
                Err(e) if aws::error_code(&e) == Some("AlreadyExistsException") => Ok(false),
                Err(e) => Err(self
                    .0
                    .failed(&format!("create_table {namespace}.{table}"), &e)),
            }
        })
    }

    fn swap(&self, name: Name<'_>, read: &Version, new: &Version) -> Result<Option<String>> {
        let (namespace, table) = name;
        let Some((current, version)) = self.read(namespace, table)? else {
            return Ok(None);
        };
        if current != read.location {
            return Ok(None);
        }
        let input = Self::input(table, &new.location, Some(&read.location), &new.metadata)?;
        let (client, runtime) = self.0.client();
        let updated = runtime.block_on(
            (client.update_table().database_name(namespace))
                .table_input(input)
                .set_version_id(version)
                .send(),
        );
        match updated {
            Ok(_) => Ok(Some(new.location.clone())),
            Err(e) if aws::error_code(&e) == Some("ConcurrentModificationException") => Ok(None),
            Err(e) => Err(self
                .0
                .failed(&format!("update_table {namespace}.{table}"), &e)),
        }
    }

    fn tables(&self, namespace: &str) -> Result<Vec<String>> {
        let (_, runtime) = self.0.client();
        let tables = runtime.block_on(self.0.glue_tables(namespace))?;
        let iceberg = tables.iter().filter(|t| is_iceberg(t));
        let mut names: Vec<String> = iceberg.map(|t| t.name().to_string()).collect();
        names.sort();
        Ok(names)
    }
}

/// The Hive type name Glue shows for an Iceberg type (as Athena writes them).
fn glue_type(kind: &Type) -> String {
    match kind.as_primitive_type() {
        Some(PrimitiveType::Timestamptz) => HiveType::Timestamp.name(),
        kind => kind.and_then(hive_type).map_or("string", HiveType::name),
    }
    .to_string()
}
