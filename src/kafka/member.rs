//! A consumer-group member as every pipeline uses one: it joins a group on one topic,
//! reports rebalances as changes to apply before any later message, hands out messages in
//! batches, commits offsets the pipeline chooses, and follows lag and end offsets from
//! librdkafka's statistics.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, RebalanceProtocol,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Message as _, Offset, TopicPartitionList};

use super::queue::{FetchQueue, Fetched};
use super::status::JobStatus;
use crate::config::KafkaConfig;
use crate::error::{Error, Result};

/// Offsets are committed by the pipeline itself, after its output is durable.
const DEFAULTS: [(&str, &str); 8] = [
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("enable.partition.eof", "true"),
    ("statistics.interval.ms", "1000"),
    // librdkafka prefetches up to this much; it is most of a member's memory besides buffers.
    ("queued.max.messages.kbytes", "32768"),
    // Once the prefetch queue is full, fetching pauses this long (1 s by default): a
    // pipeline that drains the queue in a fraction of that would sit idle for the rest.
    ("fetch.queue.backoff.ms", "10"),
    // How long a broker holds a fetch that finds nothing new: it is also how long reaching
    // the end of a partition takes to notice (500 ms by default).
    ("fetch.wait.max.ms", "100"),
];

/// Group timings on the embedded broker. Its coordinator, once a member leaves (or stops
/// heartbeating), holds the group in a rebalance for the session timeout less a second,
/// even with no member left to wait for: with Kafka's 45 s default a re-run notebook cell
/// would wait that long for its partitions. Real clusters keep librdkafka's defaults.
const EMBEDDED_DEFAULTS: [(&str, &str); 2] = [
    ("session.timeout.ms", "4000"),
    ("heartbeat.interval.ms", "500"),
];

/// A rebalance, to apply before any message polled after it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Assigned(Vec<i32>),
    /// `lost`: taken away without a clean revoke (session timeout); the new owner may
    /// already be reading them.
    Revoked {
        partitions: Vec<i32>,
        lost: bool,
    },
}

/// What one `poll` brought.
pub struct Polled<'a> {
    /// Rebalances since the last poll, oldest first: apply them before `messages`.
    pub changes: Vec<Change>,
    /// Messages in fetch order (each partition's in offset order), of assigned partitions.
    pub messages: Vec<Fetched<'a>>,
}

/// Rebalances and statistics, handed from librdkafka's callbacks (run inside `poll`).
struct Context {
    topic: String,
    status: Arc<JobStatus>,
    shared: Mutex<Shared>,
}

#[derive(Default)]
struct Shared {
    changes: Vec<Change>,
    /// Each partition's end offset, from the latest statistics.
    ends: HashMap<i32, i64>,
    /// The offsets this member committed: a statistics report may still carry older ones.
    committed: HashMap<i32, i64>,
    /// The queue partitions are routed to; `None` once the member is being dropped.
    queue: Option<Arc<FetchQueue>>,
    /// A clean revoke the pipeline has not applied yet (see [`GroupMember::settle`]).
    pending: Option<TopicPartitionList>,
}

