//! Python face of the producer: GIL released while sending, Ctrl-C honoured, awaitable forms.
//!
//! Methods take one parameter per Python keyword argument, so some exceed clippy's argument count.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict};

use super::kafka_config::kafka_config;
use super::seconds;
use super::source::PyTickSource;
use crate::producer::{Control, Producer, SendOptions, SendReport};

/// What one send did: counts, timing, and anything the caller should know.
///
/// Attributes:
///     topic: the topic written to.
///     sent: messages handed to Kafka.
///     delivered: messages the broker acknowledged.
///     failed: messages that were not delivered (a send with failures raises DeliveryError,
///         whose ``report`` attribute holds this object).
///     bytes: key + value bytes sent, before compression.
///     elapsed: seconds, including the final flush.
///     rate: delivered messages per second.
///     first_error: the first delivery error, if any.
///     dropped_by_broker: records of this send the broker no longer holds (retention).
///     warnings: things worth knowing (dropped records, pre-1970 timestamps).
///     interrupted: the send was stopped early (Ctrl-C, ``stop()``, task cancelled).
#[pyclass(
    name = "SendReport",
    module = "stockstream._core",
    frozen,
    get_all,
    skip_from_py_object
)]
#[derive(Clone)]
pub struct PySendReport {
    topic: String,
    sent: u64,
    delivered: u64,
    failed: u64,
    bytes: u64,
    elapsed: f64,
    rate: f64,
    first_error: Option<String>,
    dropped_by_broker: u64,
    warnings: Vec<String>,
    interrupted: bool,
}

impl From<&SendReport> for PySendReport {
    fn from(r: &SendReport) -> Self {
        PySendReport {
            topic: r.topic.clone(),
            sent: r.sent,
            delivered: r.delivered,
            failed: r.failed,
            bytes: r.bytes,
            elapsed: r.elapsed.as_secs_f64(),
            rate: r.rate(),
            first_error: r.first_error.clone(),
            dropped_by_broker: r.dropped_by_broker,
            warnings: r.warnings.clone(),
            interrupted: r.interrupted,
        }
    }
}

#[pymethods]
impl PySendReport {
    fn __repr__(&self) -> String {
        let mut s = format!(
            "SendReport(topic={:?}, sent={}, delivered={}, failed={}, elapsed={:.3}s, rate={:.0} msg/s",
            self.topic, self.sent, self.delivered, self.failed, self.elapsed, self.rate
        );
        if self.interrupted {
            s.push_str(", interrupted");
        }
        if !self.warnings.is_empty() {
            s.push_str(&format!(", warnings={:?}", self.warnings));
        }
        s + ")"
    }

    /// An HTML table, for notebooks.
    fn _repr_html_(&self) -> String {
        let mut rows = vec![
            ("topic".to_string(), self.topic.clone()),
            ("sent".to_string(), self.sent.to_string()),
            ("delivered".to_string(), self.delivered.to_string()),
            ("failed".to_string(), self.failed.to_string()),
            ("bytes".to_string(), self.bytes.to_string()),
            ("elapsed".to_string(), format!("{:.3} s", self.elapsed)),
            ("rate".to_string(), format!("{:.0} msg/s", self.rate)),
        ];
        if self.interrupted {
            rows.push(("interrupted".to_string(), "yes".to_string()));
        }
        rows.extend(
            self.first_error
                .iter()
                .map(|e| ("first error".to_string(), e.clone())),
        );
        rows.extend(
            self.warnings
                .iter()
                .map(|w| ("warning".to_string(), w.clone())),
        );
        super::html_table("SendReport", &rows)
    }
}

/// A send's progress callback: the caller's; none for ``progress=False``; by default a bar
/// in a notebook kernel, which the send owns and finishes.
fn progress_for(
    py: Python<'_>,
    progress: Option<Py<PyAny>>,
    total: Option<u64>,
) -> PyResult<(Option<Py<PyAny>>, OwnBar)> {
    match progress {
        Some(p) if p.bind(py).is_instance_of::<PyBool>() && !p.bind(py).is_truthy()? => {
            Ok((None, OwnBar(None)))
        }
        Some(p) if !p.bind(py).is_instance_of::<PyBool>() => Ok((Some(p), OwnBar(None))),
        _ => {
            let bar = py
                .import("stockstream.progress")?
                .call_method1("default_progress", (total,))?;
            Ok(if bar.is_none() {
                (None, OwnBar(None))
            } else {
                (Some(bar.clone().unbind()), OwnBar(Some(bar.unbind())))
            })
        }
    }
}

/// The progress bar a send made for itself: shown at the final counts, then closed.
struct OwnBar(Option<Py<PyAny>>);

impl OwnBar {
    fn finish(self, py: Python<'_>, sent: &PyResult<PySendReport>) -> PyResult<()> {
        if let Some(bar) = self.0 {
            if let Ok(report) = sent {
                bar.call1(py, (report.clone(),))?;
            }
            bar.call_method0(py, "close")?;
        }
        Ok(())
    }
}

