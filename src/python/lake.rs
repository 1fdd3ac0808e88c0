//! Python face of the catalog and SQL: `Lake`, `crawl` and `CrawlReport`.

use polars::prelude::*;
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyBool, PyFloat, PyInt, PyString};
use pyo3_polars::PyDataFrame;

use super::background::with_progress;
use super::options::{aws_options, PyAwsOptions};
use super::{html_table, repr_of, seconds, shown};
use crate::catalog::{CatalogKind, CompactOptions, CompactReport, CrawlReport, OnError, Table};
use crate::error::{Error, Result};
use crate::iceberg::read::AsOf;
use crate::lake::{LakeUrl, TableFormat};
use crate::progress::Counter;
use crate::query::params::{bind, Param};
use crate::query::{AthenaOptions, Lake, Live, QueryEngine, TailBounds, TailInfo};

/// What a crawl changed in the catalog.
///
/// Attributes:
///     tables_created, tables_updated: table names.
///     partitions_added: ``(table, folder)`` pairs, e.g. ``("stock_market", "date=2021-01-04")``.
///     columns_added: ``(table, column, type)``.
///     conflicts: ``(table, column, catalog type, type found, [first file, conflicting file])``;
///         the catalog keeps its type.
///     skipped: ``(object URL, reason)`` for objects left out of their table (unreadable,
///         or not matching the table's format or folders).
///     objects_read: objects whose schema was read.
///     objects_unchanged: objects crawled before and not read again.
#[pyclass(
    name = "CrawlReport",
    module = "stockstream._core",
    frozen,
    get_all,
    skip_from_py_object
)]
#[derive(Clone)]
pub struct PyCrawlReport {
    tables_created: Vec<String>,
    tables_updated: Vec<String>,
    partitions_added: Vec<(String, String)>,
    columns_added: Vec<(String, String, String)>,
    conflicts: Vec<(String, String, String, String, Vec<String>)>,
    skipped: Vec<(String, String)>,
    objects_read: usize,
    objects_unchanged: usize,
}

impl From<CrawlReport> for PyCrawlReport {
    fn from(r: CrawlReport) -> Self {
        PyCrawlReport {
            tables_created: r.tables_created,
            tables_updated: r.tables_updated,
            partitions_added: r.partitions_added,
            columns_added: r
                .columns_added
                .into_iter()
                .map(|(t, c, k)| (t, c, k.name().to_string()))
                .collect(),
            conflicts: r
                .conflicts
                .into_iter()
                .map(|c| {
                    (
                        c.table,
                        c.column,
                        c.existing.name().to_string(),
                        c.found.name().to_string(),
                        c.files,
                    )
                })
                .collect(),
            skipped: r.skipped,
            objects_read: r.objects_read,
            objects_unchanged: r.objects_unchanged,
        }
    }
}

impl PyCrawlReport {
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut rows = vec![
            ("tables_created", format!("{:?}", self.tables_created)),
            ("tables_updated", format!("{:?}", self.tables_updated)),
            ("partitions_added", self.partitions_added.len().to_string()),
            ("columns_added", self.columns_added.len().to_string()),
            ("conflicts", self.conflicts.len().to_string()),
            ("skipped", self.skipped.len().to_string()),
        ];
        rows.extend(shown!(self; objects_read, objects_unchanged));
        rows
    }
}

#[pymethods]
impl PyCrawlReport {
    /// Whether the crawl changed the catalog.
    #[getter]
    fn changed(&self) -> bool {
        !self.tables_created.is_empty() || !self.tables_updated.is_empty()
    }

    fn __repr__(&self) -> String {
        repr_of("CrawlReport", &self.fields())
    }

    /// An HTML table, for notebooks.
    fn _repr_html_(&self) -> String {
        let mut rows = self.fields();
        rows.extend(self.conflicts.iter().map(|(t, c, a, b, files)| {
            (
                "conflict",
                format!("{t}.{c}: {a} vs {b} in {}", files.join(" and ")),
            )
        }));
        rows.extend(
            self.skipped
                .iter()
                .map(|(url, why)| ("skipped", format!("{url}: {why}"))),
        );
        html_table("CrawlReport", &rows)
    }
}

