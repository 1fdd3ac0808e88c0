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
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::{ColumnType, Partitioning, RollPolicy, SinkConfig};
use partitioning::Density;
use range::{Message, Object, PendingRange};
pub use status::SinkStatus;

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::kafka::{
    self, Change, Fetched, Flow, GroupMember, Membership, Pipeline, RunLimits, TICK,
};
use crate::lake::{
    LandedObject, Landing, Layout, ObjectStore, PartitionKey, Registered, Registry, TableSource,
};

const RETRY_MAX: Duration = Duration::from_secs(10);

/// A Kafka → lake sink: one consumer-group member.
pub struct Sink {
    membership: Membership,
    work: Work,
}

/// Everything but the consumer, so that messages borrowed from it can be processed.
struct Work {
    store: Arc<dyn ObjectStore>,
    config: SinkConfig,
    /// `None` until the first landing decides the folders of a new table.
    layout: Option<Layout>,
    /// Whether the layout is recorded for the table (by this sink or an earlier writer).
    declared: bool,
    ranges: HashMap<i32, PendingRange>,
    /// Partitions whose further messages in the current batch are skipped: sought back
    /// (they come again) or revoked while the batch was being taken (they are not ours).
    skip: HashSet<i32>,
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

/// How long each broker request checking an assignment for retention gaps may take.
const GAP_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// How a landing's writes ended.
enum Written {
    All,
    /// Asked to stop while a write was being retried.
    Stopped,
    /// A partition being written was revoked while a write was being retried.
    Revoked,
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
        let mut membership = Membership::join(
            kafka,
            &config.group_id,
            &config.topic,
            "stockstream-sink",
            status.clone(),
            connect_timeout,
        )?;
        let topic_partitions = membership.member()?.partition_count(connect_timeout);
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
            time_format: config.time_format.format().map(str::to_string),
            time_zone: config.time_format.zone().map(|z| z.name().to_string()),
        };
        let layout = match &config.partition_by {
            Partitioning::Keys(keys) => Some(layout_of(&config, keys.clone())),
            Partitioning::Auto { .. } => None,
        };
        status.set_state("ready");
        Ok(Sink {
            membership,
            work: Work {
                store,
                config,
                layout,
                declared: false,
                ranges: HashMap::new(),
                skip: HashSet::new(),
                buffered_bytes: 0,
                status,
                registry: None,
                source,
                locations: BTreeMap::new(),
                topic_partitions,
                maintenance: None,
            },
        })
    }

    /// Registers each landing (its partitions, columns and offsets) in `registry` before
    /// its offsets are committed, so queries see new data without a crawl. A table the
    /// registry already knows keeps its recorded folders; asking for others is an error.
    pub fn register_in(mut self, registry: Arc<dyn Registry>) -> Result<Self> {
        if let Some(recorded) = registry.scheme(&self.work.config.table)? {
            let keys = recorded_keys(&self.work.config.table, &recorded)?;
            if let Partitioning::Keys(asked) = &self.work.config.partition_by {
                if *asked != keys {
                    return Err(Error::Config(format!(
                        "table {:?} is partitioned by {recorded:?} (recorded when it was first \
                         landed), not {:?}: use partition_by=\"auto\" to follow it, or land into \
                         another table",
                        self.work.config.table,
                        asked.iter().map(|k| k.name()).collect::<Vec<_>>()
                    )));
                }
            }
            self.work.layout = Some(layout_of(&self.work.config, keys));
            self.work.locations = registry.locations(&self.work.config.table)?;
        }
        self.work.registry = Some(registry);
        Ok(self)
    }

    /// Runs `work` every `every` between landings, on the sink's own thread (compaction of
    /// what it has landed). Its failures are counted as errors; the sink goes on.
    pub fn maintain_every(
        mut self,
        every: Duration,
        work: Box<dyn FnMut() -> Result<usize> + Send>,
    ) -> Self {
        self.work.maintenance = Some(Maintenance {
            every,
            last: Instant::now(),
            run: work,
        });
        self
    }

    /// The live counters, shareable with other threads.
    pub fn status(&self) -> Arc<SinkStatus> {
        self.work.status.clone()
    }

    /// Consumes and lands records until `limits` or `stop` says so, then lands and commits
    /// what is buffered. `stop` is asked every ~100 ms.
    pub fn run(&mut self, limits: &RunLimits, stop: &mut dyn FnMut() -> bool) -> Result<()> {
        self.work.status.set_state("running");
        let result = self.membership.session(&mut self.work, |member, work| {
            match kafka::run(member, work, limits, stop)? {
                Flow::Continue => work.land_all(member, stop),
                Flow::Abandon => Ok(()),
            }
        });
        self.work.status.set_state(match &result {
            Ok(()) => "stopped",
            Err(_) => "failed",
        });
        result
    }
}

