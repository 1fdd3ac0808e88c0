//! Reads what a topic holds right now, without joining a consumer group (like
//! `kcat -C -e`): from a start offset of each partition up to the end offsets seen when the
//! read begins, within bounds. One reader serves the live tail of queries, `read_topic`
//! and the restore of analytics checkpoints. Offsets need not hold a message each: the
//! markers of Kafka transactions, aborted records (under `read_committed`) and records
//! removed by log compaction leave gaps, so a partition is done when the consumer's
//! position reaches its end offset, not after a count of messages.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use polars::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::partition_ids;
use crate::config::KafkaConfig;
use crate::error::{Error, Result};

/// Where in each partition a read starts.
#[derive(Debug, Clone, Default)]
pub enum Start {
    /// Each partition's first message.
    #[default]
    Beginning,
    /// The last N offsets of each partition.
    Last(usize),
    /// The given next offset of each partition (the first message for the others): to
    /// carry on after an earlier read.
    After(HashMap<i32, i64>),
}

impl Start {
    /// The first offset to read of a partition holding `[low, high)`.
    fn offset(&self, partition: i32, low: i64, high: i64) -> i64 {
        match self {
            Start::Beginning => low,
            Start::Last(n) => high.saturating_sub(*n as i64).max(low),
            Start::After(next) => next.get(&partition).copied().unwrap_or(low).max(low),
        }
    }
}

/// How much one read may take.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub records: usize,
    pub bytes: usize,
    /// For the whole read, connecting included.
    pub timeout: Duration,
}

/// What a read covered.
#[derive(Debug, Clone, Default)]
pub struct Read {
    /// Per partition, the offsets read: `[from, to)`; `to` is the end offset seen at the
    /// start unless the read was cut short.
    pub offsets: BTreeMap<i32, (i64, i64)>,
    pub records: usize,
    pub bytes: usize,
    /// A bound (records, bytes or time) stopped the read before the end offsets.
    pub truncated: bool,
}

impl Read {
    /// Partitions not read to their end offset.
    fn open(&self, ends: &BTreeMap<i32, i64>) -> usize {
        ends.iter()
            .filter(|(p, end)| self.offsets.get(p).is_some_and(|r| r.1 < **end))
            .count()
    }
}

const CONSUMER_DEFAULTS: [(&str, &str); 4] = [
    ("group.id", "stockstream-reader"),
    ("enable.auto.commit", "false"),
    ("enable.partition.eof", "true"),
    ("client.id", "stockstream-reader"),
];