/// What a compaction did.
///
/// Attributes:
///     partitions: ``(table, partition path)`` of each partition moved to a new folder
///         (``""`` for an unpartitioned table).
///     objects_merged, objects_written: small objects merged, and the objects they became.
///     objects_carried: registered objects a sink may still rewrite, copied unmerged.
///     bytes_read, bytes_written: of the merged objects.
///     folders_deleted, objects_deleted: replaced folders whose grace period was over;
///         for Iceberg tables, files no retained snapshot refers to (``folders_deleted``
///         stays 0).
///     snapshots_expired: Iceberg snapshots older than the grace period, expired.
///     raced: partitions another compaction moved first (this one's work was discarded).
///     elapsed: seconds.
#[pyclass(
    name = "CompactReport",
    module = "stockstream._core",
    frozen,
    get_all,
    skip_from_py_object
)]
#[derive(Clone)]
pub struct PyCompactReport {
    partitions: Vec<(String, String)>,
    objects_merged: usize,
    objects_written: usize,
    objects_carried: usize,
    bytes_read: u64,
    bytes_written: u64,
    folders_deleted: usize,
    objects_deleted: usize,
    snapshots_expired: usize,
    raced: usize,
    elapsed: f64,
}

impl From<CompactReport> for PyCompactReport {
    fn from(r: CompactReport) -> Self {
        PyCompactReport {
            partitions: r.partitions,
            objects_merged: r.objects_merged,
            objects_written: r.objects_written,
            objects_carried: r.objects_carried,
            bytes_read: r.bytes_read,
            bytes_written: r.bytes_written,
            folders_deleted: r.folders_deleted,
            objects_deleted: r.objects_deleted,
            snapshots_expired: r.snapshots_expired,
            raced: r.raced,
            elapsed: r.elapsed.as_secs_f64(),
        }
    }
}

impl PyCompactReport {
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut rows = vec![("partitions", self.partitions.len().to_string())];
        rows.extend(
            shown!(self; objects_merged, objects_written, objects_carried, bytes_written,
                           folders_deleted, objects_deleted, snapshots_expired, raced),
        );
        rows.push(("elapsed", format!("{:.3}", self.elapsed)));
        rows
    }
}

#[pymethods]
impl PyCompactReport {
    fn __repr__(&self) -> String {
        repr_of("CompactReport", &self.fields())
    }

    /// An HTML table, for notebooks.
    fn _repr_html_(&self) -> String {
        html_table("CompactReport", &self.fields())
    }
}

/// What the last query read from a table's Kafka tail (records not landed yet).
///
/// Attributes:
///     table: the table.
///     live: the tail was read; when False, ``reason`` says why (no sink feeds the table,
///         the broker does not answer, ``live=False``).
///     records, bytes: messages read from the tail.
///     truncated: a bound (``tail_records``, ``tail_bytes``, ``tail_timeout``) stopped the
///         read early, so the result misses the newest records.
///     offsets: per Kafka partition, the offsets read, ``[from, to)``.
#[pyclass(
    name = "TailInfo",
    module = "stockstream._core",
    frozen,
    get_all,
    skip_from_py_object
)]
#[derive(Clone)]
pub struct PyTailInfo {
    table: String,
    live: bool,
    reason: Option<String>,
    records: usize,
    bytes: usize,
    truncated: bool,
    offsets: std::collections::BTreeMap<i32, (i64, i64)>,
}

impl From<TailInfo> for PyTailInfo {
    fn from(t: TailInfo) -> Self {
        PyTailInfo {
            table: t.table,
            live: t.live,
            reason: t.reason,
            records: t.records,
            bytes: t.bytes,
            truncated: t.truncated,
            offsets: t.offsets,
        }
    }
}

#[pymethods]
impl PyTailInfo {
    fn __repr__(&self) -> String {
        let mut fields = vec![
            ("table", self.table.clone()),
            ("live", self.live.to_string()),
            ("records", self.records.to_string()),
            ("truncated", self.truncated.to_string()),
        ];
        if let Some(r) = &self.reason {
            fields.push(("reason", r.clone()));
        }
        repr_of("TailInfo", &fields)
    }
}

