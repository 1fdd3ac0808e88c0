//! Reads what a topic holds right now, from the start of each partition to its current
//! end, without joining a consumer group (like `kcat -C -e`): for demos, notebooks,
//! checks and restoring checkpoints.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use polars::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::partition_ids;
use crate::config::KafkaConfig;
use crate::error::{Error, Result};

const CONSUMER_DEFAULTS: [(&str, &str); 3] = [
    ("group.id", "stockstream-reader"),
    ("enable.auto.commit", "false"),
    ("enable.partition.eof", "false"),
];

/// Where in each partition a read starts.
#[derive(Debug, Clone, Default)]
pub enum Start {
    /// Each partition's first message.
    #[default]
    Beginning,
    /// The last N messages of each partition.
    Last(usize),
    /// The given next offset of each partition (the first message for the others): to
    /// carry on after an earlier read.
    After(HashMap<i32, i64>),
}

/// Every message of `topic` from `start` up to the end offsets seen at the start, at most
/// `limit`, as a frame of `partition, offset, timestamp_ms, key, value`. Fails if the broker
/// is unreachable within `timeout`, or if the messages cannot all be fetched within it.
pub fn read_topic(
    config: &KafkaConfig,
    topic: &str,
    start: &Start,
    limit: Option<usize>,
    timeout: Duration,
) -> Result<DataFrame> {
    // librdkafka refuses some names (a NUL byte, a huge one) in a way its Rust binding panics on.
    super::check_topic("topic", topic)?;
    let consumer: BaseConsumer = config
        .client_config(&CONSUMER_DEFAULTS)
        .create()
        .map_err(|e| config.creation_error(e))?;
    let unreachable = |e| {
        Error::kafka(format!(
            "cannot read topic {topic:?} from {}: {e}",
            config.bootstrap_servers
        ))
    };
    let meta = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(unreachable)?;
    let partitions = partition_ids(&meta);
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    let mut ends = Vec::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(unreachable)?;
        let first = match start {
            Start::Beginning => low,
            Start::Last(n) => high.saturating_sub(*n as i64).max(low),
            Start::After(next) => next.get(&p).copied().unwrap_or(low).max(low),
        };
        if high > first {
            assignment
                .add_partition_offset(topic, p, Offset::Offset(first))
                .map_err(unreachable)?;
            remaining += high - first;
        }
        ends.push((p, high));
    }
    let wanted = limit.map_or(remaining, |l| remaining.min(l as i64)) as usize;
    consumer.assign(&assignment).map_err(unreachable)?;

    let (mut part, mut offset, mut ts, mut key, mut value) =
        (vec![], vec![], vec![], vec![], vec![]);
    let deadline = Instant::now() + timeout;
    while part.len() < wanted {
        let Some(msg) = consumer.poll(deadline.saturating_duration_since(Instant::now())) else {
            return Err(Error::kafka(format!(
                "timed out reading topic {topic:?} from {}: got {} of {wanted} messages",
                config.bootstrap_servers,
                part.len()
            )));
        };
        let msg = msg.map_err(unreachable)?;
        let end = ends
            .iter()
            .find(|(p, _)| *p == msg.partition())
            .map_or(0, |e| e.1);
        if msg.offset() >= end {
            continue;
        }
        part.push(msg.partition());
        offset.push(msg.offset());
        ts.push(msg.timestamp().to_millis());
        key.push(msg.key().map(|k| String::from_utf8_lossy(k).into_owned()));
        value.push(
            msg.payload()
                .map(|v| String::from_utf8_lossy(v).into_owned()),
        );
    }
    DataFrame::new_infer_height(vec![
        Column::new("partition".into(), part),
        Column::new("offset".into(), offset),
        Column::new("timestamp_ms".into(), ts),
        Column::new("key".into(), key),
        Column::new("value".into(), value),
    ])
    .map_err(|e| Error::kafka(e.to_string()))
}
