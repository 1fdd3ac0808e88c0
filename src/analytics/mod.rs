//! Real-time analytics on a tick topic: per-symbol, event-time windows (OHLC, volume,
//! VWAP, change), running indicators (SMA, EMA, volatility) and alerts, written to output
//! topics and handed to the caller.
//!
//! One consumer-group member keeps an [`engine::PartitionState`] per assigned partition.
//! Every `checkpoint_interval` it makes the outputs durable (producer flush), writes each
//! partition's state to a state topic keyed by `<topic>:<partition>`, and then commits the
//! offset that state has read up to. On assignment the latest snapshot is restored and
//! messages before its offset are skipped, so a restart neither re-emits a window closed
//! before the checkpoint nor loses a window that was open. After a crash, outputs emitted
//! since the last checkpoint are emitted again (at-least-once); each is identified by
//! symbol and event time, so downstream can drop repeats. With `exactly_once`, each
//! checkpoint is instead the commit of a Kafka transaction holding the outputs, the state
//! and the offsets (see [`transactions`]).

mod engine;
mod expr;
mod indicator;
pub mod join;
pub mod options;
pub mod output;
mod snapshot;
pub mod spec;
mod status;
mod tick;
mod transactions;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::producer::ThreadedProducer;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::Message as _;

pub use engine::{PartitionState, Spec};
pub use options::{Outputs, CALLBACK_KINDS};
pub use output::{Kind, Output};
use snapshot::Chunked;
pub use status::AnalyticsStatus;
pub use tick::{Tick, TickFields};
use transactions::Transactions;

use crate::config::{KafkaConfig, PRODUCER_DEFAULTS};
use crate::error::{Error, Result};
use crate::kafka::{
    self, create_topics, send_waiting, Change, Fetched, Flow, GroupMember, JobStatus, Membership,
    Pipeline, RunLimits,
};

/// Everything an analytics job needs besides Kafka.
#[derive(Debug, Clone)]
pub struct AnalyticsConfig {
    pub topic: String,
    pub group_id: String,
    pub fields: TickFields,
    pub spec: Spec,
    /// A partition with no new message for this long has its buffered ticks released and
    /// its open windows closed.
    pub idle_timeout: Duration,
    pub checkpoint_interval: Duration,
    /// The output topic of each kind (by [`Kind::index`]); `None`: not produced.
    pub topics: [Option<String>; 4],
    /// Where partition state is checkpointed; `<group_id>-state` by default.
    pub state_topic: String,
    /// How many recent outputs of each kind are kept for [`Analytics::recent`].
    pub keep: usize,
    /// Ticks dated more than this ahead of the wall clock (µs) are rejected: one bad
    /// clock would otherwise push the watermark past every later tick, for good.
    pub max_future: i64,
    /// Outputs, state and offsets committed together in Kafka transactions.
    pub exactly_once: bool,
    /// Each tick takes the latest values of this table topic as of its time.
    pub join: Option<join::AsOf>,
}

impl AnalyticsConfig {
    pub fn new(topic: &str, group_id: &str, spec: Spec) -> Self {
        AnalyticsConfig {
            topic: topic.to_string(),
            group_id: group_id.to_string(),
            fields: TickFields::default(),
            spec,
            idle_timeout: Duration::from_secs(10),
            checkpoint_interval: Duration::from_secs(2),
            topics: [None, None, None, None],
            state_topic: format!("{group_id}-state"),
            keep: 10_000,
            max_future: 86_400_000_000,
            exactly_once: false,
            join: None,
        }
    }

    fn validate(&self) -> Result<()> {
        crate::error::non_empty(&[
            ("topic", &self.topic),
            ("group_id", &self.group_id),
            ("state_topic", &self.state_topic),
        ])?;
        crate::kafka::check_topic("topic", &self.topic)?;
        crate::kafka::check_topic("state_topic", &self.state_topic)?;
        if let Some(join) = &self.join {
            if [&self.topic, &self.state_topic].contains(&&join.topic)
                || self.topics.iter().flatten().any(|t| *t == join.topic)
            {
                return Err(Error::config(format!(
                    "the join topic {:?} is also the input, state or an output topic",
                    join.topic
                )));
            }
        }
        for t in self.topics.iter().flatten() {
            crate::kafka::check_topic("output topic", t)?;
            if *t == self.topic || *t == self.state_topic {
                return Err(Error::config(format!(
                    "output topic {t:?} is also the input or state topic"
                )));
            }
        }
        if self.idle_timeout.is_zero() || self.checkpoint_interval.is_zero() {
            return Err(Error::config(
                "idle_timeout and checkpoint_interval must be positive",
            ));
        }
        Ok(())
    }
}

