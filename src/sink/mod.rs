//! Kafka → lake: a consumer-group member that buffers each partition's records, lands them
//! as objects named by (topic, partition, first offset), and commits an offset only after
//! the objects holding everything before it are durable. A crash or rebalance replays from
//! the committed offset and rewrites the same object names, so the lake holds each record
//! exactly once.

mod batch;
pub mod config;
mod encode;
mod layout;
mod range;
pub(crate) mod record;
mod status;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{Message as _, Offset, TopicPartitionList};

pub use config::{ColumnType, Format, PartitionKey, RollPolicy, SinkConfig};
use layout::Layout;
pub use layout::{escape, unescape};
use range::{Message, PendingRange};
pub use status::SinkStatus;

use crate::catalog::{self, body_schema, Catalog, Found};
use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::lake::ObjectStore;

/// Consumer defaults: offsets are committed by the sink itself, after the lake write.
pub(crate) const CONSUMER_DEFAULTS: [(&str, &str); 7] = [
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("enable.partition.eof", "true"),
    ("statistics.interval.ms", "1000"),
    // librdkafka prefetches up to this much; it is most of the sink's memory besides buffers.
    ("queued.max.messages.kbytes", "32768"),
    ("client.id", "stockstream-sink"),
];

/// How often timers (age and idle rolls, stop requests, duration) are checked.
const TICK: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// When a `run` ends (besides being asked to stop).
#[derive(Debug, Clone, Default)]
pub struct RunLimits {
    /// After consuming this many messages.
    pub limit: Option<u64>,
    pub duration: Option<Duration>,
    /// Once every assigned partition has been read to its end and landed.
    pub stop_at_end: bool,
}

/// Records in `topic`'s fetched partitions beyond their committed offsets, from a
/// statistics report.
pub(crate) fn committed_lag(stats: &Statistics, topic: &str) -> Option<i64> {
    let topic = stats.topics.get(topic)?;
    Some(
        topic
            .partitions
            .values()
            .filter(|p| p.partition >= 0 && p.fetch_state == "active")
            .map(|p| {
                let end = end_offset(p);
                let start = if p.committed_offset >= 0 {
                    p.committed_offset
                } else {
                    p.lo_offset
                };
                (end - start.max(0)).max(0)
            })
            .sum(),
    )
}

/// A partition's end offset in a statistics report: the last stable offset when known
/// (it excludes open transactions), else the high watermark.
pub(crate) fn end_offset(p: &rdkafka::statistics::Partition) -> i64 {
    if p.ls_offset >= 0 {
        p.ls_offset
    } else {
        p.hi_offset
    }
}

/// Reaching the end of a partition is news, not an error; the loops handle it.
pub(crate) fn is_partition_eof(error: &KafkaError) -> bool {
    matches!(error, KafkaError::PartitionEOF(_))
        || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
}

/// Rebalance events and statistics, handed from librdkafka's callbacks to the loop.
struct SinkContext {
    topic: String,
    status: Arc<SinkStatus>,
    revoked: Mutex<Vec<i32>>,
}

impl ClientContext for SinkContext {
    /// Lag as the sink means it: records in the assigned partitions not yet landed and
    /// committed. (librdkafka's own `consumer_lag` counts from the fetch position, which
    /// runs ahead of what the sink has committed.)
    fn stats(&self, stats: Statistics) {
        if let Some(lag) = committed_lag(&stats, &self.topic) {
            self.status.lag.store(lag, Ordering::Relaxed);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !is_partition_eof(&error) {
            self.status.error(format!("Kafka: {error}: {reason}"));
        }
    }
}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            // The loop drops these partitions' buffers before it writes anything else: their
            // records are replayed from the committed offset by whoever owns them next.
            Rebalance::Revoke(tpl) => {
                let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
                revoked.extend(tpl.elements().iter().map(|e| e.partition()));
                self.status.set_assigned(Vec::new());
            }
            Rebalance::Assign(tpl) => self
                .status
                .set_assigned(tpl.elements().iter().map(|e| e.partition()).collect()),
            Rebalance::Error(e) => self.status.error(format!("rebalance failed: {e}")),
        }
    }
}

/// A Kafka → lake sink: one consumer-group member.
pub struct Sink {
    consumer: BaseConsumer<SinkContext>,
    store: Arc<dyn ObjectStore>,
    config: SinkConfig,
    layout: Layout,
    ranges: HashMap<i32, PendingRange>,
    /// Partitions read to their end (cleared by the next message).
    at_end: HashSet<i32>,
    buffered_bytes: usize,
    status: Arc<SinkStatus>,
    /// Where landed partitions are registered, and in which database.
    catalog: Option<(Arc<dyn Catalog>, String)>,
}

