//! Live counters every job reading a topic keeps (a sink, an analytics job), shared between
//! its loop, its group member and whoever asks; each job's own status adds its counters on
//! top (and dereferences to this one).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::error::Result;

/// Notes kept in a status: the latest ones.
pub const NOTES: usize = 20;

/// What a job has done so far. Counters only grow; `lag` and `buffered` are current values.
#[derive(Debug)]
pub struct JobStatus {
    /// Messages read from Kafka (including ones read again after a rebalance).
    pub consumed: AtomicU64,
    /// Messages the job could not take (bad JSON, missing or mistyped fields).
    pub rejected: AtomicU64,
    /// Records read and not yet done with.
    pub buffered: AtomicU64,
    /// Records in the assigned partitions beyond the committed offsets (-1: not known yet).
    pub lag: AtomicI64,
    /// Kafka, write and commit errors (each retried or recovered).
    pub errors: AtomicU64,
    detail: Mutex<JobDetail>,
}

/// The parts of a [`JobStatus`] that are not counters.
#[derive(Debug, Default, Clone)]
pub struct JobDetail {
    pub state: String,
    pub last_error: Option<String>,
    pub assigned: Vec<i32>,
    /// Things worth knowing that are not errors, latest last (at most [`NOTES`]).
    pub notes: Vec<String>,
}

/// Lets a job's own status (with its `JobStatus` in a field `job`) be read as the
/// `JobStatus`: `status.consumed`, `status.note(…)`.
macro_rules! extends_job_status {
    ($own:ty) => {
        impl std::ops::Deref for $own {
            type Target = $crate::kafka::JobStatus;

            fn deref(&self) -> &Self::Target {
                &self.job
            }
        }
    };
}
pub(crate) use extends_job_status;

impl Default for JobStatus {
    fn default() -> Self {
        JobStatus {
            consumed: AtomicU64::default(),
            rejected: AtomicU64::default(),
            buffered: AtomicU64::default(),
            lag: AtomicI64::new(-1),
            errors: AtomicU64::default(),
            detail: Mutex::new(JobDetail {
                state: "created".into(),
                ..JobDetail::default()
            }),
        }
    }
}

impl JobStatus {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn detail_mut(&self) -> MutexGuard<'_, JobDetail> {
        self.detail.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_state(&self, state: &str) {
        self.detail_mut().state = state.to_string();
    }

    /// Records how a run ended.
    pub fn finished<T>(&self, result: &Result<T>) {
        self.set_state(if result.is_ok() { "stopped" } else { "failed" });
    }

    /// A client, fetch, write or commit error (each retried or recovered).
    pub fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.detail_mut().last_error = Some(message);
    }

    /// The partitions now assigned.
    pub fn set_assigned(&self, mut partitions: Vec<i32>) {
        partitions.sort_unstable();
        self.detail_mut().assigned = partitions;
    }

    pub fn note(&self, message: String) {
        let mut d = self.detail_mut();
        if d.notes.len() == NOTES {
            d.notes.remove(0);
        }
        d.notes.push(message);
    }

    /// The lag, if known.
    pub fn lag_now(&self) -> Option<i64> {
        Some(self.lag.load(Ordering::Relaxed)).filter(|lag| *lag >= 0)
    }

    pub fn job_detail(&self) -> JobDetail {
        self.detail_mut().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn keeps_the_latest_notes_sorted_assignments_and_how_a_run_ended() {
        let status = JobStatus::default();
        assert_eq!(status.lag_now(), None);
        assert_eq!(status.job_detail().state, "created");
        for i in 0..NOTES + 3 {
            status.note(format!("n{i}"));
        }
        status.set_assigned(vec![3, 1, 2]);
        status.error("one".into());
        status.error("two".into());
        status.finished(&Err::<(), _>(Error::io("x")));
        status.lag.store(5, Ordering::Relaxed);
        let d = status.job_detail();
        assert_eq!(d.notes.len(), NOTES);
        assert_eq!(d.notes[0], "n3");
        assert_eq!(d.assigned, [1, 2, 3]);
        assert_eq!(d.last_error.as_deref(), Some("two"));
        assert_eq!(status.errors.load(Ordering::Relaxed), 2);
        assert_eq!(d.state, "failed");
        assert_eq!(status.lag_now(), Some(5));
        status.finished(&Ok(()));
        assert_eq!(status.job_detail().state, "stopped");
    }
}