/// A function given each output of the kinds it asked for, with the indicator names; its
/// errors are counted in the status.
pub type Callback = Box<dyn FnMut(&Output, &[String]) -> std::result::Result<(), String> + Send>;

/// The latest outputs of each kind, bounded, for live views.
#[derive(Debug, Default)]
pub struct Recent {
    keep: usize,
    by_kind: [VecDeque<Output>; 4],
    /// How many of each kind were ever pushed.
    pushed: [u64; 4],
}

impl Recent {
    fn push(&mut self, output: Output) {
        self.pushed[output.kind().index()] += 1;
        if self.keep == 0 {
            return;
        }
        let queue = &mut self.by_kind[output.kind().index()];
        if queue.len() == self.keep {
            queue.pop_front();
        }
        queue.push_back(output);
    }

    /// The kept outputs of `kind`, oldest first.
    pub fn of(&self, kind: Kind) -> Vec<Output> {
        self.by_kind[kind.index()].iter().cloned().collect()
    }

    /// How many outputs of each kind were pushed so far, to collect those pushed after.
    pub fn marks(&self) -> [u64; 4] {
        self.pushed
    }

    /// The outputs of `kind` pushed since `marks` (from [`Self::marks`]) that are still
    /// kept, oldest first, and how many more were pushed but are no longer kept.
    pub fn since(&self, kind: Kind, marks: &[u64; 4]) -> (Vec<Output>, u64) {
        let queue = &self.by_kind[kind.index()];
        let new = self.pushed[kind.index()] - marks[kind.index()];
        let kept = queue.len().min(usize::try_from(new).unwrap_or(usize::MAX));
        let outputs = queue.iter().skip(queue.len() - kept).cloned().collect();
        (outputs, new - kept as u64)
    }
}

/// Delivery failures of outputs and snapshots, noticed by librdkafka's thread.
struct Deliveries {
    status: Arc<AnalyticsStatus>,
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, msg)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.status.error(format!(
                "output to {}[{}] not delivered: {e}",
                msg.topic(),
                msg.partition()
            ));
        }
    }
}

/// Hands each output to its topic, the recent buffer and the callback.
struct Emitter {
    producer: ThreadedProducer<Deliveries>,
    topics: [Option<String>; 4],
    names: Vec<String>,
    status: Arc<AnalyticsStatus>,
    recent: Arc<Mutex<Recent>>,
    callback: Option<(Vec<Kind>, Callback)>,
    /// The JSON of the output being sent (kept to reuse its storage).
    payload: Vec<u8>,
}

impl Emitter {
    fn emit(&mut self, output: Output) {
        let kind = output.kind();
        JobStatus::add(&self.status.emitted[kind.index()], 1);
        if kind == Kind::Late {
            JobStatus::add(&self.status.late, 1);
        }
        if let Some(topic) = &self.topics[kind.index()] {
            let mut payload = std::mem::take(&mut self.payload);
            payload.clear();
            output.write_json(&self.names, &mut payload);
            self.send(topic, output.symbol().as_bytes(), Some(&payload));
            self.payload = payload;
        }
        if let Some((kinds, callback)) = &mut self.callback {
            if kinds.contains(&kind) {
                if let Err(e) = callback(&output, &self.names) {
                    self.status
                        .error(format!("the {} callback failed: {e}", kind.name()));
                }
            }
        }
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(output);
    }

    /// Sends one record (`payload` `None`: a tombstone), waiting while librdkafka's queue
    /// is full.
    fn send(&self, topic: &str, key: &[u8], payload: Option<&[u8]>) {
        let mut record = BaseRecord::to(topic).key(key);
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        let sent = send_waiting(
            record,
            |r| self.producer.send(r).map_err(Box::new),
            || std::thread::sleep(Duration::from_millis(1)),
        );
        if let Err(e) = sent {
            self.producer
                .context()
                .failed
                .fetch_add(1, Ordering::Relaxed);
            self.status
                .error(format!("cannot produce to {topic:?}: {e}"));
        }
    }
}

/// A real-time analytics job: one consumer-group member.
pub struct Analytics {
    membership: Membership,
    work: Work,
}

/// Everything but the consumer, so messages borrowed from it can be processed.
struct Work {
    emitter: Emitter,
    kafka: KafkaConfig,
    config: AnalyticsConfig,
    states: HashMap<i32, PartitionState>,
    /// When each partition last delivered a message (for the idle timeout).
    last_seen: HashMap<i32, Instant>,
    /// Partitions that delivered a message since the last timer check.
    seen: HashSet<i32>,
    /// Partitions whose state changed since the last checkpoint.
    dirty: HashSet<i32>,
    /// Partitions whose latest checkpoint is in chunks: those go once a newer one is saved.
    chunked: HashMap<i32, Chunked>,
    last_checkpoint: Instant,
    /// Which partition each symbol was first seen on (a symbol on two partitions is reported).
    homes: HashMap<String, i32>,
    status: Arc<AnalyticsStatus>,
    timeout: Duration,
    /// With `exactly_once`: each checkpoint commits a transaction instead of offsets.
    transactions: Option<Transactions>,
    join: Option<join::Join>,
}

