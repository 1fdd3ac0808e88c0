//! Pipelines: the lifecycle sinks and analytics jobs share (run, start, wait, stop), and
//! the background ones of this interpreter (sinks and analytics jobs started with
//! `start()`, producers inside an awaitable send), so a notebook kernel can list them and
//! stop them all.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::PyClass;

use super::background::{live_status, run_limits, Background, Job};
use super::{html_table, repr_of, shown};
use crate::kafka::JobStatus;

static TRACKED: Mutex<Vec<Py<PyAny>>> = Mutex::new(Vec::new());

/// Remembers `pipeline` until it is no longer running.
pub fn track(pipeline: &Bound<'_, PyAny>) {
    let mut tracked = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    if !tracked.iter().any(|p| p.is(pipeline)) {
        tracked.push(pipeline.clone().unbind());
    }
}

/// The pipelines running in the background now: sinks and analytics jobs started with
/// ``start()``, and producers inside ``send_async`` / ``send_csv_async``, oldest first.
/// Each has ``stop()``.
#[pyfunction]
pub fn running_pipelines(py: Python<'_>) -> Vec<Py<PyAny>> {
    let mut tracked = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    tracked.retain(|p| {
        p.bind(py)
            .getattr("running")
            .and_then(|r| r.is_truthy())
            .unwrap_or(false)
    });
    tracked.iter().map(|p| p.clone_ref(py)).collect()
}

/// What every pipeline's status says (``SinkStatus`` and ``AnalyticsStatus`` add their own).
///
/// Attributes:
///     state: ``ready``, ``running``, ``stopped`` or ``failed`` (a sink also ``retrying``:
///         a lake write failed and is being retried).
///     running: a background run is in progress.
///     consumed: messages read from Kafka (re-reads after a rebalance count again).
///     rejected: messages that could not be taken (a sink sends them to ``_rejected/``).
///     buffered: records read and not yet done with (not landed; ticks waiting for the
///         watermark).
///     lag: records in the assigned partitions beyond the committed offsets (None until known).
///     assigned: the Kafka partitions this member owns.
///     errors: Kafka, write, commit and checkpoint errors so far (all retried or
///         recovered); last_error: the latest one.
///     notes: things worth knowing that are not errors, such as where a sink resumed or
///         what an analytics job migrated from a run with other settings (the latest 20).
#[pyclass(
    name = "JobStatus",
    module = "stockstream._core",
    subclass,
    frozen,
    skip_from_py_object
)]
pub struct PyJobStatus {
    #[pyo3(get)]
    state: String,
    #[pyo3(get)]
    running: bool,
    #[pyo3(get)]
    consumed: u64,
    #[pyo3(get)]
    rejected: u64,
    #[pyo3(get)]
    buffered: u64,
    #[pyo3(get)]
    lag: Option<i64>,
    #[pyo3(get)]
    assigned: Vec<i32>,
    #[pyo3(get)]
    errors: u64,
    #[pyo3(get)]
    last_error: Option<String>,
    #[pyo3(get)]
    notes: Vec<String>,
    view: View,
}

