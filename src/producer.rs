//! Sends ticks to a Kafka topic: JSON values keyed by symbol, paced by a rate or by event
//! time, with every delivery accounted for.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};
use rdkafka::Message;

use crate::config::{KafkaConfig, PRODUCER_DEFAULTS};
use crate::error::{Error, Result};
use crate::kafka::partition_ids;
use crate::kafka::partitioner::partition_of;
use crate::kafka::send_waiting;
use crate::source::{Chunk, TickSource, TickTable};

/// How often progress is reported and the caller asked whether to stop.
const CONTROL_INTERVAL: Duration = Duration::from_millis(100);

/// Bounds on one `send`: pacing and when to stop. All `None` means "the whole source, as fast as possible".
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Messages per second (1.0 is the tutorial's loop).
    pub rate: Option<f64>,
    /// Replay event time this many times faster than real time.
    pub speedup: Option<f64>,
    /// Stop after this many messages.
    pub limit: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

impl SendOptions {
    fn validate(&self) -> Result<()> {
        for (name, v) in [("rate", self.rate), ("speedup", self.speedup)] {
            if v.is_some_and(|v| !(PACE_MIN..=PACE_MAX).contains(&v)) {
                return Err(Error::config(format!(
                    "{name} must be between {PACE_MIN:e} and {PACE_MAX:e}, got {}",
                    v.unwrap_or_default()
                )));
            }
        }
        if self.rate.is_some() && self.speedup.is_some() {
            return Err(Error::config("give either rate or speedup, not both"));
        }
        Ok(())
    }
}

/// Bounds of `rate` (messages per second) and `speedup`: beyond them a pause between two
/// messages would be longer than a clock can hold, or shorter than it can tell.
const PACE_MIN: f64 = 1e-6;
const PACE_MAX: f64 = 1e12;

/// What one `send` did. `failed > 0` means some messages were not acknowledged.
#[derive(Debug, Clone, Default)]
pub struct SendReport {
    pub topic: String,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Key + value bytes handed to Kafka (before compression).
    pub bytes: u64,
    pub elapsed: Duration,
    pub first_error: Option<String>,
    /// Records of this run that the broker no longer holds (seen from partition start offsets).
    pub dropped_by_broker: u64,
    pub warnings: Vec<String>,
    /// True when the caller stopped the run early (Ctrl-C, notebook interrupt, `stop()`).
    pub interrupted: bool,
}

impl SendReport {
    /// Acknowledged messages per second.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.delivered as f64 / s
        } else {
            0.0
        }
    }

    /// An error if any message was not delivered.
    pub fn check(&self, bootstrap: &str) -> Result<()> {
        if self.failed == 0 {
            return Ok(());
        }
        Err(Error::delivery(format!(
            "{} of {} messages to topic {:?} on {bootstrap} were not delivered; first error: {}",
            self.failed,
            self.sent,
            self.topic,
            self.first_error.as_deref().unwrap_or("unknown")
        )))
    }
}

/// Lets the caller watch a run and stop it (a Python binding checks for Ctrl-C here).
pub trait Control {
    /// Called about every 100 ms; returning true stops the run after flushing.
    fn should_stop(&mut self) -> bool;
    /// Called about every 100 ms with the counts so far.
    fn progress(&mut self, _report: &SendReport) {}
}

/// A [`Control`] that never stops and ignores progress.
pub struct Unattended;