/// A lake and its catalog, for SQL.
///
/// Tables come from the catalog (run ``crawl()`` first, or let the sink register what it
/// lands). Each query lists the tables' objects afresh, so data landed since the last
/// query is included, and reads only the partitions its ``WHERE`` clause allows (a filter
/// on ``date`` reads one folder) and only the columns it uses. Iceberg tables (a sink's
/// ``table_format="iceberg"``) are read from their current snapshot, skipping the files
/// whose column bounds rule out the ``WHERE`` clause, or from a past one (``as_of``).
///
/// Args:
///     lake: a directory, ``file:///dir`` or ``s3://bucket/prefix``.
///     database: the catalog database (``"stock_market"``).
///     catalog: ``"local"`` (JSON under ``_catalog/`` in the lake; Iceberg tables in the
///         lake's ``catalog.db``) or ``"glue"`` (AWS Glue; needs an ``s3://`` lake).
///     catalog_uri: the SQLite file of the Iceberg catalog, where it is not the lake's
///         ``catalog.db`` (an ``s3://`` lake tried without AWS); with ``catalog="rest"``,
///         the URL of an Iceberg REST catalog holding the lake's Iceberg tables.
///     aws: ``AwsOptions`` for S3 and Glue; credentials come from the AWS default chain
///         (environment, profile, SSO, instance role).
///
/// Raises:
///     NotFoundError: a local lake directory or the bucket does not exist.
///     ConfigError: an invalid option, or the credentials were refused.
#[pyclass(name = "Lake", module = "stockstream._core", frozen)]
pub struct PyLake {
    lake: Lake,
    last: std::sync::Mutex<Vec<PyTailInfo>>,
}

/// A Python value as a SQL literal's value.
/// The snapshot an Iceberg table is read at: an id, or a moment (naive means UTC).
fn as_of_of(value: Option<&Bound<'_, PyAny>>) -> PyResult<AsOf> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(AsOf::Current);
    };
    if value.is_instance_of::<PyInt>() && value.cast::<PyBool>().is_err() {
        return Ok(AsOf::Snapshot(value.extract()?));
    }
    let datetime = value.py().import("datetime")?;
    if !value.is_instance(&datetime.getattr("datetime")?)? {
        return Err(Error::config(format!(
            "as_of must be a snapshot id (int) or a datetime, not {}",
            value.get_type().name()?
        ))
        .into());
    }
    let aware = match value.getattr("tzinfo")?.is_none() {
        true => {
            let utc = datetime.getattr("timezone")?.getattr("utc")?;
            let kwargs = [("tzinfo", utc)].into_py_dict(value.py())?;
            value.call_method("replace", (), Some(&kwargs))?
        }
        false => value.clone(),
    };
    let seconds: f64 = aware.call_method0("timestamp")?.extract()?;
    Ok(AsOf::Time((seconds * 1000.0).floor() as i64))
}

fn param_of(name: &str, value: &Bound<'_, PyAny>) -> Result<Param> {
    let unsupported = || {
        Error::query(format!(
            "parameter {{{name}}}: a {} cannot be a SQL literal (use None, a bool, an int, a \
             float, a string, a date or a date-time)",
            value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    };
    if value.is_none() {
        return Ok(Param::Null);
    }
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Param::Bool(b.is_true()));
    }
    if value.is_instance_of::<PyInt>() {
        return value.extract().map(Param::Int).map_err(|_| {
            Error::query(format!(
                "parameter {{{name}}}: the integer is beyond 64 bits"
            ))
        });
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        return Ok(Param::Float(f.value()));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Param::Text(s.to_string()));
    }
    let date = value
        .py()
        .import("datetime")
        .and_then(|m| m.getattr("date"))
        .map_err(|_| unsupported())?;
    if value.is_instance(&date).unwrap_or(false) {
        // `str()` of a date or date-time is how Polars and Athena write them.
        return value
            .str()
            .map(|s| Param::Text(s.to_string()))
            .map_err(|_| unsupported());
    }
    Err(unsupported())
}

