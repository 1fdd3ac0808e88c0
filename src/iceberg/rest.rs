//! Iceberg REST catalogs (Apache Polaris, Lakekeeper, S3 Tables, Apache's reference
//! server): the server keeps each table's pointer and writes its metadata files. A table a
//! sink creates is registered from the metadata the sink wrote; a commit sends what changed
//! between the metadata read and the metadata made (schemas, properties, snapshots added
//! and expired), with requirements the server checks against the table as it is: the same
//! table, the same main branch (and for new columns, the same last column id). A writer
//! that committed first makes the server refuse the others (409), which read the table
//! again. Commits that change only properties (a writer's claim) also add a snapshot, so
//! that two of them cannot both pass the branch requirement.

use std::sync::Mutex;

use ::iceberg::spec::{SnapshotReference, SnapshotRetention, TableMetadata, MAIN_BRANCH};
use ::iceberg::{TableRequirement, TableUpdate};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::runtime::Runtime;

use super::pointer::{Name, Pointers};
use super::table::Version;
use crate::error::{Error, Result};

/// A REST catalog at a base URL (`http://host:8181`), with the prefix its configuration
/// gives.
pub struct RestPointers {
    uri: String,
    /// `<uri>/v1[/<prefix>]`.
    base: String,
    client: reqwest::Client,
    /// The client's connections belong to this runtime; one request at a time.
    runtime: Mutex<Runtime>,
}

impl RestPointers {
    /// The catalog at `uri`, asking it for its configuration (and so whether it answers).
    pub fn open(uri: &str) -> Result<Self> {
        // https needs a TLS provider; two are linked in, so none is chosen by default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io(format!("cannot start a runtime: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| Error::config(format!("Iceberg REST catalog {uri}: {e}")))?;
        let uri = uri.trim_end_matches('/').to_string();
        let mut pointers = RestPointers {
            base: format!("{uri}/v1"),
            uri,
            client,
            runtime: Mutex::new(runtime),
        };
        let (_, config) = pointers.call(Method::GET, "/config", None, &[StatusCode::OK])?;
        if let Some(prefix) = config["overrides"]["prefix"].as_str() {
            pointers.base = format!("{}/{prefix}", pointers.base);
        }
        Ok(pointers)
    }

    /// Sends a request to `<base><path>`; its status (one of `expected`) and JSON body.
    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        expected: &[StatusCode],
    ) -> Result<(StatusCode, Value)> {
        let url = format!("{}{path}", self.base);
        let what = format!("Iceberg REST catalog {}: {method} {path}", self.uri);
        let mut request = self.client.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let runtime = self.runtime.lock().unwrap_or_else(|e| e.into_inner());
        let (status, text) = runtime
            .block_on(async {
                let response = request.send().await?;
                let status = response.status();
                Ok::<_, reqwest::Error>((status, response.text().await?))
            })
            .map_err(|e| Error::io(format!("{what}: {e}")).retryable(true))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if expected.contains(&status) {
            return Ok((status, value));
        }
        let message = value["error"]["message"].as_str().unwrap_or(text.trim());
        let error = format!("{what}: {status}: {message}");
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST => {
                Error::config(error)
            }
            StatusCode::NOT_FOUND => Error::not_found(error),
            _ => Error::io(error).retryable(status.is_server_error()),
        })
    }
}

/// What the server must find for a commit from `read` to `new` to apply.
fn requirements(read: &TableMetadata, new: &TableMetadata) -> Vec<TableRequirement> {
    let mut out = vec![
        TableRequirement::UuidMatch { uuid: read.uuid() },
        TableRequirement::RefSnapshotIdMatch {
            r#ref: MAIN_BRANCH.to_string(),
            snapshot_id: read.current_snapshot_id(),
        },
    ];
    if new.last_column_id() != read.last_column_id() {
        out.push(TableRequirement::LastAssignedFieldIdMatch {
            last_assigned_field_id: read.last_column_id(),
        });
        out.push(TableRequirement::CurrentSchemaIdMatch {
            current_schema_id: read.current_schema_id(),
        });
    }
    out
}

