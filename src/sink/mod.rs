//! Kafka → lake: a consumer-group member that buffers each partition's records, lands them
//! as objects named by (topic, partition, first offset), and commits an offset only after
//! the objects holding everything before it are durable. A crash or rebalance replays from
//! the committed offset and rewrites the same object names, so the lake holds each record
//! exactly once.

mod batch;
pub mod config;
mod encode;
mod partitioning;
mod range;
pub(crate) mod record;
mod status;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{Message as _, Offset, TopicPartitionList};

pub use config::{ColumnType, Partitioning, RollPolicy, SinkConfig};
use partitioning::Density;
use range::{Message, Object, PendingRange};
pub use status::SinkStatus;

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::lake::{
    LandedObject, Landing, Layout, ObjectStore, PartitionKey, Registered, Registry, TableSource,
};

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
    /// `None` until the first landing decides the folders of a new table.
    layout: Option<Layout>,
    /// Whether the layout is recorded for the table (by this sink or an earlier writer).
    declared: bool,
    ranges: HashMap<i32, PendingRange>,
    /// Partitions read to their end (cleared by the next message).
    at_end: HashSet<i32>,
    buffered_bytes: usize,
    status: Arc<SinkStatus>,
    /// Where landings are registered (the catalog), so queries see them at once.
    registry: Option<Arc<dyn Registry>>,
    source: TableSource,
    /// Partitions compaction moved: partition path → folder.
    locations: BTreeMap<String, String>,
    topic_partitions: usize,
    maintenance: Option<Maintenance>,
}

