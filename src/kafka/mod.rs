//! Everything stockstream does with Kafka clients besides producing ticks: a consumer-group
//! member that hands out messages in batches (the sink and analytics both run on it), the
//! topic reader, output-topic creation, and sending that waits for queue space.

mod admin;
mod member;
mod membership;
pub mod partitioner;
mod queue;
mod reader;
mod run;
mod send;
mod status;

use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka::metadata::Metadata;

pub use admin::create_topics;
pub use member::{Change, GroupMember, Polled};
pub use membership::Membership;
pub use queue::Fetched;
pub use reader::{read, read_topic, Bounds, Follower, Read, Start};
pub use run::{run, Flow, Pipeline, RunLimits, TICK};
pub use send::{flush, send_waiting, serve_reports};
pub(crate) use status::extends_job_status;
pub use status::{JobDetail, JobStatus};

use crate::config::KafkaConfig;
use crate::error::{Error, Result};

/// Checks `name` (the value of argument `what`) is a name Kafka accepts for a topic: 1 to
/// 249 of `a-z A-Z 0-9 . _ -`, not `.` or `..`. Topic names become lake folders and object
/// names too, so anything else is refused before it reaches a broker or a path.
pub fn check_topic(what: &str, name: &str) -> Result<()> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty()
        || name.len() > 249
        || name == "."
        || name == ".."
        || !name.chars().all(legal)
    {
        let shown: String = name.chars().take(60).collect();
        return Err(Error::config(format!(
            "{what} {shown:?}{} is not a valid Kafka topic name: use 1 to 249 letters, digits, \
             '.', '_' or '-'",
            if shown.len() < name.len() { "…" } else { "" }
        )));
    }
    Ok(())
}

/// The partition ids of the topics in `meta` that exist (no metadata error).
pub fn partition_ids(meta: &Metadata) -> Vec<i32> {
    meta.topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect()
}

/// Fails within `timeout` if Kafka cannot be reached, and at once if `topic` does not exist.
fn require_topic<C: ClientContext>(
    client: &Client<C>,
    kafka: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<()> {
    let meta = client.fetch_metadata(Some(topic), timeout).map_err(|e| {
        Error::kafka(format!(
            "cannot reach Kafka at {}: {e}",
            kafka.bootstrap_servers
        ))
    })?;
    let known = meta
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
    if known {
        Ok(())
    } else {
        Err(Error::not_found(format!(
            "topic {topic:?} does not exist on {}: create it, or start the producer first",
            kafka.bootstrap_servers
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked_as_kafka_does() {
        for good in ["ticks", "stock-market", "a.b_c-1", &"t".repeat(249)] {
            assert!(check_topic("topic", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "ticks\n",
            "é",
            &"t".repeat(250),
        ] {
            let err = check_topic("topic", bad).unwrap_err().to_string();
            assert!(
                err.starts_with("topic ") && err.contains("not a valid"),
                "{err}"
            );
        }
    }
}
