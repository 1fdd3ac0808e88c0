//! Live counters of a running sink, shared between its loop and whoever asks.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a sink has done so far. Counters only grow; `lag` and `buffered` are current values.
#[derive(Debug, Default)]
pub struct SinkStatus {
    /// Messages read from Kafka (including ones later re-read after a rebalance).
    pub consumed: AtomicU64,
    /// Records landed in the lake and committed.
    pub written: AtomicU64,
    /// Records sent to `_rejected/`.
    pub rejected: AtomicU64,
    /// Records the topic's retention deleted before this sink read them (never landed).
    pub skipped: AtomicU64,
    /// Objects written (data and quarantine).
    pub files: AtomicU64,
    /// Bytes written to the lake.
    pub bytes: AtomicU64,
    /// Records buffered, not yet in the lake.
    pub buffered: AtomicU64,
    /// Records in the assigned partitions beyond the committed offsets (-1: not known yet).
    pub lag: AtomicI64,
    /// Failed writes, commits and client errors (each retried or recovered).
    pub errors: AtomicU64,
    /// Unix time in milliseconds of the last successful commit (0: none yet).
    pub last_commit_ms: AtomicI64,
    detail: Mutex<Detail>,
}

#[derive(Debug, Default, Clone)]
pub struct Detail {
    pub state: String,
    pub last_error: Option<String>,
    pub assigned: Vec<i32>,
    /// Committed offsets by partition.
    pub committed: Vec<(i32, i64)>,
    /// Registered next offsets by partition: what the table holds of each.
    pub landed: Vec<(i32, i64)>,
    /// Partitions that resumed from the table's offset because the group's committed
    /// offset was missing (a new group, expired offsets) or behind it.
    pub resumed: Vec<(i32, i64)>,
    /// Things worth knowing that are not errors, latest last (at most [`NOTES`]).
    pub notes: Vec<String>,
}

/// Notes kept in a status.
pub const NOTES: usize = 20;

/// Sets `partition`'s entry in a list sorted by partition.
fn set(entries: &mut Vec<(i32, i64)>, partition: i32, offset: i64) {
    match entries.binary_search_by_key(&partition, |(p, _)| *p) {
        Ok(i) => entries[i].1 = offset,
        Err(i) => entries.insert(i, (partition, offset)),
    }
}

impl SinkStatus {
    pub fn new() -> Self {
        let s = SinkStatus::default();
        s.lag.store(-1, Ordering::Relaxed);
        s.set_state("created");
        s
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_state(&self, state: &str) {
        self.detail.lock().unwrap_or_else(|e| e.into_inner()).state = state.to_string();
    }

    pub fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.detail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error = Some(message);
    }

    pub fn set_assigned(&self, mut partitions: Vec<i32>) {
        partitions.sort_unstable();
        self.detail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .assigned = partitions;
    }

    fn detail_mut(&self) -> std::sync::MutexGuard<'_, Detail> {
        self.detail.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn landed(&self, partition: i32, next: i64) {
        set(&mut self.detail_mut().landed, partition, next);
    }

    pub fn resumed(&self, partition: i32, next: i64) {
        set(&mut self.detail_mut().resumed, partition, next);
    }

    pub fn note(&self, message: String) {
        let mut d = self.detail_mut();
        if d.notes.len() == NOTES {
            d.notes.remove(0);
        }
        d.notes.push(message);
    }

    pub fn committed(&self, partition: i32, offset: i64) {
        set(&mut self.detail_mut().committed, partition, offset);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.last_commit_ms.store(now, Ordering::Relaxed);
    }

    pub fn detail(&self) -> Detail {
        self.detail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl crate::kafka::Observer for SinkStatus {
    fn error(&self, message: String) {
        SinkStatus::error(self, message);
    }

    fn assigned(&self, partitions: Vec<i32>) {
        self.set_assigned(partitions);
    }

    fn lag(&self) -> &AtomicI64 {
        &self.lag
    }
}
