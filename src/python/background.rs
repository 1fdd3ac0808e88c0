//! Running a long job from Python: in the foreground (Ctrl-C / a notebook interrupt stops
//! it cleanly, then raises) or in a background thread with `start` / `wait` / `stop`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use super::seconds;
use crate::analytics::Analytics;
use crate::error::{Error, Result};
use crate::kafka::RunLimits;
use crate::progress::Counter;
use crate::sink::Sink;

/// How often a foreground run redraws its live status.
const SHOW_EVERY: Duration = Duration::from_millis(500);

/// The live status a foreground run of `pipeline` shows: in a notebook kernel, its status
/// redrawn in place (unless `progress=False`); nothing elsewhere.
pub fn live_status(
    pipeline: &Bound<'_, PyAny>,
    progress: Option<bool>,
) -> PyResult<Option<Py<PyAny>>> {
    if progress == Some(false) {
        return Ok(None);
    }
    let show = pipeline
        .py()
        .import("stockstream.display")?
        .call_method1("live_status", (pipeline,))?;
    Ok((!show.is_none()).then(|| show.unbind()))
}

/// Runs `work` without the GIL. In a notebook kernel (unless `progress=False`) a bar
/// shows `counter` (`what`: "objects read") meanwhile, redrawn a few times a second.
pub fn with_progress<T: Send>(
    py: Python<'_>,
    progress: Option<bool>,
    what: &str,
    counter: &Counter,
    work: impl FnOnce() -> Result<T> + Send,
) -> PyResult<T> {
    let bar = match progress {
        Some(false) => None,
        _ => Some(
            py.import("stockstream.progress")?
                .call_method1("default_counter", (what,))?,
        )
        .filter(|bar| !bar.is_none()),
    };
    let Some(bar) = bar else {
        return Ok(py.detach(work)?);
    };
    let done = std::thread::scope(|scope| {
        let worker = scope.spawn(work);
        while !worker.is_finished() {
            py.detach(|| std::thread::sleep(SHOW_EVERY / 2));
            let _ = bar.call_method1("update_to", (counter.get(),));
        }
        worker.join()
    });
    bar.call_method1("update_to", (counter.get(),))?;
    bar.call_method0("close")?;
    match done {
        Ok(result) => Ok(result?),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Whether the user interrupted the foreground run (Ctrl-C, a notebook's stop button); the
/// interrupt goes to `raised`, to raise once the job has ended cleanly. Sinks, analytics
/// jobs and sends all stop this way.
pub fn interrupted(py: Python<'_>, raised: &mut Option<PyErr>) -> bool {
    match py.check_signals() {
        Ok(()) => false,
        Err(e) => {
            *raised = Some(e);
            true
        }
    }
}

/// A job that runs until its limits or a stop request, ending cleanly either way.
pub trait Job: Send + 'static {
    fn run(&mut self, limits: &RunLimits, stop: &mut dyn FnMut() -> bool) -> Result<()>;
}

impl Job for Sink {
    fn run(&mut self, limits: &RunLimits, stop: &mut dyn FnMut() -> bool) -> Result<()> {
        Sink::run(self, limits, stop)
    }
}

impl Job for Analytics {
    fn run(&mut self, limits: &RunLimits, stop: &mut dyn FnMut() -> bool) -> Result<()> {
        Analytics::run(self, limits, stop)
    }
}

enum State {
    Idle(Box<dyn Job>),
    Running(JoinHandle<(Box<dyn Job>, Result<()>)>),
    /// Only while a foreground `run` holds the job, or after a background thread panicked.
    Busy,
}

/// The limits of a `run` or `start`, from their Python arguments.
pub fn run_limits(
    limit: Option<u64>,
    duration: Option<f64>,
    stop_at_end: bool,
) -> PyResult<RunLimits> {
    Ok(RunLimits {
        limit,
        duration: duration.map(|d| seconds("duration", d)).transpose()?,
        stop_at_end,
    })
}

pub struct Background {
    state: Mutex<State>,
    stop: Arc<AtomicBool>,
    /// What the job is called in messages and thread names (`sink`, `analytics`).
    name: &'static str,
}

impl Background {
    pub fn new(job: impl Job, name: &'static str) -> Self {
        Background {
            state: Mutex::new(State::Idle(Box::new(job))),
            stop: Arc::new(AtomicBool::new(false)),
            name,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_idle(&self) -> PyResult<Box<dyn Job>> {
        let mut state = self.lock();
        match std::mem::replace(&mut *state, State::Busy) {
            State::Idle(job) => Ok(job),
            other => {
                *state = other;
                Err(Error::config(format!(
                    "this {} is already running; call stop() first",
                    self.name
                ))
                .into())
            }
        }
    }

    /// Whether a background run is in progress.
    pub fn running(&self) -> bool {
        matches!(&*self.lock(), State::Running(h) if !h.is_finished())
    }

    /// Runs in this thread, without the GIL; an interrupt stops the job, then is raised.
    /// `show`, if given, is called about twice a second and once at the end (a notebook's
    /// live status).
    pub fn run(&self, py: Python<'_>, limits: &RunLimits, show: Option<Py<PyAny>>) -> PyResult<()> {
        let mut job = self.take_idle()?;
        let mut raised = None;
        let mut shown = Instant::now();
        let result = py.detach(|| {
            let mut stop = || {
                Python::attach(|py| {
                    if let Some(show) = show.as_ref().filter(|_| shown.elapsed() >= SHOW_EVERY) {
                        shown = Instant::now();
                        // A display that fails is not worth stopping the job for.
                        let _ = show.call0(py);
                    }
                    interrupted(py, &mut raised)
                })
            };
            job.run(limits, &mut stop)
        });
        *self.lock() = State::Idle(job);
        if let Some(show) = show {
            let _ = show.call0(py);
        }
        result?;
        raised.map_or(Ok(()), Err)
    }

    /// Runs in a new thread and returns at once.
    pub fn start(&self, limits: RunLimits) -> PyResult<()> {
        let mut job = self.take_idle()?;
        self.stop.store(false, Ordering::Relaxed);
        let stop = self.stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("stockstream-{}", self.name))
            .spawn(move || {
                let result = job.run(&limits, &mut || stop.load(Ordering::Relaxed));
                (job, result)
            })
            .map_err(|e| Error::io(format!("cannot start the {} thread: {e}", self.name)))?;
        *self.lock() = State::Running(handle);
        Ok(())
    }

    /// Asks a background run to stop, without waiting.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops a background run and waits for it; raises the error that ended it, if any.
    pub fn stop(&self, py: Python<'_>) -> PyResult<()> {
        self.request_stop();
        self.wait(py, None).map(|_| ())
    }

    /// Waits for a background run to end; false if `timeout` seconds passed first.
    pub fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = timeout
            .map(|t| seconds("timeout", t))
            .transpose()?
            .map(|t| Instant::now() + t);
        loop {
            {
                let mut state = self.lock();
                let finished = match &*state {
                    State::Running(h) => h.is_finished(),
                    _ => return Ok(true),
                };
                if finished {
                    let State::Running(handle) = std::mem::replace(&mut *state, State::Busy) else {
                        unreachable!("checked above")
                    };
                    let (job, result) = handle
                        .join()
                        .map_err(|_| Error::io(format!("the {} thread panicked", self.name)))?;
                    *state = State::Idle(job);
                    result?;
                    return Ok(true);
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            py.detach(|| std::thread::sleep(Duration::from_millis(20)));
            py.check_signals()?;
        }
    }
}

impl Drop for Background {
    /// A job dropped while running in the background finishes cleanly and stops.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
