//! Where each record lands: Hive-style folders from its own fields, and deterministic
//! object names from (topic, partition, first offset), so a replay rewrites the same objects.

use chrono::{DateTime, Datelike, Timelike};

use super::config::{Format, PartitionKey};

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

    /// The object holding a range's records for one partition folder.
    pub fn data_key(&self, path: &str, partition: i32, first_offset: i64) -> String {
        let name = self.file_name(partition, first_offset, self.format.extension());
        if path.is_empty() {
            format!("{}/{name}", self.table)
        } else {
            format!("{}/{path}/{name}", self.table)
        }
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
            l.data_key(&path, 3, 42),
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
            l.data_key(&l.partition_path("A", micros), 0, 1),
            "ticks/part-stock-market-0-00000000000000000001.parquet"
        );
    }
}
