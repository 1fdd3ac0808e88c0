//! Python face of the lake sink: foreground `run` (Ctrl-C lands what is buffered, then
//! raises) and background `start` / `status` / `stop` for notebooks.
//!
//! The constructor takes one parameter per Python keyword argument, hence its length.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::background::{live_status, run_limits, Background};
use super::kafka_config::kafka_config;
use super::options::{aws_or_keywords, roll_policy, PyAwsOptions, PyRollPolicy};
use super::schema::{uses_old_keywords, PyTickSchema, SCHEMA};
use super::{html_table, repr_of, seconds};
use crate::catalog::{self, CatalogKind};
use crate::catalog::{CatalogRegistry, CompactOptions};
use crate::error::Result;
use crate::lake;
use crate::lake::Format;
use crate::sink::{ColumnType, Partitioning, RollPolicy, Sink, SinkConfig, SinkStatus};

/// A snapshot of a sink's counters.
///
/// Attributes:
///     state: ``ready``, ``running``, ``retrying`` (a lake write failed and is being
///         retried), ``stopped`` or ``failed``.
///     running: a background run is in progress.
///     consumed: messages read from Kafka (re-reads after a rebalance count again).
///     written: records landed in the lake and committed.
///     rejected: records sent to ``_rejected/``.
///     skipped: records the topic's retention deleted before the sink read them (each gap
///         is noted in ``_rejected/`` and in ``last_error``).
///     files: objects written; bytes: their total size.
///     buffered: records read but not yet in the lake.
///     lag: records in the assigned partitions beyond the committed offsets (None until known).
///     assigned: the Kafka partitions this member owns.
///     committed: committed offset by partition.
///     landed: by partition, the offset up to which this sink registered records in the
///         table (the table, not the group, is where a sink resumes).
///     resumed: partitions that resumed at the table's offset because the group had no
///         committed offset (a new group, expired offsets) or an older one, and where.
///     notes: things worth knowing that are not errors (the latest 20).
///     last_commit: Unix time of the last commit, or None.
///     errors: failed writes, commits and client errors so far (all retried or recovered);
///         last_error: the latest one.
#[pyclass(
    name = "SinkStatus",
    module = "stockstream._core",
    frozen,
    get_all,
    skip_from_py_object
)]
#[derive(Clone)]
pub struct PySinkStatus {
    state: String,
    running: bool,
    consumed: u64,
    written: u64,
    rejected: u64,
    skipped: u64,
    files: u64,
    bytes: u64,
    buffered: u64,
    lag: Option<i64>,
    assigned: Vec<i32>,
    committed: BTreeMap<i32, i64>,
    landed: BTreeMap<i32, i64>,
    resumed: BTreeMap<i32, i64>,
    notes: Vec<String>,
    last_commit: Option<f64>,
    errors: u64,
    last_error: Option<String>,
}

impl PySinkStatus {
    fn of(status: &SinkStatus, running: bool) -> Self {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let detail = status.detail();
        let lag = status.lag.load(Ordering::Relaxed);
        let last_commit = status.last_commit_ms.load(Ordering::Relaxed);
        PySinkStatus {
            state: detail.state,
            running,
            consumed: load(&status.consumed),
            written: load(&status.written),
            rejected: load(&status.rejected),
            skipped: load(&status.skipped),
            files: load(&status.files),
            bytes: load(&status.bytes),
            buffered: load(&status.buffered),
            lag: (lag >= 0).then_some(lag),
            assigned: detail.assigned,
            committed: detail.committed.into_iter().collect(),
            landed: detail.landed.into_iter().collect(),
            resumed: detail.resumed.into_iter().collect(),
            notes: detail.notes,
            last_commit: (last_commit > 0).then(|| last_commit as f64 / 1000.0),
            errors: load(&status.errors),
            last_error: detail.last_error,
        }
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        let opt = |v: Option<i64>| v.map_or("?".to_string(), |v| v.to_string());
        vec![
            ("state", self.state.clone()),
            ("consumed", self.consumed.to_string()),
            ("written", self.written.to_string()),
            ("rejected", self.rejected.to_string()),
            ("skipped", self.skipped.to_string()),
            ("files", self.files.to_string()),
            ("bytes", self.bytes.to_string()),
            ("buffered", self.buffered.to_string()),
            ("lag", opt(self.lag)),
            ("assigned", format!("{:?}", self.assigned)),
            ("errors", self.errors.to_string()),
        ]
    }
}

#[pymethods]
impl PySinkStatus {
    fn __repr__(&self) -> String {
        repr_of("SinkStatus", &self.fields())
    }