impl Context {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for Context {
    /// Lag as a pipeline means it: records not yet processed and committed. (librdkafka's
    /// own `consumer_lag` counts from the fetch position, which runs ahead of commits.)
    fn stats(&self, stats: Statistics) {
        let mut shared = self.shared();
        if let Some(lag) = committed_lag(&stats, &self.topic, &shared.committed) {
            self.status.lag.store(lag, Ordering::Relaxed);
        }
        if let Some(topic) = stats.topics.get(&self.topic) {
            for p in topic.partitions.values().filter(|p| p.partition >= 0) {
                shared.ends.insert(p.partition, end_offset(p));
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !is_partition_eof(&error) {
            self.status.error(format!("Kafka: {error}: {reason}"));
        }
    }
}

impl ConsumerContext for Context {
    /// Assignments take effect at once. A clean revoke is only recorded: librdkafka
    /// completes it when [`GroupMember::settle`] unassigns, after the pipeline has applied
    /// it (an analytics job saves the partitions' state then). Until this member rejoins,
    /// no other member can be given the partitions, so their next owner finds that state.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut shared = self.shared();
                if let Some(queue) = &shared.queue {
                    for e in tpl.elements() {
                        if !queue.route(e.topic(), e.partition()) {
                            self.status.error(format!(
                                "cannot route {}[{}] to the batch queue",
                                e.topic(),
                                e.partition()
                            ));
                        }
                    }
                }
                shared.changes.push(Change::Assigned(partitions));
                drop(shared);
                self.complete(consumer, tpl, true);
                self.status.set_assigned(held(consumer, &[]));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                let mut shared = self.shared();
                shared.changes.push(Change::Revoked {
                    partitions: partitions.clone(),
                    lost,
                });
                // Lost partitions may have a new owner already, and a closing member has
                // no pipeline left to apply the revoke: nothing to wait for.
                let settle_now = lost || shared.queue.is_none();
                if !settle_now {
                    shared.pending = Some(tpl.clone());
                }
                drop(shared);
                if settle_now {
                    self.complete(consumer, tpl, false);
                }
                // An incremental revoke (cooperative or KIP-848 groups) leaves the rest.
                self.status.set_assigned(held(consumer, &partitions));
            }
            _ => {
                self.status
                    .error(format!("rebalance failed: {}", RDKafkaErrorCode::from(err)));
                if let Err(e) = consumer.unassign() {
                    self.status.error(format!("cannot unassign: {e}"));
                }
            }
        }
    }
}

impl Context {
    /// Hands an assignment (`assign`) or revoke to librdkafka, by the group's protocol.
    fn complete(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList, assign: bool) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let done = match (assign, cooperative) {
            (true, true) => consumer.incremental_assign(tpl),
            (true, false) => consumer.assign(tpl),
            (false, true) => consumer.incremental_unassign(tpl),
            (false, false) => consumer.unassign(),
        };
        if let Err(e) = done {
            let what = if assign { "assign" } else { "unassign" };
            self.status.error(format!("cannot {what} partitions: {e}"));
        }
    }
}

/// One member of a consumer group on one topic.
pub struct GroupMember {
    // Dropped before the consumer: the queue belongs to its client.
    queue: Arc<FetchQueue>,
    consumer: BaseConsumer<Context>,
    topic: String,
    /// Partitions read to their end (until their next message).
    at_end: RefCell<HashSet<i32>>,
    /// Where a partition the group has no offset for starts (`auto.offset.reset`).
    reset: Offset,
}

impl GroupMember {
    /// A consumer of `group_id` on `topic` (as `client_id`, with `kafka`'s properties over
    /// the defaults) that has not joined the group yet; fails within `timeout` if Kafka
    /// cannot be reached, and at once if the topic does not exist.
    pub fn connect(
        kafka: &KafkaConfig,
        group_id: &str,
        topic: &str,
        client_id: &str,
        status: Arc<JobStatus>,
        timeout: Duration,
    ) -> Result<Self> {
        let mut defaults = DEFAULTS.to_vec();
        defaults.push(("client.id", client_id));
        // The consumer group protocol (KIP-848) takes its timings from the broker and
        // refuses them on the client.
        let broker_timed = kafka
            .properties
            .iter()
            .any(|(k, v)| k == "group.protocol" && v.eq_ignore_ascii_case("consumer"));
        if crate::embedded::is_embedded(&kafka.bootstrap_servers) && !broker_timed {
            defaults.extend(EMBEDDED_DEFAULTS);
        }
        let mut client = kafka.client_config(&defaults);
        client.set("group.id", group_id);
        let reset = match client.get("auto.offset.reset") {
            Some("latest" | "largest" | "end") => Offset::End,
            _ => Offset::Beginning,
        };
        let context = Context {
            topic: topic.to_string(),
            status,
            shared: Mutex::new(Shared::default()),
        };
        let consumer: BaseConsumer<Context> = client
            .create_with_context(context)
            .map_err(|e| kafka.creation_error(e))?;
        let queue = FetchQueue::new(consumer.client().native_ptr())
            .map(Arc::new)
            .ok_or_else(|| Error::kafka("cannot create a consumer queue"))?;
        consumer.context().shared().queue = Some(queue.clone());
        super::require_topic(consumer.client(), kafka, topic, timeout)?;
        Ok(GroupMember {
            queue,
            consumer,
            topic: topic.to_string(),
            at_end: RefCell::new(HashSet::new()),
            reset,
        })
    }

