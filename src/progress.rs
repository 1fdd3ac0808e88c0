//! How far a long call has got, counted by the threads doing the work and read by the
//! caller's thread to show it (a crawl's objects read, a compaction's partitions).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A count of work done, shared between threads.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