/// How a status shows itself: its class name, its table's caption, the rows of its own
/// counters, and rows shown in the HTML table only.
pub struct View {
    pub name: &'static str,
    pub caption: &'static str,
    pub rows: Vec<(&'static str, String)>,
    pub html_rows: Vec<(&'static str, String)>,
}

impl PyJobStatus {
    /// The Python status of a job: `own` (a subclass) over what every job counts.
    pub fn snapshot<T: PyClass<BaseType = PyJobStatus>>(
        py: Python<'_>,
        job: &JobStatus,
        running: bool,
        view: View,
        own: T,
    ) -> PyResult<Py<PyAny>> {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let detail = job.job_detail();
        let base = PyJobStatus {
            state: detail.state,
            running,
            consumed: load(&job.consumed),
            rejected: load(&job.rejected),
            buffered: load(&job.buffered),
            lag: job.lag_now(),
            assigned: detail.assigned,
            errors: load(&job.errors),
            last_error: detail.last_error,
            notes: detail.notes,
            view,
        };
        Ok(Py::new(py, PyClassInitializer::from(base).add_subclass(own))?.into_any())
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut rows = shown!(self; state, consumed);
        rows.extend(self.view.rows.iter().cloned());
        rows.extend(shown!(self; rejected, buffered, errors));
        rows.push(("lag", self.lag.map_or("?".to_string(), |v| v.to_string())));
        rows.push(("assigned", format!("{:?}", self.assigned)));
        rows
    }
}

#[pymethods]
impl PyJobStatus {
    fn __repr__(&self) -> String {
        repr_of(self.view.name, &self.fields())
    }

    /// An HTML table, for notebooks.
    fn _repr_html_(&self) -> String {
        let mut rows = self.fields();
        rows.extend(self.view.html_rows.iter().cloned());
        if let Some(e) = &self.last_error {
            rows.push(("last error", e.clone()));
        }
        rows.extend(self.notes.iter().map(|n| ("note", n.clone())));
        html_table(self.view.caption, &rows)
    }
}

/// A counters snapshot of a pipeline, as its Python status object; `true` while running.
pub type Snapshot = Box<dyn Fn(Python<'_>, bool) -> PyResult<Py<PyAny>> + Send + Sync>;

/// What a run with ``collect=True`` returns. Called before the run, it gives what builds
/// the result from what the run did; that is called after the run, even one that failed.
pub type Collector = Box<dyn Fn() -> Collecting + Send + Sync>;

/// A collecting run's result, from what the run did.
pub type Collecting = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// What every long-running pipeline (``LakeSink``, ``Analytics``) does: run in the
/// foreground, or start in the background and be watched, waited for and stopped.
///
/// A run ends at its limits (``limit`` messages, ``duration`` seconds, or with
/// ``stop_at_end`` once every assigned partition is read to its end) or when stopped, and
/// ends cleanly either way: a sink lands and commits what it buffers, an analytics job
/// checkpoints.
#[pyclass(name = "Pipeline", module = "stockstream._core", subclass, frozen)]
pub struct PyPipeline {
    job: Background,
    snapshot: Snapshot,
    collector: Collector,
    describe: String,
}

impl PyPipeline {
    pub fn new(
        job: impl Job,
        name: &'static str,
        snapshot: Snapshot,
        collector: Collector,
        describe: String,
    ) -> Self {
        PyPipeline {
            job: Background::new(job, name),
            snapshot,
            collector,
            describe,
        }
    }

    fn snapshot(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        (self.snapshot)(py, self.job.running())
    }
}

#[pymethods]
impl PyPipeline {
    /// Runs in the foreground until the limits; Ctrl-C / a notebook interrupt also ends the
    /// run cleanly, then raises. In a notebook kernel its status is shown, redrawn as it
    /// runs (``progress=False``: not shown).
    ///
    /// Returns:
    ///     the counters after the run (``SinkStatus``, ``AnalyticsStatus``); with
    ///     ``collect=True`` what this run produced instead, as Polars frames: the records
    ///     a sink landed (one frame, typed as the lake's objects hold them; the partition
    ///     folders' keys are not columns), or an analytics job's outputs
    ///     (``{"windows": …, "indicators": …, "alerts": …, "late": …}``, the latest ``keep``
    ///     of each; a warning says when the run emitted more).
    #[pyo3(signature = (limit=None, duration=None, stop_at_end=false, progress=None,
                        collect=false))]
    fn run(
        slf: &Bound<'_, Self>,
        limit: Option<u64>,
        duration: Option<f64>,
        stop_at_end: bool,
        progress: Option<bool>,
        collect: bool,
    ) -> PyResult<Py<PyAny>> {
        let show = live_status(slf.as_any(), progress)?;
        let this = slf.get();
        let limits = run_limits(limit, duration, stop_at_end)?;
        let collecting = collect.then(|| (this.collector)());
        let ran = this.job.run(slf.py(), &limits, show);
        let collected = collecting.map(|finish| finish(slf.py()));
        ran?;
        match collected {
            Some(result) => result,
            None => this.snapshot(slf.py()),
        }
    }

    /// Starts in a background thread and returns at once; the notebook stays usable.
    /// Watch it with ``status()``; end it with ``stop()``. Takes the same limits as ``run``.
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
        track(slf.as_any());
        Ok(())
    }

    /// Stops a background run, ending it cleanly, and returns the final counters. Raises
    /// the error that ended the run, if one did.
    fn stop(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.job.stop(py)?;
        self.snapshot(py)
    }

    /// Waits for a background run to end by itself (its limit, duration or ``stop_at_end``).
    /// Returns False if ``timeout`` seconds passed first. Raises the error that ended the run.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        self.job.wait(py, timeout)
    }

    /// The current counters.
    fn status(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.snapshot(py)
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
        self.job.stop(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        self.describe.clone()
    }
}