impl Control for Unattended {
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// How far ahead of this machine's clock a message timestamp may be: Kafka brokers refuse
/// more than `message.timestamp.after.max.ms` (one hour by default) ahead of theirs; five
/// minutes less leaves room for the two clocks to differ.
const FUTURE_ACCEPTED_MS: i64 = 55 * 60_000;

#[derive(Default)]
struct Deliveries {
    /// Messages handed to librdkafka, acknowledged, and failed, since the producer started:
    /// librdkafka's own queue length also counts its pending events (one per failed
    /// connection attempt while a broker is down), which are not messages.
    handed: AtomicU64,
    acknowledged: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Whether `first_error` is a message's own failure, not a batch-mate's.
    first_is_cause: AtomicBool,
    last_client_error: Mutex<Option<String>>,
}

impl Deliveries {
    /// Counts a failed message; the first failure is kept as the run's error, unless it only
    /// shared a batch with the message that failed it (that one's error says why).
    fn fail(&self, error: &KafkaError, partition: Option<i32>) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap();
        let at = partition.map_or(String::new(), |p| format!("partition {p}: "));
        let (cause, message) = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::InvalidDifferentRecord) => (false, format!("{at}{error}")),
            Some(RDKafkaErrorCode::InvalidTimestamp) => (
                true,
                format!(
                    "{at}{error} (the broker refuses timestamps outside its \
                     message.timestamp.before.max.ms / after.max.ms)"
                ),
            ),
            _ => (true, format!("{at}{error}")),
        };
        if first.is_none() || (cause && !self.first_is_cause.load(Ordering::Relaxed)) {
            *first = Some(message);
            self.first_is_cause.store(cause, Ordering::Relaxed);
        }
    }
}

struct Context(Arc<Deliveries>);

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        *self.0.last_client_error.lock().unwrap() = Some(format!("{error}: {reason}"));
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => _ = self.0.acknowledged.fetch_add(1, Ordering::Relaxed),
            Err((err, msg)) => self.0.fail(err, Some(msg.partition())),
        }
    }
}

/// A Kafka producer bound to one topic. It sends through several librdkafka producers
/// ("lanes"), each owning the partitions whose number modulo the lane count is its own:
/// librdkafka compresses and sends a producer's batches on one broker thread per broker,
/// so one producer is bound by one thread. Each partition has exactly one lane, so a
/// symbol's order holds, and each lane is idempotent on its own.
pub struct Producer {
    lanes: Vec<BaseProducer<Context>>,
    /// Whether this producer chooses partitions (the `murmur2_random` partitioner, as
    /// librdkafka would); with another partitioner librdkafka chooses, in one lane.
    partitions_chosen: bool,
    deliveries: Arc<Deliveries>,
    config: KafkaConfig,
    topic: String,
    partitions: Vec<i32>,
    stop: Arc<AtomicBool>,
    timeout: Duration,
    /// How long a flush may take: the configured message timeout plus a margin.
    delivery_timeout: Duration,
}

impl Producer {
    /// Connects and fetches the topic's metadata, failing within `timeout` when no broker
    /// answers. `lanes` librdkafka producers send (`None`: one; at most one per partition
    /// and per core, or 4 on fewer cores).
    pub fn new(
        config: KafkaConfig,
        topic: &str,
        timeout: Duration,
        lanes: Option<usize>,
    ) -> Result<Self> {
        crate::kafka::check_topic("topic", topic)?;
        if lanes == Some(0) {
            return Err(Error::config("lanes must be at least 1"));
        }
        let deliveries = Arc::new(Deliveries::default());
        let client_config = config.client_config(&PRODUCER_DEFAULTS);
        let message_timeout_ms = client_config
            .get("message.timeout.ms")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(120_000);
        let creation_error = config.clone();
        let create = || -> Result<BaseProducer<Context>> {
            client_config
                .create_with_context(Context(deliveries.clone()))
                .map_err(|e| creation_error.creation_error(e))
        };
        let first = create()?;
        let mut producer = Producer {
            lanes: vec![first],
            partitions_chosen: client_config.get("partitioner") == Some("murmur2_random"),
            deliveries: deliveries.clone(),
            config,
            topic: topic.to_string(),
            partitions: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            timeout,
            delivery_timeout: Duration::from_millis(message_timeout_ms) + Duration::from_secs(5),
        };
        producer.partitions = producer.fetch_partitions()?;
        // A topic the broker will create on first use has no partitions to choose from yet.
        producer.partitions_chosen &= !producer.partitions.is_empty();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let wanted = match (producer.partitions_chosen, lanes) {
            (true, Some(n)) => n.min(cores.max(4)),
            _ => 1,
        };
        while producer.lanes.len() < wanted.min(producer.partitions.len()) {
            producer.lanes.push(create()?);
        }
        // One lane: librdkafka's own partitioner, as before lanes existed.
        producer.partitions_chosen &= producer.lanes.len() > 1;
        Ok(producer)
    }

