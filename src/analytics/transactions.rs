//! Exactly-once output, as Kafka Streams' exactly-once v2 does it: the outputs, the state
//! and the input offsets of one checkpoint interval are one Kafka transaction, so readers
//! with `isolation.level=read_committed` see each output once, whatever crashes and
//! rebalances happen. Fencing comes from the consumer group's generation (KIP-447), so the
//! transactional id only has to be unique to the producer.

use std::time::Duration;

use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::kafka::GroupMember;

/// What runs instead when transactions are not available, said wherever they are refused.
const AT_LEAST_ONCE: &str = "without exactly_once, Analytics is at-least-once: after a crash, \
    outputs emitted since the last checkpoint are emitted again (identical records, \
    identified by symbol and event time)";

/// The producer properties that make it transactional, with an id of its own (a user's
/// properties still override them).
pub fn producer_properties(group_id: &str, topic: &str) -> [(&'static str, String); 3] {
    let unique = format!(
        "{}-{}",
        std::process::id(),
        crate::record::time::now_micros()
    );
    [
        (
            "transactional.id",
            format!("stockstream-analytics-{group_id}-{topic}-{unique}"),
        ),
        // A job that dies leaves its transaction open until this passes, and until then
        // read_committed readers of its outputs and state wait at the transaction's start.
        // Kafka Streams uses 10 s as well; librdkafka needs the message timeout within it.
        ("transaction.timeout.ms", "10000".to_string()),
        ("message.timeout.ms", "10000".to_string()),
    ]
}

/// Refuses the embedded broker: librdkafka's mock cluster accepts transaction requests but
/// does not keep their promise.
pub fn refuse_embedded(kafka: &KafkaConfig) -> Result<()> {
    if crate::embedded::is_embedded(&kafka.bootstrap_servers) {
        return Err(Error::config(format!(
            "exactly_once=True needs a broker with Kafka transactions; the embedded broker \
             (librdkafka's mock cluster) accepts transaction requests but neither hides aborted \
             records from read_committed readers nor keeps offsets committed in a transaction; \
             {AT_LEAST_ONCE}"
        )));
    }
    Ok(())
}

/// The key of the tombstone a probing transaction writes to the state topic (no partition's
/// checkpoint has it, so restores pass it by).
const PROBE_KEY: &[u8] = b"stockstream-transaction-probe";

/// A transactional producer's open transaction.
#[derive(Clone)]
pub struct Transactions {
    timeout: Duration,
}

impl Transactions {
    /// Registers `producer` with the broker's transaction coordinator, commits one
    /// transaction holding a tombstone in `probe_topic` (a broker may accept a
    /// transactional producer yet not end transactions), and opens the first real one. A
    /// broker that cannot is a `ConfigError` saying what runs instead. (The embedded
    /// broker is refused before this, by [`refuse_embedded`].)
    pub fn start<C: ProducerContext<DeliveryOpaque = ()>>(
        producer: &ThreadedProducer<C>,
        kafka: &KafkaConfig,
        probe_topic: &str,
        timeout: Duration,
    ) -> Result<Self> {
        let refused = |e: &dyn std::fmt::Display| {
            Error::config(format!(
                "exactly_once=True: {} cannot run a Kafka transaction ({e}); {AT_LEAST_ONCE}",
                kafka.bootstrap_servers
            ))
        };
        producer
            .init_transactions(timeout)
            .map_err(|e| refused(&e))?;
        let probe = BaseRecord::<[u8], [u8]>::to(probe_topic).key(PROBE_KEY);
        producer.begin_transaction().map_err(|e| refused(&e))?;
        producer.send(probe).map_err(|(e, _)| refused(&e))?;
        if let Err(e) = producer.commit_transaction(timeout) {
            let _ = producer.abort_transaction(timeout);
            return Err(refused(&e));
        }
        let transactions = Transactions { timeout };
        transactions.begin(producer)?;
        Ok(transactions)
    }

    fn begin<C: ProducerContext>(&self, producer: &ThreadedProducer<C>) -> Result<()> {
        producer
            .begin_transaction()
            .map_err(|e| Error::kafka(format!("cannot begin a transaction: {e}")))
    }

    /// Commits what was produced since the last commit, with `offsets` as `member`'s
    /// group's position, and opens the next transaction. On failure the caller aborts.
    pub fn commit<C: ProducerContext>(
        &self,
        producer: &ThreadedProducer<C>,
        member: &GroupMember,
        offsets: &[(i32, i64)],
    ) -> Result<()> {
        if !offsets.is_empty() {
            let group = member
                .group_metadata()
                .ok_or_else(|| Error::kafka("the consumer has no group metadata"))?;
            producer
                .send_offsets_to_transaction(&member.positions(offsets)?, &group, self.timeout)
                .map_err(|e| Error::kafka(format!("cannot add offsets to the transaction: {e}")))?;
        }
        producer
            .commit_transaction(self.timeout)
            .map_err(|e| Error::kafka(format!("cannot commit the transaction: {e}")))?;
        self.begin(producer)
    }

    /// Gives up the open transaction: nothing of it is visible to read_committed readers.
    /// A fenced or failed producer cannot go on, so the run ends and the next one starts
    /// from the last committed state.
    pub fn abort<C: ProducerContext>(&self, producer: &ThreadedProducer<C>) {
        let _ = producer.abort_transaction(self.timeout);
    }
}
