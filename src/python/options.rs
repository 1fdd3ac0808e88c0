//! Python faces of the option groups: how to reach AWS, when a sink lands what it buffers,
//! and where an analytics job writes. Each is one typed object, given to the call that
//! needs it, instead of a run of loose keywords.

use pyo3::prelude::*;

use super::{py_values, repr_of, seconds};
use crate::analytics::Outputs;
use crate::aws::AwsOptions;
use crate::sink::RollPolicy;

/// How to reach AWS (S3, Glue, Athena) or an S3-compatible server. Everything is optional:
/// credentials and defaults come from the AWS default chain (environment, ``~/.aws``
/// profiles, SSO, instance role).
///
/// Args:
///     endpoint_url: an S3-compatible server, e.g. ``"http://127.0.0.1:9000"`` (path-style
///         addressing); Glue and Athena clients use it too.
///     region: the AWS region.
///     profile: a named profile from ``~/.aws/config``.
///     part_size: bytes per part of a multipart upload (S3's default if None).
#[pyclass(
    name = "AwsOptions",
    module = "stockstream._core",
    frozen,
    eq,
    skip_from_py_object
)]
#[derive(Clone, PartialEq, Default)]
pub struct PyAwsOptions {
    #[pyo3(get)]
    endpoint_url: Option<String>,
    #[pyo3(get)]
    region: Option<String>,
    #[pyo3(get)]
    profile: Option<String>,
    #[pyo3(get)]
    part_size: Option<usize>,
}

#[pymethods]
impl PyAwsOptions {
    #[new]
    #[pyo3(signature = (*, endpoint_url=None, region=None, profile=None, part_size=None))]
    pub fn new(
        endpoint_url: Option<String>,
        region: Option<String>,
        profile: Option<String>,
        part_size: Option<usize>,
    ) -> Self {
        PyAwsOptions {
            endpoint_url,
            region,
            profile,
            part_size,
        }
    }

    fn __repr__(&self) -> String {
        let fields = py_values!(self; endpoint_url, region, profile, part_size);
        repr_of("AwsOptions", &fields)
    }
}

/// The AWS options of a call's `aws=` argument (the default chain's if not given).
pub fn aws_options(aws: Option<&PyAwsOptions>) -> AwsOptions {
    aws.cloned().unwrap_or_default().options()
}

impl PyAwsOptions {
    pub fn options(&self) -> AwsOptions {
        AwsOptions {
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            path_style: None,
            part_size: self.part_size,
        }
    }
}

/// When a sink lands what it buffers of one Kafka partition: at the first limit reached.
///
/// Args:
///     records: records buffered (100,000).
///     bytes: message bytes buffered (64 MiB).
///     age: seconds since the first buffered record (60): bounds how stale the lake is.
///     idle: seconds without new records (10): a stream that stops is landed at once.
///     buffer_bytes: message bytes buffered over all partitions before the largest buffer
///         is landed early (256 MiB); bounds memory whatever the backlog.
///
/// Raises:
///     ConfigError: a negative or non-finite number of seconds.
#[pyclass(
    name = "RollPolicy",
    module = "stockstream._core",
    frozen,
    skip_from_py_object
)]
#[derive(Clone)]
pub struct PyRollPolicy {
    policy: RollPolicy,
}

#[pymethods]
impl PyRollPolicy {
    #[new]
    #[pyo3(signature = (*, records=None, bytes=None, age=None, idle=None, buffer_bytes=None))]
    fn new(
        records: Option<usize>,
        bytes: Option<usize>,
        age: Option<f64>,
        idle: Option<f64>,
        buffer_bytes: Option<usize>,
    ) -> PyResult<Self> {
        let defaults = RollPolicy::default();
        let policy = RollPolicy {
            records: records.unwrap_or(defaults.records),
            bytes: bytes.unwrap_or(defaults.bytes),
            age: age
                .map(|s| seconds("age", s))
                .transpose()?
                .unwrap_or(defaults.age),
            idle: idle
                .map(|s| seconds("idle", s))
                .transpose()?
                .unwrap_or(defaults.idle),
            memory: buffer_bytes.unwrap_or(defaults.memory),
        };
        policy.validate()?;
        Ok(PyRollPolicy { policy })
    }