impl Sink {
    /// Joins `config.group_id` on `config.topic`; fails within `connect_timeout` if Kafka
    /// cannot be reached, and at once if the topic does not exist.
    pub fn new(
        kafka: &KafkaConfig,
        config: SinkConfig,
        store: Arc<dyn ObjectStore>,
        connect_timeout: Duration,
    ) -> Result<Self> {
        config.validate()?;
        let status = Arc::new(SinkStatus::new());
        let context = SinkContext {
            topic: config.topic.clone(),
            status: status.clone(),
            revoked: Mutex::new(Vec::new()),
        };
        let consumer = crate::topic::subscribe(
            kafka,
            &CONSUMER_DEFAULTS,
            &config.group_id,
            &config.topic,
            context,
            connect_timeout,
        )?;
        let layout = Layout {
            table: config.table.clone(),
            topic: config.topic.clone(),
            keys: config.partition_by.clone(),
            format: config.format,
        };
        status.set_state("ready");
        Ok(Sink {
            consumer,
            store,
            config,
            layout,
            ranges: HashMap::new(),
            at_end: HashSet::new(),
            buffered_bytes: 0,
            status,
            catalog: None,
        })
    }

    /// Registers each landed object's partition and columns in `catalog` (before its
    /// offsets are committed), so queries see new data without a crawl.
    pub fn register_in(mut self, catalog: Arc<dyn Catalog>, database: &str) -> Self {
        self.catalog = Some((catalog, database.to_string()));
        self
    }

    /// The live counters, shareable with other threads.
    pub fn status(&self) -> Arc<SinkStatus> {
        self.status.clone()
    }

    /// Consumes and lands records until `limits` or `stop` says so, then lands and commits
    /// what is buffered. `stop` is asked every ~100 ms.
    pub fn run(&mut self, limits: &RunLimits, stop: &mut dyn FnMut() -> bool) -> Result<()> {
        self.status.set_state("running");
        let result = self.run_loop(limits, stop);
        let result = result.and_then(|landed| if landed { self.land_all(stop) } else { Ok(()) });
        self.status.set_state(match &result {
            Ok(()) => "stopped",
            Err(_) => "failed",
        });
        result
    }

