//! Creating the topics a pipeline writes to, where they do not exist yet.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer as _};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::error::{Error, Result};

/// Creates topics that do not exist yet, with the broker's default partitions; compacted
/// ones keep only the latest record per key. The embedded cluster, whose admin API cannot
/// create topics, creates them on first use instead.
pub fn create_topics(
    kafka: &KafkaConfig,
    topics: &[(&str, bool)],
    timeout: Duration,
) -> Result<()> {
    let producer: BaseProducer = kafka
        .client_config(&[])
        .create()
        .map_err(|e| kafka.creation_error(e))?;
    let existing = producer
        .client()
        .fetch_metadata(None, timeout)
        .map_err(|e| Error::kafka(format!("cannot list topics: {e}")))?;
    let missing: Vec<(&str, bool)> = topics
        .iter()
        .filter(|(name, _)| {
            !existing
                .topics()
                .iter()
                .any(|t| t.name() == *name && t.error().is_none())
        })
        .copied()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let auto_create = || -> Result<()> {
        for (name, _) in &missing {
            // A producer's metadata request for a topic creates it where brokers allow.
            producer
                .client()
                .fetch_metadata(Some(name), timeout)
                .map_err(|e| Error::kafka(format!("cannot create topic {name:?}: {e}")))?;
        }
        Ok(())
    };
    if crate::embedded::is_embedded(&kafka.bootstrap_servers) {
        return auto_create();
    }
    let admin: AdminClient<DefaultClientContext> = kafka
        .client_config(&[])
        .create()
        .map_err(|e| kafka.creation_error(e))?;
    let new: Vec<NewTopic> = missing
        .iter()
        .map(|(name, compact)| {
            let partitions = if *compact { 1 } else { -1 };
            let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
            if *compact {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let wait = Some(timeout.min(Duration::from_secs(5)));
    let options = AdminOptions::new()
        .operation_timeout(wait)
        .request_timeout(wait);
    let results =
        match crate::aws::runtime("kafka-admin")?.block_on(admin.create_topics(&new, &options)) {
            Ok(results) => results,
            // An embedded cluster in another process does not answer CreateTopics.
            Err(KafkaError::AdminOp(
                RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut,
            )) => return auto_create(),
            Err(e) => return Err(Error::kafka(format!("cannot create topics: {e}"))),
        };
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::kafka(format!(
                    "cannot create topic {name:?}: {code}"
                )))
            }
        }
    }
    Ok(())
}
