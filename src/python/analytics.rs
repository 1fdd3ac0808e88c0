//! Python face of the analytics job: constructor options, status, live frames, callback.
//!
//! The constructor takes one parameter per Python keyword argument, hence its length.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyUserWarning;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3_polars::PyDataFrame;

use super::kafka_config::kafka_config;
use super::options::{PyAsOf, PyOutputs, PySession};
use super::pipelines::{Collector, PyJobStatus, PyPipeline, Snapshot, View};
use super::schema::PyTickSchema;
use super::{seconds, shown};
use crate::analytics::options::Window;
use crate::analytics::output::{frame, iso, Value};
use crate::analytics::spec::parse_duration;
use crate::analytics::{
    options, Analytics, AnalyticsConfig, AnalyticsStatus, Callback, Kind, Output, Recent,
    TickFields, CALLBACK_KINDS,
};
use crate::error::{Error, Result};

/// A snapshot of an analytics job's counters, besides those of every ``JobStatus``.
///
/// Attributes:
///     ticks: valid ticks among the messages consumed (late ones included).
///     late: ticks behind the watermark, sent to the late side output.
///     last_rejected: why the latest rejected message is not a tick (with partition@offset).
///     windows, indicators, alerts: outputs emitted of each kind.
///     open_windows: windows not yet closed.
///     checkpoints: state snapshots saved with their offsets committed.
///     watermarks: event-time watermark by partition (ISO 8601).
#[pyclass(
    name = "AnalyticsStatus",
    module = "stockstream._core",
    extends = PyJobStatus,
    frozen,
    get_all,
    skip_from_py_object
)]
pub struct PyAnalyticsStatus {
    ticks: u64,
    late: u64,
    last_rejected: Option<String>,
    windows: u64,
    indicators: u64,
    alerts: u64,
    open_windows: u64,
    checkpoints: u64,
    watermarks: BTreeMap<i32, String>,
}

impl PyAnalyticsStatus {
    fn snapshot(py: Python<'_>, status: &AnalyticsStatus, running: bool) -> PyResult<Py<PyAny>> {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let detail = status.detail();
        let own = PyAnalyticsStatus {
            ticks: load(&status.ticks),
            late: load(&status.late),
            last_rejected: detail.last_rejected,
            windows: status.emitted(Kind::Window),
            indicators: status.emitted(Kind::Indicators),
            alerts: status.emitted(Kind::Alert),
            open_windows: load(&status.open_windows),
            checkpoints: load(&status.checkpoints),
            watermarks: (detail.watermarks.into_iter())
                .map(|(p, wm)| (p, iso(wm)))
                .collect(),
        };
        let mut html_rows = vec![("watermarks", format!("{:?}", own.watermarks))];
        html_rows.extend(own.last_rejected.clone().map(|r| ("last rejected", r)));
        let view = View {
            name: "AnalyticsStatus",
            caption: "Analytics",
            rows: shown!(own; ticks, late, windows, alerts, open_windows),
            html_rows,
        };
        PyJobStatus::snapshot(py, status, running, view, own)
    }
}