/// What changed from `read` to `new`, as the REST protocol's updates.
fn updates(read: &TableMetadata, new: &TableMetadata) -> Vec<TableUpdate> {
    let mut out = Vec::new();
    if new.current_schema_id() != read.current_schema_id() {
        out.push(TableUpdate::AddSchema {
            schema: new.current_schema().as_ref().clone(),
        });
        out.push(TableUpdate::SetCurrentSchema { schema_id: -1 });
    }
    let changed: std::collections::HashMap<String, String> = (new.properties().iter())
        .filter(|(k, v)| read.properties().get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !changed.is_empty() {
        out.push(TableUpdate::SetProperties { updates: changed });
    }
    let mut added: Vec<_> = (new.snapshots())
        .filter(|s| read.snapshot_by_id(s.snapshot_id()).is_none())
        .collect();
    added.sort_by_key(|s| s.sequence_number());
    for snapshot in added {
        out.push(TableUpdate::AddSnapshot {
            snapshot: snapshot.as_ref().clone(),
        });
    }
    if let Some(id) = new.current_snapshot_id() {
        if read.current_snapshot_id() != Some(id) {
            out.push(TableUpdate::SetSnapshotRef {
                ref_name: MAIN_BRANCH.to_string(),
                reference: SnapshotReference::new(id, SnapshotRetention::branch(None, None, None)),
            });
        }
    }
    let expired: Vec<i64> = (read.snapshots())
        .filter(|s| new.snapshot_by_id(s.snapshot_id()).is_none())
        .map(|s| s.snapshot_id())
        .collect();
    if !expired.is_empty() {
        out.push(TableUpdate::RemoveSnapshots {
            snapshot_ids: expired,
        });
    }
    out
}

impl Pointers for RestPointers {
    fn current(&self, (namespace, table): Name<'_>) -> Result<Option<String>> {
        let path = format!("/namespaces/{namespace}/tables/{table}");
        let ok = [StatusCode::OK, StatusCode::NOT_FOUND];
        let (status, body) = self.call(Method::GET, &path, None, &ok)?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let location = body["metadata-location"].as_str().ok_or_else(|| {
            Error::schema(format!(
                "Iceberg REST catalog {}: table {namespace}.{table} has no metadata-location",
                self.uri
            ))
        })?;
        Ok(Some(location.to_string()))
    }

    fn create(&self, name: Name<'_>, location: &str, _: &TableMetadata) -> Result<bool> {
        let (namespace, table) = name;
        let namespaces = json!({"namespace": [namespace], "properties": {}});
        let ok = [StatusCode::OK, StatusCode::CONFLICT];
        self.call(Method::POST, "/namespaces", Some(namespaces), &ok)?;
        let register = json!({"name": table, "metadata-location": location});
        let path = format!("/namespaces/{namespace}/register");
        let (status, _) = self.call(Method::POST, &path, Some(register), &ok)?;
        Ok(status == StatusCode::OK)
    }

    fn swap(&self, name: Name<'_>, read: &Version, new: &Version) -> Result<Option<String>> {
        let (namespace, table) = name;
        let body = json!({
            "identifier": {"namespace": [namespace], "name": table},
            "requirements": requirements(&read.metadata, &new.metadata),
            "updates": updates(&read.metadata, &new.metadata),
        });
        let path = format!("/namespaces/{namespace}/tables/{table}");
        let ok = [StatusCode::OK, StatusCode::CONFLICT];
        let (status, body) = self.call(Method::POST, &path, Some(body), &ok)?;
        if status == StatusCode::CONFLICT {
            return Ok(None);
        }
        Ok(body["metadata-location"].as_str().map(str::to_string))
    }

    fn tables(&self, namespace: &str) -> Result<Vec<String>> {
        let path = format!("/namespaces/{namespace}/tables");
        let ok = [StatusCode::OK, StatusCode::NOT_FOUND];
        let (_, body) = self.call(Method::GET, &path, None, &ok)?;
        let identifiers = body["identifiers"].as_array().cloned().unwrap_or_default();
        let mut names: Vec<String> = (identifiers.iter())
            .filter_map(|i| i["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    fn commits_move_main(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ::iceberg::spec::{FormatVersion, Schema, SortOrder, TableMetadataBuilder};

    use super::*;

    fn created() -> TableMetadata {
        let schema = Schema::builder().build().unwrap();
        let spec = ::iceberg::spec::UnboundPartitionSpec::builder().build();
        let order = SortOrder::unsorted_order();
        let builder = TableMetadataBuilder::new(
            schema,
            spec,
            order,
            "file:///t".into(),
            FormatVersion::V2,
            HashMap::new(),
        );
        builder.unwrap().build().unwrap().metadata
    }

    #[test]
    fn a_commit_says_what_changed_and_that_the_table_and_its_branch_are_as_read() {
        let read = created();
        let claimed = (read.clone().into_builder(None))
            .set_properties(HashMap::from([("stockstream.claims".into(), "{}".into())]))
            .unwrap()
            .build()
            .unwrap()
            .metadata;
        let updates = serde_json::to_value(updates(&read, &claimed)).unwrap();
        assert_eq!(
            updates,
            json!([{"action": "set-properties", "updates": {"stockstream.claims": "{}"}}])
        );
        let required = serde_json::to_value(requirements(&read, &claimed)).unwrap();
        assert_eq!(required[0]["type"], "assert-table-uuid");
        assert_eq!(
            required[1],
            json!({"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": null})
        );
        assert_eq!(required.as_array().unwrap().len(), 2, "no column was added");
    }
}