impl Analytics {
    /// Joins `config.group_id` on `config.topic` and creates the output and state topics if
    /// needed; fails within `connect_timeout` if Kafka cannot be reached, and at once if the
    /// input topic does not exist.
    pub fn new(
        kafka: &KafkaConfig,
        config: AnalyticsConfig,
        callback: Option<(Vec<Kind>, Callback)>,
        connect_timeout: Duration,
    ) -> Result<Self> {
        config.validate()?;
        let status = Arc::new(AnalyticsStatus::default());
        let transactional = config
            .exactly_once
            .then(|| transactions::producer_properties(&config.group_id, &config.topic));
        let mut defaults: Vec<(&str, &str)> = PRODUCER_DEFAULTS.to_vec();
        for (key, value) in transactional.iter().flatten() {
            defaults.retain(|(k, _)| k != key);
            defaults.push((key, value));
        }
        let producer_config = kafka.client_config(&defaults);
        let producer: ThreadedProducer<Deliveries> = producer_config
            .create_with_context(Deliveries {
                status: status.clone(),
                failed: AtomicU64::new(0),
            })
            .map_err(|e| kafka.creation_error(e))?;
        if config.exactly_once {
            // Before joining: the embedded broker is refused without a rebalance.
            transactions::refuse_embedded(kafka)?;
        }
        let membership = Membership::connect(
            kafka,
            &config.group_id,
            &config.topic,
            "stockstream-analytics",
            status.job.clone(),
            connect_timeout,
        )?;
        let mut wanted: Vec<(&str, bool)> = config
            .topics
            .iter()
            .flatten()
            .map(|t| (t.as_str(), false))
            .collect();
        wanted.push((&config.state_topic, true));
        create_topics(kafka, &wanted, connect_timeout)?;
        let transactions = config
            .exactly_once
            .then(|| Transactions::start(&producer, kafka, &config.state_topic, connect_timeout))
            .transpose()?;
        let emitter = Emitter {
            producer,
            topics: config.topics.clone(),
            names: config.spec.indicator_names(),
            status: status.clone(),
            recent: Arc::new(Mutex::new(Recent {
                keep: config.keep,
                ..Recent::default()
            })),
            callback,
            payload: Vec::new(),
        };
        let join = config
            .join
            .clone()
            .map(|j| join::Join::new(j, &config.topic));
        if let Some(join) = &join {
            join.check(kafka, connect_timeout)?;
        }
        status.set_state("ready");
        Ok(Analytics {
            membership,
            work: Work {
                emitter,
                kafka: kafka.clone(),
                config,
                states: HashMap::new(),
                last_seen: HashMap::new(),
                seen: HashSet::new(),
                dirty: HashSet::new(),
                chunked: HashMap::new(),
                last_checkpoint: Instant::now(),
                homes: HashMap::new(),
                status,
                timeout: connect_timeout,
                transactions,
                join,
            },
        })
    }

    pub fn status(&self) -> Arc<AnalyticsStatus> {
        self.work.status.clone()
    }

    /// The latest outputs, shareable with other threads.
    pub fn recent(&self) -> Arc<Mutex<Recent>> {
        self.work.emitter.recent.clone()
    }

    /// The names of the indicators computed, in output order.
    pub fn indicator_names(&self) -> &[String] {
        &self.work.emitter.names
    }

    /// Consumes until `limits` or `stop` says so, then checkpoints. `stop` is asked every
    /// ~100 ms. With `stop_at_end`, stops once every assigned partition is read to its end
    /// and its windows, closed by that end, are emitted.
    pub fn run(&mut self, limits: &RunLimits, stop: &mut dyn FnMut() -> bool) -> Result<()> {
        self.work.status.set_state("running");
        self.work.last_checkpoint = Instant::now();
        let result = self.work.start_join().and_then(|_| {
            self.membership.session(&mut self.work, |member, work| {
                kafka::run(member, work, limits, stop)?;
                work.checkpoint(member)?;
                work.measure_lag(member);
                Ok(())
            })
        });
        self.work.status.finished(&result);
        result
    }
}

impl Pipeline for Work {
    fn apply(&mut self, member: &GroupMember, changes: &[Change]) -> Result<()> {
        self.apply_rebalance(member, changes)
    }

