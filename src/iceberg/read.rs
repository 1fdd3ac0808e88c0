//! An Iceberg table as a query reads it: one snapshot (the current one, or the one current
//! at a past moment), described as a catalog table whose landed offsets are that
//! snapshot's (so a live query's tail starts where its files end), and the snapshot's data
//! files, less those whose column bounds rule out the query's conditions.

use ::iceberg::spec::{DataFile, Datum, PrimitiveType, Snapshot, TableMetadata};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use super::registry::{landed_at, source_of};
use super::table::{IcebergTable, Version};
use crate::catalog::{Column, HiveType, Table};
use crate::error::{Error, Result};
use crate::lake::{Format, ObjectMeta};
use crate::query::conditions::{Condition, Literal, Op};

/// Which snapshot of a table a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AsOf {
    #[default]
    Current,
    /// The snapshot with this id.
    Snapshot(i64),
    /// The snapshot that was current at this moment (Unix milliseconds).
    Time(i64),
}

/// What a query of an Iceberg table reads: the metadata file it was described from and
/// the snapshot (none for a table with no data yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub metadata: String,
    pub snapshot: Option<i64>,
}

impl IcebergTable {
    /// The table at `as_of` as a catalog table of `database`.
    pub fn describe(&self, version: &Version, database: &str, as_of: AsOf) -> Result<Table> {
        let metadata = &version.metadata;
        let snapshot = self.snapshot_at(metadata, as_of)?;
        let schema = metadata.current_schema();
        let mut table = Table::new(
            database,
            self.name(),
            self.folder(),
            Format::Parquet,
            vec![],
        );
        table.columns = (schema.as_struct().fields().iter())
            .map(|f| {
                let kind = f.field_type.as_primitive_type().and_then(hive_type);
                kind.map(|k| Column::new(f.name.as_str(), k))
                    .ok_or_else(|| {
                        Error::schema(format!(
                            "Iceberg table {}: column {} is {}, which queries here do not read",
                            self.name(),
                            f.name,
                            f.field_type
                        ))
                    })
            })
            .collect::<Result<_>>()?;
        table.source = source_of(version)?;
        table.landed = snapshot.map(landed_at).transpose()?.unwrap_or_default();
        table.partitioning = Some(partitioning(metadata));
        table.iceberg = Some(Reading {
            metadata: version.location.clone(),
            snapshot: snapshot.map(Snapshot::snapshot_id),
        });
        Ok(table)
    }

    /// The snapshot a query `as_of` reads; none when the table had no data then.
    fn snapshot_at<'m>(
        &self,
        metadata: &'m TableMetadata,
        as_of: AsOf,
    ) -> Result<Option<&'m Snapshot>> {
        let name = self.name();
        match as_of {
            AsOf::Current => Ok(metadata.current_snapshot().map(|s| s.as_ref())),
            AsOf::Snapshot(id) => match metadata.snapshot_by_id(id) {
                Some(s) => Ok(Some(s.as_ref())),
                None => Err(Error::not_found(format!(
                    "Iceberg table {name} has no snapshot {id} (expired, or never); its \
                     snapshots are {:?}",
                    (metadata.snapshots())
                        .map(|s| s.snapshot_id())
                        .collect::<Vec<_>>()
                ))),
            },
            AsOf::Time(ms) => {
                let log = metadata.history();
                let then = log.iter().rev().find(|entry| entry.timestamp_ms <= ms);
                match then.and_then(|entry| metadata.snapshot_by_id(entry.snapshot_id)) {
                    Some(s) => Ok(Some(s.as_ref())),
                    None if log.first().is_none_or(|first| first.timestamp_ms > ms) => Ok(None),
                    None => Err(Error::not_found(format!(
                        "Iceberg table {name}: the snapshot current at {} has expired",
                        moment(ms)
                    ))),
                }
            }
        }
    }

    /// The data files of the snapshot `reading` names whose bounds allow `conditions`.
    pub fn files(&self, reading: &Reading, conditions: &[Condition]) -> Result<Vec<ObjectMeta>> {
        let Some(id) = reading.snapshot else {
            return Ok(Vec::new());
        };
        let version = self.load_at(&reading.metadata)?;
        let metadata = &version.metadata;
        let snapshot = metadata.snapshot_by_id(id).ok_or_else(|| {
            Error::not_found(format!(
                "Iceberg table {}: snapshot {id} is gone",
                self.name()
            ))
        })?;
        let checks: Vec<(i32, &PrimitiveType, Op, Datum)> = (conditions.iter())
            .filter_map(|c| {
                let field = metadata.current_schema().field_by_name(&c.column)?;
                let kind = field.field_type.as_primitive_type()?;
                Some((field.id, kind, c.op, datum(kind, &c.value)?))
            })
            .collect();
        (self.data_files(snapshot)?.into_iter())
            .filter(|file| {
                checks
                    .iter()
                    .all(|(id, _, op, value)| may_hold(file, *id, *op, value))
            })
            .map(|file| {
                Ok(ObjectMeta {
                    key: self.key_of(file.file_path())?,
                    size: file.file_size_in_bytes(),
                    modified_ms: 0,
                })
            })
            .collect()
    }
}

