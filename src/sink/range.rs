//! The records of one Kafka partition that are buffered but not yet in the lake: an offset
//! range that becomes one object per partition folder (plus one quarantine object) and is
//! committed as a whole.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Instant;

use super::batch::Batch;
use super::config::SinkConfig;
use super::encode::encode;
use super::partitioning::Density;
use crate::error::Result;
use crate::lake::{Fields, Format, LastRecord, Layout};
use crate::parallel;
use crate::record::{Record, Scalar};
use polars::prelude::DataType;

/// One message as the sink sees it.
pub struct Message<'a> {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
}

impl Message<'_> {
    /// What the table records of a range's last message.
    fn identity(&self) -> LastRecord {
        LastRecord {
            timestamp: self.timestamp,
            key_bytes: self.key.map_or(0, <[u8]>::len),
            value_bytes: self.payload.map_or(0, <[u8]>::len),
        }
    }
}

/// A lake object ready to write.
pub struct Object<'r> {
    pub key: String,
    /// The partition path (`date=2021-01-04`), and the folder written to; `None` for the
    /// quarantine object.
    pub place: Option<(String, String)>,
    /// The Kafka offset of its first record: part of its name.
    pub first_offset: i64,
    /// Encoded, or borrowed from the range (JSON lines).
    pub body: Cow<'r, [u8]>,
}

/// A message kept as it came, while the table's layout is not decided yet.
struct RawMessage {
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

/// Buffered records of one Kafka partition.
pub struct PendingRange {
    pub first_offset: i64,
    /// The offset after the last buffered record: what is committed once this range is landed.
    pub next_offset: i64,
    /// The last buffered record, as the table records it.
    pub last: Option<LastRecord>,
    pub opened: Instant,
    /// When `records` was last seen to change (checked on the sink's timer, not per record).
    last_change: Instant,
    records_seen: usize,
    /// Message bytes buffered.
    pub bytes: usize,
    pub records: usize,
    /// One batch per partition folder, and where each folder's batch is.
    parts: Vec<(String, Batch)>,
    folders: HashMap<String, usize>,
    rejected: Option<Batch>,
    /// The last record's partition folder and what it was computed from, reused while
    /// records keep landing in it (the common case: a partition's ticks come in time order).
    last_path: Option<(Option<String>, i64, usize)>,
    /// Messages held until the first landing decides the table's layout.
    raw: Vec<RawMessage>,
}

impl PendingRange {
    pub fn new(first_offset: i64) -> Self {
        let now = Instant::now();
        PendingRange {
            first_offset,
            next_offset: first_offset,
            last: None,
            opened: now,
            last_change: now,
            records_seen: 0,
            bytes: 0,
            records: 0,
            parts: Vec::new(),
            folders: HashMap::new(),
            rejected: None,
            last_path: None,
            raw: Vec::new(),
        }
    }

    /// Buffers a message as it is, to be decoded once the layout is known.
    pub fn hold(&mut self, msg: &Message) {
        self.raw.push(RawMessage {
            offset: msg.offset,
            timestamp: msg.timestamp,
            key: msg.key.map(<[u8]>::to_vec),
            payload: msg.payload.map(<[u8]>::to_vec),
        });
        self.next_offset = msg.offset + 1;
        self.last = Some(msg.identity());
        self.bytes += msg.payload.map_or(0, <[u8]>::len);
        self.records += 1;
    }

    /// Whether messages are held undecoded.
    pub fn holding(&self) -> bool {
        !self.raw.is_empty()
    }

    /// Adds what the held messages say about the stream's density to `d`.
    pub fn measure(
        &self,
        config: &SinkConfig,
        d: &mut Density,
        symbols: &mut std::collections::HashSet<String>,
    ) {
        for raw in &self.raw {
            let Some(record) = raw.payload.as_deref().and_then(|p| Record::parse(p).ok()) else {
                continue;
            };
            let Some(Scalar::Str(time)) = record.get(&config.time_field) else {
                continue;
            };
            let Ok((micros, date_only)) = config.time_format.parse(time) else {
                continue;
            };
            d.time_of_day |= !date_only;
            if let Some(Scalar::Str(symbol)) = record.get(&config.symbol_field) {
                if !symbols.contains(symbol.as_ref()) {
                    symbols.insert(symbol.to_string());
                }
            }
            if d.records == 0 {
                d.min_micros = micros;
                d.max_micros = micros;
            }
            d.min_micros = d.min_micros.min(micros);
            d.max_micros = d.max_micros.max(micros);
            d.records += 1;
        }
    }