    /// Joins the group: partitions are assigned from the next poll on.
    pub fn subscribe(&self) -> Result<()> {
        let topic = &self.topic;
        self.consumer
            .subscribe(&[topic])
            .map_err(|e| Error::kafka(format!("cannot subscribe to {topic:?}: {e}")))
    }

    /// The topic's partition count (1 if the broker does not say within `timeout`).
    pub fn partition_count(&self, timeout: Duration) -> usize {
        self.consumer
            .fetch_metadata(Some(&self.topic), timeout)
            .map(|m| super::partition_ids(&m).len())
            .unwrap_or(1)
    }

    /// Serves rebalances and statistics, then takes up to `max` messages, waiting at most
    /// `timeout` for the first. End-of-partition notices are recorded (see
    /// [`Self::read_to_end`]); fetch errors go to the status.
    pub fn poll(&self, max: usize, timeout: Duration) -> Polled<'_> {
        let changes = self.rebalances();
        let mut fetched = Vec::new();
        // After a rebalance, hand the changes over at once: until a revoke is settled,
        // its partitions' messages may still arrive, so none are taken with it.
        if changes.is_empty() {
            self.queue.take(max, timeout, &mut fetched);
        }
        let mut messages = Vec::with_capacity(fetched.len());
        let mut at_end = self.at_end.borrow_mut();
        for m in fetched {
            match m.error() {
                None => {
                    at_end.remove(&m.partition());
                    messages.push(m);
                }
                Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR__PARTITION_EOF) => {
                    at_end.insert(m.partition());
                }
                Some(code) => self.consumer.context().status.error(format!(
                    "Kafka: fetching {}[{}]: {code:?}: {}",
                    self.topic,
                    m.partition(),
                    m.error_text()
                )),
            }
        }
        Polled { changes, messages }
    }

    /// Serves rebalances (and keeps the membership alive: this counts as polling for
    /// `max.poll.interval.ms`) without taking messages. A pipeline busy for long between
    /// polls, e.g. retrying a write, calls this to learn what it no longer owns.
    pub fn rebalances(&self) -> Vec<Change> {
        // Whatever an earlier call returned has been applied by now.
        self.settle();
        let mut stray: HashMap<i32, i64> = HashMap::new();
        // Rebalance callbacks run in here; a message can only show up on this queue if it
        // was fetched before its partition was routed (it is then older than the rest).
        // A poll serves one event and says nothing after a rebalance or statistics: the
        // queue is drained by its length, or a member that polls seldom (retrying a write
        // through an outage) falls behind its statistics and never sees its revoke. New
        // events keep coming, so no more are served than were waiting, plus a margin.
        let mut budget = self.queue.waiting_events() + 16;
        while budget > 0 {
            budget -= 1;
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    let first = stray.entry(m.partition()).or_insert(m.offset());
                    *first = (*first).min(m.offset());
                }
                Some(Err(e)) => self.notice(&e),
                None if self.queue.waiting_events() == 0 => break,
                None => {}
            }
        }
        for (partition, offset) in stray {
            // Read it again from the batch queue, in order with what follows.
            let _ = self.consumer.seek(
                &self.topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(5),
            );
        }
        let changes = std::mem::take(&mut self.consumer.context().shared().changes);
        if !changes.is_empty() {
            let mut at_end = self.at_end.borrow_mut();
            for change in &changes {
                if let Change::Revoked { partitions, .. } = change {
                    for p in partitions {
                        at_end.remove(p);
                    }
                }
            }
        }
        changes
    }

    /// Completes a revoke once the pipeline has applied it (saved or dropped what it held
    /// of the partitions), letting the group's rebalance go on.
    pub fn settle(&self) {
        let context = self.consumer.context();
        let pending = context.shared().pending.take();
        if let Some(tpl) = pending {
            context.complete(&self.consumer, &tpl, false);
        }
    }

    fn notice(&self, error: &KafkaError) {
        match error {
            KafkaError::PartitionEOF(p) => {
                self.at_end.borrow_mut().insert(*p);
            }
            e => self.consumer.context().status.error(format!("Kafka: {e}")),
        }
    }

    /// Whether every assigned partition has been read to its end.
    pub fn read_to_end(&self) -> bool {
        let parts = self.assigned();
        let at_end = self.at_end.borrow();
        !parts.is_empty() && parts.iter().all(|p| at_end.contains(p))
    }

    /// Commits `offsets` (partition, next offset to read) and waits for the broker's answer.
    pub fn commit(&self, offsets: &[(i32, i64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        self.consumer
            .commit(&self.positions(offsets)?, CommitMode::Sync)
            .map_err(|e| Error::kafka(e.to_string()))?;
        let committed = &mut self.consumer.context().shared().committed;
        for &(partition, offset) in offsets {
            let known = committed.entry(partition).or_insert(offset);
            *known = (*known).max(offset);
        }
        Ok(())
    }

    /// `offsets` (partition, next offset to read) of this member's topic, as Kafka lists them.
    pub fn positions(&self, offsets: &[(i32, i64)]) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for &(partition, offset) in offsets {
            tpl.add_partition_offset(&self.topic, partition, Offset::Offset(offset))
                .map_err(|e| Error::kafka(format!("bad offset: {e}")))?;
        }
        Ok(tpl)
    }

    /// The group's generation and this member's id, which fence a transactional producer
    /// whose member was replaced.
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    /// Reads `partition` again from `offset`. Messages fetched from the old position and
    /// not yet polled are dropped; those of a batch already handed out are not.
    pub fn seek(&self, partition: i32, offset: i64) -> Result<()> {
        self.at_end.borrow_mut().remove(&partition);
        self.consumer
            .seek(
                &self.topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(5),
            )
            .map_err(|e| Error::kafka(e.to_string()))
    }

    /// Reads `partition` from `offset`, or, with `None`, from where a group without a
    /// committed offset starts (`auto.offset.reset`).
    pub fn start_at(&self, partition: i32, offset: Option<i64>) -> Result<()> {
        let at = offset.map_or(self.reset, Offset::Offset);
        self.at_end.borrow_mut().remove(&partition);
        self.consumer
            .seek(&self.topic, partition, at, Duration::from_secs(5))
            .map_err(|e| Error::kafka(format!("cannot seek {}[{partition}]: {e}", self.topic)))
    }

    /// The group's committed offset of each of `partitions` (`None`: it has none, or it
    /// expired), asked of the group's coordinator.
    pub fn committed(
        &self,
        partitions: &[i32],
        timeout: Duration,
    ) -> Result<HashMap<i32, Option<i64>>> {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed = self.consumer.committed_offsets(tpl, timeout).map_err(|e| {
            Error::kafka(format!(
                "cannot read the committed offsets of {}: {e}",
                self.topic
            ))
        })?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(next) => (e.partition(), Some(next)),
                _ => (e.partition(), None),
            })
            .collect())
    }

    /// The first offset `partition` holds and the offset after its last (stable) record.
    pub fn watermarks(&self, partition: i32, timeout: Duration) -> Result<(i64, i64)> {
        self.consumer
            .fetch_watermarks(&self.topic, partition, timeout)
            .map_err(|e| {
                Error::kafka(format!(
                    "cannot read the offsets of {}[{partition}]: {e}",
                    self.topic
                ))
            })
    }

    /// The topic this member reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Each partition's end offset, as of the latest statistics.
    pub fn end_offsets(&self) -> HashMap<i32, i64> {
        self.consumer.context().shared().ends.clone()
    }

    /// Partitions of `partitions` whose committed offset the topic's retention has passed:
    /// `(partition, committed, log start)`. Reading them resumes at the log start, so the
    /// records between were never read by this group. (Asks the broker; `timeout` each.)
    pub fn retention_gaps(&self, partitions: &[i32], timeout: Duration) -> Vec<(i32, i64, i64)> {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(&self.topic, p);
        }
        let Ok(committed) = self.consumer.committed_offsets(tpl, timeout) else {
            return Vec::new();
        };
        committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(next) => {
                    let (low, _) = self
                        .consumer
                        .fetch_watermarks(&self.topic, e.partition(), timeout)
                        .ok()?;
                    (next < low).then_some((e.partition(), next, low))
                }
                _ => None,
            })
            .collect()
    }

    /// The partitions assigned now.
    pub(super) fn assigned(&self) -> Vec<i32> {
        self.consumer
            .assignment()
            .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default()
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        // Closing the consumer serves a last revoke; nothing may be routed any more, and
        // that revoke is completed at once.
        self.consumer.context().shared().queue = None;
        self.settle();
    }
}

