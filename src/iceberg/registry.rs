//! A sink's Iceberg table as a [`Registry`]: the table's properties hold its folder scheme,
//! its source topic and the writers' claims; every snapshot's summary holds the Kafka
//! offsets landed so far, so the current snapshot says where each partition resumes. A
//! landing is one commit of all its files, refused (fenced) by the same rules as a Hive
//! table's: the writer's claim must be the latest, and each range must continue the
//! table's.

use std::collections::{BTreeMap, HashMap};

use ::iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, NestedField, PrimitiveType, Schema,
    Snapshot,
};
use polars::prelude::DataType;
use serde::{Deserialize, Serialize};

use super::metrics::metrics;
use super::schema::{
    iceberg_type, name_mapping, partition_spec, partition_value, polars_type, NAME_MAPPING,
};
use super::table::{Change, IcebergCatalog, IcebergTable, Version};
use crate::error::{Error, Result};
use crate::lake::{
    check_source, fence, path_values, Claim, Declaration, Fence, Fields, LandedRange, Landing,
    PartitionKey, Registered, Registry, TableSource, TableState,
};
use crate::parallel;

/// Table property: the Hive folder keys the partition spec was made from (`symbol,date`).
const KEYS: &str = "stockstream.partition-keys";
/// Table property: why those keys (`auto: date (…)`).
const REASON: &str = "stockstream.partitioning";
/// Table property: the topic and decoding of the records (JSON), for the live tail.
const SOURCE: &str = "stockstream.source";
/// Table property: the writers' claims (JSON).
const CLAIMS: &str = "stockstream.claims";
/// Snapshot summary: the Kafka offsets landed so far, by partition (JSON).
const LANDED: &str = "stockstream.landed";

/// Which writer holds each Kafka partition: the epoch of its claim, and the last epoch
/// handed out.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Claims {
    epoch: u64,
    claims: BTreeMap<i32, u64>,
}

impl Claims {
    fn of(version: &Version) -> Result<Self> {
        property(version, CLAIMS).map(Option::unwrap_or_default)
    }

    fn claim(&mut self, partitions: &[i32]) -> u64 {
        self.epoch += 1;
        for p in partitions {
            self.claims.insert(*p, self.epoch);
        }
        self.epoch
    }
}

/// A table property holding JSON, if set.
fn property<T: for<'de> Deserialize<'de>>(version: &Version, key: &str) -> Result<Option<T>> {
    let Some(text) = version.metadata.properties().get(key) else {
        return Ok(None);
    };
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| Error::schema(format!("Iceberg table property {key}: {e}")).caused_by(e))
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The offsets the table's current snapshot says are landed.
fn landed(version: &Version) -> Result<BTreeMap<i32, LandedRange>> {
    (version.metadata.current_snapshot())
        .map(|s| landed_at(s))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// The offsets landed up to `snapshot`.
pub fn landed_at(snapshot: &Snapshot) -> Result<BTreeMap<i32, LandedRange>> {
    match snapshot.summary().additional_properties.get(LANDED) {
        None => Ok(BTreeMap::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            Error::schema(format!("Iceberg snapshot summary {LANDED}: {e}")).caused_by(e)
        }),
    }
}

/// The summary entry of `snapshot` that says what is landed, for a snapshot that lands
/// nothing new (compaction).
pub fn landed_summary(snapshot: &Snapshot) -> HashMap<String, String> {
    let landed = snapshot.summary().additional_properties.get(LANDED);
    landed
        .map(|l| (LANDED.to_string(), l.clone()))
        .into_iter()
        .collect()
}

/// The summary a snapshot that lands nothing carries: the current one's offsets.
fn carried(version: &Version) -> HashMap<String, String> {
    (version.metadata.current_snapshot())
        .map(|s| landed_summary(s))
        .unwrap_or_default()
}

/// The topic the table is landed from, for live queries.
pub fn source_of(version: &Version) -> Result<Option<TableSource>> {
    property(version, SOURCE)
}

