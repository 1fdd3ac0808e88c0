//! Python face of the lake sink: foreground `run` (Ctrl-C lands what is buffered, then
//! raises) and background `start` / `status` / `stop` for notebooks.
//!
//! The constructor converts its Python arguments into a [`SinkBuilder`], which decides the
//! rest.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use polars::prelude::{concat, DataFrame, IntoLazy, LazyFrame, UnionArgs};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3_polars::PyDataFrame;

use super::kafka_config::kafka_config;
use super::options::{aws_options, PyAwsOptions, PyRollPolicy};
use super::pipelines::{Collector, PyJobStatus, PyPipeline, Snapshot, View};
use super::schema::PyTickSchema;
use super::{seconds, shown};
use crate::catalog::CatalogKind;
use crate::error::{Error, Result};
use crate::lake::{Format, LakeUrl};
use crate::sink::{
    Collected, ColumnType, LakeTarget, Partitioning, RollPolicy, SinkBuilder, SinkConfig,
    SinkStatus,
};

/// A snapshot of a sink's counters, besides those of every ``JobStatus``.
///
/// Attributes:
///     written: records landed in the lake and committed.
///     skipped: records the topic's retention deleted before the sink read them (each gap
///         is noted in ``_rejected/`` and in ``last_error``).
///     files: objects written; bytes: their total size.
///     committed: committed offset by partition.
///     landed: by partition, the offset up to which this sink registered records in the
///         table (the table, not the group, is where a sink resumes).
///     resumed: partitions that resumed at the table's offset because the group had no
///         committed offset (a new group, expired offsets) or an older one, and where.
///     last_commit: Unix time of the last commit, or None.
#[pyclass(
    name = "SinkStatus",
    module = "stockstream._core",
    extends = PyJobStatus,
    frozen,
    get_all,
    skip_from_py_object
)]
pub struct PySinkStatus {
    written: u64,
    skipped: u64,
    files: u64,
    bytes: u64,
    committed: BTreeMap<i32, i64>,
    landed: BTreeMap<i32, i64>,
    resumed: BTreeMap<i32, i64>,
    last_commit: Option<f64>,
}

impl PySinkStatus {
    fn snapshot(py: Python<'_>, status: &SinkStatus, running: bool) -> PyResult<Py<PyAny>> {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let detail = status.detail();
        let last_commit = status.last_commit_ms.load(Ordering::Relaxed);
        let own = PySinkStatus {
            written: load(&status.written),
            skipped: load(&status.skipped),
            files: load(&status.files),
            bytes: load(&status.bytes),
            committed: detail.committed.into_iter().collect(),
            landed: detail.landed.into_iter().collect(),
            resumed: detail.resumed.into_iter().collect(),
            last_commit: (last_commit > 0).then(|| last_commit as f64 / 1000.0),
        };
        let view = View {
            name: "SinkStatus",
            caption: "LakeSink",
            rows: shown!(own; written, skipped, files, bytes),
            html_rows: Vec::new(),
        };
        PyJobStatus::snapshot(py, status, running, view, own)
    }
}

/// Lands a Kafka topic in a lake (a local directory or ``s3://bucket/prefix``), exactly once.
///
/// Records are buffered per Kafka partition and written as one object per Hive-style
/// partition folder (``date=2021-01-04/``), named ``part-<topic>-<partition>-<first offset>``.
/// Offsets are committed only after the objects holding them are durable, and a replay
/// after a crash or rebalance rewrites the same names: no record is lost or doubled.
/// Undecodable messages go to ``_rejected/<table>/`` with their offsets and the reason.
/// Several sinks with the same ``group_id`` share a topic's partitions.
///
/// Args:
///     bootstrap_servers: ``host:port[,host:port…]``.
///     topic: the topic to read.
///     group_id: the consumer group; committed offsets belong to it.
///     lake: a directory, ``file:///dir`` or ``s3://bucket/prefix``.
///     format: ``"parquet"`` (zstd, typed columns) or ``"ndjson"`` (one JSON object per line).
///     table: the lake folder to write into; the topic name by default.
///     partition_by: folder levels from each record: ``"auto"`` (None, the default: chosen
///         from the event-time density of the first landing, and recorded in the catalog),
///         ``"date"``, ``"hour"``, ``"month"``, ``"year"``, ``"symbol"``, a list of them
///         (``["symbol", "auto"]``), or ``[]`` for none.
///     roll: a ``RollPolicy``: when a partition's buffer is landed (records, bytes, age,
///         idle time) and how much is buffered in all.
///     schema: a ``TickSchema``: the fields holding the symbol and the event time, and how
///         the time is written. By default the tutorial's (``Index``, ``Date``).
///     columns: declared column types, ``{"Open": "float", …}``; records that do not fit
///         are rejected. Defaults to the tutorial's price columns as floats, or with a
///         ``schema``, to its numeric fields as floats.
///     kafka_metadata: add ``_kafka_partition``, ``_kafka_offset`` and ``_kafka_timestamp``.
///     aws: ``AwsOptions`` for S3 and Glue (endpoint, region, profile, multipart part size,
///         16 MiB by default and at least 5 MiB); credentials come from the AWS default
///         chain (environment, profile, SSO, instance role).
///     table_format: ``"hive"`` (folders recorded in the catalog) or ``"iceberg"``: an
///         Apache Iceberg v2 table, committed once per landing with its Kafka offsets in
///         the snapshot summary. With ``catalog="local"`` its catalog is a SQLite file that
///         pyiceberg opens (``SqlCatalog("stockstream", uri="sqlite:///<lake>/catalog.db")``,
///         table ``<database>.<table>``); with ``catalog="glue"`` a Glue table Athena reads
///         as Iceberg (``table_type=ICEBERG``).
///         With ``catalog="rest"``, a table of the Iceberg REST catalog at ``catalog_uri``.
///     catalog_uri: the SQLite file of the Iceberg catalog, where it is not the lake's
///         ``catalog.db`` (an ``s3://`` lake tried without AWS); or, with
///         ``catalog="rest"``, the REST catalog's URL (``http://host:8181``).
///     connect_timeout: seconds to wait for Kafka before raising KafkaError.
///     **config: any librdkafka consumer property (``session_timeout_ms=6000``, SASL/SSL…).
///
/// Raises:
///     KafkaError: Kafka cannot be reached within ``connect_timeout``.
///     NotFoundError: the topic or the bucket does not exist.
///     ConfigError: an invalid option, or the credentials were refused.
#[pyclass(name = "LakeSink", module = "stockstream._core", extends = PyPipeline, frozen)]
pub struct PyLakeSink {}