/// Stops on Ctrl-C (checked about every 100 ms while the GIL is released) and forwards progress.
struct PythonControl {
    progress: Option<Py<PyAny>>,
    raised: Option<PyErr>,
    cancelled: Arc<AtomicBool>,
}

impl Control for PythonControl {
    fn should_stop(&mut self) -> bool {
        if self.cancelled.load(Ordering::Relaxed) {
            return true;
        }
        Python::attach(|py| super::background::interrupted(py, &mut self.raised))
    }

    fn progress(&mut self, report: &SendReport) {
        let Some(callback) = &self.progress else {
            return;
        };
        Python::attach(|py| {
            if let Err(e) = callback.call1(py, (PySendReport::from(report),)) {
                self.raised = Some(e);
                self.cancelled.store(true, Ordering::Relaxed);
            }
        });
    }
}

/// Sets a flag when dropped: an awaited send whose task is cancelled stops its worker thread.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Produces stock ticks to one Kafka topic.
///
/// Values are the JSON object of a CSV row with the CSV's own column names (the tutorial's
/// ``to_dict(orient="records")`` shape); the key is the symbol, so a symbol's ticks stay in
/// order on one partition. Defaults: idempotent, ``acks=all``, zstd compression, batching,
/// and the Java client's murmur2 partitioner.
///
/// Args:
///     bootstrap_servers: ``host:port[,host:port…]``.
///     topic: the topic to write to.
///     connect_timeout: seconds to wait for a broker before raising KafkaError.
///     lanes: how many librdkafka producers send, each owning a disjoint set of the
///         topic's partitions (so a symbol's order holds), to compress and send on more
///         than one thread; one by default; at most one per partition, and per core or
///         4. With a ``partitioner`` other than the default, one.
///     **config: any librdkafka property, dots or underscores (``linger_ms=5``,
///         ``**{"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN", …}``).
///
/// Raises:
///     KafkaError: no broker answered within ``connect_timeout``.
///     ConfigError: an unknown or invalid property.
#[pyclass(name = "Producer", module = "stockstream._core", subclass, frozen)]
pub struct PyProducer {
    inner: Arc<Producer>,
    last_report: Arc<Mutex<Option<PySendReport>>>,
    /// Sends in progress, foreground or awaitable.
    sending: Arc<AtomicUsize>,
}

/// Counts a send as in progress while it lives.
struct Sending(Arc<AtomicUsize>);

impl Sending {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Sending(count.clone())
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn options(
    rate: Option<f64>,
    speedup: Option<f64>,
    limit: Option<u64>,
    duration: Option<f64>,
) -> PyResult<SendOptions> {
    let duration = duration.map(|d| seconds("duration", d)).transpose()?;
    Ok(SendOptions {
        rate,
        speedup,
        limit,
        duration,
    })
}

/// Runs one send to completion on the current thread and turns the outcome into Python terms.
fn run(
    producer: &Producer,
    source: &PyTickSource,
    options: &SendOptions,
    mut control: PythonControl,
    last_report: &Mutex<Option<PySendReport>>,
) -> PyResult<PySendReport> {
    let result = {
        let mut source = source.inner.lock().unwrap();
        producer.send(source.as_mut(), options, &mut control)
    };
    let report = result?;
    let py_report = PySendReport::from(&report);
    *last_report.lock().unwrap() = Some(py_report.clone());
    if let Some(raised) = control.raised {
        return Err(raised);
    }
    if let Err(e) = report.check(producer.bootstrap_servers()) {
        let err: PyErr = e.into();
        Python::attach(|py| {
            let value = err.value(py);
            value.setattr("report", Py::new(py, py_report.clone())?)?;
            Ok::<_, PyErr>(())
        })?;
        return Err(err);
    }
    Ok(py_report)
}

impl PyProducer {
    /// An awaitable send, listed among the running pipelines while it runs.
    fn send_tracked<'py>(
        slf: &Bound<'py, Self>,
        source: Py<PyTickSource>,
        options: SendOptions,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let awaitable = slf
            .get()
            .send_awaitable(slf.py(), source, options, progress)?;
        super::pipelines::track(slf.as_any());
        Ok(awaitable)
    }

    fn send_blocking(
        &self,
        py: Python<'_>,
        source: &PyTickSource,
        options: SendOptions,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<PySendReport> {
        let (progress, own) = progress_for(py, progress, options.limit)?;
        let control = PythonControl {
            progress,
            raised: None,
            cancelled: Arc::new(AtomicBool::new(false)),
        };
        let _sending = Sending::new(&self.sending);
        let sent = py.detach(|| run(&self.inner, source, &options, control, &self.last_report));
        own.finish(py, &sent)?;
        sent
    }

    fn send_awaitable<'py>(
        &self,
        py: Python<'py>,
        source: Py<PyTickSource>,
        options: SendOptions,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (progress, own) = progress_for(py, progress, options.limit)?;
        let producer = self.inner.clone();
        let last_report = self.last_report.clone();
        let sending = Sending::new(&self.sending);
        let cancelled = Arc::new(AtomicBool::new(false));
        let guard = CancelOnDrop(cancelled.clone());
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            // Dropped with this future when the awaiting task is cancelled.
            let _guard = guard;
            let control = PythonControl {
                progress,
                raised: None,
                cancelled,
            };
            tokio::task::spawn_blocking(move || {
                let _sending = sending;
                let sent = run(&producer, source.get(), &options, control, &last_report);
                Python::attach(|py| own.finish(py, &sent))?;
                sent
            })
            .await
            .map_err(|e| crate::error::Error::kafka(format!("send task failed: {e}")))?
        })
    }
}