/// What a writer needs to know of the table.
fn state(version: &Version) -> Result<TableState> {
    let schema = version.metadata.current_schema();
    Ok(TableState {
        scheme: scheme(version).map(str::to_string).collect(),
        locations: BTreeMap::new(),
        landed: landed(version)?,
        claims: Claims::of(version)?.claims,
        fields: fields(schema),
    })
}

/// The field id and type of each column of `schema`, by name.
pub fn fields(schema: &Schema) -> Fields {
    let of = |f: &NestedField| {
        let dtype = f.field_type.as_primitive_type().and_then(polars_type);
        Some((f.name.clone(), (f.id, dtype?)))
    };
    Fields(
        (schema.as_struct().fields().iter())
            .filter_map(|f| of(f))
            .collect(),
    )
}

/// Columns a landing brings that its table does not have yet, with their types.
type NewColumns = Vec<(String, PrimitiveType)>;

/// An Iceberg catalog's namespace as the sink's [`Registry`].
pub struct IcebergRegistry(pub IcebergCatalog);

impl IcebergRegistry {
    fn table(&self, name: &str) -> IcebergTable {
        self.0.table(name)
    }

    /// Claims `partitions` of an existing table in one commit, with `source` as the
    /// table's.
    fn claim_in(
        &self,
        table: &IcebergTable,
        source: &TableSource,
        partitions: &[i32],
    ) -> Result<Claim> {
        let mut epoch = 0;
        let committed = table.commit(&mut |version| {
            let existing: Option<TableSource> = property(version, SOURCE)?;
            let landed = !landed(version)?.is_empty();
            check_source(table.name(), existing.as_ref(), landed, source)?;
            let mut claims = Claims::of(version)?;
            epoch = claims.claim(partitions);
            let properties = HashMap::from([
                (CLAIMS.to_string(), json(&claims)),
                (SOURCE.to_string(), json(source)),
            ]);
            Ok(Some(Change {
                properties,
                summary: carried(version),
                ..Change::default()
            }))
        })?;
        Ok(Claim {
            epoch,
            table: state(&committed)?,
        })
    }

    /// The landing's objects as Iceberg data files, and the columns they hold that the
    /// table does not have yet.
    fn data_files(
        &self,
        table: &IcebergTable,
        version: &Version,
        landing: &Landing,
    ) -> Result<(Vec<DataFile>, NewColumns)> {
        let keys = recorded_keys(version)?;
        let schema = version.metadata.current_schema();
        let spec_id = version.metadata.default_partition_spec_id();
        let mut files = Vec::new();
        let mut added = NewColumns::new();
        let measured = parallel::map(&landing.objects, |o| metrics(&o.key, o.body, schema));
        for (object, metrics) in landing.objects.iter().zip(measured) {
            let metrics = metrics?;
            let typed = (metrics.columns.iter()).map(|(n, t)| (n.as_str(), t.clone()));
            for column in new_columns(schema, typed)? {
                if !added.iter().any(|(n, _)| *n == column.0) {
                    added.push(column);
                }
            }
            let partition = partition_value(&keys, &path_values(&object.path))?;
            let file = DataFileBuilder::default()
                .content(DataContentType::Data)
                .file_path(table.url_of(&object.key))
                .file_format(DataFileFormat::Parquet)
                .partition(partition)
                .partition_spec_id(spec_id)
                .record_count(metrics.rows)
                .file_size_in_bytes(object.body.len() as u64)
                .value_counts(metrics.values)
                .null_value_counts(metrics.nulls)
                .lower_bounds(metrics.lower)
                .upper_bounds(metrics.upper)
                .build()
                .map_err(|e| Error::io(format!("Iceberg data file {}: {e}", object.key)))?;
            files.push(file);
        }
        Ok((files, added))
    }
}

