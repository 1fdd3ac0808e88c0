//! The background pipelines of this interpreter (sinks and analytics jobs started with
//! `start()`, producers inside an awaitable send), so a notebook kernel can list them and
//! stop them all.

use std::sync::Mutex;

use pyo3::prelude::*;

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