impl Pipeline for Work {
    /// A revoked partition's buffer is dropped before anything else is written: nothing was
    /// committed for it, so its next owner reads it again.
    fn apply(&mut self, member: &GroupMember, changes: &[Change]) -> Result<()> {
        for change in changes {
            match change {
                Change::Revoked { partitions, .. } => {
                    for p in partitions {
                        if let Some(range) = self.ranges.remove(p) {
                            forget(&self.status, &mut self.buffered_bytes, &range);
                        }
                        self.skip.insert(*p);
                    }
                }
                Change::Assigned(partitions) => {
                    for (p, from, to) in member.retention_gaps(partitions, GAP_CHECK_TIMEOUT) {
                        self.report_gap(p, from, to);
                    }
                }
            }
        }
        Ok(())
    }

    fn take(
        &mut self,
        member: &GroupMember,
        messages: &[Fetched<'_>],
        stop: &mut dyn FnMut() -> bool,
    ) -> Result<Flow> {
        SinkStatus::add(&self.status.consumed, messages.len() as u64);
        self.skip.clear();
        for m in messages {
            let partition = m.partition();
            if self.skip.contains(&partition) {
                continue;
            }
            let msg = Message {
                partition,
                offset: m.offset(),
                timestamp: m.timestamp(),
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
            SinkStatus::add(&self.status.buffered, 1);
            let roll = &self.config.roll;
            let landed = if range.records >= roll.records || range.bytes >= roll.bytes {
                self.land(member, &[partition], stop)?
            } else if self.buffered_bytes >= roll.memory {
                self.land_largest(member, stop)?
            } else {
                true
            };
            if !landed {
                return Ok(Flow::Abandon);
            }
        }
        Ok(Flow::Continue)
    }

    fn tick(&mut self, member: &GroupMember, stop: &mut dyn FnMut() -> bool) -> Result<Flow> {
        if !self.land_due(member, stop)? {
            return Ok(Flow::Abandon);
        }
        if let Some(m) = &mut self.maintenance {
            if m.last.elapsed() >= m.every {
                if let Err(e) = (m.run)() {
                    self.status.error(format!("compaction failed: {e}"));
                }
                m.last = Instant::now();
            }
        }
        Ok(Flow::Continue)
    }

    /// What is buffered when the run ends is landed by `run`.
    fn drained(&self) -> bool {
        true
    }
}

impl Work {
    /// Records that the topic's retention deleted offsets `from..to` of `partition` before
    /// they were landed: counted, told, and noted in `_rejected/` next to the records the
    /// sink refused, so that the lake says what it is missing.
    fn report_gap(&mut self, partition: i32, from: i64, to: i64) {
        let topic = &self.config.topic;
        let message = format!(
            "{topic}[{partition}]: offsets {from}..{to} were deleted by the topic's retention \
             before this sink read them; those {} records are not in the lake",
            to - from
        );
        SinkStatus::add(&self.status.skipped, (to - from) as u64);
        self.status.error(message.clone());
        let note = serde_json::json!({
            "topic": topic,
            "partition": partition,
            "from_offset": from,
            "to_offset": to,
            "error": message,
        });
        let key = format!(
            "_rejected/{}/gap-{topic}-{partition}-{from:020}-{to:020}.json",
            self.config.table
        );
        if let Err(e) = self.store.put(&key, format!("{note}\n").as_bytes()) {
            self.status.error(format!("noting the gap in {key}: {e}"));
        }
    }

    /// Lands ranges that are old enough or whose partition went quiet.
    fn land_due(&mut self, member: &GroupMember, stop: &mut dyn FnMut() -> bool) -> Result<bool> {
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
        self.land(member, &due, stop)
    }

    fn land_largest(
        &mut self,
        member: &GroupMember,
        stop: &mut dyn FnMut() -> bool,
    ) -> Result<bool> {
        match self
            .ranges
            .iter()
            .max_by_key(|(_, r)| r.bytes)
            .map(|(p, _)| *p)
        {
            Some(p) => self.land(member, &[p], stop),
            None => Ok(true),
        }
    }

    fn land_all(&mut self, member: &GroupMember, stop: &mut dyn FnMut() -> bool) -> Result<()> {
        let mut partitions: Vec<i32> = self.ranges.keys().copied().collect();
        partitions.sort_unstable();
        self.land(member, &partitions, stop).map(|_| ())
    }

    /// Writes the ranges of `partitions` to the lake (all their objects at once), then
    /// commits the offsets after them in one request. Returns false if asked to stop while
    /// a write was being retried; the ranges are then dropped uncommitted and read again
    /// on restart.
    fn land(
        &mut self,
        member: &GroupMember,
        partitions: &[i32],
        stop: &mut dyn FnMut() -> bool,
    ) -> Result<bool> {
        // A rebalance since the last poll may have taken partitions: theirs are the new
        // owner's records to write, not ours.
        let changes = member.rebalances();
        self.apply(member, &changes)?;
        if !partitions.iter().any(|p| self.ranges.contains_key(p)) {
            return Ok(true);
        }
        if !self.declared && !self.declare(stop)? {
            return Ok(false);
        }
        let ranges: Vec<(i32, PendingRange)> = partitions
            .iter()
            .filter_map(|p| self.ranges.remove(p).map(|r| (*p, r)))
            .collect();
        for (_, range) in &ranges {
            forget(&self.status, &mut self.buffered_bytes, range);
        }
        let layout = self.layout.clone().expect("declared above");
        let locations = &self.locations;
        let folder_of = |path: &str| {
            locations
                .get(path)
                .cloned()
                .unwrap_or_else(|| layout.folder(path))
        };
        let mut objects =
            crate::parallel::map(&ranges, |(p, range)| range.objects(*p, &layout, &folder_of))
                .into_iter()
                .collect::<Result<Vec<_>>>()?;
        let writes: Vec<(&str, &[u8])> = objects
            .iter()
            .flatten()
            .map(|o| (o.key.as_str(), o.body.as_ref()))
            .collect();
        let landing: Vec<i32> = ranges.iter().map(|(p, _)| *p).collect();
        let mut changes = Vec::new();
        let written = self.write_all(&writes, stop, &mut || {
            let new = member.rebalances();
            let lost = new.iter().any(|c| match c {
                Change::Revoked { partitions, .. } => {
                    partitions.iter().any(|p| landing.contains(p))
                }
                Change::Assigned(_) => false,
            });
            changes.extend(new);
            lost
        });
        self.apply(member, &changes)?;
        match written {
            Written::All => {}
            Written::Stopped => return Ok(false),
            Written::Revoked => {
                // Partitions still ours are read again from their range's start, so that
                // their objects are rewritten whole; the revoked ones are the new owner's.
                for (partition, range) in &ranges {
                    if !self.skip.contains(partition) {
                        let _ = member.seek(*partition, range.first_offset);
                        self.skip.insert(*partition);
                    }
                }
                self.status.set_state("running");
                return Ok(true);
            }
        }
        for ((partition, range), objects) in ranges.iter().zip(&mut objects) {
            if !self.register(*partition, range, objects, stop)? {
                return Ok(false);
            }
        }
        self.status.set_state("running");
        let offsets: Vec<(i32, i64)> = ranges.iter().map(|(p, r)| (*p, r.next_offset)).collect();
        match member.commit(&offsets) {
            Ok(()) => {
                for (partition, range) in &ranges {
                    self.status.committed(*partition, range.next_offset);
                    // Until the next statistics report, lag is the last report minus what
                    // landed since.
                    let landed = range.next_offset - range.first_offset;
                    let _ =
                        self.status
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
            }
            Err(e) => {
                // The objects are written but their offsets are not committed. Read the
                // ranges again, so that their objects are rewritten under the same names,
                // before any later range of these partitions is written.
                for (partition, range) in &ranges {
                    self.status.error(format!(
                        "commit of {}[{partition}]@{} failed ({e}); re-reading from offset {}",
                        self.config.topic, range.next_offset, range.first_offset
                    ));
                    let _ = member.seek(*partition, range.first_offset);
                    self.skip.insert(*partition);
                }
            }
        }
        Ok(true)
    }
}

impl Work {
    /// Writes objects, several at once, retrying the failed ones with backoff until all
    /// are durable. Before each retry `revoked` says whether a partition being written was
    /// taken away meanwhile (a rebalance, or an eviction during a long outage): then no
    /// more is written.
    fn write_all(
        &self,
        objects: &[(&str, &[u8])],
        stop: &mut dyn FnMut() -> bool,
        revoked: &mut dyn FnMut() -> bool,
    ) -> Written {
        let mut pending: Vec<(&str, &[u8])> = objects.to_vec();
        let mut delay = Duration::from_millis(250);
        loop {
            let Some(results) = self.store.put_all(&pending, stop) else {
                return Written::Stopped;
            };
            let mut failed = Vec::new();
            for (object, result) in pending.iter().zip(results) {
                match result {
                    Ok(()) => {
                        SinkStatus::add(&self.status.files, 1);
                        SinkStatus::add(&self.status.bytes, object.1.len() as u64);
                    }
                    Err(e) => {
                        self.status.error(e.to_string());
                        failed.push(*object);
                    }
                }
            }
            if failed.is_empty() {
                return Written::All;
            }
            pending = failed;
            self.status.set_state("retrying");
            if !sleep_unless_stopped(delay, stop) {
                return Written::Stopped;
            }
            if revoked() {
                return Written::Revoked;
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
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
        objects: &mut [Object<'_>],
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
                        let moved_write =
                            self.write_all(&[(&key, &object.body)], stop, &mut || false);
                        if !matches!(moved_write, Written::All) {
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
            str::parse::<PartitionKey>(n).map_err(|_| {
                Error::Config(format!(
                    "table {table:?} is partitioned by folders {names:?}, which a sink cannot \
                     write: land into another table"
                ))
            })
        })
        .collect()
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