/// The partitions `consumer` is assigned now, less `leaving`.
fn held<C: ConsumerContext>(consumer: &BaseConsumer<C>, leaving: &[i32]) -> Vec<i32> {
    consumer
        .assignment()
        .map(|tpl| {
            tpl.elements()
                .iter()
                .map(|e| e.partition())
                .filter(|p| !leaving.contains(p))
                .collect()
        })
        .unwrap_or_default()
}

/// Records in `topic`'s fetched partitions beyond their committed offsets, from a
/// statistics report.
fn committed_lag(stats: &Statistics, topic: &str, known: &HashMap<i32, i64>) -> Option<i64> {
    let topic = stats.topics.get(topic)?;
    Some(
        topic
            .partitions
            .values()
            .filter(|p| p.partition >= 0 && p.fetch_state == "active")
            .map(|p| {
                let reported = match p.committed_offset >= 0 {
                    true => p.committed_offset,
                    false => p.lo_offset,
                };
                let start = reported.max(known.get(&p.partition).copied().unwrap_or(0));
                (end_offset(p) - start.max(0)).max(0)
            })
            .sum(),
    )
}

/// A partition's end offset in a statistics report: the last stable offset when known
/// (it excludes open transactions), else the high watermark.
fn end_offset(p: &rdkafka::statistics::Partition) -> i64 {
    if p.ls_offset >= 0 {
        p.ls_offset
    } else {
        p.hi_offset
    }
}