/// Per-symbol, event-time analytics on a topic of stock ticks, as a consumer group member.
///
/// Each tick (a JSON record, as ``Producer`` sends) is read for its symbol, event time,
/// price and volume. Per Kafka partition, ticks wait until the watermark (the latest event
/// time seen minus ``allowed_lateness``) passes them and are then taken in event-time
/// order, so out-of-order ticks within the lateness count as if they had arrived in order.
/// A tick already behind the watermark is *late*: it goes to the late side output
/// (``late()``, the ``late`` output topic) and is counted. A window is emitted when the watermark
/// passes its end, or when its partition has been quiet for ``idle_timeout`` seconds (so a
/// stream that stops still gets its last window), or at once when a ``stop_at_end`` run
/// reaches the end of its input.
///
/// Outputs (each a record keyed by symbol):
///     window: ``symbol, window_start, window_end, open, high, low, close, volume, vwap,
///         count, change_pct`` — high/low are the window's max/min price.
///     indicators: ``symbol, time, price`` and one column per indicator, per tick.
///     alert: ``symbol, rule, time, value, direction``.
///     late: ``symbol, time, price, volume, partition, offset, watermark``.
///
/// State is checkpointed every ``checkpoint_interval`` seconds to the ``state`` topic: outputs
/// are flushed, each partition's state is saved, then offsets are committed. A restart
/// (or another member taking over a partition) resumes from that checkpoint without
/// emitting a window twice or losing an open one. After a crash, outputs emitted since the
/// last checkpoint come again (at-least-once; symbol and event time identify them), unless
/// ``exactly_once`` is set.
///
/// Args:
///     bootstrap_servers: ``host:port[,host:port…]``.
///     topic: the tick topic; produce it keyed by symbol (as ``Producer`` does).
///     group_id: the consumer group; members share the topic's partitions.
///     window: window length (``"1m"``, ``"5m"``, ``"1h"``; a number is seconds),
///         ``Session("30m")`` for per-symbol session windows, or None.
///     slide: for hopping windows, how far apart windows start; tumbling if None.
///     indicators: names such as ``"sma_20"``, ``"ema_12"`` (N ticks), ``"sma_5m"``,
///         ``"ema_5m"`` (event-time span; for EMA the half-life), ``"volatility_20"``
///         (sample stdev of the last 20 simple returns), ``"rsi_14"`` (Wilder),
///         ``"macd"``, ``"macd_signal"``, ``"macd_hist"`` (12/26/9, or
///         ``"macd_5_35_5"`` etc.), Bollinger ``"bb_middle_20"``, ``"bb_upper_20"``,
///         ``"bb_lower_20"``, ``"bb_pctb_20"`` (2 standard deviations, or
///         ``"bb_upper_20_2.5"``), ``"atr_14"`` (Wilder, from the ``High``/``Low``
///         fields when ticks carry them), ``"vwap"`` (since the trading day's start) and
///         ``"roc_10"`` (percent change over 10 ticks). Null while warming up.
///     alerts: rules such as ``"price crosses 15000"``, ``"sma_5 crosses sma_20"``,
///         ``"rsi_14 crosses 70"``, ``"price crosses bb_upper_20"``,
///         ``"move 2%"`` (a window's open-to-close change), optionally ending in
///         ``"for NYA,IXIC"``. Indicators a rule names are computed even if not listed.
///     allowed_lateness: how far behind the latest event time a tick may arrive and still
///         count (``"30s"``; default 0).
///     max_future: ticks dated further ahead of the wall clock are rejected (counted in
///         ``rejected``) and never move the watermark (``"1d"`` by default).
///     idle_timeout: seconds without messages after which a partition's windows close (10).
///     outputs: ``Outputs(windows=, indicators=, alerts=, late=, state=)``: the output
///         topics (JSON, created if missing; None: not produced) and the checkpoint topic
///         (compacted; default ``<group_id>-state``).
///     checkpoint_interval: seconds between checkpoints (2).
///     exactly_once: make each checkpoint a Kafka transaction holding the outputs, the
///         state and the input offsets (Kafka Streams' exactly-once v2), so readers with
///         ``isolation.level=read_committed`` see every output once. Needs a broker with
///         transactions: the embedded broker and Tansu are refused with a ConfigError.
///     callback: ``f(kind, record)`` called from the job's thread for each output of
///         ``callback_kinds`` (default windows and alerts); exceptions are counted as errors.
///     keep: how many recent outputs of each kind ``windows()`` etc. return (10,000).
///     schema: a ``TickSchema``: the input fields (the tutorial's ``Index``, ``Date``,
///         ``Close``, ``Volume`` by default; ``volume=None`` if ticks carry no volume, VWAP
///         is then empty) and how the time is written (integer times are epochs).
///     session_zone: the exchange's IANA zone, where trading days (and so session
///         ``vwap``) begin; the schema's ``time_zone`` if given, else UTC.
///     join: an ``AsOf`` join: each tick takes the latest values of a table topic (FX
///         rates…) for its key as of its time; they follow the indicators in the
///         ``indicators`` output and can be used in ``price`` and in rules.
///     price: the price to analyse, instead of the schema's price field: a field name, or
///         arithmetic over the tick's and the joined fields (``"Close * rate"``; quote
///         names with spaces: ``'"Adj Close" * rate'``).
///     connect_timeout: seconds to wait for Kafka before raising KafkaError.
///     **config: any librdkafka property (``session_timeout_ms=6000``, SASL/SSL…).
///
/// Raises:
///     KafkaError: Kafka cannot be reached within ``connect_timeout``.
///     NotFoundError: the topic does not exist.
///     ConfigError: an invalid window, indicator, rule or option.
#[pyclass(name = "Analytics", module = "stockstream._core", extends = PyPipeline, frozen)]
pub struct PyAnalytics {
    recent: Arc<Mutex<Recent>>,
    names: Vec<String>,
}

