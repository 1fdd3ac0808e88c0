//! The layout of a lake, shared by everything that writes or reads it: object formats,
//! Hive-style folders (`key=value/`, with Hive's escaping) taken from each record, and
//! deterministic object names from (topic, partition, first offset), so a replay rewrites
//! the same objects.

use chrono::{DateTime, Datelike, Timelike};

/// Longest file or folder name local file systems take.
const MAX_NAME_BYTES: usize = 255;
/// Longest partition path: with a table name and an object name it stays within an S3 key's
/// 1,024 bytes for any prefix of up to ~250 bytes.
const MAX_PATH_BYTES: usize = 512;

choices! {
    /// The file format of the lake's data objects.
    #[derive(serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Format as "format" {
        /// Parquet with zstd compression and typed columns.
        Parquet = ["parquet"],
        /// One newline-terminated JSON object per line.
        Ndjson = ["ndjson", "jsonl", "json"],
    }
}

impl Format {
    /// The object name suffix.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Ndjson => "json",
        }
    }

    /// The format of an object, from its name.
    pub fn of(key: &str) -> Option<Self> {
        if key.ends_with(".parquet") {
            Some(Format::Parquet)
        } else if [".json", ".ndjson", ".jsonl"]
            .iter()
            .any(|e| key.ends_with(e))
        {
            Some(Format::Ndjson)
        } else {
            None
        }
    }
}

choices! {
    /// How a table describes its objects to readers: Hive-style folders listed in a catalog,
    /// or an Apache Iceberg table whose snapshots list its files.
    pub enum TableFormat as "table_format" {
        Hive = ["hive"],
        Iceberg = ["iceberg"],
    }
}

choices! {
    /// One level of the lake's Hive-style folders (`key=value/`), taken from each record; its
    /// name is the folder key, as Hive, Athena and Polars name the partition column.
    pub enum PartitionKey as "partition key" {
        Symbol = ["symbol"],
        Year = ["year"],
        Month = ["month"],
        Date = ["date", "day"],
        Hour = ["hour"],
    }
}

/// Folder and object naming for one sink.
#[derive(Debug, Clone)]
pub struct Layout {
    pub table: String,
    pub topic: String,
    pub keys: Vec<PartitionKey>,
    pub format: Format,
}

impl Layout {
    /// The partition folders of a record (`date=2021-01-04`), empty when not partitioned.
    pub fn partition_path(&self, symbol: &str, micros: i64) -> String {
        let t = DateTime::from_timestamp_micros(micros).unwrap_or_default();
        let parts: Vec<String> = self
            .keys
            .iter()
            .map(|key| {
                let value = match key {
                    PartitionKey::Symbol => escape(symbol),
                    PartitionKey::Year => format!("{:04}", t.year()),
                    PartitionKey::Month => format!("{:04}-{:02}", t.year(), t.month()),
                    PartitionKey::Date => {
                        format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day())
                    }
                    PartitionKey::Hour => format!("{:02}", t.hour()),
                };
                format!("{}={value}", key.name())
            })
            .collect();
        parts.join("/")
    }

    /// Why `path` (from [`Self::partition_path`]) cannot be a folder, if it cannot: a local
    /// file system takes at most 255 bytes per name, and S3 keys at most 1,024 bytes in all
    /// (prefix, table and object name included, hence the smaller bound on the path).
    pub fn unfit_path(path: &str) -> Option<String> {
        if let Some(long) = path.split('/').find(|c| c.len() > MAX_NAME_BYTES) {
            let (key, _) = long.split_once('=').unwrap_or((long, ""));
            return Some(format!(
                "its folder {key}=… would be {} bytes long; a folder name may have at most {MAX_NAME_BYTES}",
                long.len()
            ));
        }
        (path.len() > MAX_PATH_BYTES).then(|| {
            format!(
                "its folders would be {} bytes long; they may have at most {MAX_PATH_BYTES}",
                path.len()
            )
        })
    }

    /// What a record's folder depends on: its symbol (if folders name it) and its hour or
    /// day. Records with equal keys share a folder.
    pub fn folder_key<'a>(&self, symbol: &'a str, micros: i64) -> (Option<&'a str>, i64) {
        let symbol = self.keys.contains(&PartitionKey::Symbol).then_some(symbol);
        let bucket = if self.keys.contains(&PartitionKey::Hour) {
            micros.div_euclid(3_600_000_000)
        } else if self.keys.iter().any(|k| *k != PartitionKey::Symbol) {
            micros.div_euclid(86_400_000_000)
        } else {
            0
        };
        (symbol, bucket)
    }

    /// The default folder of a partition path below the lake root: `ticks/date=2021-01-04`
    /// (compaction may move a partition to a versioned folder below it).
    pub fn folder(&self, path: &str) -> String {
        table_folder(&self.table, path)
    }

    /// The object holding a range's records for one partition, in `folder`.
    pub fn data_key(&self, folder: &str, partition: i32, first_offset: i64) -> String {
        let name = self.file_name(partition, first_offset, self.format.extension());
        format!("{folder}/{name}")
    }

    /// The quarantine object for a range's undecodable records.
    pub fn rejected_key(&self, partition: i32, first_offset: i64) -> String {
        format!(
            "_rejected/{}/{}",
            self.table,
            self.file_name(partition, first_offset, "json")
        )
    }

    fn file_name(&self, partition: i32, first_offset: i64, ext: &str) -> String {
        format!("part-{}-{partition}-{first_offset:020}.{ext}", self.topic)
    }
}

/// `table/path`, or `table` for an unpartitioned table.
pub fn table_folder(table: &str, path: &str) -> String {
    if path.is_empty() {
        table.to_string()
    } else {
        format!("{table}/{path}")
    }
}

