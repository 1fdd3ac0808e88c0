//! As-of joins: each tick takes, for its key, the latest values of a second topic (a table
//! such as daily FX rates) as of the tick's event time, within a tolerance — Polars'
//! `join_asof(strategy="backward", by=…)` on a stream.
//!
//! Every member of the group reads the whole table topic (all partitions, as Kafka Streams
//! reads a GlobalKTable): to its end when a run starts, then whatever has arrived before
//! each batch of ticks. A record goes into its key's history by its own event time,
//! whenever it arrives; a later record of the same key and time replaces it. A tick is
//! joined when it is read, with the history read by then. **Late table records** (dated
//! before ticks already joined) count for the ticks read after them, at those ticks'
//! times; outputs already emitted are not revised. A tick with no value of its key within
//! the tolerance is rejected, saying so.
//!
//! The history and the table offsets read are saved at each checkpoint, under
//! `<topic>:join:<table topic>` in the state topic (in the transaction with
//! `exactly_once`): a restart reads on from those offsets, so a compacted or expired table
//! topic still gives restarted jobs the values it gave before.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::Message as _;
use serde::{Deserialize, Serialize};

use super::output::iso;
use super::snapshot::{self, Chunked, Record as StateRecord};
use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::kafka::{self, Bounds, Follower};
use crate::record::time::TimeFormat;
use crate::record::{Record, Scalar};

/// What to join, as written by a user.
#[derive(Debug, Clone, PartialEq)]
pub struct AsOf {
    /// The table's topic.
    pub topic: String,
    /// The tick field holding the key, and the table records' field holding it.
    pub by: (String, String),
    /// The table records' event-time field (written as the ticks' times are).
    pub on: String,
    /// How much older than a tick a table value may be (µs); `None`: any age.
    pub tolerance: Option<i64>,
    /// The table records' numeric fields each tick takes.
    pub fields: Vec<String>,
}

impl AsOf {
    pub fn validate(&self) -> Result<()> {
        crate::kafka::check_topic("join topic", &self.topic)?;
        crate::error::non_empty(&[
            ("join: by", &self.by.0),
            ("join: by", &self.by.1),
            ("join: on", &self.on),
        ])?;
        if self.fields.is_empty() {
            return Err(Error::config("join: name the fields to take (fields=[…])"));
        }
        if self.tolerance.is_some_and(|t| t < 0) {
            return Err(Error::config("join: the tolerance may not be negative"));
        }
        Ok(())
    }
}

/// The table as read so far.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Table {
    fields: Vec<String>,
    /// Per key, each record's values by its event time.
    history: HashMap<String, BTreeMap<i64, Vec<f64>>>,
    /// Per partition of the table's topic, the next offset to read.
    next: BTreeMap<i32, i64>,
}

/// An as-of join and the table it reads.
pub struct Join {
    pub spec: AsOf,
    /// The key of its checkpoint in the state topic.
    pub state_key: String,
    table: Table,
    follower: Option<Follower>,
    /// Whether the checkpoint was looked for (once per job).
    restored: bool,
    /// Table records read since the last checkpoint.
    dirty: bool,
    /// How the latest checkpoint was chunked, to delete those chunks once a newer one is saved.
    chunked: Option<Chunked>,
}

impl Join {
    pub fn new(spec: AsOf, input_topic: &str) -> Self {
        Join {
            state_key: format!("{input_topic}:join:{}", spec.topic),
            table: Table {
                fields: spec.fields.clone(),
                ..Table::default()
            },
            spec,
            follower: None,
            restored: false,
            dirty: false,
            chunked: None,
        }
    }

    /// Fails within `timeout` if Kafka cannot be reached, and at once if the table's topic
    /// does not exist.
    pub fn check(&self, kafka: &KafkaConfig, timeout: Duration) -> Result<()> {
        Follower::new(
            kafka,
            "stockstream-join",
            &self.spec.topic,
            &BTreeMap::new(),
            timeout,
        )
        .map(drop)
    }

    /// Whether the checkpoint still has to be looked for.
    pub fn wants_restore(&self) -> bool {
        !self.restored
    }

    /// Takes the table from its checkpoint (`saved`: its JSON and chunking); returns a note
    /// when the checkpoint was made with other fields and so is not used.
    pub fn restore(&mut self, saved: Option<(String, Option<Chunked>)>) -> Result<Option<String>> {
        self.restored = true;
        let Some((body, chunked)) = saved else {
            return Ok(None);
        };
        self.chunked = chunked;
        let table: Table = serde_json::from_str(&body).map_err(|e| {
            Error::schema(format!(
                "the checkpoint of {:?} is damaged: {e}",
                self.state_key
            ))
        })?;
        if table.fields != self.spec.fields {
            self.dirty = true;
            return Ok(Some(format!(
                "the join's checkpoint holds fields {:?}, not {:?}: {:?} is read again from \
                 its beginning",
                table.fields, self.spec.fields, self.spec.topic
            )));
        }
        self.table = table;
        Ok(None)
    }

