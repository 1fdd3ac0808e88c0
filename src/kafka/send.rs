//! Handing records to a producer without dropping any when librdkafka's queue is full, and
//! waiting until they are all acknowledged.

use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::util::IntoOpaque;

/// Sends `record` with `send`, calling `wait` (serve delivery reports, or sleep) while the
/// queue is full. Other errors are returned: the record was not handed over. (`send` boxes
/// the crate's refusal, which is large, so that the common `Ok` stays small.)
pub fn send_waiting<'a, K, P, D>(
    mut record: BaseRecord<'a, K, P, D>,
    mut send: impl FnMut(
        BaseRecord<'a, K, P, D>,
    ) -> Result<(), Box<(KafkaError, BaseRecord<'a, K, P, D>)>>,
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
            Err(refused) => match *refused {
                (KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r) => {
                    record = r;
                    wait();
                }
                (e, _) => return Err(e),
            },
        }
    }
}

/// Serves the delivery reports that are ready, without waiting. (The crate's `poll` with
/// no timeout serves one report per call; each covers one batch of messages.)
pub fn serve_reports<C: ProducerContext>(producer: &BaseProducer<C>) {
    for _ in 0..REPORTS_PER_SERVE {
        producer.poll(Duration::ZERO);
    }
}

/// Reports served per `serve_reports`: more than are produced between two calls.
const REPORTS_PER_SERVE: usize = 16;

/// Waits until every message handed to `producers` is acknowledged or has failed (each
/// report served to its delivery callback), at most `timeout`, serving them all in turn so
/// that one producer's wait does not use up another's time. Lingering batches are sent at
/// once. Unlike the crate's `flush`, it never sleeps 100 ms waiting for a report.
pub fn flush<C: ProducerContext>(
    producers: &[BaseProducer<C>],
    timeout: Duration,
) -> Result<(), KafkaError> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut left = rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
        for producer in producers {
            // SAFETY: a live producer's handle. While this waits (1 ms), batches still
            // lingering are sent at once; messages stay counted until their reports are
            // served below.
            let err = unsafe { rd::rd_kafka_flush(producer.client().native_ptr(), 1) };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                left = err;
                // Serves every report that comes within the next few milliseconds.
                producer.poll(Duration::from_millis(5));
            }
        }
        if left == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(KafkaError::Flush(left.into()));
        }
    }
}