    /// How many librdkafka producers send.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    fn fetch_partitions(&self) -> Result<Vec<i32>> {
        let meta = self.lanes[0]
            .client()
            .fetch_metadata(Some(&self.topic), self.timeout)
            .map_err(|e| self.unreachable(e))?;
        Ok(partition_ids(&meta))
    }

    fn unreachable(&self, err: KafkaError) -> Error {
        let detail = self.deliveries.last_client_error.lock().unwrap().clone();
        Error::kafka(format!(
            "cannot reach Kafka at {} within {:.1} s: {err}{}",
            self.config.bootstrap_servers,
            self.timeout.as_secs_f64(),
            detail.map(|d| format!(" ({d})")).unwrap_or_default()
        ))
    }

    /// The topic this producer writes to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The broker list this producer was given.
    pub fn bootstrap_servers(&self) -> &str {
        &self.config.bootstrap_servers
    }

    /// A flag that stops a running `send` (from another thread) after it flushes.
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// End offsets per partition, `(low, high)`; empty if the broker does not answer in time.
    fn watermarks(&self) -> Vec<(i64, i64)> {
        self.partitions
            .iter()
            .map_while(|&p| {
                self.lanes[0]
                    .client()
                    .fetch_watermarks(&self.topic, p, self.timeout)
                    .ok()
            })
            .collect()
    }

    /// Sends ticks from `source` until it ends or a bound in `options` is reached, then
    /// flushes. Delivery failures are counted in the report (see [`SendReport::check`]).
    pub fn send(
        &self,
        source: &mut dyn TickSource,
        options: &SendOptions,
        control: &mut dyn Control,
    ) -> Result<SendReport> {
        options.validate()?;
        self.stop.store(false, Ordering::Relaxed);
        let before = self.watermarks();
        let failed0 = self.deliveries.failed.load(Ordering::Relaxed);
        *self.deliveries.first_error.lock().unwrap() = None;
        self.deliveries
            .first_is_cause
            .store(false, Ordering::Relaxed);

        let start = Instant::now();
        let mut report = SendReport {
            topic: self.topic.clone(),
            ..Default::default()
        };
        let snapshot = |report: &mut SendReport| {
            report.failed = self.deliveries.failed.load(Ordering::Relaxed) - failed0;
            // What is neither failed nor in flight (or awaiting its report) was acknowledged.
            let in_flight = self.in_flight();
            report.delivered = report.sent.saturating_sub(report.failed + in_flight);
            report.elapsed = start.elapsed();
        };
        let mut run = Run {
            start,
            deadline: options.duration.map(|d| start + d),
            next_control: start,
            stop: &self.stop,
            control,
        };
        let mut pacer = Pacer::new(options);
        let mut pre_epoch = 0u64;
        let mut ahead = 0u64;
        let mut clock_ms = crate::record::time::now_millis();
        let event_time = source.event_time();

        // Chunks are encoded on a second thread while the previous one is being sent.
        let sent = std::thread::scope(|scope| -> Result<()> {
            let (ready, encoded) = std::sync::mpsc::sync_channel::<Result<Encoded>>(2);
            let encoder = std::thread::Builder::new()
                .name("stockstream-encode".into())
                .spawn_scoped(scope, move || loop {
                    // A failed send means the send loop stopped early and wants no more.
                    match source.next_chunk() {
                        Ok(Some(chunk)) => {
                            if ready.send(Ok(Encoded::new(chunk))).is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    }
                });
            if let Err(e) = encoder {
                return Err(Error::io(format!("cannot start the encoding thread: {e}")));
            }
            'send: for chunk in encoded {
                let chunk = chunk?;
                for (i, &row) in chunk.rows.iter().enumerate() {
                    let row = row as usize;
                    if options.limit.is_some_and(|l| report.sent >= l) {
                        break 'send;
                    }
                    let due = pacer.due(run.start, report.sent, chunk.table.time_us(row));
                    if pacer.active() || report.sent.is_multiple_of(1024) {
                        if run.wait_until(due, &mut report, &snapshot) {
                            break 'send;
                        }
                        clock_ms = crate::record::time::now_millis();
                    }
                    let value = chunk.value(i);
                    let key = chunk.table.symbol(row);
                    let mut record = BaseRecord::to(&self.topic).key(key).payload(value);
                    let lane = match self.partitions_chosen {
                        true => {
                            let p = partition_of(key.as_bytes(), self.partitions.len());
                            record = record.partition(p);
                            &self.lanes[p as usize % self.lanes.len()]
                        }
                        false => &self.lanes[0],
                    };
                    if event_time {
                        match chunk.table.time_us(row).div_euclid(1000) {
                            // Kafka timestamps cannot be before 1970 (-1 means "none"), and
                            // brokers refuse the whole batch of one too far ahead of their
                            // clock: such rows carry the send time instead.
                            ms if ms < 0 => pre_epoch += 1,
                            ms if ms > clock_ms + FUTURE_ACCEPTED_MS => ahead += 1,
                            ms => record = record.timestamp(ms),
                        }
                    }
                    self.enqueue(lane, record);
                    report.sent += 1;
                    // Serving delivery reports per message costs more than the send itself.
                    if report.sent.is_multiple_of(512) {
                        self.lanes.iter().for_each(crate::kafka::serve_reports);
                    }
                    report.bytes += (value.len() + key.len()) as u64;
                }
            }
            Ok(())
        });
        sent?;
        // A dead broker fails each message after message.timeout.ms; what has no report by
        // the margin after that counts as failed, so the outcome is the same under load.
        let _ = crate::kafka::flush(&self.lanes, self.delivery_timeout);
        snapshot(&mut report);
        let unacknowledged = self.in_flight();
        if unacknowledged > 0 {
            report.failed += unacknowledged;
            let mut first = self.deliveries.first_error.lock().unwrap();
            first.get_or_insert(format!(
                "{unacknowledged} messages still unacknowledged {:.1} s after the last send",
                self.delivery_timeout.as_secs_f64()
            ));
        }
        report.interrupted = run.interrupted();
        report.first_error = self.deliveries.first_error.lock().unwrap().clone();
        if pre_epoch > 0 {
            report.warnings.push(format!(
                "{pre_epoch} rows have event times before 1970, which Kafka cannot store; \
                 their messages carry the send time"
            ));
        }
        if ahead > 0 {
            report.warnings.push(format!(
                "{ahead} rows have event times more than {} minutes ahead of this machine's \
                 clock, which brokers refuse (Kafka's message.timestamp.after.max.ms, one hour \
                 by default); their messages carry the send time",
                FUTURE_ACCEPTED_MS / 60_000
            ));
        }
        self.check_retention(&before, &mut report);
        Ok(report)
    }

    /// Messages handed to librdkafka whose delivery is not reported yet, in every lane.
    fn in_flight(&self) -> u64 {
        let d = &self.deliveries;
        let reported = d.acknowledged.load(Ordering::Relaxed) + d.failed.load(Ordering::Relaxed);
        d.handed.load(Ordering::Relaxed).saturating_sub(reported)
    }

    /// Hands one record to `lane`, waiting for queue space rather than dropping it.
    fn enqueue(&self, lane: &BaseProducer<Context>, record: BaseRecord<'_, str, [u8]>) {
        let sent = send_waiting(
            record,
            |r| lane.send(r).map_err(Box::new),
            || {
                lane.poll(Duration::from_millis(1));
            },
        );
        // A refused record counts as failed at once, so it counts as handed over too.
        self.deliveries.handed.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = sent {
            self.deliveries.fail(&err, None);
        }
    }

    /// A broker that keeps only a bounded log (the embedded one keeps ~5 MiB per partition)
    /// moves a partition's start offset past records it dropped; say so instead of letting
    /// a consumer silently miss them.
    fn check_retention(&self, before: &[(i64, i64)], report: &mut SendReport) {
        let after = self.watermarks();
        report.dropped_by_broker = before
            .iter()
            .zip(&after)
            .map(|(&(_, high_before), &(low_after, _))| (low_after - high_before).max(0) as u64)
            .sum();
        if report.dropped_by_broker > 0 {
            report.warnings.push(format!(
                "the broker no longer holds {} of the records just sent to {:?}: its retention \
                 dropped them (the embedded broker keeps ~5 MiB per partition; use more \
                 partitions, compression, or a real cluster)",
                report.dropped_by_broker, self.topic
            ));
        }
    }

    /// Waits until every handed-over message is acknowledged or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        crate::kafka::flush(&self.lanes, timeout).map_err(|e| {
            Error::kafka(format!(
                "flushing to topic {:?} on {}: {e}; {} messages still unacknowledged",
                self.topic,
                self.config.bootstrap_servers,
                self.in_flight()
            ))
        })?;
        let failed = self.deliveries.failed.load(Ordering::Relaxed);
        if failed > 0 {
            return Err(Error::delivery(format!(
                "{failed} messages to topic {:?} on {} were not delivered since this producer started; first error: {}",
                self.topic,
                self.config.bootstrap_servers,
                self.deliveries.first_error.lock().unwrap().as_deref().unwrap_or("unknown")
            )));
        }
        Ok(())
    }
}