    /// Reads the table topic to its current end, then follows it; what cannot be read as a
    /// table record goes to `reject`.
    pub fn catch_up(
        &mut self,
        kafka: &KafkaConfig,
        format: &TimeFormat,
        timeout: Duration,
        reject: &mut dyn FnMut(String),
    ) -> Result<()> {
        let (next, topic) = (self.table.next.clone(), self.spec.topic.clone());
        let bounds = Bounds {
            records: usize::MAX,
            bytes: usize::MAX,
            timeout,
        };
        let read = kafka::read(
            kafka,
            "stockstream-join",
            &topic,
            &|p, low, high| Some(next.get(&p).copied().unwrap_or(low)..high),
            &bounds,
            &mut |m| self.insert(format, m.partition(), m.offset(), m.payload(), reject),
        )?;
        if read.truncated {
            return Err(Error::kafka(format!(
                "timed out reading the join topic {:?} to its end: up to offsets {:?}",
                self.spec.topic, self.table.next
            )));
        }
        for (p, (_, to)) in read.offsets {
            self.table.next.insert(p, to);
        }
        self.follower = Some(Follower::new(
            kafka,
            "stockstream-join",
            &self.spec.topic,
            &self.table.next,
            timeout,
        )?);
        Ok(())
    }

    /// Takes the table records that arrived since the last call, without waiting.
    pub fn follow(&mut self, format: &TimeFormat, reject: &mut dyn FnMut(String)) -> Result<()> {
        let Some(follower) = self.follower.take() else {
            return Ok(());
        };
        let polled = follower.poll(100_000, &mut |m| {
            self.insert(format, m.partition(), m.offset(), m.payload(), reject)
        });
        self.follower = Some(follower);
        polled.map(|_| ())
    }

    fn insert(
        &mut self,
        format: &TimeFormat,
        partition: i32,
        offset: i64,
        payload: Option<&[u8]>,
        reject: &mut dyn FnMut(String),
    ) {
        let next = self.table.next.entry(partition).or_insert(offset);
        if offset < *next {
            return;
        }
        *next = offset + 1;
        self.dirty = true;
        match self.decode(format, payload) {
            Ok((key, time, values)) => {
                self.table
                    .history
                    .entry(key)
                    .or_default()
                    .insert(time, values);
            }
            Err(why) => reject(format!("{}[{partition}]@{offset}: {why}", self.spec.topic)),
        }
    }

