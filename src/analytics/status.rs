//! Live counters of a running analytics job, shared between its loop and whoever asks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::output::Kind;
use crate::kafka::JobStatus;

/// What an analytics job has done so far, beyond what every job counts (which it
/// dereferences to).
#[derive(Debug, Default)]
pub struct AnalyticsStatus {
    pub job: Arc<JobStatus>,
    /// Ticks taken into windows and indicators (in order, or reordered within the lateness).
    pub ticks: AtomicU64,
    /// Ticks behind the watermark, sent to the late side output.
    pub late: AtomicU64,
    /// Outputs emitted, by kind (window, indicators, alert, late).
    pub emitted: [AtomicU64; 4],
    /// Windows still open (a current value).
    pub open_windows: AtomicU64,
    /// Checkpoints saved (state snapshots with their offsets committed).
    pub checkpoints: AtomicU64,
    detail: Mutex<Detail>,
}

#[derive(Debug, Default, Clone)]
pub struct Detail {
    /// Why the latest rejected message was rejected, with its partition and offset.
    pub last_rejected: Option<String>,
    /// Event-time watermark by partition, microseconds.
    pub watermarks: Vec<(i32, i64)>,
}

crate::kafka::extends_job_status!(AnalyticsStatus);

impl AnalyticsStatus {
    pub fn emitted(&self, kind: Kind) -> u64 {
        self.emitted[kind.index()].load(Ordering::Relaxed)
    }

    fn detail_mut(&self) -> MutexGuard<'_, Detail> {
        self.detail.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn reject(&self, message: String) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.detail_mut().last_rejected = Some(message);
    }

    pub fn set_watermarks(&self, watermarks: Vec<(i32, i64)>) {
        self.detail_mut().watermarks = watermarks;
    }

    pub fn detail(&self) -> Detail {
        self.detail_mut().clone()
    }
}