/// A chunk of rows with their JSON values encoded one after another.
struct Encoded {
    table: Arc<TickTable>,
    rows: Vec<u32>,
    values: Vec<u8>,
    /// Where each row's value ends in `values`.
    ends: Vec<usize>,
}

impl Encoded {
    fn new(chunk: Chunk) -> Self {
        let mut values = Vec::with_capacity(chunk.rows.len() * 160);
        let mut ends = Vec::with_capacity(chunk.rows.len());
        for &row in &chunk.rows {
            chunk.table.encode(row as usize, &mut values);
            ends.push(values.len());
        }
        Encoded {
            table: chunk.table,
            rows: chunk.rows,
            values,
            ends,
        }
    }

    /// The value of the `i`-th row.
    fn value(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.values[start..self.ends[i]]
    }
}

/// Stop conditions and caller callbacks of one run.
struct Run<'a> {
    start: Instant,
    deadline: Option<Instant>,
    next_control: Instant,
    stop: &'a AtomicBool,
    control: &'a mut dyn Control,
}

impl Run<'_> {
    fn interrupted(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps until `due` (if any), serving progress and stop checks meanwhile. True means stop.
    fn wait_until(
        &mut self,
        due: Option<Instant>,
        report: &mut SendReport,
        snapshot: &dyn Fn(&mut SendReport),
    ) -> bool {
        loop {
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) || self.stop.load(Ordering::Relaxed) {
                return true;
            }
            if now >= self.next_control {
                self.next_control = now + CONTROL_INTERVAL;
                if self.control.should_stop() {
                    self.stop.store(true, Ordering::Relaxed);
                    return true;
                }
                snapshot(report);
                self.control.progress(report);
            }
            let Some(due) = due.filter(|&d| d > now) else {
                return false;
            };
            let wake = [Some(due), self.deadline, Some(self.next_control)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(due);
            std::thread::sleep(wake.saturating_duration_since(now));
        }
    }
}

/// When each message is due.
enum Pacer {
    Free,
    Rate(f64),
    Speedup { factor: f64, first_us: Option<i64> },
}

impl Pacer {
    fn new(options: &SendOptions) -> Self {
        match (options.rate, options.speedup) {
            (Some(rate), _) => Pacer::Rate(rate),
            (_, Some(factor)) => Pacer::Speedup {
                factor,
                first_us: None,
            },
            _ => Pacer::Free,
        }
    }

    fn active(&self) -> bool {
        !matches!(self, Pacer::Free)
    }

    fn due(&mut self, start: Instant, sent: u64, event_us: i64) -> Option<Instant> {
        match self {
            Pacer::Free => None,
            Pacer::Rate(rate) => Some(start + Duration::from_secs_f64(sent as f64 / *rate)),
            Pacer::Speedup { factor, first_us } => {
                let first = *first_us.get_or_insert(event_us);
                let offset = (event_us - first).max(0) as f64 / 1e6 / *factor;
                Some(start + Duration::from_secs_f64(offset))
            }
        }
    }
}