    #[getter]
    fn records(&self) -> usize {
        self.policy.records
    }

    #[getter]
    fn bytes(&self) -> usize {
        self.policy.bytes
    }

    #[getter]
    fn age(&self) -> f64 {
        self.policy.age.as_secs_f64()
    }

    #[getter]
    fn idle(&self) -> f64 {
        self.policy.idle.as_secs_f64()
    }

    #[getter]
    fn buffer_bytes(&self) -> usize {
        self.policy.memory
    }

    fn __repr__(&self) -> String {
        let p = &self.policy;
        format!(
            "RollPolicy(records={}, bytes={}, age={}, idle={}, buffer_bytes={})",
            p.records,
            p.bytes,
            p.age.as_secs_f64(),
            p.idle.as_secs_f64(),
            p.memory
        )
    }
}

impl PyRollPolicy {
    pub fn policy(&self) -> RollPolicy {
        self.policy.clone()
    }
}

/// Where an analytics job writes: one topic per kind of output (created if missing; None:
/// not produced), and the topic its state is checkpointed to.
///
/// Args:
///     windows, indicators, alerts, late: output topics (JSON records keyed by symbol).
///     state: the checkpoint topic (compacted; ``<group_id>-state`` by default).
#[pyclass(
    name = "Outputs",
    module = "stockstream._core",
    frozen,
    eq,
    skip_from_py_object
)]
#[derive(Clone, PartialEq, Default)]
pub struct PyOutputs {
    #[pyo3(get)]
    windows: Option<String>,
    #[pyo3(get)]
    indicators: Option<String>,
    #[pyo3(get)]
    alerts: Option<String>,
    #[pyo3(get)]
    late: Option<String>,
    #[pyo3(get)]
    state: Option<String>,
}

#[pymethods]
impl PyOutputs {
    #[new]
    #[pyo3(signature = (*, windows=None, indicators=None, alerts=None, late=None, state=None))]
    pub fn new(
        windows: Option<String>,
        indicators: Option<String>,
        alerts: Option<String>,
        late: Option<String>,
        state: Option<String>,
    ) -> Self {
        PyOutputs {
            windows,
            indicators,
            alerts,
            late,
            state,
        }
    }

    fn __repr__(&self) -> String {
        let fields = py_values!(self; windows, indicators, alerts, late, state);
        repr_of("Outputs", &fields)
    }
}

impl PyOutputs {
    pub fn outputs(&self) -> Outputs {
        let PyOutputs {
            windows,
            indicators,
            alerts,
            late,
            state,
        } = self.clone();
        Outputs {
            windows,
            indicators,
            alerts,
            late,
            state,
        }
    }
}

/// A session window, for ``Analytics(window=Session("30m"))``: per symbol, a window opens at
/// a tick and closes once ``gap`` of event time passes without another tick of its symbol.
/// Its ``window_start`` is its first tick's time and its ``window_end`` its last tick's time
/// plus ``gap`` (when it was known to be over). Ticks out of order within
/// ``allowed_lateness`` are sorted in first, so a late tick that bridges two sessions
/// makes them one; a tick later than that is late, as with other windows.
///
/// Args:
///     gap: the inactivity that ends a session (``"30m"``; a number is seconds).
#[pyclass(
    name = "Session",
    module = "stockstream._core",
    frozen,
    skip_from_py_object
)]
#[derive(Clone)]
pub struct PySession {
    /// µs.
    pub gap: i64,
}

#[pymethods]
impl PySession {
    #[new]
    fn new(gap: &Bound<'_, PyAny>) -> PyResult<Self> {
        let gap = super::analytics::event_duration("gap", gap)?;
        crate::analytics::spec::WindowSpec::session(gap)?;
        Ok(PySession { gap })
    }

    /// The gap, in seconds.
    #[getter]
    fn gap(&self) -> f64 {
        self.gap as f64 / 1e6
    }

    fn __repr__(&self) -> String {
        format!("Session(gap={})", self.gap as f64 / 1e6)
    }
}