/// An event-time duration: a string such as ``"1m"`` or a number of seconds.
pub(super) fn event_duration(name: &str, value: &Bound<'_, PyAny>) -> PyResult<i64> {
    if value.is_instance_of::<PyString>() {
        return Ok(parse_duration(&value.extract::<String>()?)?);
    }
    let secs: f64 = value.extract().map_err(|_| {
        Error::config(format!(
            "{name} must be a duration such as \"1m\" or a number of seconds"
        ))
    })?;
    let micros = (secs * 1e6).round();
    if !(micros >= 0.0 && micros < i64::MAX as f64) {
        return Err(Error::config(format!(
            "{name} must be a non-negative duration, got {secs}"
        ))
        .into());
    }
    Ok(micros as i64)
}

fn strings(value: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    match value {
        None => Ok(Vec::new()),
        Some(v) if v.is_instance_of::<PyString>() => Ok(vec![v.extract()?]),
        Some(v) => v.extract(),
    }
}

/// Calls a Python function with each output as `(kind, dict)`.
fn python_callback(function: Py<PyAny>) -> Callback {
    Box::new(move |output: &Output, names: &[String]| {
        Python::attach(|py| {
            let record = PyDict::new(py);
            for (name, value) in output.fields(names) {
                let set = match value {
                    Value::Str(s) => record.set_item(name, s),
                    Value::Time(t) => record.set_item(name, iso(t)),
                    Value::Float(f) => record.set_item(name, f),
                    Value::Int(i) => record.set_item(name, i),
                };
                set.map_err(|e| e.to_string())?;
            }
            function
                .call1(py, (output.kind().name(), record))
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    })
}

impl PyAnalytics {
    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept outputs of `kind`.
    fn frame(&self, kind: Kind) -> PyResult<PyDataFrame> {
        let outputs = self.recent().of(kind);
        self.frame_of(kind, &outputs)
    }

    fn frame_of(&self, kind: Kind, outputs: &[Output]) -> PyResult<PyDataFrame> {
        outputs_frame(kind, outputs, &self.names)
    }
}

fn outputs_frame(kind: Kind, outputs: &[Output], names: &[String]) -> PyResult<PyDataFrame> {
    let df = frame(kind, outputs, names)
        .map_err(|e| Error::io(format!("cannot build the {} frame: {e}", kind.name())))?;
    Ok(PyDataFrame(df))
}

/// A collecting run's result: the outputs it emitted, by kind, as frames.
fn run_outputs(recent: Arc<Mutex<Recent>>, names: Vec<String>) -> Collector {
    Box::new(move || {
        let marks = recent.lock().unwrap_or_else(|e| e.into_inner()).marks();
        let (recent, names) = (recent.clone(), names.clone());
        Box::new(move |py| {
            let recent = recent.lock().unwrap_or_else(|e| e.into_inner());
            let frames = PyDict::new(py);
            for (key, kind) in [
                ("windows", Kind::Window),
                ("indicators", Kind::Indicators),
                ("alerts", Kind::Alert),
                ("late", Kind::Late),
            ] {
                let (outputs, gone) = recent.since(kind, &marks);
                if gone > 0 {
                    let message = format!(
                        "the run emitted {} {key} records; the first {gone} are no longer kept: \
                         raise keep= to collect them all",
                        outputs.len() as u64 + gone
                    );
                    let message = std::ffi::CString::new(message).unwrap_or_default();
                    PyErr::warn(py, &py.get_type::<PyUserWarning>(), &message, 1)?;
                }
                frames.set_item(key, outputs_frame(kind, &outputs, &names)?)?;
            }
            Ok(frames.into_any().unbind())
        })
    })
}

#[pymethods]
impl PyAnalytics {
    #[new]
    #[pyo3(signature = (
        bootstrap_servers, topic, group_id="stockstream-analytics", *, window=None, slide=None,
        indicators=None, alerts=None, allowed_lateness=None, max_future=None, idle_timeout=10.0,
        outputs=None, checkpoint_interval=2.0, exactly_once=false, callback=None,
        callback_kinds=None, keep=10_000, schema=None, session_zone=None, join=None, price=None,
        connect_timeout=10.0, **config
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        bootstrap_servers: &str,
        topic: &str,
        group_id: &str,
        window: Option<&Bound<'_, PyAny>>,
        slide: Option<&Bound<'_, PyAny>>,
        indicators: Option<&Bound<'_, PyAny>>,
        alerts: Option<&Bound<'_, PyAny>>,
        allowed_lateness: Option<&Bound<'_, PyAny>>,
        max_future: Option<&Bound<'_, PyAny>>,
        idle_timeout: f64,
        outputs: Option<PyRef<'_, PyOutputs>>,
        checkpoint_interval: f64,
        exactly_once: bool,
        callback: Option<Py<PyAny>>,
        callback_kinds: Option<&Bound<'_, PyAny>>,
        keep: usize,
        schema: Option<PyRef<'_, PyTickSchema>>,
        session_zone: Option<&str>,
        join: Option<PyRef<'_, PyAsOf>>,
        price: Option<&str>,
        connect_timeout: f64,
        config: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let duration = |name, value: Option<&Bound<'_, PyAny>>| {
            value.map(|v| event_duration(name, v)).transpose()
        };
        let window = match window {
            Some(w) => match w.cast::<PySession>() {
                Ok(session) => Some(Window::Session(session.get().gap)),
                Err(_) => Some(Window::Length(event_duration("window", w)?)),
            },
            None => None,
        };
        let fields = schema
            .as_ref()
            .map_or_else(TickFields::default, |s| TickFields::from(&s.schema));
        let join = join.map(|j| j.as_of(&fields.time));
        let spec = options::spec(
            window,
            duration("slide", slide)?,
            &strings(indicators)?,
            &strings(alerts)?,
            duration("allowed_lateness", allowed_lateness)?.unwrap_or(0),
            join.as_ref().map_or(&[][..], |j| &j.fields[..]),
        )?;
        let mut cfg = AnalyticsConfig::new(topic, group_id, spec);
        cfg.fields = fields;
        if let Some(ahead) = duration("max_future", max_future)? {
            cfg.max_future = ahead;
        }
        cfg.idle_timeout = seconds("idle_timeout", idle_timeout)?;
        cfg.checkpoint_interval = seconds("checkpoint_interval", checkpoint_interval)?;
        cfg.exactly_once = exactly_once;
        cfg.keep = keep;
        let cfg = cfg
            .with_outputs(outputs.map(|o| o.outputs()).unwrap_or_default())
            .with_session_zone(session_zone)?
            .with_join(join, price)?;
        let callback = match callback {
            Some(f) => {
                let wanted = match callback_kinds {
                    Some(k) => strings(Some(k))?
                        .iter()
                        .map(|n| n.parse())
                        .collect::<Result<_>>()?,
                    None => CALLBACK_KINDS.to_vec(),
                };
                Some((wanted, python_callback(f)))
            }
            None => None,
        };
        let kafka = kafka_config(bootstrap_servers, config)?;
        let connect_timeout = seconds("connect_timeout", connect_timeout)?;
        let describe = format!("Analytics(topic={topic:?}, group_id={group_id:?})");
        let job = py.detach(|| Analytics::new(&kafka, cfg, callback, connect_timeout))?;
        let this = PyAnalytics {
            recent: job.recent(),
            names: job.indicator_names().to_vec(),
        };
        let status = job.status();
        let snapshot: Snapshot =
            Box::new(move |py, running| PyAnalyticsStatus::snapshot(py, &status, running));
        let collector = run_outputs(this.recent.clone(), this.names.clone());
        Ok(PyClassInitializer::from(PyPipeline::new(
            job,
            "analytics",
            snapshot,
            collector,
            describe,
        ))
        .add_subclass(this))
    }

    /// The indicator columns, in order (including those alert rules added).
    #[getter]
    fn indicator_names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// The latest closed windows (at most ``keep``), oldest first, as a Polars DataFrame.
    fn windows(&self) -> PyResult<PyDataFrame> {
        self.frame(Kind::Window)
    }

    /// The latest per-tick indicator values (at most ``keep``), as a Polars DataFrame.
    fn indicators(&self) -> PyResult<PyDataFrame> {
        self.frame(Kind::Indicators)
    }

    /// The latest alerts (at most ``keep``), as a Polars DataFrame.
    fn alerts(&self) -> PyResult<PyDataFrame> {
        self.frame(Kind::Alert)
    }

    /// The latest late ticks (at most ``keep``), as a Polars DataFrame.
    fn late(&self) -> PyResult<PyDataFrame> {
        self.frame(Kind::Late)
    }

    /// A live chart of this job, updated in the background while other cells run:
    /// ``stockstream.chart(self, symbol, …)`` (see it for the arguments).
    #[pyo3(signature = (symbol=None, **options))]
    fn chart(
        slf: &Bound<'_, Self>,
        symbol: Option<&str>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let chart = slf.py().import("stockstream.chart")?.getattr("chart")?;
        Ok(chart.call((slf, symbol), options)?.unbind())
    }
}
