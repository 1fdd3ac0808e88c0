//! Live queries: the records Kafka holds but the lake does not yet. For a table a sink
//! feeds, each Kafka partition's tail after its last registered landing is read (up to the
//! end offsets seen when the query starts), decoded exactly as the sink will land it, and
//! added to the table's scan. Objects named at or beyond a partition's landed offset are
//! left out of the scan, so a record is counted once whether it is landed or not.

use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use polars::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::catalog::{HiveType, Table};
use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::lake::{Layout, PartitionKey};
use crate::sink::{self, ColumnType, Partitioning, SinkConfig};
use crate::source::time::TimeFormat;

/// How much of a tail one query reads at most.
#[derive(Debug, Clone, Copy)]
pub struct TailBounds {
    pub records: usize,
    pub bytes: usize,
    pub timeout: Duration,
}

impl Default for TailBounds {
    fn default() -> Self {
        TailBounds {
            records: 1_000_000,
            bytes: 256 << 20,
            timeout: Duration::from_secs(5),
        }
    }
}

/// What a query read from one table's tail.
#[derive(Debug, Clone, Default)]
pub struct TailInfo {
    pub table: String,
    /// Whether the tail was read (false: no source, or the broker did not answer).
    pub live: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    pub records: usize,
    pub bytes: usize,
    /// A bound stopped the read before the end offsets: the result misses records.
    pub truncated: bool,
    /// Per Kafka partition, the offsets read: `[from, to)`.
    pub offsets: BTreeMap<i32, (i64, i64)>,
}

/// A message as read from the tail: offset, timestamp, key, value.
type Read = (i64, Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>);

/// How long a broker has to accept a connection before the query goes on without it.
const CONNECT_PROBE: Duration = Duration::from_millis(300);

/// The tail of `table` as a frame with the table's columns and partition columns, or
/// `None` when there is nothing to add.
pub fn read(table: &Table, bounds: &TailBounds) -> (Option<LazyFrame>, TailInfo) {
    let mut info = TailInfo {
        table: table.name.clone(),
        ..TailInfo::default()
    };
    let Some(source) = &table.source else {
        info.reason = Some("no sink has recorded a source topic for this table".into());
        return (None, info);
    };
    if let Err(why) = probe(&source.bootstrap_servers) {
        info.reason = Some(why);
        return (None, info);
    }
    match read_tail(table, bounds, &mut info) {
        Ok(frame) => {
            info.live = true;
            (frame, info)
        }
        Err(e) => {
            info.reason = Some(e.to_string());
            (None, info)
        }
    }
}

/// Whether any bootstrap server accepts a connection at once: a query must not wait out
/// Kafka's own timeouts when the broker of a finished session is gone.
fn probe(servers: &str) -> std::result::Result<(), String> {
    for server in servers.split(',').map(str::trim) {
        let Ok(addrs) = server.to_socket_addrs() else {
            continue;
        };
        for addr in addrs {
            if TcpStream::connect_timeout(&addr, CONNECT_PROBE).is_ok() {
                return Ok(());
            }
        }
    }
    Err(format!("Kafka at {servers} does not answer"))
}

fn sink_config(table: &Table) -> Result<(SinkConfig, Layout)> {
    let source = table.source.as_ref().expect("checked by the caller");
    let mut config = SinkConfig::new(&source.topic, &source.group_id);
    config.table = table.location.clone();
    config.symbol_field = source.symbol_field.clone();
    config.time_field = source.time_field.clone();
    config.time_format =
        TimeFormat::new(source.time_format.as_deref(), source.time_zone.as_deref())?;
    config.kafka_metadata = source.kafka_metadata;
    config.columns = source
        .columns
        .iter()
        .map(|(n, t)| Ok((n.clone(), str::parse::<ColumnType>(t)?)))
        .collect::<Result<_>>()?;
    let keys = table
        .partition_keys
        .iter()
        .map(|k| str::parse::<PartitionKey>(&k.name))
        .collect::<Result<Vec<_>>>()?;
    config.partition_by = Partitioning::Keys(keys.clone());
    let layout = Layout {
        table: table.location.clone(),
        topic: source.topic.clone(),
        keys,
        format: table.format,
    };
    Ok((config, layout))
}

