//! The records of one future lake object: typed columns (Parquet) or JSON lines (NDJSON),
//! with each column's type settled by its declaration or its first value, so that a record
//! that does not fit is rejected instead of corrupting the file.

use super::config::{ColumnType, SinkConfig};
use crate::record::{EventTime, Record, Scalar};

/// Kafka coordinates of each row, kept when the sink adds them as columns.
#[derive(Debug, Default)]
pub struct KafkaMeta {
    pub partition: i32,
    pub offsets: Vec<i64>,
    pub timestamps: Vec<Option<i64>>,
}

/// A column's values; only the variant is kept when the batch stores JSON lines.
#[derive(Debug)]
pub enum Values {
    /// No non-null value yet.
    Null,
    Bool(Vec<bool>),
    Int(Vec<i64>),
    Float(Vec<f64>),
    Str {
        text: String,
        ends: Vec<usize>,
    },
    /// The event-time field: a date column if every value is a plain date, else a timestamp.
    Time {
        micros: Vec<i64>,
        date_only: bool,
    },
}

#[derive(Debug)]
pub struct Column {
    pub name: String,
    declared: Option<ColumnType>,
    pub values: Values,
    pub valid: Vec<bool>,
    /// The `Batch::stamp` of the last record that used this column.
    stamp: u64,
}

impl Column {
    /// The type this column has in the Parquet object (a column of nulls only is text).
    pub fn dtype(&self) -> polars::prelude::DataType {
        use polars::prelude::{DataType, TimeUnit};
        match &self.values {
            Values::Null | Values::Str { .. } => DataType::String,
            Values::Bool(_) => DataType::Boolean,
            Values::Int(_) => DataType::Int64,
            Values::Float(_) => DataType::Float64,
            Values::Time {
                date_only: true, ..
            } => DataType::Date,
            Values::Time { .. } => DataType::Datetime(TimeUnit::Microseconds, None),
        }
    }
}

/// Rows for one lake object.
#[derive(Debug)]
pub struct Batch {
    /// The Kafka offset of the first row: part of the object's name.
    pub first_offset: i64,
    pub rows: usize,
    pub columns: Vec<Column>,
    /// NDJSON: the lines themselves; Parquet: empty.
    pub lines: Vec<u8>,
    store_columns: bool,
    pub meta: Option<KafkaMeta>,
    /// Counts `push` calls, to spot a field name used twice in one record.
    stamp: u64,
    /// Each field's column in the record being added (kept to reuse its storage).
    found: Vec<Option<usize>>,
}

/// The columns `kafka_metadata` adds to every record.
pub const KAFKA_COLUMNS: [&str; 3] = ["_kafka_partition", "_kafka_offset", "_kafka_timestamp"];

impl Batch {
    /// An empty batch. `store_columns` is false for NDJSON, where columns only track types.
    pub fn new(first_offset: i64, store_columns: bool, meta_partition: Option<i32>) -> Self {
        Batch {
            first_offset,
            rows: 0,
            columns: Vec::new(),
            lines: Vec::new(),
            store_columns,
            stamp: 0,
            found: Vec::new(),
            meta: meta_partition.map(|partition| KafkaMeta {
                partition,
                ..KafkaMeta::default()
            }),
        }
    }