/// A collecting run's result: the records it landed, as one frame.
fn landed_records(collected: Collected) -> Collector {
    Box::new(move || {
        let collected = collected.clone();
        *collected.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
        Box::new(move |py| {
            let landed = collected
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_default();
            let frame = match landed.is_empty() {
                true => DataFrame::empty(),
                false => concat(
                    landed.into_iter().map(IntoLazy::lazy).collect::<Vec<_>>(),
                    UnionArgs {
                        diagonal: true,
                        to_supertypes: true,
                        ..Default::default()
                    },
                )
                .and_then(LazyFrame::collect)
                .map_err(|e| {
                    Error::io(format!(
                        "cannot join the landed records into one frame: {e}"
                    ))
                })?,
            };
            Ok(PyDataFrame(frame).into_pyobject(py)?.into_any().unbind())
        })
    })
}

fn partitioning(value: &Bound<'_, PyAny>) -> PyResult<Partitioning> {
    Ok(if value.is_instance_of::<PyString>() {
        value.extract::<String>()?.parse()?
    } else {
        Partitioning::parse(&value.extract::<Vec<String>>()?)?
    })
}

#[pymethods]
impl PyLakeSink {
    #[new]
    #[pyo3(signature = (
        bootstrap_servers, topic, group_id="stockstream-sink", lake="lake", *, format="parquet",
        table=None, partition_by=None, roll=None, schema=None, columns=None, kafka_metadata=false,
        aws=None, catalog=Some("local"), database="stock_market", compact_every=None,
        compact_grace=3600.0, table_format="hive", catalog_uri=None, connect_timeout=10.0,
        **config
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        bootstrap_servers: &str,
        topic: &str,
        group_id: &str,
        lake: &str,
        format: &str,
        table: Option<String>,
        partition_by: Option<&Bound<'_, PyAny>>,
        roll: Option<PyRef<'_, PyRollPolicy>>,
        schema: Option<PyRef<'_, PyTickSchema>>,
        columns: Option<BTreeMap<String, String>>,
        kafka_metadata: bool,
        aws: Option<PyRef<'_, PyAwsOptions>>,
        catalog: Option<&str>,
        database: &str,
        compact_every: Option<f64>,
        compact_grace: f64,
        table_format: &str,
        catalog_uri: Option<String>,
        connect_timeout: f64,
        config: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let mut cfg = match &schema {
            Some(schema) => SinkConfig::new(topic, group_id).with_schema(&schema.schema),
            None => SinkConfig::new(topic, group_id),
        };
        cfg.format = str::parse::<Format>(format)?;
        if let Some(table) = table {
            cfg.table = table;
        }
        if let Some(keys) = partition_by {
            cfg.partition_by = partitioning(keys)?;
        }
        cfg.roll = roll.map_or_else(RollPolicy::default, |r| r.policy());
        if let Some(columns) = columns {
            cfg.columns = columns
                .iter()
                .map(|(n, t)| Ok((n.clone(), str::parse::<ColumnType>(t)?)))
                .collect::<Result<_>>()?;
        }
        cfg.kafka_metadata = kafka_metadata;
        let target = LakeTarget {
            aws: aws_options(aws.as_deref()),
            catalog: catalog.map(str::parse::<CatalogKind>).transpose()?,
            database: database.to_string(),
            compact_every: compact_every
                .map(|s| seconds("compact_every", s))
                .transpose()?,
            compact_grace: seconds("compact_grace", compact_grace)?,
            table_format: table_format.parse()?,
            catalog_uri,
            ..LakeTarget::new(LakeUrl::parse(lake)?)
        };
        let builder = SinkBuilder::new(kafka_config(bootstrap_servers, config)?, cfg, target)
            .connect_timeout(seconds("connect_timeout", connect_timeout)?);
        let describe = format!(
            "LakeSink(topic={topic:?}, group_id={group_id:?}, lake={lake:?}, format={format:?})"
        );
        let sink = py.detach(|| builder.build())?;
        let status = sink.status();
        let collector = landed_records(sink.collected());
        let snapshot: Snapshot =
            Box::new(move |py, running| PySinkStatus::snapshot(py, &status, running));
        Ok(
            PyClassInitializer::from(PyPipeline::new(sink, "sink", snapshot, collector, describe))
                .add_subclass(PyLakeSink {}),
        )
    }
}