    fn take(
        &mut self,
        _: &GroupMember,
        messages: &[Fetched<'_>],
        _: &mut dyn FnMut() -> bool,
    ) -> Result<Flow> {
        self.follow_join();
        for m in messages {
            self.take_one(m.partition(), m.offset(), m.payload());
        }
        JobStatus::add(&self.status.consumed, messages.len() as u64);
        Ok(Flow::Continue)
    }

    fn tick(&mut self, member: &GroupMember, _: &mut dyn FnMut() -> bool) -> Result<Flow> {
        self.flush_idle();
        if self.last_checkpoint.elapsed() >= self.config.checkpoint_interval {
            self.checkpoint(member)?;
        }
        Ok(Flow::Continue)
    }

    fn drained(&self) -> bool {
        self.states.values().all(|s| !s.holds_open_work())
    }

    /// At the end of the input no tick is late: every window closes now, without waiting
    /// `idle_timeout`.
    fn end(&mut self) {
        self.flush(&|_| true);
    }
}

impl Work {
    /// A join's table, restored from its checkpoint once per job, is read to its end
    /// before the ticks.
    fn start_join(&mut self) -> Result<()> {
        let Some(mut join) = self.join.take() else {
            return Ok(());
        };
        let started = self.restore_join(&mut join).and_then(|_| {
            let status = &self.status;
            join.catch_up(
                &self.kafka,
                &self.config.fields.time_format,
                self.timeout.max(Duration::from_secs(30)),
                &mut |why| status.reject(why),
            )
        });
        self.join = Some(join);
        started
    }

    fn restore_join(&self, join: &mut join::Join) -> Result<()> {
        if !join.wants_restore() {
            return Ok(());
        }
        let mut saved = self.read_state(&|key| key == join.state_key)?;
        if let Some(note) = join.restore(saved.remove(&join.state_key))? {
            self.status.note(note);
        }
        Ok(())
    }

    /// The join's table takes what arrived since, before a batch of ticks.
    fn follow_join(&mut self) {
        if let Some(join) = &mut self.join {
            let status = &self.status;
            if let Err(e) = join.follow(&self.config.fields.time_format, &mut |why| {
                status.reject(why)
            }) {
                status.error(e.to_string());
            }
        }
    }

    /// Lag as of the run's end: statistics arrive once a second, so after a short run their
    /// lag still describes its start. The partitions' end offsets they reported stand.
    fn measure_lag(&self, member: &GroupMember) {
        let ends = member.end_offsets();
        let lag = self
            .states
            .iter()
            .map(|(p, state)| {
                ends.get(p)
                    .map_or(0, |end| (end - state.next_offset).max(0))
            })
            .sum();
        self.status.lag.store(lag, Ordering::Relaxed);
    }