/// An as-of join, for ``Analytics(join=AsOf(...))``: each tick takes, for its key, the
/// latest values of a second topic (a table such as daily FX rates) as of the tick's event
/// time — Polars' ``join_asof(strategy="backward", by=…, tolerance=…)`` on a stream.
///
/// Every member reads the whole table topic: to its end when a run starts, then what
/// arrives before each batch of ticks. A record counts from its own event time, whenever
/// it arrives (a later record of the same key and time replaces it). A tick is joined
/// when it is read: a *late* table record (dated before ticks already joined) counts for
/// the ticks read after it, and outputs already emitted are not revised. A tick with no
/// value of its key within ``tolerance`` is rejected (``status().rejected``, with the
/// reason). The table read so far is saved in each checkpoint, so a restart reads on from
/// there. The joined fields appear in the ``indicators`` output after the indicators and
/// can be named in ``price=`` and in alert rules (``"rate crosses 7.2"``).
///
/// Args:
///     topic: the table's topic: JSON records with the key, a time and the fields.
///     by: the field holding the key, in both topics (``"currency"``), or a pair
///         ``("Currency", "currency")``: the tick's field, then the table's.
///     fields: the table's numeric fields each tick takes (``["rate"]``).
///     on: the table records' time field, written as the ticks' times are; by default the
///         ticks' time field name.
///     tolerance: how much older than a tick a value may be (``"3d"``; a number is
///         seconds); None: any age.
#[pyclass(
    name = "AsOf",
    module = "stockstream._core",
    frozen,
    skip_from_py_object
)]
#[derive(Clone)]
pub struct PyAsOf {
    topic: String,
    by: (String, String),
    fields: Vec<String>,
    on: Option<String>,
    /// µs.
    tolerance: Option<i64>,
}

impl PyAsOf {
    /// The join, with `time_field` (the ticks') as the table's time field unless `on` names one.
    pub fn as_of(&self, time_field: &str) -> crate::analytics::join::AsOf {
        crate::analytics::join::AsOf {
            topic: self.topic.clone(),
            by: self.by.clone(),
            on: self.on.clone().unwrap_or_else(|| time_field.to_string()),
            tolerance: self.tolerance,
            fields: self.fields.clone(),
        }
    }
}

#[pymethods]
impl PyAsOf {
    #[new]
    #[pyo3(signature = (topic, by, fields, *, on=None, tolerance=None))]
    fn new(
        topic: String,
        by: &Bound<'_, PyAny>,
        fields: &Bound<'_, PyAny>,
        on: Option<String>,
        tolerance: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let by = match by.extract::<String>() {
            Ok(both) => (both.clone(), both),
            Err(_) => by.extract::<(String, String)>().map_err(|_| {
                crate::error::Error::config(
                    "AsOf: by is a field name or a (tick field, table field) pair",
                )
            })?,
        };
        let fields = match fields.extract::<String>() {
            Ok(one) => vec![one],
            Err(_) => fields.extract::<Vec<String>>().map_err(|_| {
                crate::error::Error::config("AsOf: fields is a field name or a list of them")
            })?,
        };
        let tolerance = tolerance
            .map(|t| super::analytics::event_duration("tolerance", t))
            .transpose()?;
        let join = PyAsOf {
            topic,
            by,
            fields,
            on,
            tolerance,
        };
        join.as_of("time").validate()?;
        Ok(join)
    }

    #[getter]
    fn topic(&self) -> &str {
        &self.topic
    }

    /// The tick's key field and the table's.
    #[getter]
    fn by(&self) -> (String, String) {
        self.by.clone()
    }

    #[getter]
    fn fields(&self) -> Vec<String> {
        self.fields.clone()
    }

    #[getter]
    fn on(&self) -> Option<String> {
        self.on.clone()
    }

    /// The tolerance in seconds, or None.
    #[getter]
    fn tolerance(&self) -> Option<f64> {
        self.tolerance.map(|t| t as f64 / 1e6)
    }

    fn __repr__(&self) -> String {
        format!(
            "AsOf(topic={:?}, by={:?}, fields={:?}, on={:?}, tolerance={:?})",
            self.topic,
            self.by,
            self.fields,
            self.on,
            self.tolerance()
        )
    }
}
