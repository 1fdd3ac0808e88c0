//! The Iceberg side of a sink's table: its schema (the columns of the sink's Parquet
//! objects, each with a field id), the name mapping that lets readers find columns by name
//! in files written without ids, and the partition spec: the same `partition_by` decision
//! as the Hive layout, as transforms (`identity` of the symbol, `year`/`month`/`day`/`hour`
//! of the event time) that readers need not know about.

use ::iceberg::spec::{
    Literal, MappedField, NameMapping, NestedField, PrimitiveType, Schema, Struct, Transform, Type,
    UnboundPartitionSpec,
};
use chrono::{Datelike, NaiveDate};
use polars::prelude::{DataType, TimeUnit};

use super::table::iceberg_error;
use crate::error::{Error, Result};
use crate::lake::PartitionKey;

/// The table property readers look up for the name mapping.
pub const NAME_MAPPING: &str = "schema.name-mapping.default";

/// The Iceberg type of a column the sink writes with this Polars type.
pub fn iceberg_type(dtype: &DataType) -> Result<PrimitiveType> {
    Ok(match dtype {
        DataType::String => PrimitiveType::String,
        DataType::Boolean => PrimitiveType::Boolean,
        DataType::Int32 => PrimitiveType::Int,
        DataType::Int64 => PrimitiveType::Long,
        DataType::Float64 => PrimitiveType::Double,
        DataType::Date => PrimitiveType::Date,
        DataType::Datetime(TimeUnit::Microseconds, None) => PrimitiveType::Timestamp,
        other => {
            return Err(Error::schema(format!(
                "a column of type {other} has no Iceberg type the sink writes"
            )))
        }
    })
}

/// The Polars type a column of this Iceberg type is read as, for the types the sink writes.
pub fn polars_type(kind: &PrimitiveType) -> Option<DataType> {
    Some(match kind {
        PrimitiveType::String => DataType::String,
        PrimitiveType::Boolean => DataType::Boolean,
        PrimitiveType::Int => DataType::Int32,
        PrimitiveType::Long => DataType::Int64,
        PrimitiveType::Double => DataType::Float64,
        PrimitiveType::Date => DataType::Date,
        PrimitiveType::Timestamp => DataType::Datetime(TimeUnit::Microseconds, None),
        _ => return None,
    })
}

/// A schema of `columns` (all optional, as records may lack any field), ids from 1.
pub fn schema_of(columns: &[(String, DataType)]) -> Result<Schema> {
    let fields = (columns.iter().zip(1..))
        .map(|((name, dtype), id)| {
            let kind = Type::Primitive(iceberg_type(dtype)?);
            Ok(NestedField::optional(id, name, kind).into())
        })
        .collect::<Result<Vec<_>>>()?;
    Schema::builder()
        .with_fields(fields)
        .build()
        .map_err(iceberg_error)
}

/// The name mapping of `schema`: each field id under its column name.
pub fn name_mapping(schema: &Schema) -> String {
    let fields = (schema.as_struct().fields().iter())
        .map(|f| MappedField::new(Some(f.id), vec![f.name.clone()], Vec::new()))
        .collect();
    serde_json::to_string(&NameMapping::new(fields)).unwrap_or_default()
}

/// The partition spec for Hive folder `keys`: the symbol by identity, and the finest time
/// key as a transform of the event time (Iceberg keeps one time transform per column).
pub fn partition_spec(
    keys: &[PartitionKey],
    schema: &Schema,
    symbol: &str,
    time: &str,
) -> Result<UnboundPartitionSpec> {
    let id = |name: &str| {
        schema.field_id_by_name(name).ok_or_else(|| {
            Error::schema(format!("the table has no column {name:?} to partition by"))
        })
    };
    let mut spec = UnboundPartitionSpec::builder();
    if keys.contains(&PartitionKey::Symbol) {
        spec = (spec.add_partition_field(id(symbol)?, symbol, Transform::Identity))
            .map_err(iceberg_error)?;
    }
    if let Some((transform, suffix)) = time_transform(keys) {
        spec = (spec.add_partition_field(id(time)?, format!("{time}_{suffix}"), transform))
            .map_err(iceberg_error)?;
    }
    Ok(spec.build())
}

fn time_transform(keys: &[PartitionKey]) -> Option<(Transform, &'static str)> {
    [
        (PartitionKey::Hour, Transform::Hour, "hour"),
        (PartitionKey::Date, Transform::Day, "day"),
        (PartitionKey::Month, Transform::Month, "month"),
        (PartitionKey::Year, Transform::Year, "year"),
    ]
    .into_iter()
    .find(|(key, _, _)| keys.contains(key))
    .map(|(_, transform, suffix)| (transform, suffix))
}

