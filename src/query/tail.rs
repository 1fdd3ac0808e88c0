//! Live queries: the records Kafka holds but the lake does not yet. For a table a sink
//! feeds, each Kafka partition is read from the table's landed offset (or the start of the
//! log, for a partition nothing was registered for) up to the end offsets seen when the
//! query starts, decoded exactly as the sink will land it, and added to the table's scan.
//! Objects named at or beyond a partition's landed offset are left out of the scan, so a
//! record is counted once whether it is landed or not, whatever the sinks are doing.

use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use polars::prelude::*;
use rdkafka::Message as _;

use crate::catalog::{HiveType, Table};
use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::kafka::Bounds;
use crate::lake::{Layout, PartitionKey};
use crate::record::time::TimeFormat;
use crate::sink::{self, ColumnType, Partitioning, SinkConfig};

/// Whether a query adds the records a table's topic holds beyond what the lake holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// When the table's broker answers (the default).
    Auto,
    /// Always: a tail that cannot be read is an error.
    Required,
    /// Never: the lake only.
    Off,
}

impl Live {
    /// `live=None`, `True` or `False`.
    pub fn from_flag(flag: Option<bool>) -> Self {
        match flag {
            None => Live::Auto,
            Some(true) => Live::Required,
            Some(false) => Live::Off,
        }
    }
}

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

impl TailInfo {
    /// What a caller should be warned of: a bound cut the tail, so the result misses the
    /// newest records.
    pub fn truncation(&self) -> Option<String> {
        self.truncated.then(|| {
            format!(
                "the live tail of table {} was cut at {} records / {} bytes: the result misses \
                 the newest records (raise tail_records, tail_bytes or tail_timeout)",
                self.table, self.records, self.bytes
            )
        })
    }
}

/// A message as read from the tail: offset, timestamp, key, value.
type Message = (i64, Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>);

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
    // Each partition from where the table's registered objects end: objects written
    // beyond are not read (see `Table::visible`), so every record is counted once.
    let from =
        |p: i32, low: i64, high: i64| Some(table.landed.get(&p).map_or(low, |l| l.next)..high);
    let limits = Bounds {
        records: bounds.records,
        bytes: bounds.bytes,
        timeout: bounds.timeout,
    };
    let mut messages: BTreeMap<i32, Vec<Message>> = BTreeMap::new();
    let read = crate::kafka::read(
        &kafka,
        "stockstream-live-query",
        &source.topic,
        &from,
        &limits,
        &mut |m| {
            messages.entry(m.partition()).or_default().push((
                m.offset(),
                m.timestamp().to_millis(),
                m.key().map(<[u8]>::to_vec),
                m.payload().map(<[u8]>::to_vec),
            ));
        },
    )?;
    info.records = read.records;
    info.bytes = read.bytes;
    info.truncated = read.truncated;
    info.offsets = read.offsets;
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
    let args = UnionArgs {
        // A table whose first landing is not registered yet has no columns: its tail
        // frames keep their own, which may differ.
        diagonal: table.columns.is_empty(),
        ..UnionArgs::default()
    };
    Ok(Some(concat(frames, args).map_err(|e| {
        Error::io(format!("combining the tail of {}: {e}", table.name))
    })?))
}