    /// An HTML table, for notebooks.
    fn _repr_html_(&self) -> String {
        let mut rows = self.fields();
        if let Some(e) = &self.last_error {
            rows.push(("last error", e.clone()));
        }
        html_table("LakeSink", &rows)
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
///     partition_by: folder levels from each record: ``"date"`` (default), ``"hour"``,
///         ``"month"``, ``"year"``, ``"symbol"``, a list of them, or ``[]`` for none.
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
///     connect_timeout: seconds to wait for Kafka before raising KafkaError.
///     flush_records, flush_bytes, flush_age, flush_idle, buffer_bytes: deprecated, use
///         ``roll``.
///     symbol_field, time_field: deprecated, use ``schema``.
///     endpoint_url, region, aws_profile, s3_part_size: deprecated, use ``aws``.
///     **config: any librdkafka consumer property (``session_timeout_ms=6000``, SASL/SSL…).
///
/// Raises:
///     KafkaError: Kafka cannot be reached within ``connect_timeout``.
///     NotFoundError: the topic or the bucket does not exist.
///     ConfigError: an invalid option, or the credentials were refused.
#[pyclass(name = "LakeSink", module = "stockstream._core", frozen)]
pub struct PyLakeSink {
    job: Background<Sink>,
    status: Arc<SinkStatus>,
    describe: String,
}

fn partitioning(value: &Bound<'_, PyAny>) -> PyResult<Partitioning> {
    if value.is_none() {
        return Ok(Partitioning::Keys(Vec::new()));
    }
    let names: Vec<String> = if value.is_instance_of::<PyString>() {
        value
            .extract::<String>()?
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .collect()
    } else {
        value.extract()?
    };
    Ok(Partitioning::parse(&names)?)
}

impl PyLakeSink {
    fn snapshot(&self) -> PySinkStatus {
        PySinkStatus::of(&self.status, self.job.running())
    }
}

#[pymethods]
impl PyLakeSink {
    #[new]
    #[pyo3(signature = (
        bootstrap_servers, topic, group_id="stockstream-sink", lake="lake", *, format="parquet",
        table=None, partition_by=None, roll=None, schema=None, columns=None, kafka_metadata=false,
        aws=None, catalog=Some("local"), database="stock_market", compact_every=None,
        compact_grace=3600.0, connect_timeout=10.0, flush_records=None, flush_bytes=None,
        flush_age=None, flush_idle=None, buffer_bytes=None, symbol_field=None, time_field=None,
        endpoint_url=None, region=None, aws_profile=None, s3_part_size=None, **config
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
        connect_timeout: f64,
        flush_records: Option<usize>,
        flush_bytes: Option<usize>,
        flush_age: Option<f64>,
        flush_idle: Option<f64>,
        buffer_bytes: Option<usize>,
        symbol_field: Option<String>,
        time_field: Option<String>,
        endpoint_url: Option<String>,
        region: Option<String>,
        aws_profile: Option<String>,
        s3_part_size: Option<usize>,
        config: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let catalog = catalog.map(str::parse::<CatalogKind>).transpose()?;
        if catalog.is_some() {
            catalog::check_database(database)?;
        }
        let kafka = kafka_config(bootstrap_servers, config)?;
        let connect_timeout = seconds("connect_timeout", connect_timeout)?;
        let mut cfg = SinkConfig::new(topic, group_id);
        cfg.format = str::parse::<Format>(format)?;
        if let Some(table) = table {
            cfg.table = table;
        }
        if let Some(keys) = partition_by {
            cfg.partition_by = partitioning(keys)?;
        }
        let compact_every = compact_every
            .map(|s| seconds("compact_every", s))
            .transpose()?;
        let compact_grace = seconds("compact_grace", compact_grace)?;
        if compact_every.is_some() && catalog.is_none() {
            return Err(crate::error::Error::config(
                "compact_every needs a catalog (catalog=\"local\" or \"glue\"): compaction \
                 switches partition locations there",
            )
            .into());
        }
        let old_roll = [
            ("flush_records", flush_records.is_some()),
            ("flush_bytes", flush_bytes.is_some()),
            ("flush_age", flush_age.is_some()),
            ("flush_idle", flush_idle.is_some()),
            ("buffer_bytes", buffer_bytes.is_some()),
        ];
        cfg.roll = if uses_old_keywords(py, "roll=RollPolicy(...)", roll.is_some(), &old_roll)? {
            roll_policy(
                ["flush_age", "flush_idle"],
                flush_records,
                flush_bytes,
                flush_age,
                flush_idle,
                buffer_bytes,
            )?
        } else {
            roll.map_or_else(RollPolicy::default, |r| r.policy())
        };
        let old = [
            ("symbol_field", symbol_field.is_some()),
            ("time_field", time_field.is_some()),
        ];
        if uses_old_keywords(py, SCHEMA, schema.is_some(), &old)? {
            cfg.symbol_field = symbol_field.unwrap_or(cfg.symbol_field);
            cfg.time_field = time_field.unwrap_or(cfg.time_field);
        } else if let Some(schema) = &schema {
            (cfg.symbol_field, cfg.time_field, cfg.time_format) = schema.sink_fields();
            cfg.columns = schema
                .numbers()
                .into_iter()
                .map(|n| (n, ColumnType::Float))
                .collect();
        }
        if let Some(columns) = columns {
            cfg.columns = columns
                .iter()
                .map(|(n, t)| Ok((n.clone(), str::parse::<ColumnType>(t)?)))
                .collect::<Result<_>>()?;
        }
        cfg.kafka_metadata = kafka_metadata;
        let s3 = aws_or_keywords(
            py,
            aws.as_deref(),
            PyAwsOptions::new(endpoint_url, region, aws_profile, s3_part_size),
        )?;
        let describe = format!(
            "LakeSink(topic={topic:?}, group_id={group_id:?}, lake={lake:?}, format={format:?})"
        );
        let sink = py.detach(|| -> Result<Sink> {
            cfg.validate()?;
            let store = lake::open(lake, &s3)?;
            let registry = catalog
                .map(|kind| catalog::open(kind, store.clone(), lake, &s3))
                .transpose()?;
            let table = cfg.table.clone();
            let sink = Sink::new(&kafka, cfg, store.clone(), connect_timeout)?;
            let Some(registry) = registry else {
                return Ok(sink);
            };
            let sink = sink.register_in(Arc::new(CatalogRegistry::new(
                registry.clone(),
                store.clone(),
                database,
            )))?;
            Ok(match compact_every {
                Some(every) => {
                    let options = CompactOptions {
                        database: database.to_string(),
                        table: Some(table),
                        grace: compact_grace,
                        ..CompactOptions::default()
                    };
                    sink.maintain_every(
                        every,
                        Box::new(move || {
                            match catalog::compact(store.as_ref(), registry.as_ref(), &options) {
                                Ok(r) => Ok(r.objects_merged),
                                // Not landed yet: nothing to compact.
                                Err(e) if e.is(crate::error::Kind::NotFound) => Ok(0),
                                Err(e) => Err(e),
                            }
                        }),
                    )
                }
                None => sink,
            })
        })?;
        Ok(PyLakeSink {
            status: sink.status(),
            job: Background::new(sink, "sink"),
            describe,
        })
    }

    /// Runs in the foreground until ``limit`` messages, ``duration`` seconds, or (with
    /// ``stop_at_end``) every assigned partition is read to its end; then lands and commits
    /// everything buffered. Ctrl-C / a notebook interrupt also lands and commits, then raises.
    /// In a notebook kernel its status is shown, redrawn as it runs (``progress=False``:
    /// not shown).
    ///
    /// Returns:
    ///     SinkStatus: the counters after the run.
    #[pyo3(signature = (limit=None, duration=None, stop_at_end=false, progress=None))]
    fn run(
        slf: &Bound<'_, Self>,
        limit: Option<u64>,
        duration: Option<f64>,
        stop_at_end: bool,
        progress: Option<bool>,
    ) -> PyResult<PySinkStatus> {
        let show = live_status(slf.as_any(), progress)?;
        let this = slf.get();
        this.job
            .run(slf.py(), &run_limits(limit, duration, stop_at_end)?, show)?;
        Ok(this.snapshot())
    }

    /// Starts consuming in a background thread and returns at once; the notebook stays
    /// usable. Watch it with ``status()``; end it with ``stop()``. Takes the same limits as ``run``.
    #[pyo3(signature = (limit=None, duration=None, stop_at_end=false))]
    fn start(
        slf: &Bound<'_, Self>,
        limit: Option<u64>,
        duration: Option<f64>,
        stop_at_end: bool,
    ) -> PyResult<()> {
        slf.get()
            .job
            .start(run_limits(limit, duration, stop_at_end)?)?;
        super::pipelines::track(slf.as_any());
        Ok(())
    }

    /// Stops a background run: lands and commits what is buffered, then returns the final
    /// counters. Raises the error that ended the run, if one did.
    fn stop(&self, py: Python<'_>) -> PyResult<PySinkStatus> {
        self.job.stop(py)?;
        Ok(self.snapshot())
    }

    /// Waits for a background run to end by itself (its limit, duration or ``stop_at_end``).
    /// Returns False if ``timeout`` seconds passed first. Raises the error that ended the run.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        self.job.wait(py, timeout)
    }

    /// The current counters (see ``SinkStatus``).
    fn status(&self) -> PySinkStatus {
        self.snapshot()
    }

    /// Whether a background run is in progress.
    #[getter(running)]
    fn is_running(&self) -> bool {
        self.job.running()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Stops a background run on leaving a ``with`` block.
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.stop(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        self.describe.clone()
    }
}