    /// Adds one record, or explains why it does not fit; a rejected record changes nothing.
    pub fn push(
        &mut self,
        record: &Record,
        raw: &[u8],
        config: &SinkConfig,
        time: EventTime,
        offset: i64,
        timestamp: Option<i64>,
    ) -> Result<(), String> {
        let declared = config.columns.as_slice();
        // Settle every field's column before changing anything, so a refused record leaves
        // no trace. A column matched twice means the record repeats a field name.
        self.stamp += 1;
        let mut found = std::mem::take(&mut self.found);
        found.clear();
        let mut new_names: Vec<&str> = Vec::new();
        for (i, (name, value)) in record.fields.iter().enumerate() {
            let index = self.column_index(i, name);
            let repeated = match index {
                Some(c) => std::mem::replace(&mut self.columns[c].stamp, self.stamp) == self.stamp,
                None if self.meta.is_some() && KAFKA_COLUMNS.contains(&name.as_ref()) => {
                    self.found = found;
                    return Err(format!(
                        "field {name:?} has the name of a Kafka metadata column \
                         (kafka_metadata=True adds it)"
                    ));
                }
                None => {
                    new_names.contains(&name.as_ref()) || {
                        new_names.push(name);
                        false
                    }
                }
            };
            if repeated {
                self.found = found;
                return Err(format!("field {name:?} appears twice"));
            }
            if i != time.field {
                let fits = match index {
                    Some(c) => self.columns[c].accepts(value),
                    None => accepts_new(name, declared_type(declared, name), value),
                };
                if let Err(e) = fits {
                    self.found = found;
                    return Err(e);
                }
            }
            found.push(index);
        }
        for (i, (name, value)) in record.fields.iter().enumerate() {
            let idx = match found[i] {
                Some(c) => c,
                None => {
                    let values = if i == time.field {
                        Values::Time {
                            micros: Vec::new(),
                            date_only: true,
                        }
                    } else {
                        Values::Null
                    };
                    self.columns.push(Column::new(
                        name,
                        declared_type(declared, name),
                        values,
                        self.rows,
                        self.store_columns,
                    ));
                    self.columns.len() - 1
                }
            };
            let col = &mut self.columns[idx];
            if let Values::Time { micros, date_only } = &mut col.values {
                *date_only &= time.date_only;
                if self.store_columns {
                    micros.push(time.micros);
                    col.valid.push(true);
                }
            } else {
                col.push(value, self.store_columns);
            }
        }
        self.found = found;
        let rows = self.rows + 1;
        if self.store_columns {
            for col in &mut self.columns {
                if col.valid.len() < rows {
                    col.push(&Scalar::Null, true);
                }
            }
        } else {
            push_line(
                &mut self.lines,
                raw,
                self.meta.as_ref().map(|m| (m.partition, offset, timestamp)),
            );
        }
        if let Some(meta) = &mut self.meta {
            meta.offsets.push(offset);
            meta.timestamps.push(timestamp);
        }
        self.rows = rows;
        Ok(())
    }
}

impl Batch {
    /// The column of the record's `i`-th field. Records usually list their fields in the
    /// same order, so position `i` is tried first.
    fn column_index(&self, i: usize, name: &str) -> Option<usize> {
        match self.columns.get(i) {
            Some(c) if c.name == name => Some(i),
            _ => self.columns.iter().position(|c| c.name == name),
        }
    }
}

fn declared_type(declared: &[(String, ColumnType)], name: &str) -> Option<ColumnType> {
    declared.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
}

/// Whether a column that does not exist yet may start with `value`.
fn accepts_new(name: &str, declared: Option<ColumnType>, value: &Scalar) -> Result<(), String> {
    let fits = match (declared, value) {
        (_, Scalar::Nested) => false,
        (None, _) | (_, Scalar::Null) => true,
        (Some(ColumnType::Float), Scalar::Int(_) | Scalar::Float(_)) => true,
        (Some(ColumnType::Int), Scalar::Int(_)) => true,
        (Some(ColumnType::String), Scalar::Str(_)) => true,
        (Some(ColumnType::Bool), Scalar::Bool(_)) => true,
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(mismatch(
            name,
            declared.map_or("a flat value", expected_text),
            value,
        ))
    }
}

fn expected_text(t: ColumnType) -> &'static str {
    match t {
        ColumnType::String => "a string",
        ColumnType::Float => "a number",
        ColumnType::Int => "an integer",
        ColumnType::Bool => "a boolean",
    }
}

fn mismatch(name: &str, expected: &str, value: &Scalar) -> String {
    format!(
        "field {name:?}: expected {expected}, got {}",
        value.describe()
    )
}