    /// Returns whether the buffers should be landed (false: stopped during a write retry).
    fn run_loop(&mut self, limits: &RunLimits, stop: &mut dyn FnMut() -> bool) -> Result<bool> {
        let started = Instant::now();
        let mut consumed = 0u64;
        let mut last_tick = Instant::now();
        let mut since_tick = 256u32;
        loop {
            if limits.limit.is_some_and(|l| consumed >= l) {
                return Ok(true);
            }
            // Reading the clock per message costs more than the rest of the loop's bookkeeping.
            since_tick += 1;
            if since_tick >= 256 {
                since_tick = 0;
                if last_tick.elapsed() >= TICK {
                    last_tick = Instant::now();
                    if stop() || limits.duration.is_some_and(|d| started.elapsed() >= d) {
                        return Ok(true);
                    }
                    if !self.land_due(stop)? {
                        return Ok(false);
                    }
                    if limits.stop_at_end && self.read_to_end() {
                        return Ok(true);
                    }
                }
            }
            let polled = self.consumer.poll(TICK);
            // Before anything else: a revoked partition's buffer must not be written or
            // extended. Nothing was committed for it, so its next owner reads it again.
            for p in take_revoked(self.consumer.context()) {
                self.at_end.remove(&p);
                if let Some(range) = self.ranges.remove(&p) {
                    forget(&self.status, &mut self.buffered_bytes, &range);
                }
            }
            match polled {
                None => since_tick = 256,
                Some(Ok(m)) => {
                    consumed += 1;
                    let partition = m.partition();
                    self.at_end.remove(&partition);
                    let msg = Message {
                        partition,
                        offset: m.offset(),
                        timestamp: m.timestamp().to_millis(),
                        key: m.key(),
                        payload: m.payload(),
                    };
                    let size = msg.payload.map_or(0, <[u8]>::len);
                    let range = self
                        .ranges
                        .entry(partition)
                        .or_insert_with(|| PendingRange::new(msg.offset));
                    range.add(&msg, &self.config, &self.layout);
                    self.buffered_bytes += size;
                    SinkStatus::add(&self.status.consumed, 1);
                    SinkStatus::add(&self.status.buffered, 1);
                    let roll = &self.config.roll;
                    if range.records >= roll.records || range.bytes >= roll.bytes {
                        drop(m);
                        if !self.land(partition, stop)? {
                            return Ok(false);
                        }
                    } else if self.buffered_bytes >= roll.memory {
                        drop(m);
                        if !self.land_largest(stop)? {
                            return Ok(false);
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.at_end.insert(p);
                }
                Some(Err(e)) => self.status.error(format!("Kafka: {e}")),
            }
        }
    }

    /// Whether every assigned partition has been read to its end (what is buffered is then
    /// landed by `run`).
    fn read_to_end(&self) -> bool {
        let Ok(assignment) = self.consumer.assignment() else {
            return false;
        };
        let parts = assignment.elements();
        !parts.is_empty() && parts.iter().all(|e| self.at_end.contains(&e.partition()))
    }

    /// Lands ranges that are old enough or whose partition went quiet.
    fn land_due(&mut self, stop: &mut dyn FnMut() -> bool) -> Result<bool> {
        let roll = &self.config.roll;
        let now = Instant::now();
        let due: Vec<i32> = self
            .ranges
            .iter_mut()
            .filter_map(|(p, r)| {
                let quiet = r.quiet_for(now);
                (now - r.opened >= roll.age || quiet >= roll.idle).then_some(*p)
            })
            .collect();
        for p in due {
            if !self.land(p, stop)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn land_largest(&mut self, stop: &mut dyn FnMut() -> bool) -> Result<bool> {
        match self
            .ranges
            .iter()
            .max_by_key(|(_, r)| r.bytes)
            .map(|(p, _)| *p)
        {
            Some(p) => self.land(p, stop),
            None => Ok(true),
        }
    }

    fn land_all(&mut self, stop: &mut dyn FnMut() -> bool) -> Result<()> {
        let mut partitions: Vec<i32> = self.ranges.keys().copied().collect();
        partitions.sort_unstable();
        for p in partitions {
            if !self.land(p, stop)? {
                break;
            }
        }
        Ok(())
    }

    /// Writes one partition's range to the lake, then commits the offset after it.
    /// Returns false if asked to stop while a write was being retried; the range is then
    /// dropped uncommitted and is read again on restart.
    fn land(&mut self, partition: i32, stop: &mut dyn FnMut() -> bool) -> Result<bool> {
        let Some(range) = self.ranges.remove(&partition) else {
            return Ok(true);
        };
        forget(&self.status, &mut self.buffered_bytes, &range);
        let objects = range.objects(partition, &self.layout)?;
        for object in &objects {
            let mut outcome = self.store.put(&object.key, &object.body);
            let mut delay = Duration::from_millis(250);
            while let Err(e) = outcome {
                self.status.error(e.to_string());
                self.status.set_state("retrying");
                if !sleep_unless_stopped(delay, stop) {
                    return Ok(false);
                }
                delay = (delay * 2).min(RETRY_MAX);
                outcome = self.store.put(&object.key, &object.body);
            }
            SinkStatus::add(&self.status.files, 1);
            SinkStatus::add(&self.status.bytes, object.body.len() as u64);
        }
        self.register(&objects);
        self.status.set_state("running");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.config.topic,
            partition,
            Offset::Offset(range.next_offset),
        )
        .map_err(|e| Error::Kafka(format!("bad offset: {e}")))?;
        match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                self.status.committed(partition, range.next_offset);
                // Until the next statistics report, lag is the last report minus what landed since.
                let landed = range.next_offset - range.first_offset;
                let _ = self
                    .status
                    .lag
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |lag| {
                        (lag >= 0).then(|| (lag - landed).max(0))
                    });
                SinkStatus::add(&self.status.written, range.accepted() as u64);
                SinkStatus::add(
                    &self.status.rejected,
                    (range.records - range.accepted()) as u64,
                );
            }
            Err(e) => {
                // The objects are written but their offsets are not committed. Read the range
                // again, so that its objects are rewritten under the same names, before any
                // later range of this partition is written.
                self.status.error(format!(
                    "commit of {}[{partition}]@{} failed ({e}); re-reading from offset {}",
                    self.config.topic, range.next_offset, range.first_offset
                ));
                let _ = self.consumer.seek(
                    &self.config.topic,
                    partition,
                    Offset::Offset(range.first_offset),
                    Duration::from_secs(5),
                );
            }
        }
        Ok(true)
    }
}

impl Sink {
    /// A failed registration is reported, not retried: the objects are in the lake and
    /// the next crawl finds them.
    fn register(&self, objects: &[range::Object]) {
        let Some((catalog, database)) = &self.catalog else {
            return;
        };
        let table = &self.config.table;
        let found = objects
            .iter()
            .filter(|o| !catalog::is_hidden(&o.key))
            .map(|o| Found {
                key: o.key.clone(),
                size: o.body.len() as u64,
                partition: catalog::partition_of(table, &o.key),
                columns: body_schema(self.config.format, &o.body, &self.store.url(&o.key)),
            })
            .collect();
        let registered = catalog::register(
            self.store.as_ref(),
            catalog.as_ref(),
            database,
            table,
            found,
        );
        if let Err(e) = registered {
            self.status.error(format!(
                "registering new objects in the catalog failed: {e}"
            ));
        }
    }
}

fn take_revoked(context: &SinkContext) -> Vec<i32> {
    std::mem::take(&mut *context.revoked.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Removes a range from the buffer accounting.
fn forget(status: &SinkStatus, buffered_bytes: &mut usize, range: &PendingRange) {
    *buffered_bytes -= range.bytes;
    status
        .buffered
        .fetch_sub(range.records as u64, Ordering::Relaxed);
}

/// Sleeps `delay` in short steps; false if `stop` said to stop meanwhile.
fn sleep_unless_stopped(delay: Duration, stop: &mut dyn FnMut() -> bool) -> bool {
    let until = Instant::now() + delay;
    while Instant::now() < until {
        if stop() {
            return false;
        }
        std::thread::sleep(TICK.min(until - Instant::now()));
    }
    true
}