    /// Decodes the held messages with the layout now decided, as if they had just come.
    pub fn release(&mut self, partition: i32, config: &SinkConfig, layout: &Layout) {
        let raw = std::mem::take(&mut self.raw);
        let (records, bytes) = (self.records, self.bytes);
        for m in &raw {
            let msg = Message {
                partition,
                offset: m.offset,
                timestamp: m.timestamp,
                key: m.key.as_deref(),
                payload: m.payload.as_deref(),
            };
            self.add(&msg, config, layout);
        }
        self.records = records;
        self.bytes = bytes;
    }

    /// How long no record has been added, as of `now`.
    pub fn quiet_for(&mut self, now: Instant) -> std::time::Duration {
        if self.records != self.records_seen {
            self.records_seen = self.records;
            self.last_change = now;
        }
        now - self.last_change
    }

    /// Buffers a message; returns the reason when it goes to quarantine instead.
    pub fn add(&mut self, msg: &Message, config: &SinkConfig, layout: &Layout) -> Option<String> {
        let payload = msg.payload.unwrap_or_default();
        let outcome = self.route(msg, payload, config, layout);
        if let Err(reason) = &outcome {
            let line = rejected_line(msg, &config.topic, reason);
            let batch = self
                .rejected
                .get_or_insert_with(|| Batch::new(msg.offset, false, None));
            batch.lines.extend_from_slice(&line);
            batch.rows += 1;
        }
        self.next_offset = msg.offset + 1;
        self.last = Some(msg.identity());
        self.bytes += payload.len();
        self.records += 1;
        outcome.err()
    }

    fn route(
        &mut self,
        msg: &Message,
        payload: &[u8],
        config: &SinkConfig,
        layout: &Layout,
    ) -> std::result::Result<(), String> {
        if msg.payload.is_none() {
            return Err("empty message (no value)".into());
        }
        let record = Record::parse(payload)?;
        let symbol = record.symbol(&config.symbol_field)?;
        let time = record.event_time(&config.time_field, &config.time_format)?;
        let (key_symbol, bucket) = layout.folder_key(symbol, time.micros);
        let part = match &self.last_path {
            Some((s, b, part)) if s.as_deref() == key_symbol && *b == bucket => *part,
            _ => {
                let path = layout.partition_path(symbol, time.micros);
                let part = match self.folders.get(&path) {
                    Some(&part) => part,
                    None => {
                        // It could never be written: retrying would stall the partition.
                        if let Some(why) = Layout::unfit_path(&path) {
                            return Err(format!("field {:?}: {why}", config.symbol_field));
                        }
                        let store_columns = config.format == Format::Parquet;
                        let meta = config.kafka_metadata.then_some(msg.partition);
                        let batch = Batch::new(msg.offset, store_columns, meta);
                        self.folders.insert(path.clone(), self.parts.len());
                        self.parts.push((path, batch));
                        self.parts.len() - 1
                    }
                };
                self.last_path = Some((key_symbol.map(str::to_string), bucket, part));
                part
            }
        };
        let batch = &mut self.parts[part].1;
        batch.push(&record, payload, config, time, msg.offset, msg.timestamp)
    }

    /// Adds to `out` the columns of the range's batches that `known` has no field id for,
    /// each once, with a type that holds what every batch has in it (doubles for
    /// integers and fractions, timestamps for dates and times).
    pub fn columns_without_ids(&self, known: &Fields, out: &mut Vec<(String, DataType)>) {
        for column in self.parts.iter().flat_map(|(_, batch)| &batch.columns) {
            if known.id(&column.name).is_some() {
                continue;
            }
            let dtype = column.dtype();
            match out.iter_mut().find(|(n, _)| *n == column.name) {
                None => out.push((column.name.clone(), dtype)),
                Some((_, seen)) => match (&*seen, &dtype) {
                    (DataType::Int64, DataType::Float64)
                    | (DataType::Date, DataType::Datetime(..)) => *seen = dtype,
                    _ => {}
                },
            }
        }
    }

    /// The range's objects: one per partition folder (in the folder `folder_of` gives for
    /// its partition path), and the quarantine object if any. They are encoded in parallel.
    pub fn objects(
        &self,
        partition: i32,
        layout: &Layout,
        folder_of: &(dyn Fn(&str) -> String + Sync),
        fields: &Fields,
        order: &[&str],
    ) -> Result<Vec<Object<'_>>> {
        let batches: Vec<(&String, &Batch)> = self.parts.iter().map(|(p, b)| (p, b)).collect();
        let mut out = parallel::map(&batches, |(path, batch)| {
            let folder = folder_of(path);
            Ok(Object {
                key: layout.data_key(&folder, partition, batch.first_offset),
                place: Some((path.to_string(), folder)),
                first_offset: batch.first_offset,
                body: encode(batch, layout.format, fields, order)?,
            })
        })
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        if let Some(batch) = &self.rejected {
            out.push(Object {
                key: layout.rejected_key(partition, batch.first_offset),
                place: None,
                first_offset: batch.first_offset,
                body: Cow::Borrowed(&batch.lines),
            });
        }
        Ok(out)
    }