impl Column {
    fn new(
        name: &str,
        declared: Option<ColumnType>,
        values: Values,
        rows: usize,
        store: bool,
    ) -> Self {
        let mut col = Column {
            name: name.to_string(),
            declared,
            values,
            valid: Vec::new(),
            stamp: 0,
        };
        if let (Some(t), Values::Null) = (declared, &col.values) {
            col.values = match t {
                ColumnType::Bool => Values::Bool(Vec::new()),
                ColumnType::Int => Values::Int(Vec::new()),
                ColumnType::Float => Values::Float(Vec::new()),
                ColumnType::String => Values::Str {
                    text: String::new(),
                    ends: Vec::new(),
                },
            };
        }
        if store {
            for _ in 0..rows {
                col.push(&Scalar::Null, true);
            }
        }
        col
    }

    fn accepts(&self, value: &Scalar) -> Result<(), String> {
        let fits = match (&self.values, value) {
            (_, Scalar::Nested) => false,
            (_, Scalar::Null) | (Values::Null, _) => {
                accepts_new(&self.name, self.declared, value).is_ok()
            }
            (Values::Bool(_), Scalar::Bool(_)) => true,
            (Values::Int(_), Scalar::Int(_)) => true,
            // An integer column becomes float when a fraction shows up, unless declared int.
            (Values::Int(_), Scalar::Float(_)) => self.declared.is_none(),
            (Values::Float(_), Scalar::Int(_) | Scalar::Float(_)) => true,
            (Values::Str { .. }, Scalar::Str(_)) => true,
            _ => false,
        };
        if fits {
            return Ok(());
        }
        let expected = match &self.values {
            Values::Bool(_) => "a boolean (as in earlier records)",
            Values::Int(_) if self.declared.is_some() => "an integer",
            Values::Int(_) | Values::Float(_) => "a number (as in earlier records)",
            Values::Str { .. } => "a string (as in earlier records)",
            Values::Null | Values::Time { .. } => "a flat value",
        };
        let expected = self.declared.map_or(expected, expected_text);
        Err(mismatch(&self.name, expected, value))
    }

    /// Appends a value that `accepts` allowed, settling or widening the column's type.
    fn push(&mut self, value: &Scalar, store: bool) {
        let rows = self.valid.len();
        if let (Values::Int(ints), Scalar::Float(_)) = (&self.values, value) {
            self.values = Values::Float(ints.iter().map(|&i| i as f64).collect());
        }
        if matches!(self.values, Values::Null) {
            self.values = match value {
                Scalar::Bool(_) => Values::Bool(vec![false; rows]),
                Scalar::Int(_) => Values::Int(vec![0; rows]),
                Scalar::Float(_) => Values::Float(vec![0.0; rows]),
                Scalar::Str(_) => Values::Str {
                    text: String::new(),
                    ends: vec![0; rows],
                },
                Scalar::Null | Scalar::Nested => Values::Null,
            };
        }
        if !store {
            return;
        }
        self.valid.push(!matches!(value, Scalar::Null));
        match (&mut self.values, value) {
            (Values::Null, _) => {}
            (Values::Bool(v), Scalar::Bool(b)) => v.push(*b),
            (Values::Int(v), Scalar::Int(i)) => v.push(*i),
            (Values::Float(v), Scalar::Int(i)) => v.push(*i as f64),
            (Values::Float(v), Scalar::Float(f)) => v.push(*f),
            (Values::Str { text, ends }, Scalar::Str(s)) => {
                text.push_str(s);
                ends.push(text.len());
            }
            (Values::Bool(v), _) => v.push(false),
            (Values::Int(v), _) => v.push(0),
            (Values::Float(v), _) => v.push(0.0),
            (Values::Str { text, ends }, _) => ends.push(text.len()),
            (Values::Time { micros, .. }, _) => micros.push(0),
        }
    }
}