/// Refuses a column of a type the table's column cannot take as it is written (integers
/// are written into a double column as doubles, dates into a timestamp one as midnight).
fn check_type(schema: &Schema, name: &str, kind: &PrimitiveType) -> Result<()> {
    let Some(field) = schema.field_by_name(name) else {
        return Ok(());
    };
    match (field.field_type.as_primitive_type(), kind) {
        (Some(existing), _) if existing == kind => Ok(()),
        (Some(PrimitiveType::Double), PrimitiveType::Long)
        | (Some(PrimitiveType::Timestamp), PrimitiveType::Date) => Ok(()),
        _ => Err(Error::schema(format!(
            "column {name:?} is {} in the Iceberg table, not {kind}: these records were \
             read before the table's types were known; declare the column's type with \
             columns= (records that do not fit then go to _rejected/)",
            field.field_type
        ))),
    }
}

/// The Hive folder keys the table's partition spec was made from, as recorded.
fn scheme(version: &Version) -> impl Iterator<Item = &str> {
    let keys = version.metadata.properties().get(KEYS);
    (keys.map(String::as_str).unwrap_or_default().split(',')).filter(|k| !k.is_empty())
}

fn recorded_keys(version: &Version) -> Result<Vec<PartitionKey>> {
    scheme(version).map(str::parse).collect()
}

/// Of `columns`, those `schema` lacks (each once), refusing one whose type differs from
/// the table's.
fn new_columns<'c>(
    schema: &Schema,
    columns: impl IntoIterator<Item = (&'c str, DataType)>,
) -> Result<NewColumns> {
    let mut added = NewColumns::new();
    for (name, dtype) in columns {
        let kind = iceberg_type(&dtype)?;
        check_type(schema, name, &kind)?;
        if schema.field_by_name(name).is_none() && !added.iter().any(|(n, _)| n == name) {
            added.push((name.to_string(), kind));
        }
    }
    Ok(added)
}

impl Registry for IcebergRegistry {
    fn state(&self, table: &str) -> Result<Option<TableState>> {
        self.table(table).load()?.as_ref().map(state).transpose()
    }

    fn declare(&self, table: &str, declared: &Declaration, partitions: &[i32]) -> Result<Claim> {
        let iceberg = self.table(table);
        let source = declared.source;
        let schema = super::schema::schema_of(declared.columns)?;
        let keys = (declared.keys.iter())
            .map(|k| k.parse())
            .collect::<Result<Vec<PartitionKey>>>()?;
        let spec = partition_spec(&keys, &schema, &source.symbol_field, &source.time_field)?;
        let properties = HashMap::from([
            (KEYS.to_string(), declared.keys.join(",")),
            (REASON.to_string(), declared.reason.to_string()),
            (NAME_MAPPING.to_string(), name_mapping(&schema)),
        ]);
        iceberg.create(schema, spec, properties)?;
        self.claim_in(&iceberg, source, partitions)
    }

    fn claim(
        &self,
        table: &str,
        source: &TableSource,
        partitions: &[i32],
    ) -> Result<Option<Claim>> {
        let iceberg = self.table(table);
        if iceberg.load()?.is_none() {
            return Ok(None);
        }
        self.claim_in(&iceberg, source, partitions).map(Some)
    }

    fn fields(&self, table: &str, columns: &[(String, DataType)]) -> Result<Fields> {
        let committed = self.table(table).commit(&mut |version| {
            let schema = version.metadata.current_schema();
            let named = columns.iter().map(|(n, t)| (n.as_str(), t.clone()));
            let added = new_columns(schema, named)?;
            Ok((!added.is_empty()).then(|| Change {
                columns: added,
                summary: carried(version),
                ..Change::default()
            }))
        })?;
        Ok(fields(committed.metadata.current_schema()))
    }