#[pymethods]
impl PyLake {
    #[new]
    #[pyo3(signature = (
        lake="lake", *, database="stock_market", catalog="local", catalog_uri=None, aws=None
    ))]
    fn new(
        py: Python<'_>,
        lake: &str,
        database: &str,
        catalog: &str,
        catalog_uri: Option<&str>,
        aws: Option<PyRef<'_, PyAwsOptions>>,
    ) -> PyResult<Self> {
        let kind = str::parse::<CatalogKind>(catalog)?;
        let aws = aws_options(aws.as_deref());
        let url = LakeUrl::parse(lake)?;
        let lake = py.detach(|| Lake::open(&url, kind, catalog_uri, database, &aws))?;
        Ok(PyLake {
            lake,
            last: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Runs a SQL query and returns its result.
    ///
    /// Args:
    ///     query: SQL over the catalog's tables, e.g.
    ///         ``SELECT "Index", avg("Close") FROM stock_market GROUP BY 1``.
    ///     engine: ``"polars"`` (default: runs here, over the objects) or ``"athena"`` (runs
    ///         in AWS Athena against the Glue database of the same name).
    ///     live: for tables a sink feeds, also read the records their topic holds beyond
    ///         what is landed, so a query is fresh to the second without small objects.
    ///         ``None`` (default): when the broker answers; ``True``: raise if it does not;
    ///         ``False``: the lake only. ``last_query`` tells what was read.
    ///     tail_records, tail_bytes, tail_timeout: bounds of one table's tail read (1,000,000
    ///         records, 256 MiB, 5 s); a truncated tail warns and is flagged in ``last_query``.
    ///     workgroup, output: Athena's workgroup and ``s3://`` result location.
    ///     timeout: seconds an Athena query may run before it is cancelled.
    ///     params: values for ``{name}`` placeholders in the query (a dict, or a notebook's
    ///         namespace), bound as SQL literals: ``None``, bools, ints, floats, strings,
    ///         dates and date-times. A value is never SQL text, so quotes in it are safe.
    ///     as_of: time travel for Iceberg tables: a snapshot id (``int``), or a moment
    ///         (``datetime``; naive ones are UTC) at which the snapshot read was current.
    ///         Such a query has no live tail.
    ///
    /// Returns:
    ///     polars.DataFrame
    ///
    /// Raises:
    ///     QueryError: a SQL syntax error, or an unknown table or column (named).
    ///     KafkaError: with ``live=True``, a table's broker does not answer.
    ///     StockstreamError: an object cannot be read (named).
    #[pyo3(signature = (
        query, *, engine="polars", live=None, tail_records=1_000_000, tail_bytes=268_435_456,
        tail_timeout=5.0, workgroup=None, output=None, timeout=300.0, params=None, as_of=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn sql(
        &self,
        py: Python<'_>,
        query: &str,
        engine: &str,
        live: Option<bool>,
        tail_records: usize,
        tail_bytes: usize,
        tail_timeout: f64,
        workgroup: Option<String>,
        output: Option<String>,
        timeout: f64,
        params: Option<&Bound<'_, PyAny>>,
        as_of: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyDataFrame> {
        let bound = match params {
            Some(values) => bind(query, &mut |name| match values.get_item(name) {
                Ok(value) => param_of(name, &value).map(Some),
                Err(_) => Ok(None),
            })?,
            None => query.to_string(),
        };
        let query = bound.as_str();
        let frame = match engine.parse::<QueryEngine>()? {
            QueryEngine::Polars => {
                let bounds = TailBounds {
                    records: tail_records,
                    bytes: tail_bytes,
                    timeout: seconds("tail_timeout", tail_timeout)?,
                };
                let live = Live::from_flag(live);
                let as_of = as_of_of(as_of)?;
                let (frame, tails) =
                    py.detach(|| self.lake.sql_live(query, live, &bounds, as_of))?;
                for warning in tails.iter().filter_map(TailInfo::truncation) {
                    let warning = std::ffi::CString::new(warning).unwrap_or_default();
                    let kind = py.get_type::<pyo3::exceptions::PyUserWarning>();
                    PyErr::warn(py, &kind, &warning, 1)?;
                }
                let tails = tails.into_iter().map(PyTailInfo::from).collect();
                *self.last.lock().unwrap_or_else(|e| e.into_inner()) = tails;
                frame
            }
            QueryEngine::Athena => {
                let options = AthenaOptions {
                    workgroup,
                    output,
                    timeout: seconds("timeout", timeout)?,
                };
                py.detach(|| self.lake.athena(query, &options))?
            }
        };
        Ok(PyDataFrame(frame))
    }

    /// What the last ``sql`` call read from each table's Kafka tail (a list of ``TailInfo``).
    #[getter]
    fn last_query(&self) -> Vec<PyTailInfo> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Compacts the lake's tables (or ``table``): the small objects of each partition
    /// folder that no sink can rewrite any more are merged into objects of about
    /// ``target_bytes``, written to a new versioned folder of the partition
    /// (``date=…/_v<version>/``), and the partition's location is switched in the catalog in
    /// one step (Glue ``BatchUpdatePartition``, which Athena reads). The old folder is
    /// deleted by a compaction run ``grace`` seconds later or more. Queries and sinks go
    /// on meanwhile; nothing is lost or read twice.
    ///
    /// An Iceberg table's small files are merged per partition and swapped in one
    /// ``replace`` snapshot that keeps the landed offsets; then its snapshots older than
    /// ``grace`` expire and the files nothing retained refers to (older than ``grace``:
    /// what expired, or what a killed writer never committed) are deleted.
    ///
    /// In a notebook kernel a bar counts the partitions done (``progress=False``: none).
    ///
    /// Returns:
    ///     CompactReport: what was merged, moved and deleted.
    #[pyo3(signature = (table=None, *, target_bytes=134_217_728, min_objects=2, grace=3600.0,
                        progress=None))]
    fn compact(
        &self,
        py: Python<'_>,
        table: Option<String>,
        target_bytes: u64,
        min_objects: usize,
        grace: f64,
        progress: Option<bool>,
    ) -> PyResult<PyCompactReport> {
        let options = CompactOptions {
            table,
            target_bytes,
            min_objects,
            grace: seconds("grace", grace)?,
            ..CompactOptions::default()
        };
        let done = options.done.clone();
        let report = with_progress(py, progress, "partitions", &done, || {
            self.lake.compact(options)
        })?;
        Ok(report.into())
    }

    /// The lake's tables: name, file format, table format (``hive`` or ``iceberg``),
    /// location, columns, partition keys, the number of registered partitions (Hive) and
    /// how the table is partitioned (an empty frame for an empty lake).
    fn tables(&self, py: Python<'_>) -> PyResult<PyDataFrame> {
        let tables = py.detach(|| self.lake.tables())?;
        Ok(PyDataFrame(tables_frame(&self.lake, &tables)?))
    }

    /// The data objects a query of each table reads (or of ``table`` only): table, URL
    /// and size in bytes, for browsing what the sink wrote.
    #[pyo3(signature = (table=None))]
    fn files(&self, py: Python<'_>, table: Option<&str>) -> PyResult<PyDataFrame> {
        let frame = py.detach(|| -> Result<DataFrame> {
            let (mut names, mut urls, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
            for t in self.lake.tables()? {
                if table.is_some_and(|wanted| wanted != t.name) {
                    continue;
                }
                for object in self.lake.objects(&t)? {
                    names.push(t.name.clone());
                    urls.push(self.lake.store().url(&object.key));
                    sizes.push(object.size);
                }
            }
            df!("table" => names, "url" => urls, "bytes" => sizes)
                .map_err(|e| Error::io(format!("cannot list files: {e}")))
        })?;
        Ok(PyDataFrame(frame))
    }

    /// Crawls the lake into the catalog; see ``stockstream.crawl``.
    #[pyo3(signature = (table=None, *, on_error="skip", progress=None))]
    fn crawl(
        &self,
        py: Python<'_>,
        table: Option<String>,
        on_error: &str,
        progress: Option<bool>,
    ) -> PyResult<PyCrawlReport> {
        let on_error = str::parse::<OnError>(on_error)?;
        let read = Counter::default();
        let report = with_progress(py, progress, "objects read", &read, || {
            self.lake.crawl(table, on_error, read.clone())
        })?;
        Ok(report.into())
    }

    fn __repr__(&self) -> String {
        format!(
            "Lake({:?}, database={:?}, catalog={})",
            self.lake.url().to_string(),
            self.lake.database(),
            self.lake.catalog().describe()
        )
    }
}

fn tables_frame(lake: &Lake, tables: &[Table]) -> Result<DataFrame> {
    let describe = |columns: &[crate::catalog::Column]| {
        columns
            .iter()
            .map(|c| format!("{} {}", c.name, c.kind.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = |f: &dyn Fn(&Table) -> String| tables.iter().map(f).collect::<Vec<String>>();
    df!(
        "table" => text(&|t| t.name.clone()),
        "format" => text(&|t| t.format.name().to_string()),
        "table_format" => text(&|t| {
            let format = match t.iceberg { Some(_) => TableFormat::Iceberg, None => TableFormat::Hive };
            format.name().to_string()
        }),
        "location" => text(&|t| lake.store().url(&t.location)),
        "columns" => text(&|t| describe(&t.columns)),
        "partition_keys" => text(&|t| describe(&t.partition_keys)),
        "partitions" => tables.iter().map(|t| t.partitions.len() as u64).collect::<Vec<_>>(),
        "partitioning" => text(&|t| t.partitioning.clone().unwrap_or_default()),
        "source" => text(&|t| t.source.as_ref().map_or(String::new(), |s| s.topic.clone())),
    )
    .map_err(|e| Error::io(format!("cannot list tables: {e}")))
}

/// Crawls a lake into a catalog, like an AWS Glue crawler: finds tables (top-level
/// folders) and Hive partitions (``key=value/`` folders), reads each new object's schema
/// (Parquet footers, sampled JSON lines), adds new columns, widens integer columns to
/// doubles, and reports type conflicts with the files involved. ``_rejected/``, ``_catalog/``
/// and hidden temporary files are skipped. Incremental: objects crawled before (same
/// size) are not read again.
///
/// Args:
///     lake: a directory, ``file:///dir`` or ``s3://bucket/prefix``.
///     database: the catalog database (``"stock_market"``).
///     table: crawl only this table (table or folder name).
///     catalog: ``"local"`` (JSON under ``_catalog/`` in the lake) or ``"glue"``.
///     on_error: ``"skip"`` (report unreadable objects and leave them out of queries) or
///         ``"raise"``.
///     aws: ``AwsOptions`` for S3 and Glue.
///     progress: in a notebook kernel a bar counts the objects read; ``False``: none.
///
/// Returns:
///     CrawlReport: what changed.
///
/// Raises:
///     NotFoundError: the lake, the bucket or the named table does not exist.
///     SchemaError: with ``on_error="raise"``, an object that cannot be read (named).
#[pyfunction]
#[pyo3(signature = (
    lake="lake", *, database="stock_market", table=None, catalog="local", on_error="skip",
    aws=None, progress=None
))]
#[allow(clippy::too_many_arguments)]
pub fn crawl(
    py: Python<'_>,
    lake: &str,
    database: &str,
    table: Option<String>,
    catalog: &str,
    on_error: &str,
    aws: Option<PyRef<'_, PyAwsOptions>>,
    progress: Option<bool>,
) -> PyResult<PyCrawlReport> {
    let kind = str::parse::<CatalogKind>(catalog)?;
    let on_error = str::parse::<OnError>(on_error)?;
    let aws = aws_options(aws.as_deref());
    let read = Counter::default();
    let report = with_progress(py, progress, "objects read", &read, || {
        Lake::open(&LakeUrl::parse(lake)?, kind, None, database, &aws)
            .and_then(|lake| lake.crawl(table, on_error, read.clone()))
    })?;
    Ok(report.into())
}