/// Whether some value of column `id` in `file` can satisfy `op value`, by its bounds.
fn may_hold(file: &DataFile, id: i32, op: Op, value: &Datum) -> bool {
    let lower = file.lower_bounds().get(&id);
    let upper = file.upper_bounds().get(&id);
    let above = |bound: Option<&Datum>, strict: bool| {
        bound.is_none_or(|b| if strict { b < value } else { b <= value })
    };
    let below = |bound: Option<&Datum>, strict: bool| {
        bound.is_none_or(|b| if strict { b > value } else { b >= value })
    };
    match op {
        Op::Eq => above(lower, false) && below(upper, false),
        Op::Lt => above(lower, true),
        Op::LtEq => above(lower, false),
        Op::Gt => below(upper, true),
        Op::GtEq => below(upper, false),
    }
}

/// `literal` as a value of a column of type `kind`, if it reads as one exactly as the
/// engine would compare them.
fn datum(kind: &PrimitiveType, literal: &Literal) -> Option<Datum> {
    match (kind, literal) {
        (PrimitiveType::Long, Literal::Number(n)) => n.parse::<i64>().ok().map(Datum::long),
        (PrimitiveType::Int, Literal::Number(n)) => n.parse::<i32>().ok().map(Datum::int),
        (PrimitiveType::Double, Literal::Number(n)) => n.parse::<f64>().ok().map(Datum::double),
        (PrimitiveType::String, Literal::Text(t)) => Some(Datum::string(t)),
        (PrimitiveType::Date, Literal::Text(t)) => {
            let day = NaiveDate::parse_from_str(t, "%Y-%m-%d").ok()?;
            Some(Datum::date(days_since_epoch(day)))
        }
        (PrimitiveType::Timestamp, Literal::Text(t)) => {
            let at = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
                .or_else(|| {
                    let day = NaiveDate::parse_from_str(t, "%Y-%m-%d").ok()?;
                    day.and_hms_opt(0, 0, 0)
                })?;
            Some(Datum::timestamp_micros(at.and_utc().timestamp_micros()))
        }
        _ => None,
    }
}

fn days_since_epoch(day: NaiveDate) -> i32 {
    (day - DateTime::UNIX_EPOCH.date_naive()).num_days() as i32
}

fn moment(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or(ms.to_string(), |t| t.to_rfc3339())
}

/// The catalog type of a column of this Iceberg type, for the types queries here read.
pub(super) fn hive_type(kind: &PrimitiveType) -> Option<HiveType> {
    Some(match kind {
        PrimitiveType::Boolean => HiveType::Boolean,
        PrimitiveType::Int => HiveType::Int,
        PrimitiveType::Long => HiveType::Bigint,
        PrimitiveType::Float => HiveType::Float,
        PrimitiveType::Double => HiveType::Double,
        PrimitiveType::String => HiveType::String,
        PrimitiveType::Date => HiveType::Date,
        PrimitiveType::Timestamp => HiveType::Timestamp,
        _ => return None,
    })
}

/// The partition spec as readers see it: `Index (identity), Date (day)`.
fn partitioning(metadata: &TableMetadata) -> String {
    let schema = metadata.current_schema();
    let spec = metadata.default_partition_spec();
    let fields: Vec<String> = (spec.fields().iter())
        .map(|f| {
            let source = schema.name_by_field_id(f.source_id).unwrap_or("?");
            format!("{source} ({})", f.transform)
        })
        .collect();
    match fields.is_empty() {
        true => "iceberg: unpartitioned".to_string(),
        false => format!("iceberg: {}", fields.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use ::iceberg::spec::{DataContentType, DataFileBuilder, DataFileFormat};
    use std::collections::HashMap;

    use super::*;

    fn file(low: Datum, high: Datum) -> DataFile {
        DataFileBuilder::default()
            .content(DataContentType::Data)
            .file_path("file:///t/a.parquet".into())
            .file_format(DataFileFormat::Parquet)
            .record_count(1)
            .file_size_in_bytes(1)
            .lower_bounds(HashMap::from([(1, low)]))
            .upper_bounds(HashMap::from([(1, high)]))
            .build()
            .unwrap()
    }

    #[test]
    fn a_file_is_skipped_only_when_its_bounds_rule_the_condition_out() {
        let days = file(Datum::date(10), Datum::date(20));
        let at = |op, day: &str| {
            let value = datum(&PrimitiveType::Date, &Literal::Text(day.into())).unwrap();
            may_hold(&days, 1, op, &value)
        };
        // 1970-01-11 .. 1970-01-21
        assert!(at(Op::Eq, "1970-01-11") && at(Op::Eq, "1970-01-21"));
        assert!(!at(Op::Eq, "1970-01-10") && !at(Op::Eq, "1970-01-22"));
        assert!(!at(Op::Lt, "1970-01-11") && at(Op::LtEq, "1970-01-11"));
        assert!(!at(Op::Gt, "1970-01-21") && at(Op::GtEq, "1970-01-21"));
        // No bounds for the column: kept.
        assert!(may_hold(&days, 2, Op::Eq, &Datum::long(1)));
        // Literals that do not read exactly as the column's type give no condition.
        assert!(datum(&PrimitiveType::Long, &Literal::Number("1.5".into())).is_none());
        assert!(datum(
            &PrimitiveType::Date,
            &Literal::Text("2021-01-04 10:00".into())
        )
        .is_none());
        let midnight = datum(
            &PrimitiveType::Timestamp,
            &Literal::Text("1970-01-02".into()),
        );
        assert_eq!(midnight, Some(Datum::timestamp_micros(86_400_000_000)));
    }
}
