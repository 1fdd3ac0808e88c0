//! The one place that talks to librdkafka below the rdkafka crate: a queue of the
//! consumer's own into which the assigned partitions' fetch queues are forwarded, drained
//! many messages per call (`rd_kafka_consume_batch_queue`, as confluent-kafka's
//! `consume(n)` does) instead of one event, one `Arc` and one wake-up per message.
//!
//! Rebalances, statistics and errors stay on the consumer's own queue, served by the
//! crate's `poll`; this queue only ever holds partitions' messages and end-of-partition
//! notices, so draining it cannot swallow a rebalance.

use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::types::RDKafkaRespErr;

/// A queue created on one client. It must be dropped before that client is destroyed;
/// [`super::GroupMember`] guarantees this by field order.
pub(super) struct FetchQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
    client: NonNull<rd::rd_kafka_t>,
}

// librdkafka queues are thread-safe; the pointers are only used through its API.
unsafe impl Send for FetchQueue {}
unsafe impl Sync for FetchQueue {}

impl FetchQueue {
    /// A new queue on `client` (a live consumer's native handle).
    pub(super) fn new(client: *mut rd::rd_kafka_t) -> Option<Self> {
        let client = NonNull::new(client)?;
        // SAFETY: `client` is a live handle; the queue is destroyed in `Drop`, before it.
        let queue = NonNull::new(unsafe { rd::rd_kafka_queue_new(client.as_ptr()) })?;
        Some(FetchQueue { queue, client })
    }

    /// Sends `topic[partition]`'s fetched messages here from now on. Called before the
    /// partition is assigned, so none of its messages reach the consumer's queue.
    pub(super) fn route(&self, topic: &str, partition: i32) -> bool {
        let Ok(topic) = CString::new(topic) else {
            return false;
        };
        // SAFETY: live handles; the partition queue handle is released at once (forwarding
        // is a property of the partition's queue, not of this handle).
        unsafe {
            let source =
                rd::rd_kafka_queue_get_partition(self.client.as_ptr(), topic.as_ptr(), partition);
            if source.is_null() {
                return false;
            }
            rd::rd_kafka_queue_forward(source, self.queue.as_ptr());
            rd::rd_kafka_queue_destroy(source);
        }
        true
    }

    /// How many events (rebalances, statistics, logs, errors) wait on the client's own
    /// consumer queue.
    pub(super) fn waiting_events(&self) -> usize {
        // SAFETY: a live handle; the queue handle is a new reference, released at once.
        unsafe {
            let queue = rd::rd_kafka_queue_get_consumer(self.client.as_ptr());
            if queue.is_null() {
                return 0;
            }
            let n = rd::rd_kafka_queue_length(queue);
            rd::rd_kafka_queue_destroy(queue);
            n
        }
    }

    /// Up to `max` messages, waiting at most `timeout` for the first.
    pub(super) fn take<'a>(&'a self, max: usize, timeout: Duration, out: &mut Vec<Fetched<'a>>) {
        if max == 0 {
            return;
        }
        let mut buffer: Vec<*mut rd::rd_kafka_message_t> = Vec::with_capacity(max);
        let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: the buffer has room for `max` pointers; librdkafka writes `n` of them.
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                timeout_ms,
                buffer.as_mut_ptr(),
                max,
            )
        };
        if n <= 0 {
            return;
        }
        // SAFETY: the first `n` slots were written.
        unsafe { buffer.set_len(n as usize) };
        out.extend(
            buffer
                .into_iter()
                .filter_map(NonNull::new)
                .map(|message| Fetched {
                    message,
                    queue: PhantomData,
                }),
        );
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: created by `rd_kafka_queue_new`, destroyed once.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

/// One fetched message (or a partition's error notice), released when dropped; it cannot
/// outlive the queue (and so the client) it came from.
pub struct Fetched<'a> {
    message: NonNull<rd::rd_kafka_message_t>,
    queue: PhantomData<&'a FetchQueue>,
}

// A message is immutable once fetched and librdkafka frees it from any thread.
unsafe impl Send for Fetched<'_> {}

impl Fetched<'_> {
    fn raw(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: valid until `Drop`.
        unsafe { self.message.as_ref() }
    }

    pub fn partition(&self) -> i32 {
        self.raw().partition
    }

    pub fn offset(&self) -> i64 {
        self.raw().offset
    }

    /// The message's timestamp in Unix milliseconds, if it has one.
    pub fn timestamp(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a valid message; `kind` is written.
        let ms = unsafe { rd::rd_kafka_message_timestamp(self.message.as_ptr(), &mut kind) };
        (kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && ms >= 0)
            .then_some(ms)
    }

    pub fn key(&self) -> Option<&[u8]> {
        let m = self.raw();
        bytes(self, m.key as *const u8, m.key_len)
    }

    pub fn payload(&self) -> Option<&[u8]> {
        let m = self.raw();
        bytes(self, m.payload as *const u8, m.len)
    }

    /// `None` for a message; the error for a notice (end of partition, fetch failure).
    pub fn error(&self) -> Option<RDKafkaRespErr> {
        let err = self.raw().err;
        (err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR).then_some(err)
    }

    /// A notice's text (librdkafka puts it in the payload).
    pub fn error_text(&self) -> String {
        self.payload()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default()
    }
}

/// `len` bytes at `ptr`, borrowed from the message that holds them.
fn bytes<'m>(_message: &'m Fetched<'_>, ptr: *const u8, len: usize) -> Option<&'m [u8]> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: librdkafka guarantees `len` readable bytes while the message lives, and
        // the slice is borrowed from the message.
        Some(unsafe { std::slice::from_raw_parts(ptr, len) })
    }
}

impl Drop for Fetched<'_> {
    fn drop(&mut self) {
        // SAFETY: returned by `rd_kafka_consume_batch_queue`, destroyed once.
        unsafe { rd::rd_kafka_message_destroy(self.message.as_ptr()) }
    }
}