#[pymethods]
impl PyProducer {
    #[new]
    #[pyo3(signature = (bootstrap_servers, topic, *, connect_timeout=10.0, lanes=None, **config))]
    fn new(
        py: Python<'_>,
        bootstrap_servers: &str,
        topic: &str,
        connect_timeout: f64,
        lanes: Option<usize>,
        config: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let config = kafka_config(bootstrap_servers, config)?;
        let timeout = Duration::try_from_secs_f64(connect_timeout).map_err(|_| {
            crate::error::Error::config(format!(
                "connect_timeout must be positive, got {connect_timeout}"
            ))
        })?;
        let inner = py.detach(|| Producer::new(config, topic, timeout, lanes))?;
        Ok(PyProducer {
            inner: Arc::new(inner),
            last_report: Arc::default(),
            sending: Arc::default(),
        })
    }

    /// How many librdkafka producers send (each owning a disjoint set of partitions).
    #[getter]
    fn lanes(&self) -> usize {
        self.inner.lanes()
    }

    /// Sends ticks from a ``TickSource`` until it ends or ``limit``/``duration`` is reached.
    /// Synthetic and sampled sources never end by themselves: give ``limit`` or
    /// ``duration`` (or press Ctrl-C). A replayed row's time is its message's timestamp.
    ///
    /// Args:
    ///     source: a ``TickSource`` (a file or frame replayed or sampled, or synthetic ticks).
    ///     rate: messages per second (``1.0`` is the tutorial's loop); ``None`` is as fast as
    ///         the broker allows.
    ///     speedup: replay event time this many times faster than real time
    ///         (``86400`` turns one day of ticks into one second).
    ///     limit: stop after this many messages.
    ///     duration: stop after this many seconds.
    ///     progress: called about every 100 ms with a ``SendReport`` of the counts so far.
    ///         By default a progress bar in a notebook kernel (nothing elsewhere);
    ///         ``False`` shows nothing.
    ///
    /// Returns:
    ///     SendReport, after every message was acknowledged.
    ///
    /// Raises:
    ///     DeliveryError: some messages were not delivered (``err.report`` has the counts).
    ///     KeyboardInterrupt: after flushing what was already handed to Kafka
    ///         (``last_report`` has the counts).
    #[pyo3(signature = (source, *, rate=None, speedup=None, limit=None, duration=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        py: Python<'_>,
        source: &PyTickSource,
        rate: Option<f64>,
        speedup: Option<f64>,
        limit: Option<u64>,
        duration: Option<f64>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<PySendReport> {
        self.send_blocking(
            py,
            source,
            options(rate, speedup, limit, duration)?,
            progress,
        )
    }

    /// Awaitable ``send``: runs on a worker thread so the event loop (a notebook's) stays free.
    ///
    /// Cancelling the awaiting task stops the send after flushing. Returns a SendReport.
    #[pyo3(signature = (source, *, rate=None, speedup=None, limit=None, duration=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn send_async<'py>(
        slf: &Bound<'py, Self>,
        source: Py<PyTickSource>,
        rate: Option<f64>,
        speedup: Option<f64>,
        limit: Option<u64>,
        duration: Option<f64>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let options = options(rate, speedup, limit, duration)?;
        Self::send_tracked(slf, source, options, progress)
    }

    /// Whether a send is in progress (in the foreground or awaitable).
    #[getter]
    fn running(&self) -> bool {
        self.sending.load(Ordering::Relaxed) > 0
    }

    /// Stops a running send (from another thread or task) after it flushes.
    fn stop(&self) {
        self.inner.stop_handle().store(true, Ordering::Relaxed);
    }

    /// Waits until every message handed to Kafka is acknowledged.
    ///
    /// Raises:
    ///     DeliveryError: if any message this producer sent was not delivered.
    ///     KafkaError: if messages are still unacknowledged after ``timeout`` seconds.
    #[pyo3(signature = (timeout=30.0))]
    fn flush(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let timeout = Duration::try_from_secs_f64(timeout).unwrap_or(Duration::ZERO);
        Ok(py.detach(|| self.inner.flush(timeout))?)
    }

    /// The topic written to.
    #[getter]
    fn topic(&self) -> &str {
        self.inner.topic()
    }

    /// The brokers this producer was given.
    #[getter]
    fn bootstrap_servers(&self) -> &str {
        self.inner.bootstrap_servers()
    }

    /// The report of the most recent send, also set when it raised (interrupt, delivery failure).
    #[getter]
    fn last_report(&self) -> Option<PySendReport> {
        self.last_report.lock().unwrap().clone()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.flush(py, 30.0)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "Producer(bootstrap_servers={:?}, topic={:?})",
            self.inner.bootstrap_servers(),
            self.inner.topic()
        )
    }
}