/// The partition value of an object in Hive folder `values` (one per key, as
/// `path_values` reads them), in the spec's field order: the symbol, then the time
/// transform's value (days, months, years since 1970, or hours since the epoch).
pub fn partition_value(keys: &[PartitionKey], values: &[String]) -> Result<Struct> {
    let value = |key: PartitionKey| {
        keys.iter()
            .position(|k| *k == key)
            .map(|i| values.get(i).map(String::as_str).unwrap_or(""))
    };
    let bad = |what: &str| Error::schema(format!("partition folder {values:?}: bad {what}"));
    let mut fields = Vec::new();
    if let Some(symbol) = value(PartitionKey::Symbol) {
        fields.push(Some(Literal::string(symbol)));
    }
    let date = |text: &str| NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| bad("date"));
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let days = |d: NaiveDate| (d - epoch).num_days() as i32;
    let time = match time_transform(keys).map(|(t, _)| t) {
        Some(Transform::Hour) => {
            let day = date(value(PartitionKey::Date).unwrap_or(""))?;
            let hour: i32 =
                (value(PartitionKey::Hour).unwrap_or("").parse()).map_err(|_| bad("hour"))?;
            Some(Literal::int(days(day) * 24 + hour))
        }
        Some(Transform::Day) => Some(Literal::date(days(date(
            value(PartitionKey::Date).unwrap_or(""),
        )?))),
        Some(Transform::Month) => {
            let first = date(&format!("{}-01", value(PartitionKey::Month).unwrap_or("")))?;
            Some(Literal::int(
                (first.year() - 1970) * 12 + first.month0() as i32,
            ))
        }
        Some(_) => {
            let year: i32 =
                (value(PartitionKey::Year).unwrap_or("").parse()).map_err(|_| bad("year"))?;
            Some(Literal::int(year - 1970))
        }
        None => None,
    };
    fields.extend(time.map(Some));
    Ok(Struct::from_iter(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<(String, DataType)> {
        vec![
            ("Index".into(), DataType::String),
            (
                "Date".into(),
                DataType::Datetime(TimeUnit::Microseconds, None),
            ),
            ("Close".into(), DataType::Float64),
            ("_kafka_offset".into(), DataType::Int64),
        ]
    }

    #[test]
    fn columns_get_ids_in_order_and_a_name_mapping_to_match() {
        let schema = schema_of(&columns()).unwrap();
        assert_eq!(schema.field_id_by_name("Index"), Some(1));
        assert_eq!(schema.field_id_by_name("_kafka_offset"), Some(4));
        let mapping: serde_json::Value = serde_json::from_str(&name_mapping(&schema)).unwrap();
        assert_eq!(
            mapping[2],
            serde_json::json!({"field-id": 3, "names": ["Close"]})
        );
        let err = schema_of(&[("x".into(), DataType::UInt8)]).unwrap_err();
        assert!(err.to_string().contains("no Iceberg type"), "{err}");
    }

    #[test]
    fn hive_keys_become_the_symbol_and_the_finest_time_transform() {
        let schema = schema_of(&columns()).unwrap();
        let keys = [PartitionKey::Symbol, PartitionKey::Date];
        let spec = partition_spec(&keys, &schema, "Index", "Date").unwrap();
        let fields: Vec<(i32, &str, Transform)> = (spec.fields().iter())
            .map(|f| (f.source_id, f.name.as_str(), f.transform))
            .collect();
        assert_eq!(
            fields,
            [
                (1, "Index", Transform::Identity),
                (2, "Date_day", Transform::Day)
            ]
        );
        let value = partition_value(&keys, &["NYA".into(), "1970-01-03".into()]).unwrap();
        assert_eq!(
            value,
            Struct::from_iter([Some(Literal::string("NYA")), Some(Literal::date(2))])
        );
        let hours = partition_value(
            &[PartitionKey::Date, PartitionKey::Hour],
            &["1970-01-02".into(), "05".into()],
        )
        .unwrap();
        assert_eq!(hours, Struct::from_iter([Some(Literal::int(29))]));
        let months = partition_value(&[PartitionKey::Month], &["1971-03".into()]).unwrap();
        assert_eq!(months, Struct::from_iter([Some(Literal::int(14))]));
        let years = partition_value(&[PartitionKey::Year], &["2021".into()]).unwrap();
        assert_eq!(years, Struct::from_iter([Some(Literal::int(51))]));
        assert!(partition_value(&[PartitionKey::Date], &["04/01/2021".into()]).is_err());
        let none = partition_spec(&[], &schema, "Index", "Date").unwrap();
        assert!(none.fields().is_empty());
    }
}