/// Work the sink's loop runs now and then between landings (compaction of its table).
struct Maintenance {
    every: Duration,
    last: Instant,
    run: Box<dyn FnMut() -> Result<usize> + Send>,
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
        let topic_partitions = consumer
            .fetch_metadata(Some(&config.topic), connect_timeout)
            .map(|m| crate::topic::partition_ids(&m).len())
            .unwrap_or(1);
        let source = TableSource {
            bootstrap_servers: kafka.bootstrap_servers.clone(),
            topic: config.topic.clone(),
            group_id: config.group_id.clone(),
            symbol_field: config.symbol_field.clone(),
            time_field: config.time_field.clone(),
            columns: config
                .columns
                .iter()
                .map(|(n, t)| (n.clone(), t.name().to_string()))
                .collect(),
            kafka_metadata: config.kafka_metadata,
        };
        let layout = match &config.partition_by {
            Partitioning::Keys(keys) => Some(layout_of(&config, keys.clone())),
            Partitioning::Auto { .. } => None,
        };
        status.set_state("ready");
        Ok(Sink {
            consumer,
            store,
            config,
            layout,
            declared: false,
            ranges: HashMap::new(),
            at_end: HashSet::new(),
            buffered_bytes: 0,
            status,
            registry: None,
            source,
            locations: BTreeMap::new(),
            topic_partitions,
            maintenance: None,
        })
    }

    /// Registers each landing (its partitions, columns and offsets) in `registry` before
    /// its offsets are committed, so queries see new data without a crawl. A table the
    /// registry already knows keeps its recorded folders; asking for others is an error.
    pub fn register_in(mut self, registry: Arc<dyn Registry>) -> Result<Self> {
        if let Some(recorded) = registry.scheme(&self.config.table)? {
            let keys = recorded_keys(&self.config.table, &recorded)?;
            if let Partitioning::Keys(asked) = &self.config.partition_by {
                if *asked != keys {
                    return Err(Error::Config(format!(
                        "table {:?} is partitioned by {recorded:?} (recorded when it was first \
                         landed), not {:?}: use partition_by=\"auto\" to follow it, or land into \
                         another table",
                        self.config.table,
                        asked.iter().map(|k| k.name()).collect::<Vec<_>>()
                    )));
                }
            }
            self.layout = Some(layout_of(&self.config, keys));
            self.locations = registry.locations(&self.config.table)?;
        }
        self.registry = Some(registry);
        Ok(self)
    }

    /// Runs `work` every `every` between landings, on the sink's own thread (compaction of
    /// what it has landed). Its failures are counted as errors; the sink goes on.
    pub fn maintain_every(
        mut self,
        every: Duration,
        work: Box<dyn FnMut() -> Result<usize> + Send>,
    ) -> Self {
        self.maintenance = Some(Maintenance {
            every,
            last: Instant::now(),
            run: work,
        });
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
                    if let Some(m) = &mut self.maintenance {
                        if m.last.elapsed() >= m.every {
                            if let Err(e) = (m.run)() {
                                self.status.error(format!("compaction failed: {e}"));
                            }
                            m.last = Instant::now();
                        }
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
                    match &self.layout {
                        Some(layout) => {
                            range.add(&msg, &self.config, layout);
                        }
                        None => range.hold(&msg),
                    }
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
        if !self.ranges.contains_key(&partition) {
            return Ok(true);
        }
        if !self.declared && !self.declare(stop)? {
            return Ok(false);
        }
        let Some(range) = self.ranges.remove(&partition) else {
            return Ok(true);
        };
        forget(&self.status, &mut self.buffered_bytes, &range);
        let layout = self.layout.clone().expect("declared above");
        let locations = &self.locations;
        let folder_of = |path: &str| {
            locations
                .get(path)
                .cloned()
                .unwrap_or_else(|| layout.folder(path))
        };
        let mut objects = range.objects(partition, &layout, &folder_of)?;
        for object in &objects {
            if !self.put_retrying(&object.key, &object.body, stop) {
                return Ok(false);
            }
        }
        if !self.register(partition, &range, &mut objects, stop)? {
            return Ok(false);
        }
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
    /// Writes an object, retrying with backoff until it is durable; false if asked to stop
    /// meanwhile.
    fn put_retrying(&self, key: &str, body: &[u8], stop: &mut dyn FnMut() -> bool) -> bool {
        let mut delay = Duration::from_millis(250);
        while let Err(e) = self.store.put(key, body) {
            self.status.error(e.to_string());
            self.status.set_state("retrying");
            if !sleep_unless_stopped(delay, stop) {
                return false;
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
        SinkStatus::add(&self.status.files, 1);
        SinkStatus::add(&self.status.bytes, body.len() as u64);
        true
    }

    /// Decides the folders of a new table from what is buffered (or takes the ones given)
    /// and records them, unless another writer recorded its own first; then decodes what
    /// was held. False if asked to stop while the catalog was unreachable.
    fn declare(&mut self, stop: &mut dyn FnMut() -> bool) -> Result<bool> {
        let (keys, reason) = match (&self.layout, &self.config.partition_by) {
            (Some(layout), _) => (layout.keys.clone(), "given".to_string()),
            (None, Partitioning::Auto { symbol }) => {
                let mut density = Density {
                    topic_partitions: self.topic_partitions,
                    sampled_partitions: self.ranges.values().filter(|r| r.holding()).count(),
                    ..Density::default()
                };
                let mut symbols = HashSet::new();
                for range in self.ranges.values() {
                    range.measure(&self.config, &mut density, &mut symbols);
                }
                density.symbols = symbols.len();
                let (time, reason) = partitioning::choose(&density, &self.config.roll, *symbol);
                let keys = symbol
                    .then_some(PartitionKey::Symbol)
                    .into_iter()
                    .chain(time)
                    .collect();
                (keys, reason)
            }
            (None, Partitioning::Keys(keys)) => (keys.clone(), "given".to_string()),
        };
        let mut keys = keys;
        if let Some(registry) = self.registry.clone() {
            let names: Vec<String> = keys.iter().map(|k| k.name().to_string()).collect();
            let mut delay = Duration::from_millis(250);
            let recorded = loop {
                let declared = registry
                    .declare(
                        &self.config.table,
                        self.config.format,
                        &names,
                        &reason,
                        &self.source,
                    )
                    .and_then(|recorded| {
                        registry
                            .locations(&self.config.table)
                            .map(|l| (recorded, l))
                    });
                match declared {
                    Ok(found) => break found,
                    Err(e @ Error::Config(_)) => return Err(e),
                    Err(e) => {
                        self.status
                            .error(format!("recording table {}: {e}", self.config.table));
                        self.status.set_state("retrying");
                        if !sleep_unless_stopped(delay, stop) {
                            return Ok(false);
                        }
                        delay = (delay * 2).min(RETRY_MAX);
                    }
                }
            };
            // Another member may have recorded the table first: follow it.
            keys = recorded_keys(&self.config.table, &recorded.0)?;
            self.locations = recorded.1;
        }
        let layout = layout_of(&self.config, keys);
        for (partition, range) in &mut self.ranges {
            range.release(*partition, &self.config, &layout);
        }
        self.layout = Some(layout);
        self.declared = true;
        Ok(true)
    }

    /// Registers a landed range in the registry, if there is one: its partitions, columns
    /// and offsets. Objects written into a partition that compaction moved meanwhile are
    /// rewritten in its new folder first. Retried until it succeeds; false if asked to
    /// stop meanwhile (nothing is committed then, and the range is landed again).
    fn register(
        &mut self,
        partition: i32,
        range: &PendingRange,
        objects: &mut [Object],
        stop: &mut dyn FnMut() -> bool,
    ) -> Result<bool> {
        let Some(registry) = self.registry.clone() else {
            return Ok(true);
        };
        let layout = self.layout.clone().expect("declared before landing");
        let mut delay = Duration::from_millis(250);
        loop {
            let landing = Landing {
                table: &self.config.table,
                format: self.config.format,
                partition,
                first_offset: range.first_offset,
                next_offset: range.next_offset,
                objects: objects
                    .iter()
                    .filter_map(|o| {
                        o.place.as_ref().map(|(path, folder)| LandedObject {
                            key: o.key.clone(),
                            path: path.clone(),
                            folder: folder.clone(),
                            body: &o.body,
                        })
                    })
                    .collect(),
            };
            match registry.register(&landing) {
                Ok(Registered::Done) => return Ok(true),
                Ok(Registered::Moved(moved)) => {
                    for object in objects.iter_mut() {
                        let Some((path, folder)) = &mut object.place else {
                            continue;
                        };
                        let Some(new_folder) = moved.get(path.as_str()) else {
                            continue;
                        };
                        let key = layout.data_key(new_folder, partition, object.first_offset);
                        if !self.put_retrying(&key, &object.body, stop) {
                            return Ok(false);
                        }
                        // The old folder is no longer read; the copy written there is garbage.
                        if let Err(e) = self.store.delete(std::slice::from_ref(&object.key)) {
                            self.status.error(e.to_string());
                        }
                        object.key = key;
                        *folder = new_folder.clone();
                    }
                    self.locations.extend(moved);
                }
                Err(e) => {
                    self.status.error(format!(
                        "registering {}[{partition}]@{} in the catalog: {e}",
                        self.config.topic, range.first_offset
                    ));
                    self.status.set_state("retrying");
                    if !sleep_unless_stopped(delay, stop) {
                        return Ok(false);
                    }
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

/// Decodes messages of one Kafka partition exactly as a sink configured by `config` would
/// land them under `layout`: per partition path, a frame of the records it accepts (the
/// rest it would quarantine). This is how queries read what is not landed yet.
pub fn decode<'a>(
    config: &SinkConfig,
    layout: &Layout,
    partition: i32,
    messages: impl IntoIterator<Item = (i64, Option<i64>, Option<&'a [u8]>, Option<&'a [u8]>)>,
) -> Result<Vec<(String, polars::prelude::DataFrame)>> {
    let mut config = config.clone();
    // Frames need the columns, whatever format the objects are in.
    config.format = crate::lake::Format::Parquet;
    let mut range: Option<PendingRange> = None;
    for (offset, timestamp, key, payload) in messages {
        let msg = Message {
            partition,
            offset,
            timestamp,
            key,
            payload,
        };
        range
            .get_or_insert_with(|| PendingRange::new(offset))
            .add(&msg, &config, layout);
    }
    range.map_or(Ok(Vec::new()), |r| r.frames())
}

/// The layout of `config`'s table with these folder levels.
fn layout_of(config: &SinkConfig, keys: Vec<PartitionKey>) -> Layout {
    Layout {
        table: config.table.clone(),
        topic: config.topic.clone(),
        keys,
        format: config.format,
    }
}

/// The folder levels a table's recorded scheme names.
fn recorded_keys(table: &str, names: &[String]) -> Result<Vec<PartitionKey>> {
    names
        .iter()
        .map(|n| {
            PartitionKey::parse(n).map_err(|_| {
                Error::Config(format!(
                    "table {table:?} is partitioned by folders {names:?}, which a sink cannot \
                     write: land into another table"
                ))
            })
        })
        .collect()
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