/// Reaching the end of a partition is news, not an error.
fn is_partition_eof(error: &KafkaError) -> bool {
    matches!(error, KafkaError::PartitionEOF(_))
        || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
}

#[cfg(test)]
pub(super) mod tests {

    use super::*;
    use crate::testing::{self, Sent};

    #[test]
    fn hands_out_every_message_in_batches_in_offset_order_after_the_assignment() {
        let (_kafka, config) = testing::broker("t", 2);
        testing::send(
            &config,
            "t",
            (0..5000).map(|i| Sent {
                key: Some(format!("k{}", i % 7)),
                ..Sent::value(i.to_string())
            }),
        );

        let seen = Arc::new(JobStatus::default());
        let member = GroupMember::connect(
            &config,
            "g",
            "t",
            "test",
            seen.clone(),
            Duration::from_secs(10),
        )
        .unwrap();
        member.subscribe().unwrap();
        let (mut changes, mut largest, mut next) = (Vec::new(), 0, HashMap::new());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !member.read_to_end() && std::time::Instant::now() < deadline {
            let polled = member.poll(1000, Duration::from_millis(100));
            assert!(polled.messages.len() <= 1000);
            changes.extend(polled.changes);
            largest = largest.max(polled.messages.len());
            for m in &polled.messages {
                assert!(!changes.is_empty(), "a message came before the assignment");
                let expected = next.entry(m.partition()).or_insert(0i64);
                assert_eq!(m.offset(), *expected, "partition {}", m.partition());
                *expected += 1;
                assert!(m.payload().is_some() && m.key().is_some() && m.timestamp().is_some());
            }
        }
        assert_eq!(changes, [Change::Assigned(vec![0, 1])]);
        assert_eq!(next.values().sum::<i64>(), 5000);
        assert!(largest > 1, "messages came one per poll");
        member.commit(&[(0, next[&0]), (1, next[&1])]).unwrap();
        assert_eq!(seen.errors.load(Ordering::Relaxed), 0);
    }
}
