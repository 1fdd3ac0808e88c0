//! Live counters of a running analytics job, shared between its loop and whoever asks.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use super::output::Kind;

#[derive(Debug, Default)]
pub struct AnalyticsStatus {
    /// Messages read from Kafka.
    pub consumed: AtomicU64,
    /// Ticks taken into windows and indicators (in order, or reordered within the lateness).
    pub ticks: AtomicU64,
    /// Ticks behind the watermark, sent to the late side output.
    pub late: AtomicU64,
    /// Messages that are not ticks (bad JSON, missing or mistyped fields).
    pub rejected: AtomicU64,
    /// Outputs emitted, by kind (window, indicators, alert, late).
    pub emitted: [AtomicU64; 4],
    /// Ticks waiting for the watermark, and windows still open (current values).
    pub buffered: AtomicU64,
    pub open_windows: AtomicU64,
    /// Checkpoints saved (state snapshots with their offsets committed).
    pub checkpoints: AtomicU64,
    /// Records in the assigned partitions beyond the committed offsets (-1: not known yet).
    pub lag: AtomicI64,
    /// Kafka, delivery and checkpoint errors (each retried or recovered).
    pub errors: AtomicU64,
    detail: Mutex<Detail>,
}

#[derive(Debug, Default, Clone)]
pub struct Detail {
    pub state: String,
    pub last_error: Option<String>,
    /// Why the latest rejected message was rejected, with its partition and offset.
    pub last_rejected: Option<String>,
    pub assigned: Vec<i32>,
    /// Event-time watermark by partition, microseconds.
    pub watermarks: Vec<(i32, i64)>,
    /// Things done differently than asked, or worth knowing (the latest few).
    pub warnings: Vec<String>,
}

/// Warnings kept in a status: the latest ones.
const WARNINGS_KEPT: usize = 20;

impl AnalyticsStatus {
    pub fn new() -> Self {
        let s = AnalyticsStatus::default();
        s.lag.store(-1, Ordering::Relaxed);
        s.set_state("created");
        s
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn emitted(&self, kind: Kind) -> u64 {
        self.emitted[kind.index()].load(Ordering::Relaxed)
    }

    fn with_detail(&self, f: impl FnOnce(&mut Detail)) {
        f(&mut self.detail.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn set_state(&self, state: &str) {
        self.with_detail(|d| d.state = state.to_string());
    }

    pub fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.with_detail(|d| d.last_error = Some(message));
    }

    pub fn warn(&self, message: String) {
        self.with_detail(|d| {
            if d.warnings.len() == WARNINGS_KEPT {
                d.warnings.remove(0);
            }
            d.warnings.push(message);
        });
    }

    pub fn reject(&self, message: String) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.with_detail(|d| d.last_rejected = Some(message));
    }

    pub fn set_assigned(&self, mut partitions: Vec<i32>) {
        partitions.sort_unstable();
        self.with_detail(|d| d.assigned = partitions);
    }

    pub fn set_watermarks(&self, watermarks: Vec<(i32, i64)>) {
        self.with_detail(|d| d.watermarks = watermarks);
    }

    pub fn detail(&self) -> Detail {
        self.detail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl crate::kafka::Observer for AnalyticsStatus {
    fn error(&self, message: String) {
        AnalyticsStatus::error(self, message);
    }

    fn assigned(&self, partitions: Vec<i32>) {
        self.set_assigned(partitions);
    }

    fn lag(&self) -> &AtomicI64 {
        &self.lag
    }
}