/// Appends one message as a JSON line. Raw line breaks in valid JSON can only be
/// whitespace between tokens, so they become spaces; Kafka coordinates go in front.
fn push_line(lines: &mut Vec<u8>, raw: &[u8], meta: Option<(i32, i64, Option<i64>)>) {
    let raw = raw.trim_ascii();
    match meta {
        Some((partition, offset, timestamp)) => {
            lines.extend_from_slice(
                format!(
                    "{{\"_kafka_partition\":{partition},\"_kafka_offset\":{offset},\"_kafka_timestamp\":{},",
                    timestamp.map_or("null".to_string(), |t| t.to_string())
                )
                .as_bytes(),
            );
            // Records always hold at least the symbol and time fields, so the object is not empty.
            let body = raw[1..].trim_ascii_start();
            lines.extend(
                body.iter()
                    .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
            );
        }
        None => lines.extend(
            raw.iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        ),
    }
    lines.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: EventTime = EventTime {
        field: 1,
        micros: 0,
        date_only: true,
    };

    fn config(declared: &[(String, ColumnType)]) -> SinkConfig {
        let mut c = SinkConfig::new("t", "g");
        c.columns = declared.to_vec();
        c
    }

    fn push(
        batch: &mut Batch,
        json: &str,
        declared: &[(String, ColumnType)],
    ) -> Result<(), String> {
        let r = Record::parse(json.as_bytes()).unwrap();
        batch.push(&r, json.as_bytes(), &config(declared), T, 0, None)
    }

    #[test]
    fn new_columns_are_padded_and_types_widen() {
        let mut b = Batch::new(0, true, None);
        push(&mut b, r#"{"Index":"A","Date":"d","v":1}"#, &[]).unwrap();
        push(
            &mut b,
            r#"{"Index":"B","Date":"d","v":2.5,"extra":"x"}"#,
            &[],
        )
        .unwrap();
        assert_eq!(b.rows, 2);
        let v = b.columns.iter().find(|c| c.name == "v").unwrap();
        assert!(matches!(&v.values, Values::Float(f) if f == &[1.0, 2.5]));
        let extra = b.columns.iter().find(|c| c.name == "extra").unwrap();
        assert_eq!(extra.valid, [false, true]);
    }

    #[test]
    fn a_record_of_the_wrong_type_is_refused_and_changes_nothing() {
        let declared = vec![("Open".to_string(), ColumnType::Float)];
        let mut b = Batch::new(0, true, None);
        push(&mut b, r#"{"Index":"A","Date":"d","Open":1}"#, &declared).unwrap();
        let err = push(
            &mut b,
            r#"{"Index":"A","Date":"d","new":1,"Open":"x"}"#,
            &declared,
        )
        .unwrap_err();
        assert!(
            err.contains("\"Open\"") && err.contains("expected a number"),
            "{err}"
        );
        assert_eq!(b.rows, 1);
        assert!(b
            .columns
            .iter()
            .all(|c| c.name != "new" && c.valid.len() == 1));
        let err = push(&mut b, r#"{"Index":1,"Date":"d"}"#, &declared).unwrap_err();
        assert!(err.contains("expected a string"), "{err}");
        let err = push(&mut b, r#"{"Index":"A","Date":"d","n":{"a":1}}"#, &declared).unwrap_err();
        assert!(err.contains("array or object"), "{err}");
        let err = push(
            &mut b,
            r#"{"Index":"A","Date":"d","Open":1,"Open":2}"#,
            &declared,
        )
        .unwrap_err();
        assert!(err.contains("\"Open\" appears twice"), "{err}");
        let err = push(&mut b, r#"{"Index":"A","Date":"d","x":1,"x":2}"#, &declared).unwrap_err();
        assert!(err.contains("\"x\" appears twice"), "{err}");
        assert_eq!(b.rows, 1);
        let err = push(&mut b, r#"{"Index":"A","Date":"d","n":[1]}"#, &declared).unwrap_err();
        assert!(err.contains("array or object"), "{err}");
    }

    #[test]
    fn ndjson_lines_are_single_lines_with_optional_coordinates() {
        let mut b = Batch::new(7, false, Some(3));
        let raw = "{\"Index\":\"A\",\n \"Date\":\"d\"}";
        let r = Record::parse(raw.as_bytes()).unwrap();
        b.push(&r, raw.as_bytes(), &config(&[]), T, 7, Some(1000))
            .unwrap();
        let text = String::from_utf8(b.lines.clone()).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["_kafka_offset"], 7);
        assert_eq!(v["_kafka_partition"], 3);
        assert_eq!(v["Index"], "A");
    }
}