    fn register(&self, landing: &Landing) -> Result<Registered> {
        let table = self.table(landing.table);
        let mut outcome = Registered::Done;
        table.commit(&mut |version| {
            let claims = Claims::of(version)?.claims;
            let mut landed = landed(version)?;
            let fenced: BTreeMap<i32, Fence> = (landing.ranges.iter())
                .filter_map(|(p, range)| {
                    let epoch = landing.epochs.get(p).copied();
                    fence(&claims, landed.get(p), *p, epoch, range).map(|f| (*p, f))
                })
                .collect();
            if !fenced.is_empty() {
                outcome = Registered::Fenced(fenced);
                return Ok(None);
            }
            outcome = Registered::Done;
            let (files, columns) = self.data_files(&table, version, landing)?;
            landed.extend(landing.ranges.iter().map(|(p, r)| (*p, *r)));
            Ok(Some(Change {
                columns,
                files,
                summary: HashMap::from([(LANDED.to_string(), json(&landed))]),
                ..Change::default()
            }))
        })?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::sync::Arc;

    use super::*;
    use crate::iceberg::pointer::{SqlitePointers, CATALOG_NAME};
    use crate::sink::{Sink, SinkConfig};
    use crate::testing::{self, daily_ticks, to_the_end};

    fn land(
        registry: &Arc<IcebergRegistry>,
        kafka: &crate::config::KafkaConfig,
        group: &str,
    ) -> Sink {
        let store = registry.0.store.clone();
        let config = SinkConfig::new("ticks", group);
        let sink = Sink::new(kafka, config, store, Duration::from_secs(10)).unwrap();
        let mut sink = sink.register_in(registry.clone()).unwrap();
        sink.run(&to_the_end(), &mut || false).unwrap();
        sink
    }

    #[test]
    fn a_sink_lands_into_an_iceberg_table_and_a_new_group_resumes_from_its_offsets() {
        let (_kafka, config) = testing::broker("ticks", 1);
        testing::send(&config, "ticks", daily_ticks(0, 20));
        let (dir, store) = testing::local_lake();
        let pointers = SqlitePointers::open(&dir.path().join("catalog.db"), CATALOG_NAME).unwrap();
        let registry = Arc::new(IcebergRegistry(IcebergCatalog::new(
            store,
            Arc::new(pointers),
            "stock_market",
        )));

        let first = land(&registry, &config, "first");
        assert_eq!(first.status().detail().landed, [(0, 20)]);
        let version = registry.table("ticks").load().unwrap().unwrap();
        let table = state(&version).unwrap();
        assert_eq!(table.landed[&0].next, 20);
        // Twenty daily bars of one symbol: no time partitions (as for a Hive table).
        assert!(table.scheme.is_empty());
        assert!(version.metadata.properties()[REASON].starts_with("auto"));
        let snapshot = version.metadata.current_snapshot().unwrap();
        assert_eq!(
            snapshot.summary().additional_properties["total-records"],
            "20"
        );
        // The event time is a date (every tick's is); the columns have ids.
        let schema = version.metadata.current_schema();
        let date = schema.field_by_name("Date").unwrap();
        assert_eq!(date.field_type.to_string(), "date");
        assert!(table.fields.id("Close").is_some(), "{:?}", table.fields);
        assert!(version
            .metadata
            .default_partition_spec()
            .fields()
            .is_empty());

        // A group with no offsets of its own starts where the table ends: nothing twice.
        // Its ticks have a new field: a new column, whose id the new file carries.
        let noted = (20..25).map(|i| {
            testing::Sent::value(format!(
                r#"{{"Index":"NYA","Date":"2021-02-{:02}","Close":{i},"note":"n{i}"}}"#,
                i - 19
            ))
        });
        testing::send(&config, "ticks", noted);
        let second = land(&registry, &config, "second");
        assert_eq!(second.status().detail().resumed, [(0, 20)]);
        let version = registry.table("ticks").load().unwrap().unwrap();
        let summary = &version.metadata.current_snapshot().unwrap().summary();
        assert_eq!(summary.additional_properties["total-records"], "25");
        let table = state(&version).unwrap();
        assert_eq!(table.landed[&0].next, 25);
        let note = table.fields.id("note").unwrap();
        let object = std::fs::read(
            dir.path()
                .join("ticks/part-ticks-0-00000000000000000020.parquet"),
        )
        .unwrap();
        let footer =
            polars_parquet::read::read_metadata(&mut std::io::Cursor::new(object)).unwrap();
        let ids: Vec<(String, Option<i32>)> = (footer.schema().fields().iter())
            .map(|f| (f.name().to_string(), f.get_field_info().id))
            .collect();
        assert!(ids.contains(&("note".to_string(), Some(note))), "{ids:?}");
    }
}