    fn decode(
        &self,
        format: &TimeFormat,
        payload: Option<&[u8]>,
    ) -> std::result::Result<(String, i64, Vec<f64>), String> {
        let record = Record::parse(payload.unwrap_or_default())?;
        let key = record.symbol(&self.spec.by.1)?.to_string();
        let time = record.event_time(&self.spec.on, format)?.micros;
        let values = self
            .spec
            .fields
            .iter()
            .map(|f| match record.get(f) {
                Some(Scalar::Float(v)) if v.is_finite() => Ok(*v),
                Some(Scalar::Int(v)) => Ok(*v as f64),
                Some(other) => Err(format!("field {f:?} is {}, not a number", other.describe())),
                None => Err(format!("missing field {f:?}")),
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok((key, time, values))
    }

    /// The values of `key` as of `time`: those of its latest record at or before `time`,
    /// if no older than the tolerance.
    pub fn lookup(&self, key: &str, time: i64) -> std::result::Result<&[f64], String> {
        let (topic, by) = (&self.spec.topic, &self.spec.by.0);
        let latest = self
            .table
            .history
            .get(key)
            .and_then(|h| h.range(..=time).next_back());
        match latest {
            Some((at, values)) if self.spec.tolerance.is_none_or(|t| time - at <= t) => Ok(values),
            Some((at, _)) => Err(format!(
                "the latest {topic:?} record for {by} {key:?} as of {} is from {}, older \
                 than the join's tolerance",
                iso(time),
                iso(*at)
            )),
            None => Err(format!(
                "{topic:?} has no record for {by} {key:?} at or before {}",
                iso(time)
            )),
        }
    }

    /// The messages that checkpoint the table if it changed: chunks, then the header, then
    /// the deletion of the previous checkpoint's chunks.
    pub fn checkpoint(&mut self, generation: u64) -> Result<Option<CheckpointRecords>> {
        if !self.dirty {
            return Ok(None);
        }
        let body = serde_json::to_vec(&self.table).map_err(|e| {
            Error::io(format!(
                "cannot encode the join table of {:?}: {e}",
                self.spec.topic
            ))
        })?;
        let saved = snapshot::save(&self.state_key, body, generation);
        let stale = match std::mem::replace(&mut self.chunked, saved.chunked) {
            Some(old) => snapshot::forget(&self.state_key, old),
            None => Vec::new(),
        };
        Ok(Some(CheckpointRecords {
            chunks: saved.chunks,
            header: saved.header,
            stale,
        }))
    }

    /// The checkpoint was made durable.
    pub fn saved(&mut self) {
        self.dirty = false;
    }
}

/// The state-topic messages of one join checkpoint.
pub struct CheckpointRecords {
    pub chunks: Vec<StateRecord>,
    pub header: StateRecord,
    pub stale: Vec<StateRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000;

    fn fx(tolerance: Option<i64>) -> Join {
        Join::new(
            AsOf {
                topic: "fx".into(),
                by: ("Currency".into(), "currency".into()),
                on: "Date".into(),
                tolerance,
                fields: vec!["rate".into()],
            },
            "ticks",
        )
    }

    fn put(join: &mut Join, offset: i64, record: &str) -> Vec<String> {
        let mut rejected = Vec::new();
        join.insert(
            &TimeFormat::default(),
            0,
            offset,
            Some(record.as_bytes()),
            &mut |why| rejected.push(why),
        );
        rejected
    }

    fn day(n: i64) -> i64 {
        // 2021-01-04 is day 18631 since the epoch.
        (18_631 + n) * DAY
    }

    #[test]
    fn a_tick_takes_the_latest_value_at_or_before_its_time_within_the_tolerance() {
        let mut join = fx(Some(3 * DAY));
        for (offset, record) in [
            r#"{"currency":"EUR","Date":"2021-01-06","rate":1.3}"#,
            r#"{"currency":"EUR","Date":"2021-01-04","rate":1.1}"#,
            r#"{"currency":"JPY","Date":"2021-01-04","rate":0.0091}"#,
        ]
        .iter()
        .enumerate()
        {
            assert!(put(&mut join, offset as i64, record).is_empty());
        }
        // Arrival order does not matter: each value counts from its own date.
        assert_eq!(join.lookup("EUR", day(0)), Ok(&[1.1][..]));
        assert_eq!(join.lookup("EUR", day(1) + 5), Ok(&[1.1][..]));
        assert_eq!(join.lookup("EUR", day(2)), Ok(&[1.3][..]));
        assert_eq!(join.lookup("EUR", day(5)), Ok(&[1.3][..]));
        let stale = join.lookup("EUR", day(5) + 1).unwrap_err();
        assert!(stale.contains("older than the join's tolerance"), "{stale}");
        let before = join.lookup("EUR", day(-1)).unwrap_err();
        assert!(
            before.contains("no record for Currency \"EUR\" at or before 2021-01-03"),
            "{before}"
        );
        assert!(join.lookup("CHF", day(0)).is_err());
        // A correction of a day replaces its value; a record read twice counts once.
        put(
            &mut join,
            3,
            r#"{"currency":"EUR","Date":"2021-01-04","rate":1.15}"#,
        );
        put(
            &mut join,
            1,
            r#"{"currency":"EUR","Date":"2021-01-04","rate":9}"#,
        );
        assert_eq!(join.lookup("EUR", day(1)), Ok(&[1.15][..]));
        assert_eq!(fx(None).spec.tolerance, None);
        let mut unbounded = fx(None);
        put(
            &mut unbounded,
            0,
            r#"{"currency":"EUR","Date":"2021-01-04","rate":1.1}"#,
        );
        assert_eq!(unbounded.lookup("EUR", day(3000)), Ok(&[1.1][..]));
    }

    #[test]
    fn records_that_are_no_table_records_are_rejected_with_where_and_why() {
        let mut join = fx(None);
        for (offset, (record, why)) in [
            ("nope", "not valid JSON"),
            (
                r#"{"Date":"2021-01-04","rate":1}"#,
                "missing field \"currency\"",
            ),
            (
                r#"{"currency":"EUR","Date":"2021-01-04","rate":"high"}"#,
                "\"rate\" is a string",
            ),
            (r#"{"currency":"EUR","rate":1}"#, "missing field \"Date\""),
        ]
        .iter()
        .enumerate()
        {
            let rejected = put(&mut join, offset as i64, record);
            assert_eq!(rejected.len(), 1);
            assert!(
                rejected[0].starts_with(&format!("fx[0]@{offset}: ")) && rejected[0].contains(why),
                "{rejected:?}"
            );
        }
        assert!(join.table.history.is_empty());
    }

    #[test]
    fn a_checkpoint_restores_the_table_and_one_of_other_fields_is_not_used() {
        let mut join = fx(None);
        put(
            &mut join,
            0,
            r#"{"currency":"EUR","Date":"2021-01-04","rate":1.1}"#,
        );
        let records = join.checkpoint(1).unwrap().unwrap();
        join.saved();
        assert!(join.checkpoint(2).unwrap().is_none(), "nothing new to save");
        let body = String::from_utf8(records.header.1.unwrap()).unwrap();
        let mut again = fx(None);
        assert!(again.wants_restore());
        assert_eq!(again.restore(Some((body.clone(), None))).unwrap(), None);
        assert!(!again.wants_restore());
        assert_eq!(again.lookup("EUR", day(1)), Ok(&[1.1][..]));
        assert_eq!(again.table.next.get(&0), Some(&1));
        let mut other = fx(None);
        other.spec.fields = vec!["bid".into()];
        other.table.fields = vec!["bid".into()];
        let note = other.restore(Some((body, None))).unwrap().unwrap();
        assert!(note.contains("read again from its beginning"), "{note}");
        assert!(other.table.history.is_empty());
        let e = fx(None)
            .restore(Some(("{".into(), None)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ticks:join:fx") && e.contains("damaged"), "{e}");
    }
}