    /// The buffered records of each partition path, as frames typed as their objects
    /// would be (for queries of what is not landed yet). Batches must hold columns.
    pub fn frames(&self) -> Result<Vec<(String, polars::prelude::DataFrame)>> {
        self.parts
            .iter()
            .map(|(path, batch)| Ok((path.clone(), super::encode::frame(batch)?)))
            .collect()
    }

    /// Records that will land as data (the rest are quarantined).
    pub fn accepted(&self) -> usize {
        self.parts.iter().map(|(_, b)| b.rows).sum()
    }
}

/// A quarantine line: where the message was, why it was refused, and its exact bytes.
fn rejected_line(msg: &Message, topic: &str, reason: &str) -> Vec<u8> {
    fn text(b: Option<&[u8]>) -> Option<&str> {
        b.and_then(|b| std::str::from_utf8(b).ok())
    }
    let b64 = |b: Option<&[u8]>| b.map(aws_smithy_types::base64::encode);
    let mut line = serde_json::to_vec(&serde_json::json!({
        "topic": topic,
        "partition": msg.partition,
        "offset": msg.offset,
        "timestamp": msg.timestamp,
        "error": reason,
        "key": text(msg.key),
        "value": text(msg.payload),
        "key_base64": b64(msg.key),
        "value_base64": b64(msg.payload),
    }))
    .unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::lake::PartitionKey;
    use crate::record::time::parse_micros;

    fn config() -> SinkConfig {
        let mut c = SinkConfig::new("t", "g");
        // NDJSON bodies are the records' own lines: easy to count and read back.
        c.format = Format::Ndjson;
        c
    }

    fn layout(keys: Vec<PartitionKey>) -> Layout {
        Layout {
            table: "ticks".into(),
            topic: "t".into(),
            keys,
            format: Format::Ndjson,
        }
    }

    fn tick(symbol: &str, date: &str) -> String {
        format!(r#"{{"Index":"{symbol}","Date":"{date}","Close":1.5}}"#)
    }

    fn message(offset: i64, payload: Option<&[u8]>) -> Message<'_> {
        Message {
            partition: 0,
            offset,
            timestamp: Some(1_000 + offset),
            key: None,
            payload,
        }
    }

    fn lines(body: &[u8]) -> Vec<serde_json::Value> {
        body.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn a_range_lands_only_records_it_accepted() {
        let (config, layout) = (config(), layout(vec![PartitionKey::Date]));
        let good = tick("NYA", "2021-01-04");
        let no_symbol = r#"{"Date":"2021-01-04","Close":1}"#;
        let not_utf8: &[u8] = b"\xff\xfe";
        let late = tick("NYA", "2021-01-05");
        let mut range = PendingRange::new(0);
        let payloads: [Option<&[u8]>; 5] = [
            Some(good.as_bytes()),
            None,
            Some(no_symbol.as_bytes()),
            Some(not_utf8),
            Some(late.as_bytes()),
        ];
        let reasons: Vec<Option<String>> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| range.add(&message(i as i64, *p), &config, &layout))
            .collect();
        assert!(reasons[0].is_none() && reasons[4].is_none(), "{reasons:?}");
        assert_eq!(reasons[1].as_deref(), Some("empty message (no value)"));
        assert!(reasons[2]
            .as_deref()
            .unwrap()
            .contains("missing field \"Index\""));
        assert!(reasons[3].is_some());
        // Refused records still move the range on: their offsets are committed with it.
        assert_eq!(
            (range.records, range.accepted(), range.next_offset),
            (5, 2, 5)
        );
        assert_eq!(range.last.unwrap().timestamp, Some(1_004));

        let objects = range
            .objects(0, &layout, &|p| layout.folder(p), &Fields::default(), &[])
            .unwrap();
        let data: Vec<&Object> = objects.iter().filter(|o| o.place.is_some()).collect();
        assert_eq!(data.len(), 2);
        let quarantine: Vec<&Object> = objects.iter().filter(|o| o.place.is_none()).collect();
        assert_eq!(quarantine.len(), 1, "one quarantine object per range");
        assert_eq!(quarantine[0].key, layout.rejected_key(0, 1));
        let refused = lines(&quarantine[0].body);
        let offsets: Vec<i64> = refused
            .iter()
            .map(|l| l["offset"].as_i64().unwrap())
            .collect();
        assert_eq!(offsets, [1, 2, 3]);
        // Bytes that are not text are kept exactly, in base64 only.
        assert!(refused[2]["value"].is_null());
        assert_eq!(refused[2]["value_base64"], "//4=");
        assert_eq!(refused[1]["value"], no_symbol);
        assert!(refused[0]["value_base64"].is_null());
    }

    #[test]
    fn records_of_one_folder_share_an_object_even_when_days_interleave() {
        let (config, layout) = (config(), layout(vec![PartitionKey::Date]));
        let days = ["2021-01-04", "2021-01-05", "2021-01-04", "2021-01-04"];
        let mut range = PendingRange::new(10);
        for (i, day) in days.iter().enumerate() {
            let payload = tick("NYA", day);
            let msg = message(10 + i as i64, Some(payload.as_bytes()));
            assert_eq!(range.add(&msg, &config, &layout), None);
        }
        // A compaction moved one partition: its object goes to the new folder.
        let moved = |path: &str| match path {
            "date=2021-01-05" => "ticks/date=2021-01-05/_v9".to_string(),
            other => layout.folder(other),
        };
        let objects = range
            .objects(0, &layout, &moved, &Fields::default(), &[])
            .unwrap();
        let found: Vec<(&str, i64, usize)> = objects
            .iter()
            .map(|o| (o.key.as_str(), o.first_offset, lines(&o.body).len()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "ticks/date=2021-01-04/part-t-0-00000000000000000010.json",
                    10,
                    3
                ),
                (
                    "ticks/date=2021-01-05/_v9/part-t-0-00000000000000000011.json",
                    11,
                    1
                ),
            ]
        );
        assert_eq!(
            objects[1].place,
            Some((
                "date=2021-01-05".to_string(),
                "ticks/date=2021-01-05/_v9".to_string()
            ))
        );
    }

    #[test]
    fn held_messages_are_measured_then_decoded_without_counting_twice() {
        let config = config();
        let payloads = [
            tick("NYA", "2021-01-04"),
            tick("GSPC", "2021-01-06"),
            "not json".to_string(),
            tick("NYA", "2021-01-05"),
        ];
        let mut range = PendingRange::new(0);
        for (i, p) in payloads.iter().enumerate() {
            range.hold(&message(i as i64, Some(p.as_bytes())));
        }
        assert!(range.holding());
        let bytes = range.bytes;
        assert_eq!(bytes, payloads.iter().map(String::len).sum::<usize>());

        let mut density = Density::default();
        let mut symbols = HashSet::new();
        range.measure(&config, &mut density, &mut symbols);
        assert_eq!(density.records, 3, "the undecodable message says nothing");
        assert_eq!(density.min_micros, parse_micros("2021-01-04").unwrap());
        assert_eq!(density.max_micros, parse_micros("2021-01-06").unwrap());
        assert_eq!(
            symbols,
            HashSet::from(["NYA".to_string(), "GSPC".to_string()])
        );

        range.release(0, &config, &layout(vec![PartitionKey::Symbol]));
        assert!(!range.holding());
        assert_eq!((range.records, range.bytes), (4, bytes));
        assert_eq!(range.accepted(), 3);
        assert_eq!(range.next_offset, 4);
    }

    #[test]
    fn a_symbol_no_folder_can_hold_is_quarantined_instead_of_retried() {
        let (config, layout) = (config(), layout(vec![PartitionKey::Symbol]));
        let long = tick(&"X".repeat(300), "2021-01-04");
        let blank = tick("  ", "2021-01-04");
        let fine = tick("NYA", "2021-01-04");
        let mut range = PendingRange::new(0);
        let why = range
            .add(&message(0, Some(long.as_bytes())), &config, &layout)
            .unwrap();
        assert!(why.contains("\"Index\"") && why.contains("255"), "{why}");
        let why = range
            .add(&message(1, Some(blank.as_bytes())), &config, &layout)
            .unwrap();
        assert!(why.contains("is empty"), "{why}");
        assert_eq!(
            range.add(&message(2, Some(fine.as_bytes())), &config, &layout),
            None
        );
        assert_eq!((range.records, range.accepted()), (3, 1));
        let objects = range
            .objects(0, &layout, &|p| layout.folder(p), &Fields::default(), &[])
            .unwrap();
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "ticks/symbol=NYA/part-t-0-00000000000000000002.json",
                "_rejected/ticks/part-t-0-00000000000000000000.json",
            ]
        );
    }
}