/// What a sink's object name says: the Kafka partition and first offset of its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectName {
    pub partition: i32,
    pub first_offset: i64,
}

impl ObjectName {
    /// Parses `.../part-<topic>-<partition>-<offset, 20 digits>.<ext>` for `topic`; `None`
    /// for any other object (a compacted object, or one another writer made).
    pub fn parse(key: &str, topic: &str) -> Option<Self> {
        let name = key.rsplit('/').next()?;
        let rest = name.strip_prefix("part-")?.strip_prefix(topic)?;
        let rest = rest.strip_prefix('-')?;
        let (stem, _ext) = rest.split_once('.')?;
        let (partition, offset) = stem.split_once('-')?;
        if offset.len() != 20 || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(ObjectName {
            partition: partition.parse().ok()?,
            first_offset: offset.parse().ok()?,
        })
    }
}

/// The `key=value` folder levels of `key` below `folder`.
pub fn partition_of(folder: &str, key: &str) -> Vec<(String, String)> {
    let inner = key[folder.len()..].trim_start_matches('/');
    let dirs = inner.rsplit_once('/').map_or("", |(d, _)| d);
    dirs.split('/')
        .filter(|d| !d.is_empty() && !d.starts_with('_'))
        .map(|d| match d.split_once('=') {
            Some((k, v)) => (k.to_string(), unescape(v)),
            None => (String::new(), d.to_string()),
        })
        .collect()
}

/// The partition values of a partition path (`symbol=%5EGSPC/date=2021-01-04` →
/// `^GSPC`, `2021-01-04`).
pub fn path_values(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|d| !d.is_empty())
        .map(|d| unescape(d.split_once('=').map_or(d, |(_, v)| v)))
        .collect()
}

/// Catalog files, quarantine, compaction versions, and temporary or marker files are not
/// data of the folder they are in.
pub fn is_hidden(key: &str) -> bool {
    key.split('/')
        .any(|part| part.starts_with('_') || part.starts_with('.'))
}

/// Hive's escaping of partition values: anything but letters, digits, `-`, `_` and `.`
/// becomes `%XX`, so a symbol like `^GSPC` or `A/B` cannot break the folder structure.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value a Hive folder name stands for (`%5EGSPC` is `^GSPC`).
pub fn unescape(folder_value: &str) -> String {
    let bytes = folder_value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_parse_back() {
        let l = layout(vec![]);
        let key = l.data_key("ticks/date=2021-01-04/_v1", 3, 42);
        assert_eq!(
            ObjectName::parse(&key, "stock-market"),
            Some(ObjectName {
                partition: 3,
                first_offset: 42
            })
        );
        assert_eq!(ObjectName::parse(&key, "stock"), None);
        assert_eq!(
            ObjectName::parse("t/compact-1.parquet", "stock-market"),
            None
        );
    }

    #[test]
    fn partitions_come_from_key_value_folders() {
        assert_eq!(
            partition_of("ticks", "ticks/symbol=NYA/month=2021-01/part-0.parquet"),
            vec![
                ("symbol".to_string(), "NYA".to_string()),
                ("month".to_string(), "2021-01".to_string())
            ]
        );
        assert!(partition_of("ticks", "ticks/part-0.parquet").is_empty());
        assert!(partition_of("ticks", "ticks/_v12/part-0.parquet").is_empty());
        assert_eq!(partition_of("t", "t/symbol=%5EGSPC/x.json")[0].1, "^GSPC");
        assert_eq!(partition_of("t", "t/raw/x.json")[0].0, "");
    }

    #[test]
    fn hidden_objects_are_not_data() {
        assert!(is_hidden("_rejected/t/part-0.json"));
        assert!(is_hidden("t/date=2021-01-04/.part-0.parquet.12.0.tmp"));
        assert!(is_hidden("t/_SUCCESS"));
        assert!(!is_hidden("t/date=2021-01-04/part-0.parquet"));
    }

    fn layout(keys: Vec<PartitionKey>) -> Layout {
        Layout {
            table: "ticks".into(),
            topic: "stock-market".into(),
            keys,
            format: Format::Parquet,
        }
    }

    #[test]
    fn names_objects_from_partition_and_first_offset() {
        let l = layout(vec![PartitionKey::Date]);
        // 2021-01-04 13:00 UTC
        let micros = 1_609_765_200_000_000;
        let path = l.partition_path("NYA", micros);
        assert_eq!(path, "date=2021-01-04");
        assert_eq!(
            l.data_key(&l.folder(&path), 3, 42),
            "ticks/date=2021-01-04/part-stock-market-3-00000000000000000042.parquet"
        );
        assert_eq!(
            l.rejected_key(3, 42),
            "_rejected/ticks/part-stock-market-3-00000000000000000042.json"
        );
    }

    #[test]
    fn symbol_hour_and_unpartitioned_layouts() {
        let micros = 1_609_765_200_000_000;
        let l = layout(vec![
            PartitionKey::Symbol,
            PartitionKey::Date,
            PartitionKey::Hour,
        ]);
        assert_eq!(
            l.partition_path("^GS/PC", micros),
            "symbol=%5EGS%2FPC/date=2021-01-04/hour=13"
        );
        let l = layout(vec![PartitionKey::Year, PartitionKey::Month]);
        assert_eq!(l.partition_path("A", micros), "year=2021/month=2021-01");
        let l = layout(vec![]);
        assert_eq!(
            l.data_key(&l.folder(&l.partition_path("A", micros)), 0, 1),
            "ticks/part-stock-market-0-00000000000000000001.parquet"
        );
    }
}