/// A tail frame with exactly the table's columns and types (missing columns null, columns
/// the catalog does not know yet left out), plus its partition columns. A table that has
/// no columns yet (its first landing is not registered) takes the frame's own.
fn conform(table: &Table, path: &str, frame: DataFrame) -> Result<LazyFrame> {
    let have = frame.schema().clone();
    if table.columns.is_empty() {
        let mut exprs: Vec<Expr> = have.iter_names().map(|n| col(n.clone())).collect();
        for (key, value) in table
            .partition_keys
            .iter()
            .zip(crate::lake::path_values(path))
        {
            exprs.push(partition_value(key.kind, &value)?.alias(key.name.as_str()));
        }
        return Ok(frame.lazy().select(exprs));
    }
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

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::catalog::{Column, DEFAULT_DATABASE as DB};
    use crate::error::Kind;
    use crate::lake::{Format, LandedRange, TableSource};
    use crate::testing::{self, Sent};

    fn source(bootstrap_servers: &str) -> TableSource {
        TableSource {
            bootstrap_servers: bootstrap_servers.into(),
            topic: "ticks".into(),
            group_id: "g".into(),
            symbol_field: "Index".into(),
            time_field: "Date".into(),
            columns: [("Close".to_string(), "float".to_string())].into(),
            kafka_metadata: false,
            time_format: None,
            time_zone: None,
        }
    }

    /// An address where nothing listens (a port just given up).
    fn closed_port() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }

    #[test]
    fn a_table_without_a_source_or_an_answering_broker_has_no_tail() {
        let mut table = Table::new(DB, "ticks", "ticks", Format::Parquet, Vec::new());
        let (frame, info) = read(&table, &TailBounds::default());
        assert!(frame.is_none() && !info.live);
        assert!(info.reason.unwrap().contains("no sink has recorded"));

        let dead = closed_port();
        table.source = Some(source(&dead));
        let started = std::time::Instant::now();
        let (frame, info) = read(&table, &TailBounds::default());
        assert!(frame.is_none() && !info.live);
        assert!(info.reason.unwrap().contains("does not answer"));
        // Not Kafka's own timeouts: a query goes on at once without the tail.
        assert!(started.elapsed() < Duration::from_secs(3));

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let alive = listener.local_addr().unwrap().to_string();
        assert!(probe(&format!("no-such-host.invalid:9092, {dead}, {alive}")).is_ok());
        assert!(probe(&format!("no-such-host.invalid:9092,{dead}")).is_err());
    }

    #[test]
    fn tail_frames_take_the_tables_columns_types_and_partition_values() {
        let keys = [("symbol", HiveType::String), ("date", HiveType::Date)];
        let mut table = testing::ticks_table(DB, &keys, &[]);
        let frame = || df!("Index" => ["^GSPC"], "Close" => [1i64], "new" => ["x"]).unwrap();
        let conformed = |table: &Table| {
            let path = "symbol=%5EGSPC/date=2021-01-04";
            conform(table, path, frame()).unwrap().collect().unwrap()
        };
        // Before the first landing is registered, the table has no columns: the frame's own.
        let own = conformed(&table);
        assert_eq!(
            testing::names(&own),
            ["Index", "Close", "new", "symbol", "date"]
        );

        table.columns = [
            ("Index", HiveType::String),
            ("Close", HiveType::Double),
            ("Volume", HiveType::Double),
        ]
        .map(|(name, kind)| Column::new(name, kind))
        .into();
        let got = conformed(&table);
        assert_eq!(
            testing::names(&got),
            ["Index", "Close", "Volume", "symbol", "date"]
        );
        assert_eq!(
            got.column("Close").unwrap().f64().unwrap().get(0),
            Some(1.0)
        );
        assert_eq!(got.column("Volume").unwrap().dtype(), &DataType::Float64);
        assert_eq!(got.column("Volume").unwrap().null_count(), 1);
        assert_eq!(
            got.column("symbol").unwrap().str().unwrap().get(0),
            Some("^GSPC")
        );
        let date = got.column("date").unwrap();
        assert_eq!(date.dtype(), &DataType::Date);
        // 2021-01-04 is day 18,631 of the epoch.
        assert_eq!(date.date().unwrap().phys.get(0), Some(18_631));

        let e = conform(&table, "symbol=A/date=2021-13-01", frame())
            .err()
            .unwrap();
        assert!(
            e.is(Kind::Schema) && e.to_string().contains("not a date"),
            "{e}"
        );
    }

    #[test]
    fn a_source_a_sink_could_not_have_written_is_an_error() {
        let mut table = Table::new(DB, "ticks", "ticks", Format::Parquet, Vec::new());
        let mut bad = source("localhost:9092");
        bad.columns.insert("Close".into(), "decimal".into());
        table.source = Some(bad);
        let e = sink_config(&table).err().unwrap();
        assert!(
            e.is(Kind::Config) && e.to_string().contains("decimal"),
            "{e}"
        );
        table.source = Some(source("localhost:9092"));
        table.partition_keys = vec![Column::new("region", HiveType::String)];
        let e = sink_config(&table).err().unwrap();
        assert!(
            e.is(Kind::Config) && e.to_string().contains("region"),
            "{e}"
        );
        table.partition_keys = vec![Column::new("symbol", HiveType::String)];
        table.location = "data/ticks".into();
        let (config, layout) = sink_config(&table).unwrap();
        assert_eq!(config.columns, [("Close".to_string(), ColumnType::Float)]);
        assert_eq!(
            config.partition_by,
            Partitioning::Keys(vec![PartitionKey::Symbol])
        );
        // Objects of the tail would be named in the table's folder, by its topic.
        assert_eq!(
            layout.data_key(&layout.folder("symbol=A"), 0, 7),
            "data/ticks/symbol=A/part-ticks-0-00000000000000000007.parquet"
        );
    }

    #[test]
    fn a_tail_is_read_from_where_the_table_landed_and_decoded_as_the_sink_would() {
        let (kafka, config) = testing::broker("ticks", 1);
        let ticks = [
            ("NYA", "2021-01-04", "1"),
            ("GSPC", "2021-01-04", "2"),
            ("NYA", "2021-01-05", "3"),
            ("GSPC", "2021-01-05", "\"high\""),
            ("NYA", "2021-01-06", "5"),
            ("GSPC", "2021-01-06", "6"),
        ];
        let sent = ticks.iter().map(|(symbol, date, close)| {
            Sent::value(format!(
                r#"{{"Index":"{symbol}","Date":"{date}","Close":{close}}}"#
            ))
        });
        testing::send(&config, "ticks", sent);

        let columns = [
            ("Index", HiveType::String),
            ("Date", HiveType::Date),
            ("Close", HiveType::Double),
        ];
        let mut table = testing::ticks_table(DB, &[("symbol", HiveType::String)], &columns);
        table.source = Some(source(kafka.bootstrap_servers()));
        table.landed.insert(0, LandedRange::new(0, 2));
        let (frame, info) = read(&table, &TailBounds::default());
        assert!(info.live, "{:?}", info.reason);
        assert_eq!(info.offsets[&0], (2, 6));
        assert_eq!((info.records, info.truncated), (4, false));
        let frame = frame
            .unwrap()
            .sort(["Close"], Default::default())
            .collect()
            .unwrap();
        // The record the sink would quarantine (a text Close) is not in the tail.
        let close: Vec<Option<f64>> = frame
            .column("Close")
            .unwrap()
            .f64()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(close, [Some(3.0), Some(5.0), Some(6.0)]);
        let symbols = testing::strings(&frame, "symbol");
        assert_eq!(
            symbols,
            [Some("NYA"), Some("NYA"), Some("GSPC")].map(|s| s.map(Into::into))
        );
        assert_eq!(frame.column("Date").unwrap().dtype(), &DataType::Date);
    }

    #[test]
    fn a_cut_tail_is_told_and_live_follows_the_flag() {
        let mut info = TailInfo {
            table: "ticks".into(),
            records: 10,
            bytes: 99,
            ..TailInfo::default()
        };
        assert_eq!(info.truncation(), None);
        info.truncated = true;
        let told = info.truncation().unwrap();
        assert!(told.contains("ticks") && told.contains("10 records / 99 bytes"));
        assert_eq!(Live::from_flag(None), Live::Auto);
        assert_eq!(Live::from_flag(Some(true)), Live::Required);
        assert_eq!(Live::from_flag(Some(false)), Live::Off);
    }
}
