//! Pipelines: the lifecycle sinks and analytics jobs share (run, start, wait, stop), and
//! the background ones of this interpreter (sinks and analytics jobs started with
//! `start()`, producers inside an awaitable send), so a notebook kernel can list them and
//! stop them all.

use std::sync::Mutex;

use pyo3::prelude::*;

use super::background::{live_status, run_limits, Background, Job};

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

/// A counters snapshot of a pipeline, as its Python status object; `true` while running.
pub type Snapshot = Box<dyn Fn(Python<'_>, bool) -> PyResult<Py<PyAny>> + Send + Sync>;

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
    describe: String,
}

impl PyPipeline {
    pub fn new(job: impl Job, name: &'static str, snapshot: Snapshot, describe: String) -> Self {
        PyPipeline {
            job: Background::new(job, name),
            snapshot,
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
    ///     the counters after the run (``SinkStatus``, ``AnalyticsStatus``).
    #[pyo3(signature = (limit=None, duration=None, stop_at_end=false, progress=None))]
    fn run(
        slf: &Bound<'_, Self>,
        limit: Option<u64>,
        duration: Option<f64>,
        stop_at_end: bool,
        progress: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let show = live_status(slf.as_any(), progress)?;
        let this = slf.get();
        this.job
            .run(slf.py(), &run_limits(limit, duration, stop_at_end)?, show)?;
        this.snapshot(slf.py())
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
