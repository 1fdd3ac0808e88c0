//! Athena as the query engine: the query runs in AWS against the Glue database, and the
//! result rows come back as a Polars frame typed from Athena's column metadata.

use std::time::{Duration, Instant};

use aws_sdk_athena::types::{
    ColumnInfo, QueryExecutionContext, QueryExecutionState, ResultConfiguration,
};
use aws_sdk_athena::Client;
use polars::prelude::*;

use crate::aws::{self, AwsOptions};
use crate::error::{Error, Result};

/// Where and how long a query runs.
#[derive(Debug, Clone)]
pub struct AthenaOptions {
    /// The Athena workgroup (`primary` if not set).
    pub workgroup: Option<String>,
    /// `s3://bucket/prefix/` for result files; the workgroup's setting if not given.
    pub output: Option<String>,
    /// Give up (and cancel the query) after this long.
    pub timeout: Duration,
}

/// Runs `query` in `database` and returns its rows.
pub fn run(
    aws_options: &AwsOptions,
    database: &str,
    query: &str,
    options: &AthenaOptions,
) -> Result<DataFrame> {
    let runtime = aws::runtime("stockstream-athena")?;
    runtime.block_on(async {
        let client = Client::new(&aws::sdk_config(aws_options).await);
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Error::query(format!("Athena {what} failed: {e}"))
        };
        let mut start = client
            .start_query_execution()
            .query_string(query)
            .query_execution_context(QueryExecutionContext::builder().database(database).build())
            .set_work_group(options.workgroup.clone());
        if let Some(output) = &options.output {
            start = start.result_configuration(
                ResultConfiguration::builder()
                    .output_location(output)
                    .build(),
            );
        }
        let started = start
            .send()
            .await
            .map_err(|e| aws::request_failed(aws_options, "Athena start_query_execution", &e))?;
        let id = started.query_execution_id().unwrap_or_default().to_string();
        let deadline = Instant::now() + options.timeout;
        let mut delay = Duration::from_millis(100);
        loop {
            let execution = client
                .get_query_execution()
                .query_execution_id(&id)
                .send()
                .await
                .map_err(|e| failed("get_query_execution", &aws::describe(&e)))?;
            let status = execution.query_execution().and_then(|q| q.status());
            match status.and_then(|s| s.state()) {
                Some(QueryExecutionState::Succeeded) => break,
                Some(state @ (QueryExecutionState::Failed | QueryExecutionState::Cancelled)) => {
                    let reason = status
                        .and_then(|s| s.state_change_reason())
                        .unwrap_or("no reason given");
                    return Err(Error::query(format!(
                        "Athena query {id} {}: {reason}",
                        state.as_str().to_ascii_lowercase()
                    )));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                let _ = client
                    .stop_query_execution()
                    .query_execution_id(&id)
                    .send()
                    .await;
                return Err(Error::query(format!(
                    "Athena query {id} did not finish within {:?}; it was cancelled",
                    options.timeout
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
        let mut pages = client
            .get_query_results()
            .query_execution_id(&id)
            .into_paginator()
            .send();
        let mut columns: Vec<ColumnInfo> = Vec::new();
        let mut rows: Vec<Vec<Option<String>>> = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| failed("get_query_results", &aws::describe(&e)))?;
            let Some(set) = page.result_set() else {
                continue;
            };
            if columns.is_empty() {
                columns = set
                    .result_set_metadata()
                    .map(|m| m.column_info().to_vec())
                    .unwrap_or_default();
            }
            rows.extend(set.rows().iter().map(|row| {
                row.data()
                    .iter()
                    .map(|d| d.var_char_value().map(str::to_string))
                    .collect()
            }));
        }
        frame(&columns, rows)
    })
}

/// Athena returns every value as text, and a SELECT's first row repeats the column names.
fn frame(columns: &[ColumnInfo], mut rows: Vec<Vec<Option<String>>>) -> Result<DataFrame> {
    let header: Vec<Option<String>> = columns.iter().map(|c| Some(c.name().to_string())).collect();
    if rows.first() == Some(&header) {
        rows.remove(0);
    }
    let series = columns
        .iter()
        .enumerate()
        .map(|(i, info)| {
            let values: Vec<Option<&str>> = rows
                .iter()
                .map(|r| r.get(i).and_then(|v| v.as_deref()))
                .collect();
            let text = Series::new(info.name().into(), values);
            let typed = match athena_type(info.r#type()) {
                Some(dtype) => text.strict_cast(&dtype).map_err(|e| {
                    Error::query(format!(
                        "Athena column {:?} ({}) has a value that is not one: {e}",
                        info.name(),
                        info.r#type()
                    ))
                })?,
                None => text,
            };
            Ok(typed.into_column())
        })
        .collect::<Result<Vec<_>>>()?;
    DataFrame::new_infer_height(series).map_err(|e| Error::query(format!("Athena result: {e}")))
}

/// The Polars type of an Athena (Trino) column type; text for the rest.
fn athena_type(name: &str) -> Option<DataType> {
    let base = name
        .split('(')
        .next()
        .unwrap_or(name)
        .trim()
        .to_ascii_lowercase();
    Some(match base.as_str() {
        "boolean" => DataType::Boolean,
        "tinyint" | "smallint" | "integer" | "int" | "bigint" => DataType::Int64,
        "real" | "float" | "double" | "decimal" => DataType::Float64,
        "date" => DataType::Date,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, kind: &str) -> ColumnInfo {
        ColumnInfo::builder()
            .name(name)
            .r#type(kind)
            .build()
            .unwrap()
    }

    #[test]
    fn types_columns_and_drops_the_header_row() {
        let columns = [
            info("Index", "varchar"),
            info("n", "bigint"),
            info("d", "date"),
        ];
        let row = |a: &str, b: &str, c: Option<&str>| {
            vec![
                Some(a.to_string()),
                Some(b.to_string()),
                c.map(str::to_string),
            ]
        };
        let rows = vec![
            row("Index", "n", Some("d")),
            row("NYA", "3", Some("2021-01-04")),
            row("IXIC", "4", None),
        ];
        let frame = frame(&columns, rows).unwrap();
        assert_eq!(frame.height(), 2);
        assert_eq!(frame.column("n").unwrap().dtype(), &DataType::Int64);
        assert_eq!(frame.column("d").unwrap().null_count(), 1);
        let bad = frame_err(&columns);
        assert!(bad.contains("\"n\""), "{bad}");
    }

    fn frame_err(columns: &[ColumnInfo]) -> String {
        let rows = vec![vec![Some("x".into()), Some("not a number".into()), None]];
        frame(columns, rows).unwrap_err().to_string()
    }
}
