//! Kafka → lake: a consumer-group member that buffers each partition's records, lands them
//! as objects named by (topic, partition, first offset), registers each landing's offsets
//! in the table, and commits them in Kafka after. The table is the source of truth: each
//! assigned partition resumes where the table's landed range ends (or the group's committed
//! offset, if further), each landing must continue the table's range under this writer's
//! claim, and objects are created only where none is (a zombie cannot overwrite its
//! successor's). A crash or rebalance replays from the table's offset and rewrites the
//! same unregistered objects, so the lake holds each record exactly once.

mod batch;
mod builder;
pub mod config;
mod encode;
mod ownership;
mod partitioning;
mod range;
mod status;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use polars::prelude::{DataType, TimeUnit};
use rdkafka::Message as _;

use batch::KAFKA_COLUMNS;
pub use builder::{LakeTarget, SinkBuilder, CONNECT_TIMEOUT};
pub use config::{ColumnType, Partitioning, RollPolicy, SinkConfig};
pub(crate) use encode::parquet_with_ids;
use ownership::Ownership;
use partitioning::Density;
use range::{Message, Object, PendingRange};
pub use status::SinkStatus;

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::kafka::{
    self, Change, Fetched, Flow, GroupMember, JobStatus, Membership, Pipeline, RunLimits, TICK,
};
use crate::lake::{
    Declaration, Fence, Fields, LandedObject, LandedRange, Landing, LastRecord, Layout, ObjectName,
    ObjectStore, PartitionKey, Put, Registered, Registry, TableSource, TableState,
};

const RETRY_MAX: Duration = Duration::from_secs(10);

/// A Kafka → lake sink: one consumer-group member.
pub struct Sink {
    membership: Membership,
    work: Work,
}

/// Everything but the consumer, so that messages borrowed from it can be processed.
struct Work {
    /// How to reach Kafka, for reads outside the group (checking a partition's last
    /// landed record).
    kafka: KafkaConfig,
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
    /// The table's field ids and types by column, given to the objects written (Iceberg
    /// tables).
    fields: Fields,
    topic_partitions: usize,
    maintenance: Option<Maintenance>,
    /// Where each assigned partition starts and under which claim it is landed.
    owned: Ownership,
    /// What landed, kept while a run collects it.
    collected: Collected,
}

/// The frames of the records landed while collecting (`Some`), as their objects hold them.
pub type Collected = Arc<Mutex<Option<Vec<polars::prelude::DataFrame>>>>;

/// How long each broker request settling an assignment may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// How a landing's writes ended.
enum Written {
    /// Every object is written, but those of these partitions, which this writer may no
    /// longer land (from there).
    All(BTreeMap<i32, Fence>),
    /// Asked to stop while a write was being retried.
    Stopped,
    /// A partition being written was revoked while a write was being retried.
    Revoked,
}

