//! What the crate's tests share: an in-process broker with a topic, messages sent to it,
//! and runs that end when everything is read.

use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

use crate::config::KafkaConfig;
use crate::embedded::EmbeddedKafka;
use crate::kafka::RunLimits;
use crate::sink::{LakeTarget, Sink, SinkBuilder, SinkConfig};

/// One message to send: its partition (the partitioner's choice if `None`), key and value.
pub struct Sent {
    pub partition: Option<i32>,
    pub key: Option<String>,
    pub value: String,
}

impl Sent {
    /// A message with a value only.
    pub fn value(value: impl Into<String>) -> Self {
        Sent {
            partition: None,
            key: None,
            value: value.into(),
        }
    }
}

/// An empty local lake in a temporary directory (removed when the first value drops).
pub fn local_lake() -> (
    tempfile::TempDir,
    std::sync::Arc<dyn crate::lake::ObjectStore>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::lake::LocalStore::open(dir.path().to_path_buf()).unwrap();
    (dir, std::sync::Arc::new(store))
}

/// A Parquet table `ticks` of `database` (in folder `ticks`) with partition `keys` and
/// `columns`.
pub fn ticks_table(
    database: &str,
    keys: &[(&str, crate::catalog::HiveType)],
    columns: &[(&str, crate::catalog::HiveType)],
) -> crate::catalog::Table {
    let column = |(name, kind): &(&str, _)| crate::catalog::Column::new(*name, *kind);
    let keys = keys.iter().map(column).collect();
    let format = crate::lake::Format::Parquet;
    let mut table = crate::catalog::Table::new(database, "ticks", "ticks", format, keys);
    table.columns = columns.iter().map(column).collect();
    table
}

/// The text values of a frame's column.
pub fn strings(frame: &polars::prelude::DataFrame, column: &str) -> Vec<Option<String>> {
    let values = frame.column(column).unwrap().str().unwrap();
    values.iter().map(|v| v.map(str::to_string)).collect()
}

/// A frame's column names.
pub fn names(frame: &polars::prelude::DataFrame) -> Vec<String> {
    frame
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect()
}

/// A broker holding `topic` with `partitions` partitions, and a client configuration for it.
pub fn broker(topic: &str, partitions: i32) -> (EmbeddedKafka, KafkaConfig) {
    let kafka = EmbeddedKafka::start(1, partitions).unwrap();
    kafka.create_topic(topic, Some(partitions)).unwrap();
    let config = KafkaConfig::new(kafka.bootstrap_servers(), vec![]).unwrap();
    (kafka, config)
}

/// Sends `messages` to `topic` and waits until every one is acknowledged.
pub fn send(config: &KafkaConfig, topic: &str, messages: impl IntoIterator<Item = Sent>) {
    let producer: BaseProducer = config.client_config(&[]).create().unwrap();
    for m in messages {
        let mut record = BaseRecord::<String, String>::to(topic).payload(&m.value);
        if let Some(key) = &m.key {
            record = record.key(key);
        }
        if let Some(p) = m.partition {
            record = record.partition(p);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Daily ticks of one symbol, `Close` = `i` on 2021-01-`i+1`, for `i` in `from..to`.
pub fn daily_ticks(from: usize, to: usize) -> impl Iterator<Item = Sent> {
    (from..to).map(|i| {
        Sent::value(format!(
            r#"{{"Index":"NYA","Date":"2021-01-{:02}","Close":{i}}}"#,
            i + 1
        ))
    })
}

/// A sink of `topic` for `group` into `target`, run until it has read everything.
pub fn run_sink(config: &KafkaConfig, topic: &str, group: &str, target: LakeTarget) -> Sink {
    let mut sink = SinkBuilder::new(config.clone(), SinkConfig::new(topic, group), target)
        .build()
        .unwrap();
    sink.run(&to_the_end(), &mut || false).unwrap();
    sink
}

/// A run until every assigned partition is read to its end (30 s at the most).
pub fn to_the_end() -> RunLimits {
    RunLimits {
        limit: None,
        duration: Some(Duration::from_secs(30)),
        stop_at_end: true,
    }
}