    /// Makes the outputs so far durable, saves the changed partitions' state, then commits
    /// the offsets that state covers.
    fn checkpoint(&mut self, member: &GroupMember) -> Result<()> {
        self.update_gauges();
        match self.transactions.clone() {
            Some(t) => {
                let committed = self
                    .save_state()
                    .and_then(|offsets| t.commit(&self.emitter.producer, member, &offsets));
                if let Err(e) = committed {
                    // What is held in memory went past the last commit: nothing more of
                    // it may be saved, and the run ends (its state dropped with it).
                    t.abort(&self.emitter.producer);
                    self.dirty.clear();
                    return Err(e);
                }
            }
            None => {
                let offsets = self.save_state()?;
                if let Err(e) = member.commit(&offsets) {
                    // The snapshot is saved; its offset wins over the committed one.
                    self.status.error(format!("commit failed: {e}"));
                }
            }
        }
        JobStatus::add(&self.status.checkpoints, 1);
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// One message: decoded, then handed to its partition's state.
    fn take_one(&mut self, partition: i32, offset: i64, payload: Option<&[u8]>) {
        self.seen.insert(partition);
        let state = self
            .states
            .entry(partition)
            .or_insert_with(|| self.config.spec.state(partition, offset));
        if offset < state.next_offset {
            // Already part of the restored state (read again after a crash before a commit).
            return;
        }
        self.dirty.insert(partition);
        match self
            .config
            .fields
            .decode(payload, offset, self.join.as_ref())
        {
            Err(why) => {
                state.next_offset = offset + 1;
                self.status.reject(format!(
                    "{}[{partition}]@{offset}: {why}",
                    self.config.topic
                ));
            }
            Ok(tick)
                if tick.time
                    > crate::record::time::now_micros().saturating_add(self.config.max_future) =>
            {
                state.next_offset = offset + 1;
                self.status.reject(format!(
                    "{}[{partition}]@{offset}: event time {} is more than {} s ahead of the \
                     clock (max_future)",
                    self.config.topic,
                    output::iso(tick.time),
                    self.config.max_future / 1_000_000
                ));
            }
            Ok(tick) => {
                JobStatus::add(&self.status.ticks, 1);
                if !state.has_symbol(&tick.symbol) {
                    let home = *self.homes.entry(tick.symbol.clone()).or_insert(partition);
                    if home != partition {
                        self.status.error(format!(
                            "symbol {:?} arrives on partitions {home} and {partition}: state is \
                             kept per partition, so produce with the symbol as the key",
                            tick.symbol
                        ));
                    }
                }
                let emitter = &mut self.emitter;
                self.config.spec.add(state, tick, &mut |o| emitter.emit(o));
            }
        }
    }

    /// Partitions that went quiet have their ticks released and their windows closed.
    fn flush_idle(&mut self) {
        let now = Instant::now();
        for p in self.seen.drain() {
            self.last_seen.insert(p, now);
        }
        let idle = self.config.idle_timeout;
        let last_seen = std::mem::take(&mut self.last_seen);
        self.flush(&|p| last_seen.get(&p).is_none_or(|t| now - *t >= idle));
        self.last_seen = last_seen;
    }

    /// The partitions `done` names have their ticks released and their windows closed.
    fn flush(&mut self, done: &dyn Fn(i32) -> bool) {
        for (p, state) in self.states.iter_mut() {
            if done(*p) && state.holds_open_work() {
                let emitter = &mut self.emitter;
                self.config.spec.flush(state, &mut |o| emitter.emit(o));
                self.dirty.insert(*p);
            }
        }
        self.update_gauges();
    }

    fn update_gauges(&self) {
        let mut watermarks: Vec<(i32, i64)> = self
            .states
            .iter()
            .filter_map(|(p, s)| s.watermark().map(|wm| (*p, wm)))
            .collect();
        watermarks.sort_unstable();
        let buffered = self.states.values().map(|s| s.buffered() as u64).sum();
        let open = self.states.values().map(|s| s.open_windows() as u64).sum();
        self.status.buffered.store(buffered, Ordering::Relaxed);
        self.status.open_windows.store(open, Ordering::Relaxed);
        self.status.set_watermarks(watermarks);
    }

    /// Revoked partitions are checkpointed (the rebalance waits for it: see
    /// [`GroupMember::settle`]) and dropped; assigned partitions' state is restored from
    /// the last checkpoint.
    fn apply_rebalance(&mut self, member: &GroupMember, changes: &[Change]) -> Result<()> {
        let mut assigned = Vec::new();
        for change in changes {
            match change {
                Change::Revoked { partitions, lost } => {
                    // Handed over cleanly: save what changed since the last checkpoint, so
                    // the next owner starts from here instead of emitting it again. (Not
                    // when lost: the next owner may have moved on already.)
                    if !lost && partitions.iter().any(|p| self.dirty.contains(p)) {
                        if let Err(e) = self.checkpoint(member) {
                            if self.transactions.is_some() {
                                return Err(e);
                            }
                            self.status.error(format!(
                                "saving the state of revoked partitions {partitions:?}: {e}"
                            ));
                        }
                    }
                    for p in partitions {
                        self.states.remove(p);
                        self.dirty.remove(p);
                        self.last_seen.remove(p);
                        self.chunked.remove(p);
                        assigned.retain(|a| a != p);
                    }
                }
                Change::Assigned(partitions) => assigned.extend(partitions),
            }
        }
        if assigned.is_empty() {
            return Ok(());
        }
        let mut snapshots = self.read_snapshots()?;
        let now = Instant::now();
        for p in assigned {
            if let Some((mut state, chunked)) = snapshots.remove(&p) {
                if let Some(chunked) = chunked {
                    self.chunked.insert(p, chunked);
                }
                if let Some(change) = self.config.spec.adopt(&mut state) {
                    self.status.note(change);
                }
                // The snapshot says where its state ends, whatever the group committed (a
                // new group, expired offsets): read on from there.
                member.start_at(p, Some(state.next_offset))?;
                self.states.insert(p, state);
                self.last_seen.insert(p, now);
            }
        }
        Ok(())
    }

    fn snapshot_key(&self, partition: i32) -> String {
        format!("{}:{partition}", self.config.topic)
    }

    /// The latest checkpointed state of each of this topic's partitions.
    fn read_snapshots(&self) -> Result<HashMap<i32, (PartitionState, Option<Chunked>)>> {
        let prefix = format!("{}:", self.config.topic);
        let partition_of = |key: &str| key.strip_prefix(&prefix).and_then(|p| p.parse().ok());
        let saved = self.read_state(&|key| partition_of(key).is_some())?;
        let mut latest = HashMap::new();
        for (key, (value, chunked)) in saved {
            let Some(partition) = partition_of(&key) else {
                continue;
            };
            let state: PartitionState = serde_json::from_str(&value).map_err(|e| {
                Error::schema(format!(
                    "the checkpoint of {key:?} in topic {:?} is damaged: {e}",
                    self.config.state_topic
                ))
            })?;
            latest.insert(partition, (state, chunked));
        }
        Ok(latest)
    }

    /// The latest checkpoints of the keys `keys` accepts, with how each was chunked.
    fn read_state(
        &self,
        keys: &dyn Fn(&str) -> bool,
    ) -> Result<HashMap<String, (String, Option<Chunked>)>> {
        let frame = crate::kafka::read_topic(
            &self.kafka,
            &self.config.state_topic,
            &crate::kafka::Start::Beginning,
            None,
            self.timeout.max(Duration::from_secs(30)),
        )?;
        let text = |name: &str| -> Result<Vec<Option<String>>> {
            let column = frame
                .column(name)
                .and_then(|c| c.str().cloned())
                .map_err(|e| Error::kafka(e.to_string()))?;
            Ok(column.iter().map(|v| v.map(str::to_string)).collect())
        };
        let (names, values) = (text("key")?, text("value")?);
        let messages = names
            .iter()
            .zip(&values)
            .filter_map(|(k, v)| Some((k.as_deref()?, v.as_deref())));
        snapshot::load(messages, keys, &self.config.state_topic)
    }

    /// Makes the outputs so far durable and saves the changed partitions' state; returns
    /// the offsets to commit.
    fn save_state(&mut self) -> Result<Vec<(i32, i64)>> {
        let mut offsets = Vec::new();
        let generation = crate::record::time::now_micros() as u64;
        let join = match self.join.as_mut() {
            Some(join) => join.checkpoint(generation)?,
            None => None,
        };
        if self.dirty.is_empty() && join.is_none() {
            return Ok(offsets);
        }
        let flush_timeout = Duration::from_secs(130);
        let producer = &self.emitter.producer;
        let mut partitions: Vec<i32> = self.dirty.iter().copied().collect();
        partitions.sort_unstable();
        let (mut chunks, mut headers, mut stale) = (Vec::new(), Vec::new(), Vec::new());
        if let Some(join) = join {
            chunks.extend(join.chunks);
            headers.push(join.header);
            stale.extend(join.stale);
        }
        for &p in &partitions {
            let Some(state) = self.states.get(&p) else {
                continue;
            };
            let body = serde_json::to_vec(state)
                .map_err(|e| Error::io(format!("cannot encode the state of partition {p}: {e}")))?;
            let key = self.snapshot_key(p);
            let saved = snapshot::save(&key, body, generation);
            chunks.extend(saved.chunks);
            headers.push(saved.header);
            let previous = match saved.chunked {
                Some(now) => self.chunked.insert(p, now),
                None => self.chunked.remove(&p),
            };
            if let Some(old) = previous {
                stale.extend(snapshot::forget(&key, old));
            }
            offsets.push((p, state.next_offset));
        }
        // Chunks are acknowledged before the headers that point to them are sent, and old
        // chunks are deleted only after: a crash or a failed delivery at any point leaves
        // one whole checkpoint.
        for (records, what) in [
            (Vec::new(), "the outputs"),
            (chunks, "the checkpoint's chunks"),
            (headers, "the checkpoint"),
            (stale, "the deletion of an older checkpoint"),
        ] {
            for (k, v) in &records {
                self.emitter
                    .send(&self.config.state_topic, k.as_bytes(), v.as_deref());
            }
            producer
                .flush(flush_timeout)
                .map_err(|e| Error::kafka(format!("{what} could not be saved: {e}")))?;
            let failed = producer.context().failed.swap(0, Ordering::Relaxed);
            if failed > 0 {
                // Nothing is committed, so a restart replays from the previous checkpoint.
                return Err(Error::delivery(format!(
                    "{failed} messages of {what} were not delivered; the last error is in \
                     status()"
                )));
            }
        }
        self.dirty.clear();
        if let Some(join) = &mut self.join {
            join.saved();
        }
        Ok(offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::output::{iso, Alert, Bar};
    use super::spec::parse_duration;
    use super::*;
    use crate::testing::{self, Sent};

    fn daily() -> Spec {
        let day = parse_duration("1d").unwrap();
        options::spec(Some(options::Window::Length(day)), None, &[], &[], 0, &[]).unwrap()
    }

    #[test]
    fn an_output_topic_may_not_be_the_input_or_the_state_topic() {
        let mut config = AnalyticsConfig::new("ticks", "g", daily());
        config.topics[Kind::Window.index()] = Some("bars".into());
        assert!(config.validate().is_ok());
        for clash in ["ticks", "g-state"] {
            config.topics[Kind::Alert.index()] = Some(clash.into());
            let e = config.validate().unwrap_err();
            assert!(
                e.to_string().contains("also the input or state topic"),
                "{e}"
            );
        }
        config.topics[Kind::Alert.index()] = None;
        config.checkpoint_interval = Duration::ZERO;
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("positive"));
        config.checkpoint_interval = Duration::from_secs(1);
        config.state_topic = " ".into();
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("state_topic is empty"));
    }

    fn bar(symbol: &str, start: i64) -> Output {
        Output::Window(Bar {
            symbol: symbol.into(),
            start,
            end: start + 1,
            open: 1.0,
            high: 1.0,
            low: 1.0,
            close: 1.0,
            volume: 0.0,
            vwap: None,
            count: 1,
            change_pct: 0.0,
        })
    }

    #[test]
    fn recent_outputs_are_bounded_per_kind_and_keep_the_latest() {
        let mut recent = Recent {
            keep: 2,
            ..Recent::default()
        };
        for start in 0..3 {
            recent.push(bar("NYA", start));
        }
        recent.push(Output::Alert(Alert {
            symbol: "NYA".into(),
            rule: "price crosses 2".into(),
            time: 5,
            value: 2.5,
            direction: "above",
        }));
        let starts: Vec<i64> = recent
            .of(Kind::Window)
            .iter()
            .map(|o| match o {
                Output::Window(b) => b.start,
                other => panic!("{other:?}"),
            })
            .collect();
        // Three windows in a queue of two: the oldest went, and the alert did not push one out.
        assert_eq!(starts, [1, 2]);
        assert_eq!(recent.of(Kind::Alert).len(), 1);
        assert!(recent.of(Kind::Late).is_empty());
        let mut none = Recent::default();
        none.push(bar("NYA", 0));
        assert!(none.of(Kind::Window).is_empty());
        // What a run collects: the outputs pushed after its marks, and how many went.
        let marks = recent.marks();
        assert_eq!(recent.since(Kind::Window, &marks), (Vec::new(), 0));
        for start in 3..6 {
            recent.push(bar("NYA", start));
        }
        let (windows, gone) = recent.since(Kind::Window, &marks);
        assert_eq!((windows.len(), gone), (2, 1));
        assert_eq!(recent.since(Kind::Alert, &marks).0.len(), 0);
    }

    fn produce(kafka: &KafkaConfig, ticks: &[(&str, f64)]) {
        let sent = ticks.iter().map(|(date, close)| Sent {
            key: Some("NYA".into()),
            ..Sent::value(format!(
                r#"{{"Index":"NYA","Date":"{date}","Close":{close},"Volume":1}}"#
            ))
        });
        testing::send(kafka, "ticks", sent);
    }

    fn job(kafka: &KafkaConfig, group: &str, state_topic: &str, idle: Duration) -> Analytics {
        let mut config = AnalyticsConfig::new("ticks", group, daily());
        config.state_topic = state_topic.into();
        config.idle_timeout = idle;
        Analytics::new(kafka, config, None, Duration::from_secs(10)).unwrap()
    }

    fn run(job: &mut Analytics, limit: Option<u64>) {
        let limits = RunLimits {
            limit,
            duration: Some(Duration::from_secs(30)),
            stop_at_end: limit.is_none(),
        };
        job.run(&limits, &mut || false).unwrap();
    }

    /// The closed windows: day, open, close, ticks.
    fn windows(job: &Analytics) -> Vec<(String, f64, f64, u64)> {
        let recent = job.recent();
        let recent = recent.lock().unwrap();
        recent
            .of(Kind::Window)
            .into_iter()
            .filter_map(|o| match o {
                Output::Window(b) => {
                    Some((iso(b.start)[..10].to_string(), b.open, b.close, b.count))
                }
                _ => None,
            })
            .collect()
    }

    fn day(date: &str, open: f64, close: f64, count: u64) -> (String, f64, f64, u64) {
        (date.to_string(), open, close, count)
    }

    #[test]
    fn a_window_open_at_a_checkpoint_closes_after_a_restart_with_the_ticks_of_both_runs() {
        let (_embedded, kafka) = testing::broker("ticks", 1);
        produce(
            &kafka,
            &[
                ("2021-01-04", 1.0),
                ("2021-01-04", 2.0),
                ("2021-01-05", 3.0),
            ],
        );
        // Long idle timeout: nothing may close the 5th's window before the checkpoint.
        let mut first = job(&kafka, "first", "state", Duration::from_secs(60));
        run(&mut first, Some(3));
        assert_eq!(windows(&first), [day("2021-01-04", 1.0, 2.0, 2)]);
        assert!(first.status().checkpoints.load(Ordering::Relaxed) >= 1);
        drop(first);
        produce(&kafka, &[("2021-01-05", 4.0), ("2021-01-06", 5.0)]);
        // Another group has no committed offsets: only the snapshot says where to go on.
        let mut second = job(&kafka, "second", "state", Duration::from_millis(200));
        run(&mut second, None);
        assert_eq!(
            windows(&second),
            [
                day("2021-01-05", 3.0, 4.0, 2),
                day("2021-01-06", 5.0, 5.0, 1)
            ]
        );
    }

    /// The prices of the indicator outputs so far, with the joined rate.
    fn joined_prices(job: &Analytics) -> Vec<(String, f64, Option<f64>)> {
        let recent = job.recent();
        let recent = recent.lock().unwrap();
        recent
            .of(Kind::Indicators)
            .into_iter()
            .filter_map(|o| match o {
                Output::Indicators(i) => {
                    Some((iso(i.time)[..10].to_string(), i.price, i.values[0]))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ticks_take_the_rate_as_of_their_date_and_a_restart_reads_the_table_from_its_checkpoint() {
        let (embedded, kafka) = testing::broker("ticks", 1);
        embedded.create_topic("fx", Some(1)).unwrap();
        let fx = |records: &[&str]| {
            testing::send(&kafka, "fx", records.iter().map(|r| Sent::value(*r)));
        };
        fx(&[
            r#"{"currency":"EUR","Date":"2021-01-04","rate":1.25}"#,
            "not a rate",
            r#"{"currency":"EUR","Date":"2021-01-06","rate":1.5}"#,
        ]);
        let tick = |date: &str, close: f64| Sent {
            key: Some("GDAXI".into()),
            ..Sent::value(format!(
                r#"{{"Index":"GDAXI","Currency":"EUR","Date":"{date}","Close":{close},"Volume":1}}"#
            ))
        };
        testing::send(
            &kafka,
            "ticks",
            [
                tick("2021-01-03", 9.0),
                tick("2021-01-04", 10.0),
                tick("2021-01-05", 20.0),
            ],
        );
        let job = |group: &str| {
            let spec = options::spec(None, None, &[], &[], 0, &["rate".into()]).unwrap();
            let mut config = AnalyticsConfig::new("ticks", group, spec)
                .with_join(
                    Some(join::AsOf {
                        topic: "fx".into(),
                        by: ("Currency".into(), "currency".into()),
                        on: "Date".into(),
                        tolerance: Some(parse_duration("3d").unwrap()),
                        fields: vec!["rate".into()],
                    }),
                    Some("Close * rate"),
                )
                .unwrap();
            config.state_topic = "state".into();
            config.idle_timeout = Duration::from_millis(200);
            Analytics::new(&kafka, config, None, Duration::from_secs(10)).unwrap()
        };
        let mut first = job("first");
        run(&mut first, None);
        assert_eq!(
            joined_prices(&first),
            [
                ("2021-01-04".into(), 12.5, Some(1.25)),
                ("2021-01-05".into(), 25.0, Some(1.25))
            ]
        );
        let status = first.status();
        // The tick before the first rate, and the record that is no rate.
        assert_eq!(status.rejected.load(Ordering::Relaxed), 2);
        drop(first);
        testing::send(&kafka, "ticks", [tick("2021-01-07", 2.0)]);
        // A new group starts from the checkpoint: the table too, so the record that is no
        // rate is not read (nor rejected) again.
        let mut second = job("second");
        run(&mut second, None);
        assert_eq!(
            joined_prices(&second),
            [("2021-01-07".into(), 3.0, Some(1.5))]
        );
        assert_eq!(second.status().rejected.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_tick_dated_far_ahead_of_the_clock_is_rejected_and_moves_no_watermark() {
        let (_embedded, kafka) = testing::broker("ticks", 1);
        produce(
            &kafka,
            &[
                ("2021-01-04", 1.0),
                ("2999-01-01", 9.0),
                ("2021-01-05", 2.0),
            ],
        );
        let mut job = job(&kafka, "g", "g-state", Duration::from_millis(200));
        run(&mut job, None);
        assert_eq!(
            windows(&job),
            [
                day("2021-01-04", 1.0, 1.0, 1),
                day("2021-01-05", 2.0, 2.0, 1)
            ]
        );
        let status = job.status();
        assert_eq!(status.rejected.load(Ordering::Relaxed), 1);
        assert_eq!(status.late.load(Ordering::Relaxed), 0);
        let why = status.detail().last_rejected.unwrap();
        assert!(
            why.contains("ticks[0]@1") && why.contains("max_future"),
            "{why}"
        );
    }
}