/// An object to create, and the Kafka partition whose records it holds.
struct Write<'a> {
    key: &'a str,
    body: &'a [u8],
    partition: i32,
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
        let status = Arc::new(SinkStatus::default());
        let mut membership = Membership::connect(
            kafka,
            &config.group_id,
            &config.topic,
            "stockstream-sink",
            status.job.clone(),
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
                kafka: kafka.clone(),
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
                fields: Fields::default(),
                topic_partitions,
                maintenance: None,
                owned: Ownership::default(),
                collected: Collected::default(),
            },
        })
    }

    /// Registers each landing (its partitions, columns and offsets) in `registry` before
    /// its offsets are committed, so queries see new data without a crawl. A table the
    /// registry already knows keeps its recorded folders; asking for others is an error.
    pub fn register_in(mut self, registry: Arc<dyn Registry>) -> Result<Self> {
        if let Some(state) = registry.state(&self.work.config.table)? {
            let keys = asked_keys(&self.work.config, &state.scheme)?;
            self.work.layout = Some(layout_of(&self.work.config, keys));
            self.work.locations = state.locations;
            self.work.take_fields(state.fields);
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

    /// Where the records landed go while it holds `Some` (shareable with other threads).
    pub fn collected(&self) -> Collected {
        self.work.collected.clone()
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
        self.work.status.finished(&result);
        result
    }
}

impl Pipeline for Work {
    /// A revoked partition's buffer is dropped before anything else is written: nothing was
    /// registered for it, so its next owner reads it again. An assigned partition's start
    /// is settled before any of its messages is taken.
    fn apply(&mut self, _member: &GroupMember, changes: &[Change]) -> Result<()> {
        for change in changes {
            match change {
                Change::Revoked { partitions, .. } => {
                    for p in partitions {
                        self.drop_range(*p);
                        self.skip.insert(*p);
                    }
                    self.owned.revoked(partitions);
                }
                Change::Assigned(partitions) => self.owned.assigned(partitions),
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
        JobStatus::add(&self.status.consumed, messages.len() as u64);
        self.skip.clear();
        self.settle(member)?;
        for m in messages {
            let partition = m.partition();
            if self.skip.contains(&partition) || !self.owned.takes(partition, m.offset()) {
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
            JobStatus::add(&self.status.buffered, 1);
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
        self.settle(member)?;
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

    /// What is buffered when the run ends is landed by `run`; a partition whose start is
    /// not settled has not been read yet.
    fn drained(&self) -> bool {
        !self.owned.settling()
    }
}

impl Work {
    /// Decides where newly assigned partitions start: claims them in the table (fencing
    /// out their earlier writers), then moves each to the later of the table's landed
    /// offset and the group's committed one. A catalog or broker that does not answer is
    /// tried again later (the partitions wait); a topic that holds fewer records than the
    /// table landed is an error.
    fn settle(&mut self, member: &GroupMember) -> Result<()> {
        let partitions = self.owned.due(Instant::now());
        if partitions.is_empty() {
            return Ok(());
        }
        match self.settle_partitions(member, &partitions) {
            Ok(()) => Ok(()),
            Err(e) if e.is_retryable() => {
                self.status.error(format!(
                    "settling {}{partitions:?}: {e} (trying again)",
                    self.config.topic
                ));
                self.status.set_state("retrying");
                self.owned.failed(Instant::now());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn settle_partitions(&mut self, member: &GroupMember, partitions: &[i32]) -> Result<()> {
        self.status.set_state("running");
        let claim = match &self.registry {
            Some(registry) => registry.claim(&self.config.table, &self.source, partitions)?,
            None => None,
        };
        let committed = member.committed(partitions, BROKER_TIMEOUT)?;
        let table = claim.as_ref().map(|c| &c.table);
        if let Some(table) = table {
            self.check_identity(table, partitions)?;
        }
        let mut starts = Vec::new();
        for &p in partitions {
            let landed = table.and_then(|t| t.landed.get(&p)).map(|l| l.next);
            let group = committed.get(&p).copied().flatten();
            let (low, high) = member.watermarks(p, BROKER_TIMEOUT)?;
            if let Some(landed) = landed.filter(|l| *l > high) {
                return Err(Error::config(format!(
                    "table {:?} holds {}[{p}] up to offset {landed}, but the topic ends at \
                     {high}: it was deleted and created again, or this is another cluster. Land \
                     it into another table (the landed records cannot be told from new ones)",
                    self.config.table, self.config.topic
                )));
            }
            starts.push((p, ownership::start(landed, group), landed, group, low));
        }
        if let Some(claim) = &claim {
            self.follow(&claim.table)?;
        }
        for (p, start, landed, group, low) in starts {
            if let Some(from) = start.filter(|s| *s < low) {
                self.report_gap(p, from, low);
            }
            member.start_at(p, start)?;
            if landed.is_some() && landed > group {
                let landed = landed.unwrap_or_default();
                self.status.resumed(p, landed);
                self.status.note(format!(
                    "{}[{p}] resumes at offset {landed}, where table {:?} ends ({})",
                    self.config.topic,
                    self.config.table,
                    match group {
                        Some(g) => format!("the group had committed {g}"),
                        None => "the group had no committed offset".to_string(),
                    }
                ));
            }
            self.owned
                .settled(p, start, claim.as_ref().map(|c| c.epoch));
        }
        Ok(())
    }

    /// Checks that the records the table says it landed last are still at their offsets: a
    /// topic deleted and created again (an embedded broker that restarted, or another
    /// cluster) reuses the offsets for other records, which the sink would take for landed.
    fn check_identity(&self, table: &TableState, partitions: &[i32]) -> Result<()> {
        let expected: HashMap<i32, (i64, LastRecord)> = partitions
            .iter()
            .filter_map(|p| {
                let landed = table.landed.get(p)?;
                Some((*p, (landed.next - 1, landed.last?)))
            })
            .collect();
        if expected.is_empty() {
            return Ok(());
        }
        let mut found = HashMap::new();
        let bounds = crate::kafka::Bounds {
            records: usize::MAX,
            bytes: usize::MAX,
            timeout: BROKER_TIMEOUT,
        };
        // Partitions whose last landed record the topic's retention or compaction removed
        // since are not read: nothing is left there to compare.
        let wanted = |p: i32, _: i64, _: i64| expected.get(&p).map(|(at, _)| *at..*at + 1);
        crate::kafka::read(
            &self.kafka,
            "stockstream-sink-check",
            &self.config.topic,
            &wanted,
            &bounds,
            &mut |m| {
                let seen = LastRecord {
                    timestamp: m.timestamp().to_millis(),
                    key_bytes: m.key().map_or(0, <[u8]>::len),
                    value_bytes: m.payload().map_or(0, <[u8]>::len),
                };
                found.insert(m.partition(), (m.offset(), seen));
            },
        )?;
        for (p, (at, last)) in expected {
            if let Some((offset, seen)) = found.get(&p) {
                if *offset == at && *seen != last {
                    return Err(Error::config(format!(
                        "table {:?} landed {}[{p}] up to offset {}, but the record there now is \
                         another ({seen:?}, landed {last:?}): the topic was deleted and created \
                         again (an embedded broker restarted), or this is another cluster. Land it \
                         into another table (the landed records cannot be told from new ones)",
                        self.config.table,
                        self.config.topic,
                        at + 1
                    )));
                }
            }
        }
        Ok(())
    }

    /// Takes the table's recorded scheme and partition folders.
    fn follow(&mut self, table: &TableState) -> Result<()> {
        self.locations = table.locations.clone();
        self.take_fields(table.fields.clone());
        if !self.declared {
            let keys = asked_keys(&self.config, &table.scheme)?;
            self.adopt(keys);
        }
        Ok(())
    }

    /// Lands under these folder levels from now on; what was held undecoded is decoded.
    fn adopt(&mut self, keys: Vec<PartitionKey>) {
        let layout = layout_of(&self.config, keys);
        for (partition, range) in &mut self.ranges {
            range.release(*partition, &self.config, &layout);
        }
        self.layout = Some(layout);
        self.declared = true;
    }

    /// Forgets what is buffered of `partition`.
    fn drop_range(&mut self, partition: i32) {
        if let Some(range) = self.ranges.remove(&partition) {
            forget(&self.status, &mut self.buffered_bytes, &range);
        }
    }

    /// Applies the table's refusals: a partition another writer claimed is no longer
    /// landed by this one; one the table holds further is read again from there.
    fn fence(&mut self, member: &GroupMember, fenced: &BTreeMap<i32, Fence>) {
        for (&p, why) in fenced {
            self.drop_range(p);
            self.skip.insert(p);
            match why {
                Fence::Claimed { by } => {
                    self.owned.fence(p, Instant::now());
                    self.status.error(format!(
                        "{}[{p}] is landed into table {:?} by another writer now (claim {by}): \
                         this sink stops landing it, and claims it back in {} s if the group \
                         still assigns it here",
                        self.config.topic,
                        self.config.table,
                        ownership::FENCE_RECHECK.as_secs()
                    ));
                }
                Fence::Behind { next } => {
                    self.owned.rewind(p, *next);
                    if let Err(e) = member.start_at(p, Some(*next)) {
                        self.status.error(e.to_string());
                    }
                    self.status.note(format!(
                        "{}[{p}]: table {:?} already holds offsets up to {next}; reading on from there",
                        self.config.topic, self.config.table
                    ));
                }
            }
        }
    }

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
        JobStatus::add(&self.status.skipped, (to - from) as u64);
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

    /// Writes the ranges of `partitions` to the lake (all their objects at once), registers
    /// them in the table in one catalog write, then commits the offsets after them in one
    /// request. Returns false if asked to stop while a write was being retried; the ranges
    /// are then dropped unregistered and read again on restart.
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
        if !self.declared && !self.declare(member, stop)? {
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
        self.give_ids(&ranges)?;
        let (locations, ids) = (&self.locations, &self.fields);
        let folder_of = |path: &str| {
            locations
                .get(path)
                .cloned()
                .unwrap_or_else(|| layout.folder(path))
        };
        let order = [
            self.config.symbol_field.as_str(),
            self.config.time_field.as_str(),
        ];
        let mut objects = crate::parallel::map(&ranges, |(p, range)| {
            range.objects(*p, &layout, &folder_of, ids, &order)
        })
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        let writes: Vec<Write> = ranges
            .iter()
            .zip(&objects)
            .flat_map(|((p, _), objects)| {
                objects.iter().map(|o| Write {
                    key: &o.key,
                    body: &o.body,
                    partition: *p,
                })
            })
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
        })?;
        self.apply(member, &changes)?;
        let fenced = match written {
            Written::All(fenced) => fenced,
            Written::Stopped => return Ok(false),
            Written::Revoked => {
                // Partitions still ours are read again from their range's start, so that
                // their objects are rewritten whole; the revoked ones are the new owner's.
                for (partition, range) in &ranges {
                    if self.owned.claim(*partition).is_some() || self.registry.is_none() {
                        self.rewind(member, *partition, range.first_offset);
                    }
                }
                self.status.set_state("running");
                return Ok(true);
            }
        };
        self.fence(member, &fenced);
        let mut dropped: HashSet<i32> = fenced.into_keys().collect();
        if !self.register(member, &ranges, &mut objects, &mut dropped, stop)? {
            return Ok(false);
        }
        self.status.set_state("running");
        let ranges: Vec<&(i32, PendingRange)> = ranges
            .iter()
            .filter(|(p, _)| !dropped.contains(p))
            .collect();
        let offsets: Vec<(i32, i64)> = ranges.iter().map(|(p, r)| (*p, r.next_offset)).collect();
        match member.commit(&offsets) {
            Ok(()) => {
                for (partition, range) in &ranges {
                    self.status.committed(*partition, range.next_offset);
                }
            }
            Err(e) if self.registry.is_some() => {
                // The table holds the offsets: the group's are only a hint.
                self.status.error(format!(
                    "commit of {} failed ({e}); the table holds the landed offsets",
                    self.config.topic
                ));
            }
            Err(e) => {
                // The objects are written but their offsets are not committed: the ranges
                // are not landed. Read them again, so that their objects are rewritten
                // under the same names, before any later range of these partitions is
                // written (or by the partitions' next owner).
                for (partition, range) in &ranges {
                    self.status.error(format!(
                        "commit of {}[{partition}]@{} failed ({e}); re-reading from offset {}",
                        self.config.topic, range.next_offset, range.first_offset
                    ));
                    self.rewind(member, *partition, range.first_offset);
                }
                return Ok(true);
            }
        }
        for (partition, range) in &ranges {
            // Until the next statistics report, lag is the last report minus what
            // landed since.
            let landed = range.next_offset - range.first_offset;
            let _ = self
                .status
                .lag
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |lag| {
                    (lag >= 0).then(|| (lag - landed).max(0))
                });
            JobStatus::add(&self.status.written, range.accepted() as u64);
            JobStatus::add(
                &self.status.rejected,
                (range.records - range.accepted()) as u64,
            );
            self.status.landed(*partition, range.next_offset);
        }
        self.collect(&ranges);
        Ok(true)
    }

    /// Keeps the records of landed ranges, for a run that collects them.
    fn collect(&self, ranges: &[&(i32, PendingRange)]) {
        let mut collected = self.collected.lock().unwrap_or_else(|e| e.into_inner());
        let Some(frames) = collected.as_mut() else {
            return;
        };
        for (partition, range) in ranges {
            match range.frames() {
                Ok(parts) => frames.extend(parts.into_iter().map(|(_, frame)| frame)),
                Err(e) => self.status.error(format!(
                    "the records landed from partition {partition} cannot be collected: {e}"
                )),
            }
        }
    }

    /// Reads `partition` again from `offset`, dropping what is buffered after it.
    fn rewind(&mut self, member: &GroupMember, partition: i32, offset: i64) {
        self.drop_range(partition);
        self.owned.rewind(partition, offset);
        if let Err(e) = member.seek(partition, offset) {
            self.status.error(e.to_string());
        }
        self.skip.insert(partition);
    }
}

impl Work {
    /// Writes objects, several at once, retrying the failed ones with backoff until all
    /// are durable. With a table, objects are created only where none is: an object found
    /// there is replaced only if this writer still holds its partition's claim and the
    /// table has not registered it (a crashed run's leftover); otherwise the partition is
    /// fenced. Before each retry `revoked` says whether a partition being written was
    /// taken away meanwhile (a rebalance, or an eviction during a long outage): then no
    /// more is written. A write refused for good (access denied, no such bucket) is an error.
    fn write_all(
        &self,
        objects: &[Write],
        stop: &mut dyn FnMut() -> bool,
        revoked: &mut dyn FnMut() -> bool,
    ) -> Result<Written> {
        let mode = match self.registry {
            Some(_) => Put::Create,
            None => Put::Replace,
        };
        let mut pending: Vec<&Write> = objects.iter().collect();
        let mut fenced = BTreeMap::new();
        let mut delay = Duration::from_millis(250);
        loop {
            let batch: Vec<(&str, &[u8])> = pending.iter().map(|w| (w.key, w.body)).collect();
            let Some(results) = self.store.put_all(&batch, mode, stop) else {
                return Ok(Written::Stopped);
            };
            let (mut failed, mut found) = (Vec::new(), Vec::new());
            for (object, result) in pending.iter().zip(results) {
                match result {
                    Ok(true) => {
                        JobStatus::add(&self.status.files, 1);
                        JobStatus::add(&self.status.bytes, object.body.len() as u64);
                    }
                    Ok(false) => found.push(*object),
                    Err(e) if !e.is_retryable() => return Err(e),
                    Err(e) => {
                        self.status.error(e.to_string());
                        failed.push(*object);
                    }
                }
            }
            let mut cleared = Vec::new();
            if !found.is_empty() {
                match self.clear_leftovers(&found) {
                    Ok(refused) => {
                        fenced.extend(refused);
                        cleared = found;
                    }
                    Err(e) if !e.is_retryable() => return Err(e),
                    Err(e) => {
                        self.status.error(e.to_string());
                        failed.extend(found);
                    }
                }
            }
            failed.retain(|w| !fenced.contains_key(&w.partition));
            cleared.retain(|w| !fenced.contains_key(&w.partition));
            if failed.is_empty() && cleared.is_empty() {
                return Ok(Written::All(fenced));
            }
            let wait = !failed.is_empty();
            pending = failed;
            pending.extend(cleared);
            if !wait {
                continue;
            }
            self.status.set_state("retrying");
            if !sleep_unless_stopped(delay, stop) {
                return Ok(Written::Stopped);
            }
            if revoked() {
                return Ok(Written::Revoked);
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// Deletes the objects found where this writer creates its own, if they are leftovers
    /// of an earlier run (not registered, and this writer still holds the partition's
    /// claim); returns the partitions whose objects are not this writer's to replace.
    fn clear_leftovers(&self, found: &[&Write]) -> Result<BTreeMap<i32, Fence>> {
        let Some(registry) = &self.registry else {
            return Ok(BTreeMap::new());
        };
        let state = registry.state(&self.config.table)?.unwrap_or_default();
        let mut refused = BTreeMap::new();
        let mut clear = Vec::new();
        for w in found {
            let p = w.partition;
            let by = state.claims.get(&p).copied().unwrap_or(0);
            if self.owned.claim(p) != Some(by) {
                refused.insert(p, Fence::Claimed { by });
                continue;
            }
            let first = ObjectName::parse(w.key, &self.config.topic).map(|n| n.first_offset);
            match state.landed.get(&p) {
                Some(l) if first.is_none_or(|f| f < l.next) => {
                    refused.insert(p, Fence::Behind { next: l.next });
                }
                _ => clear.push(w.key.to_string()),
            }
        }
        self.store.delete(&clear)?;
        Ok(refused)
    }
}

impl Work {
    /// The folder levels of a new table: the ones given, or chosen from the event-time
    /// density of what is buffered, and why.
    fn choose_keys(&self) -> (Vec<PartitionKey>, String) {
        match (&self.layout, &self.config.partition_by) {
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
                // An hour's folder is in its day's.
                let day = (time == Some(PartitionKey::Hour)).then_some(PartitionKey::Date);
                let keys = (symbol.then_some(PartitionKey::Symbol).into_iter())
                    .chain(day)
                    .chain(time)
                    .collect();
                (keys, reason)
            }
            (None, Partitioning::Keys(keys)) => (keys.clone(), "given".to_string()),
        }
    }

    /// Makes sure each column about to be written has a field id, for a table that keeps
    /// them (new columns are added to the table first).
    fn give_ids(&mut self, ranges: &[(i32, PendingRange)]) -> Result<()> {
        let Some(registry) = self.registry.clone().filter(|_| !self.fields.is_empty()) else {
            return Ok(());
        };
        let mut missing: Vec<(String, DataType)> = Vec::new();
        for (_, range) in ranges {
            range.columns_without_ids(&self.fields, &mut missing);
        }
        if !missing.is_empty() {
            let fields = registry.fields(&self.config.table, &missing)?;
            self.take_fields(fields);
        }
        Ok(())
    }

    /// Takes the table's fields: their ids for the objects written, and their types for
    /// the records read from now on, which must fit them (or go to the quarantine).
    fn take_fields(&mut self, fields: Fields) {
        for (name, (_, dtype)) in &fields.0 {
            let special = [&self.config.symbol_field, &self.config.time_field].contains(&name)
                || KAFKA_COLUMNS.contains(&name.as_str());
            let declared = self.config.columns.iter().any(|(n, _)| n == name);
            if let Some(kind) = ColumnType::of(dtype).filter(|_| !special && !declared) {
                self.config.columns.push((name.clone(), kind));
            }
        }
        self.fields = fields;
    }

    /// The columns known before any record is written: the symbol, the event time (a date
    /// if no record held so far has a time of day), the declared columns and Kafka's.
    fn known_columns(&self) -> Vec<(String, DataType)> {
        let (mut density, mut symbols) = (Density::default(), HashSet::new());
        for range in self.ranges.values() {
            range.measure(&self.config, &mut density, &mut symbols);
        }
        let time = match density.time_of_day || density.records == 0 {
            true => DataType::Datetime(TimeUnit::Microseconds, None),
            false => DataType::Date,
        };
        let mut columns = vec![
            (self.config.symbol_field.clone(), DataType::String),
            (self.config.time_field.clone(), time),
        ];
        let declared =
            (self.config.columns.iter()).map(|(name, kind)| (name.clone(), kind.dtype()));
        columns.extend(declared);
        if self.config.kafka_metadata {
            let kafka = [
                DataType::Int32,
                DataType::Int64,
                DataType::Datetime(TimeUnit::Microseconds, None),
            ];
            columns.extend(KAFKA_COLUMNS.iter().map(|n| n.to_string()).zip(kafka));
        }
        columns
    }

    /// Records the table's folders (unless another writer recorded its own first: then
    /// those are followed) with a claim on the partitions this writer holds unclaimed, then
    /// decodes what was held. False if asked to stop while the catalog was unreachable.
    fn declare(&mut self, member: &GroupMember, stop: &mut dyn FnMut() -> bool) -> Result<bool> {
        let (keys, reason) = self.choose_keys();
        let Some(registry) = self.registry.clone() else {
            if matches!(self.config.partition_by, Partitioning::Auto { .. }) {
                self.status.note(format!(
                    "{}: folders {:?} chosen from the first records ({reason}); with no \
                     catalog nothing records them, so another member of the group or a \
                     restart may choose others: give partition_by",
                    self.config.table,
                    keys.iter().map(|k| k.name()).collect::<Vec<_>>()
                ));
            }
            self.adopt(keys);
            return Ok(true);
        };
        let names: Vec<String> = keys.iter().map(|k| k.name().to_string()).collect();
        let columns = self.known_columns();
        let partitions = self.owned.unclaimed();
        let mut delay = Duration::from_millis(250);
        let claim = loop {
            let declaration = Declaration {
                format: self.config.format,
                keys: &names,
                reason: &reason,
                source: &self.source,
                columns: &columns,
            };
            let declared = registry.declare(&self.config.table, &declaration, &partitions);
            match declared {
                Ok(claim) => break claim,
                Err(e) if !e.is_retryable() => return Err(e),
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
        self.owned.claimed(&partitions, claim.epoch);
        // Another writer may have created the table, and landed these partitions, first.
        let behind: BTreeMap<i32, Fence> = partitions
            .iter()
            .filter_map(|p| {
                let landed = claim.table.landed.get(p)?;
                let range = self.ranges.get(p)?;
                (range.first_offset < landed.next)
                    .then_some((*p, Fence::Behind { next: landed.next }))
            })
            .collect();
        self.follow(&claim.table)?;
        self.fence(member, &behind);
        Ok(true)
    }

    /// Registers landed ranges in the table, in one catalog write: their partitions,
    /// columns and offsets. Objects written into a partition that compaction moved
    /// meanwhile are rewritten in its new folder first; ranges the table refuses are
    /// dropped (see [`Self::fence`]). Retried until it succeeds; false if asked to stop
    /// meanwhile (nothing is registered then, and the ranges are landed again).
    fn register(
        &mut self,
        member: &GroupMember,
        all: &[(i32, PendingRange)],
        objects: &mut [Vec<Object<'_>>],
        dropped: &mut HashSet<i32>,
        stop: &mut dyn FnMut() -> bool,
    ) -> Result<bool> {
        let Some(registry) = self.registry.clone() else {
            return Ok(true);
        };
        let layout = self.layout.clone().expect("declared before landing");
        let mut delay = Duration::from_millis(250);
        loop {
            let ranges: Vec<(usize, &(i32, PendingRange))> = all
                .iter()
                .enumerate()
                .filter(|(_, (p, _))| !dropped.contains(p))
                .collect();
            if ranges.is_empty() {
                return Ok(true);
            }
            let landing = Landing {
                table: &self.config.table,
                format: self.config.format,
                epochs: ranges
                    .iter()
                    .filter_map(|(_, (p, _))| self.owned.claim(*p).map(|e| (*p, e)))
                    .collect(),
                ranges: ranges
                    .iter()
                    .map(|(_, (p, r))| {
                        let range = LandedRange {
                            first: r.first_offset,
                            next: r.next_offset,
                            last: r.last,
                        };
                        (*p, range)
                    })
                    .collect(),
                objects: ranges
                    .iter()
                    .flat_map(|(slot, (p, _))| {
                        objects[*slot].iter().filter_map(move |o| {
                            o.place.as_ref().map(|(path, folder)| LandedObject {
                                key: o.key.clone(),
                                partition: *p,
                                path: path.clone(),
                                folder: folder.clone(),
                                body: &o.body,
                            })
                        })
                    })
                    .collect(),
            };
            match registry.register(&landing) {
                Ok(Registered::Done) => return Ok(true),
                Ok(Registered::Fenced(fenced)) => {
                    self.fence(member, &fenced);
                    dropped.extend(fenced.into_keys());
                }
                Ok(Registered::Moved(moved)) => {
                    let mut rewrites = Vec::new();
                    for (slot, (partition, _)) in &ranges {
                        for (i, object) in objects[*slot].iter().enumerate() {
                            let Some((path, _)) = &object.place else {
                                continue;
                            };
                            if let Some(new_folder) = moved.get(path.as_str()) {
                                let key =
                                    layout.data_key(new_folder, *partition, object.first_offset);
                                rewrites.push((*slot, *partition, i, key, new_folder.clone()));
                            }
                        }
                    }
                    let writes: Vec<Write> = rewrites
                        .iter()
                        .map(|(slot, p, i, key, _)| Write {
                            key,
                            body: &objects[*slot][*i].body,
                            partition: *p,
                        })
                        .collect();
                    let fenced = match self.write_all(&writes, stop, &mut || false)? {
                        Written::All(fenced) => fenced,
                        Written::Stopped | Written::Revoked => return Ok(false),
                    };
                    drop(writes);
                    for (slot, _, i, key, folder) in rewrites {
                        let object = &mut objects[slot][i];
                        // The old folder is no longer read; the copy written there is garbage.
                        if let Err(e) = self.store.delete(std::slice::from_ref(&object.key)) {
                            self.status.error(e.to_string());
                        }
                        object.key = key;
                        if let Some((_, old)) = &mut object.place {
                            *old = folder;
                        }
                    }
                    self.locations.extend(moved);
                    self.fence(member, &fenced);
                    dropped.extend(fenced.into_keys());
                }
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => {
                    self.status.error(format!(
                        "registering a landing of {} in the catalog: {e}",
                        self.config.topic
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

/// The folder levels a table's recorded scheme names, if the sink may follow them: a sink
/// given other folder levels than the table's is refused.
fn asked_keys(config: &SinkConfig, recorded: &[String]) -> Result<Vec<PartitionKey>> {
    let keys = recorded_keys(&config.table, recorded)?;
    if let Partitioning::Keys(asked) = &config.partition_by {
        if *asked != keys {
            return Err(Error::config(format!(
                "table {:?} is partitioned by {recorded:?} (recorded when it was first landed), \
                 not {:?}: use partition_by=\"auto\" to follow it, or land into another table",
                config.table,
                asked.iter().map(|k| k.name()).collect::<Vec<_>>()
            )));
        }
    }
    Ok(keys)
}

/// The folder levels a table's recorded scheme names.
fn recorded_keys(table: &str, names: &[String]) -> Result<Vec<PartitionKey>> {
    names
        .iter()
        .map(|n| {
            str::parse::<PartitionKey>(n).map_err(|_| {
                Error::config(format!(
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

#[cfg(test)]
mod tests {
    use polars::prelude::DataType;

    use super::*;
    use crate::error::Kind;
    use crate::lake::{Format, LakeUrl, LocalStore};
    use crate::testing;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_sink_given_other_folders_than_the_tables_is_refused() {
        let mut config = SinkConfig::new("t", "g");
        let recorded = names(&["symbol", "date"]);
        // "auto" follows whatever the table was first landed with.
        assert_eq!(
            asked_keys(&config, &recorded).unwrap(),
            [PartitionKey::Symbol, PartitionKey::Date]
        );
        config.partition_by = Partitioning::Keys(vec![PartitionKey::Symbol, PartitionKey::Date]);
        assert!(asked_keys(&config, &recorded).is_ok());
        config.partition_by = Partitioning::Keys(vec![PartitionKey::Date, PartitionKey::Symbol]);
        let e = asked_keys(&config, &recorded).unwrap_err();
        assert!(
            e.is(Kind::Config) && e.to_string().contains("partition_by=\"auto\""),
            "{e}"
        );
        // Folders another writer made that a sink cannot name are refused whatever was asked.
        config.partition_by = Partitioning::Auto { symbol: false };
        let e = asked_keys(&config, &names(&["region"])).unwrap_err();
        assert!(e.to_string().contains("which a sink cannot write"), "{e}");
    }

    #[test]
    fn decoded_records_are_framed_per_folder_as_they_would_land() {
        let mut config = SinkConfig::new("t", "g");
        // Objects of JSON lines keep no columns; decoding must frame them all the same.
        config.format = Format::Ndjson;
        let layout = layout_of(&config, vec![PartitionKey::Symbol]);
        let payloads = [
            r#"{"Index":"NYA","Date":"2021-01-04","Close":1}"#,
            r#"{"Index":"NYA","Date":"2021-01-04","Close":"high"}"#,
            r#"{"Index":"GSPC","Date":"2021-01-05","Close":2.5}"#,
            r#"{"Index":"NYA","Date":"2021-01-06","Close":3}"#,
        ];
        let messages = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (i as i64, None, None, Some(p.as_bytes())));
        let frames = decode(&config, &layout, 0, messages).unwrap();
        let paths: Vec<&str> = frames.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["symbol=NYA", "symbol=GSPC"]);
        let nya = &frames[0].1;
        // The refused record (a text Close) is not in the frame.
        let close: Vec<Option<f64>> = nya.column("Close").unwrap().f64().unwrap().iter().collect();
        assert_eq!(close, [Some(1.0), Some(3.0)]);
        assert_eq!(nya.column("Date").unwrap().dtype(), &DataType::Date);
        assert_eq!(frames[1].1.height(), 1);
        assert!(decode(&config, &layout, 0, std::iter::empty())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_retry_wait_ends_as_soon_as_stop_is_asked() {
        let started = Instant::now();
        let mut asked = 0;
        let waited = sleep_unless_stopped(Duration::from_secs(30), &mut || {
            asked += 1;
            asked == 3
        });
        assert!(!waited);
        assert_eq!(asked, 3);
        assert!(started.elapsed() < Duration::from_secs(5));
        let started = Instant::now();
        assert!(sleep_unless_stopped(
            Duration::from_millis(150),
            &mut || false
        ));
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[test]
    fn a_new_group_resumes_where_the_table_ends_not_at_the_start_of_the_topic() {
        let (_kafka, config) = testing::broker("ticks", 1);
        let lake = tempfile::tempdir().unwrap();
        let target = || LakeTarget::new(LakeUrl::Local(lake.path().to_path_buf()));
        testing::send(&config, "ticks", testing::daily_ticks(0, 10));
        let first = testing::run_sink(&config, "ticks", "first", target());
        assert_eq!(first.status().detail().landed, [(0, 10)]);
        testing::send(&config, "ticks", testing::daily_ticks(10, 15));
        // A group that never committed anything would start at offset 0.
        let second = testing::run_sink(&config, "ticks", "second", target());
        let status = second.status();
        let detail = status.detail();
        assert_eq!(detail.resumed, [(0, 10)]);
        assert_eq!(detail.landed, [(0, 15)]);
        assert_eq!(status.written.load(Ordering::Relaxed), 5);
        let store = LocalStore::open(lake.path().to_path_buf()).unwrap();
        let mut firsts: Vec<i64> = store
            .list("ticks/")
            .unwrap()
            .iter()
            .filter_map(|o| ObjectName::parse(&o.key, "ticks"))
            .map(|n| n.first_offset)
            .collect();
        firsts.sort_unstable();
        assert_eq!(firsts, [0, 10], "each record landed once");
    }
}