fn read_tail(table: &Table, bounds: &TailBounds, info: &mut TailInfo) -> Result<Option<LazyFrame>> {
    let source = table.source.as_ref().expect("checked by the caller");
    let (config, layout) = sink_config(table)?;
    let kafka = KafkaConfig::new(&source.bootstrap_servers, Vec::new())?;
    let consumer: BaseConsumer = kafka
        .client_config(&[
            ("group.id", source.group_id.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
            ("client.id", "stockstream-live-query"),
        ])
        .create()
        .map_err(|e| kafka.creation_error(e))?;
    let deadline = Instant::now() + bounds.timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let unreachable = |e: rdkafka::error::KafkaError| {
        Error::kafka(format!(
            "reading the tail of {} from {}: {e}",
            source.topic, source.bootstrap_servers
        ))
    };
    let meta = consumer
        .fetch_metadata(Some(&source.topic), left())
        .map_err(unreachable)?;
    let partitions = crate::kafka::partition_ids(&meta);
    // Partitions no landing has registered start where the group has committed, else at
    // the start of the log (where the sink starts too).
    let unlanded: Vec<i32> = partitions
        .iter()
        .copied()
        .filter(|p| !table.landed.contains_key(p))
        .collect();
    let mut committed = BTreeMap::new();
    if !unlanded.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for p in &unlanded {
            tpl.add_partition(&source.topic, *p);
        }
        if let Ok(c) = consumer.committed_offsets(tpl, left()) {
            for e in c.elements() {
                if let Offset::Offset(o) = e.offset() {
                    committed.insert(e.partition(), o);
                }
            }
        }
    }
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(&source.topic, p, left())
            .map_err(unreachable)?;
        let from = table
            .landed
            .get(&p)
            .map(|l| l.next)
            .or_else(|| committed.get(&p).copied())
            .unwrap_or(low)
            .max(low);
        if high > from {
            assignment
                .add_partition_offset(&source.topic, p, Offset::Offset(from))
                .map_err(unreachable)?;
            ends.insert(p, high);
            info.offsets.insert(p, (from, from));
        }
    }
    if ends.is_empty() {
        return Ok(None);
    }
    consumer.assign(&assignment).map_err(unreachable)?;
    let mut messages: BTreeMap<i32, Vec<Read>> = BTreeMap::new();
    let mut open = ends.len();
    while open > 0 {
        if info.records >= bounds.records || info.bytes >= bounds.bytes || left().is_zero() {
            info.truncated = true;
            break;
        }
        let Some(polled) = consumer.poll(left().min(Duration::from_millis(100))) else {
            // Offsets without a message (transaction markers, compacted records) end a
            // partition's tail without a message at its last offset.
            if let Ok(position) = consumer.position() {
                for e in position.elements() {
                    let (Offset::Offset(at), Some(&end)) = (e.offset(), ends.get(&e.partition()))
                    else {
                        continue;
                    };
                    if let Some(range) = info.offsets.get_mut(&e.partition()) {
                        if at >= end && range.1 < end {
                            range.1 = end;
                            open -= 1;
                        }
                    }
                }
            }
            continue;
        };
        let m = polled.map_err(unreachable)?;
        let p = m.partition();
        let Some(&end) = ends.get(&p) else { continue };
        let Some(range) = info.offsets.get_mut(&p) else {
            continue;
        };
        if m.offset() < range.1 || range.1 >= end {
            continue;
        }
        if m.offset() >= end {
            range.1 = end;
            open -= 1;
            continue;
        }
        range.1 = m.offset() + 1;
        if range.1 >= end {
            open -= 1;
        }
        info.records += 1;
        info.bytes += m.payload().map_or(0, <[u8]>::len);
        messages.entry(p).or_default().push((
            m.offset(),
            m.timestamp().to_millis(),
            m.key().map(<[u8]>::to_vec),
            m.payload().map(<[u8]>::to_vec),
        ));
    }
    let mut frames = Vec::new();
    for (p, msgs) in &messages {
        let decoded = sink::decode(
            &config,
            &layout,
            *p,
            msgs.iter()
                .map(|(o, t, k, v)| (*o, *t, k.as_deref(), v.as_deref())),
        )?;
        for (path, frame) in decoded {
            frames.push(conform(table, &path, frame)?);
        }
    }
    if frames.is_empty() {
        return Ok(None);
    }
    Ok(Some(concat(frames, UnionArgs::default()).map_err(|e| {
        Error::io(format!("combining the tail of {}: {e}", table.name))
    })?))
}

/// A tail frame with exactly the table's columns and types (missing columns null, columns
/// the catalog does not know yet left out), plus its partition columns.
fn conform(table: &Table, path: &str, frame: DataFrame) -> Result<LazyFrame> {
    let have = frame.schema().clone();
    let mut exprs: Vec<Expr> = table
        .file_schema()
        .iter()
        .map(|(name, dtype)| {
            let e = if have.contains(name) {
                col(name.clone())
            } else {
                lit(NULL)
            };
            e.strict_cast(dtype.clone()).alias(name.clone())
        })
        .collect();
    let values = crate::lake::path_values(path);
    for (key, value) in table.partition_keys.iter().zip(values) {
        exprs.push(partition_value(key.kind, &value)?.alias(key.name.as_str()));
    }
    Ok(frame.lazy().select(exprs))
}

/// A folder's partition value as a literal of the catalog's type (parsed here: Polars
/// deprecates casting strings to dates).
fn partition_value(kind: HiveType, value: &str) -> Result<Expr> {
    let bad = || {
        Error::schema(format!(
            "partition value {value:?} is not a {}",
            kind.name()
        ))
    };
    Ok(match kind {
        HiveType::Date => {
            let day = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| bad())?;
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
            lit((day - epoch).num_days() as i32).cast(DataType::Date)
        }
        HiveType::Int | HiveType::Bigint => {
            lit(value.parse::<i64>().map_err(|_| bad())?).strict_cast(kind.to_polars())
        }
        other => lit(value.to_string()).strict_cast(other.to_polars()),
    })
}