/// Reads the offsets `wanted` says of each partition of `topic` (given its id, first
/// offset and end offset; `None` skips the partition), up to the end offsets seen now,
/// handing each message to `take` in offset order per partition. Fails if the broker does
/// not answer; a read that runs out of `bounds` returns what it got, marked truncated.
pub fn read(
    config: &KafkaConfig,
    client_id: &str,
    topic: &str,
    wanted: &dyn Fn(i32, i64, i64) -> Option<std::ops::Range<i64>>,
    bounds: &Bounds,
    take: &mut dyn FnMut(&BorrowedMessage<'_>),
) -> Result<Read> {
    // librdkafka refuses some names (a NUL byte, a huge one) in a way its Rust binding panics on.
    super::check_topic("topic", topic)?;
    let mut client = config.client_config(&CONSUMER_DEFAULTS);
    client.set("client.id", client_id);
    let consumer: BaseConsumer = client.create().map_err(|e| config.creation_error(e))?;
    let deadline = Instant::now() + bounds.timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let failed = |e: KafkaError| {
        Error::kafka(format!(
            "cannot read topic {topic:?} from {}: {e}",
            config.bootstrap_servers
        ))
        .caused_by(e)
    };
    let meta = consumer
        .fetch_metadata(Some(topic), left())
        .map_err(failed)?;
    let mut read = Read::default();
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    // The end offsets of every partition in one request (under read_committed, librdkafka's
    // default, the last stable offsets: an open transaction's records are not waited for);
    // the first offsets only of the partitions that may have something to read, so that a
    // query with nothing un-landed costs one request.
    let ids = partition_ids(&meta);
    let highs = list_offsets(&consumer, topic, &ids, Offset::End, left(), &failed)?;
    let maybe: Vec<i32> = (highs.iter())
        .filter(|&(&p, &high)| wanted(p, 0, high).is_some_and(|r| r.end > r.start))
        .map(|(&p, _)| p)
        .collect();
    let lows = match maybe.is_empty() {
        true => BTreeMap::new(),
        false => list_offsets(&consumer, topic, &maybe, Offset::Beginning, left(), &failed)?,
    };
    for (p, low) in lows {
        let high = highs[&p];
        let Some(range) = wanted(p, low, high) else {
            continue;
        };
        let (from, end) = (range.start.max(low), range.end.min(high));
        if end > from {
            assignment
                .add_partition_offset(topic, p, Offset::Offset(from))
                .map_err(failed)?;
            ends.insert(p, end);
            read.offsets.insert(p, (from, from));
        }
    }
    if ends.is_empty() {
        return Ok(read);
    }
    consumer.assign(&assignment).map_err(failed)?;
    while read.open(&ends) > 0 {
        if read.records >= bounds.records || read.bytes >= bounds.bytes || left().is_zero() {
            read.truncated = true;
            break;
        }
        match consumer.poll(left().min(Duration::from_millis(100))) {
            Some(Ok(m)) => {
                let p = m.partition();
                let (Some(&end), Some(range)) = (ends.get(&p), read.offsets.get_mut(&p)) else {
                    continue;
                };
                if m.offset() < range.1 || range.1 >= end {
                    continue;
                }
                if m.offset() >= end {
                    range.1 = end;
                    continue;
                }
                range.1 = m.offset() + 1;
                read.records += 1;
                read.bytes += m.payload().map_or(0, <[u8]>::len);
                take(&m);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => reached_end(&mut read, &ends, p),
            Some(Err(e)) => return Err(failed(e)),
            None => {
                // Offsets without a message at the end of a partition (a transaction's
                // marker) end its read without a message or an end-of-partition event.
                if let Ok(position) = consumer.position() {
                    for e in position.elements() {
                        if let (Offset::Offset(at), Some(&end)) =
                            (e.offset(), ends.get(&e.partition()))
                        {
                            if at >= end {
                                reached_end(&mut read, &ends, e.partition());
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(read)
}

/// The offsets of `partitions` of `topic` at `at` (the first or the end offset), in one
/// ListOffsets request per leader.
fn list_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    at: Offset,
    timeout: Duration,
    failed: &dyn Fn(KafkaError) -> Error,
) -> Result<BTreeMap<i32, i64>> {
    let mut asked = TopicPartitionList::new();
    for &p in partitions {
        asked.add_partition_offset(topic, p, at).map_err(failed)?;
    }
    let found = consumer.offsets_for_times(asked, timeout).map_err(failed)?;
    let mut offsets = BTreeMap::new();
    for e in found.elements() {
        e.error().map_err(failed)?;
        let Offset::Offset(o) = e.offset() else {
            return Err(Error::kafka(format!(
                "the broker gave no {at:?} offset for {topic}[{}]",
                e.partition()
            )));
        };
        offsets.insert(e.partition(), o);
    }
    Ok(offsets)
}

/// A read that goes on: every partition of a topic from given next offsets, taking what
/// has arrived without waiting (a table a job keeps up to date while it runs).
pub struct Follower {
    consumer: BaseConsumer,
    topic: String,
}

impl Follower {
    /// Reads each partition of `topic` from its offset in `next` (its first message for the
    /// others); fails if the broker does not answer within `timeout`, and at once if the
    /// topic does not exist.
    pub fn new(
        config: &KafkaConfig,
        client_id: &str,
        topic: &str,
        next: &BTreeMap<i32, i64>,
        timeout: Duration,
    ) -> Result<Self> {
        super::check_topic("topic", topic)?;
        let mut client = config.client_config(&CONSUMER_DEFAULTS);
        client.set("client.id", client_id);
        client.set("enable.partition.eof", "false");
        let consumer: BaseConsumer = client.create().map_err(|e| config.creation_error(e))?;
        let failed = |e: KafkaError| {
            Error::kafka(format!(
                "cannot follow topic {topic:?} on {}: {e}",
                config.bootstrap_servers
            ))
            .caused_by(e)
        };
        let meta = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(failed)?;
        let partitions = partition_ids(&meta);
        if partitions.is_empty() {
            return Err(Error::not_found(format!(
                "topic {topic:?} does not exist on {}: create it, or start its producer first",
                config.bootstrap_servers
            )));
        }
        let mut assignment = TopicPartitionList::new();
        for p in partitions {
            let at = next
                .get(&p)
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            assignment
                .add_partition_offset(topic, p, at)
                .map_err(failed)?;
        }
        consumer.assign(&assignment).map_err(failed)?;
        Ok(Follower {
            consumer,
            topic: topic.to_string(),
        })
    }

    /// Hands `take` the messages fetched so far, at most `max`, without waiting for more;
    /// returns how many. A broker error is returned once it is polled.
    pub fn poll(&self, max: usize, take: &mut dyn FnMut(&BorrowedMessage<'_>)) -> Result<usize> {
        let mut taken = 0;
        while taken < max {
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    take(&m);
                    taken += 1;
                }
                Some(Err(e)) => {
                    return Err(
                        Error::kafka(format!("following topic {:?}: {e}", self.topic)).caused_by(e),
                    )
                }
                None => break,
            }
        }
        Ok(taken)
    }
}

/// Marks `partition` read to its end offset.
fn reached_end(read: &mut Read, ends: &BTreeMap<i32, i64>, partition: i32) {
    if let (Some(&end), Some(range)) = (ends.get(&partition), read.offsets.get_mut(&partition)) {
        range.1 = range.1.max(end);
    }
}

/// Every message of `topic` from `start` up to the end offsets seen at the start, at most
/// `limit`, as a frame of `partition, offset, timestamp, key, value`. Fails if the broker
/// is unreachable within `timeout`, or if the messages cannot all be fetched within it.
pub fn read_topic(
    config: &KafkaConfig,
    topic: &str,
    start: &Start,
    limit: Option<usize>,
    timeout: Duration,
) -> Result<DataFrame> {
    let (mut part, mut offset, mut ts, mut key, mut value) =
        (vec![], vec![], vec![], vec![], vec![]);
    let bounds = Bounds {
        records: limit.unwrap_or(usize::MAX),
        bytes: usize::MAX,
        timeout,
    };
    let read = read(
        config,
        "stockstream-reader",
        topic,
        &|p, low, high| Some(start.offset(p, low, high)..high),
        &bounds,
        &mut |m| {
            part.push(m.partition());
            offset.push(m.offset());
            ts.push(m.timestamp().to_millis());
            key.push(m.key().map(|k| String::from_utf8_lossy(k).into_owned()));
            value.push(m.payload().map(|v| String::from_utf8_lossy(v).into_owned()));
        },
    )?;
    if read.truncated && part.len() < bounds.records {
        return Err(Error::kafka(format!(
            "timed out reading topic {topic:?} from {}: got {} messages, up to offsets {:?} \
             of {:?}",
            config.bootstrap_servers,
            part.len(),
            read.offsets
                .iter()
                .map(|(p, r)| (*p, r.1))
                .collect::<Vec<_>>(),
            read.offsets.keys().collect::<Vec<_>>()
        )));
    }
    DataFrame::new_infer_height(vec![
        Column::new("partition".into(), part),
        Column::new("offset".into(), offset),
        // Kafka's timestamps are UTC milliseconds: naive UTC, as the lake's `_kafka_timestamp`.
        Int64Chunked::from_iter_options("timestamp".into(), ts.into_iter())
            .into_datetime(TimeUnit::Milliseconds, None)
            .into_column(),
        Column::new("key".into(), key),
        Column::new("value".into(), value),
    ])
    .map_err(|e| Error::kafka(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, Sent};

    #[test]
    fn reads_each_partition_from_its_start_to_the_end_seen_and_stops_at_a_bound() {
        let (_kafka, config) = testing::broker("t", 2);
        testing::send(
            &config,
            "t",
            (0..100).map(|i| Sent {
                partition: Some(i % 2),
                ..Sent::value(i.to_string())
            }),
        );
        let bounds = Bounds {
            records: usize::MAX,
            bytes: usize::MAX,
            timeout: Duration::from_secs(20),
        };
        let mut seen: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        let from = |p: i32, _: i64, high: i64| (p == 0).then_some(40..high);
        let read = read(&config, "test", "t", &from, &bounds, &mut |m| {
            seen.entry(m.partition()).or_default().push(m.offset());
        })
        .unwrap();
        assert_eq!(read.offsets, BTreeMap::from([(0, (40, 50))]));
        assert_eq!(seen[&0], (40..50).collect::<Vec<_>>());
        assert!(!read.truncated && read.records == 10);
        let few = Bounds {
            records: 3,
            ..bounds
        };
        let cut = super::read(
            &config,
            "test",
            "t",
            &|_, low, high| Some(low..high),
            &few,
            &mut |_| {},
        )
        .unwrap();
        assert!(cut.truncated && cut.records == 3);
        let frame =
            read_topic(&config, "t", &Start::Last(5), None, Duration::from_secs(20)).unwrap();
        assert_eq!(frame.height(), 10);
    }
}
