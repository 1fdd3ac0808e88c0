//! Live counters of a running sink, shared between its loop and whoever asks.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::kafka::JobStatus;

/// What a sink has done so far, beyond what every job counts (which it dereferences to).
#[derive(Debug, Default)]
pub struct SinkStatus {
    pub job: Arc<JobStatus>,
    /// Records landed in the lake and committed.
    pub written: AtomicU64,
    /// Records the topic's retention deleted before this sink read them (never landed).
    pub skipped: AtomicU64,
    /// Objects written (data and quarantine).
    pub files: AtomicU64,
    /// Bytes written to the lake.
    pub bytes: AtomicU64,
    /// Unix time in milliseconds of the last successful commit (0: none yet).
    pub last_commit_ms: AtomicI64,
    detail: Mutex<Detail>,
}

/// Offsets by partition, each list sorted by partition.
#[derive(Debug, Default, Clone)]
pub struct Detail {
    /// Committed offsets.
    pub committed: Vec<(i32, i64)>,
    /// Registered next offsets: what the table holds of each partition.
    pub landed: Vec<(i32, i64)>,
    /// Partitions that resumed from the table's offset because the group's committed
    /// offset was missing (a new group, expired offsets) or behind it.
    pub resumed: Vec<(i32, i64)>,
}

/// Sets `partition`'s entry in a list sorted by partition.
fn set(entries: &mut Vec<(i32, i64)>, partition: i32, offset: i64) {
    match entries.binary_search_by_key(&partition, |(p, _)| *p) {
        Ok(i) => entries[i].1 = offset,
        Err(i) => entries.insert(i, (partition, offset)),
    }
}

crate::kafka::extends_job_status!(SinkStatus);

impl SinkStatus {
    fn detail_mut(&self) -> MutexGuard<'_, Detail> {
        self.detail.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn landed(&self, partition: i32, next: i64) {
        set(&mut self.detail_mut().landed, partition, next);
    }

    pub fn resumed(&self, partition: i32, next: i64) {
        set(&mut self.detail_mut().resumed, partition, next);
    }

    pub fn committed(&self, partition: i32, offset: i64) {
        set(&mut self.detail_mut().committed, partition, offset);
        self.last_commit_ms
            .store(crate::record::time::now_millis(), Ordering::Relaxed);
    }

    pub fn detail(&self) -> Detail {
        self.detail_mut().clone()
    }
}
