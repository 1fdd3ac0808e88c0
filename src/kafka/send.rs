//! Handing a record to a producer without dropping it when librdkafka's queue is full.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::BaseRecord;
use rdkafka::util::IntoOpaque;

/// Sends `record` with `send`, calling `wait` (serve delivery reports, or sleep) while the
/// queue is full. Other errors are returned: the record was not handed over.
pub fn send_waiting<'a, K, P, D>(
    mut record: BaseRecord<'a, K, P, D>,
    mut send: impl FnMut(BaseRecord<'a, K, P, D>) -> Result<(), (KafkaError, BaseRecord<'a, K, P, D>)>,
    mut wait: impl FnMut(),
) -> Result<(), KafkaError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
    D: IntoOpaque,
{
    loop {
        match send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                wait();
            }
            Err((e, _)) => return Err(e),
        }
    }
}
