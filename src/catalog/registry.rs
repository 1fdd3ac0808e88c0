//! The catalog as the sink's registry: the table's scheme is declared once, writers claim
//! the Kafka partitions they are given, each landing registers its partitions, new columns
//! and landed offsets in one catalog write (refused under an overtaken claim or for
//! offsets the table already holds), and a landing into a partition that compaction has
//! moved meanwhile is told where it went.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::schema::body_schema;
use super::{table_name, Catalog, Column, HiveType, Table};
use crate::error::{Error, Result};
use crate::lake::{
    check_source, fence, path_values, Claim, Declaration, Fence, Landing, ObjectStore, Registered,
    Registry, TableSource, TableState,
};

/// A catalog database seen through the sink's [`Registry`] interface.
pub struct CatalogRegistry {
    catalog: Arc<dyn Catalog>,
    store: Arc<dyn ObjectStore>,
    database: String,
}

impl CatalogRegistry {
    pub fn new(catalog: Arc<dyn Catalog>, store: Arc<dyn ObjectStore>, database: &str) -> Self {
        CatalogRegistry {
            catalog,
            store,
            database: database.to_string(),
        }
    }
}

impl Registry for CatalogRegistry {
    fn state(&self, table: &str) -> Result<Option<TableState>> {
        Ok(self
            .catalog
            .header(&self.database, &table_name(table))?
            .map(|t| t.state()))
    }

    fn declare(&self, table: &str, declared: &Declaration, partitions: &[i32]) -> Result<Claim> {
        let Declaration {
            format,
            keys,
            reason,
            source,
            ..
        } = *declared;
        let mut epoch = 0;
        let declared = self
            .catalog
            .update(&self.database, &table_name(table), &mut |t| {
                let t = t.get_or_insert_with(|| {
                    let mut new = Table::new(
                        &self.database,
                        &table_name(table),
                        table,
                        format,
                        keys.iter().map(|k| partition_column(k)).collect(),
                    );
                    new.partitioning = Some(reason.to_string());
                    new
                });
                adopt(t, source)?;
                epoch = t.claim(partitions);
                Ok(true)
            })?;
        let table = declared.ok_or_else(|| Error::io(format!("table {table} vanished")))?;
        Ok(Claim {
            epoch,
            table: table.state(),
        })
    }

    fn claim(
        &self,
        table: &str,
        source: &TableSource,
        partitions: &[i32],
    ) -> Result<Option<Claim>> {
        let mut epoch = 0;
        let claimed = self
            .catalog
            .update(&self.database, &table_name(table), &mut |t| {
                let Some(t) = t else {
                    return Ok(false);
                };
                adopt(t, source)?;
                epoch = t.claim(partitions);
                Ok(true)
            })?;
        Ok(claimed.map(|t| Claim {
            epoch,
            table: t.state(),
        }))
    }

    fn register(&self, landing: &Landing) -> Result<Registered> {
        self.catalog
            .register_landing(&self.database, &Landed::read(self.store.as_ref(), landing)?)
    }
}

/// Makes `source` the table's, if it may be ([`check_source`]).
fn adopt(table: &mut Table, source: &TableSource) -> Result<()> {
    let landed = !table.landed.is_empty();
    check_source(&table.name, table.source.as_ref(), landed, source)?;
    table.source = Some(source.clone());
    Ok(())
}

/// A partition key column as the sink writes it: symbols are strings, whatever they look
/// like (`0700` stays `0700`); years are numbers; dates are dates; months and hours are
/// strings (`2021-01`, `09`).
pub fn partition_column(key: &str) -> Column {
    let kind = match key {
        "year" => HiveType::Bigint,
        "date" => HiveType::Date,
        _ => HiveType::String,
    };
    Column {
        name: key.to_string(),
        kind,
    }
}

/// A landing with the columns of each of its objects, read from the bytes just written
/// (once, however often the catalog write is tried again).
pub struct Landed<'a> {
    pub landing: &'a Landing<'a>,
    columns: Vec<Vec<(String, HiveType)>>,
}

impl<'a> Landed<'a> {
    pub fn read(store: &dyn ObjectStore, landing: &'a Landing<'a>) -> Result<Self> {
        // JSON lines are parsed whole for their columns: on every core.
        let columns = crate::parallel::map(&landing.objects, |o| {
            body_schema(landing.format, o.body, &store.url(&o.key))
        })
        .into_iter()
        .collect::<Result<_>>()?;
        Ok(Landed { landing, columns })
    }

    /// Applies the landing to a table: `Fenced` if the writer's claim on one of its
    /// partitions was overtaken or a range does not continue the table's, `Moved` if a
    /// partition it wrote to now lives elsewhere, else adds its partitions and columns and
    /// records its offset ranges. Returns the partitions added.
    pub fn apply(&self, table: &mut Table) -> std::result::Result<Vec<Vec<String>>, Registered> {
        apply_landing(table, self.landing, &self.columns)
    }
}

fn apply_landing(
    table: &mut Table,
    landing: &Landing,
    columns: &[Vec<(String, HiveType)>],
) -> std::result::Result<Vec<Vec<String>>, Registered> {
    let fenced: BTreeMap<i32, Fence> = landing
        .ranges
        .iter()
        .filter_map(|(p, range)| {
            let epoch = landing.epochs.get(p).copied();
            fence(&table.claims, table.landed.get(p), *p, epoch, range).map(|f| (*p, f))
        })
        .collect();
    if !fenced.is_empty() {
        return Err(Registered::Fenced(fenced));
    }
    let moved: BTreeMap<String, String> = landing
        .objects
        .iter()
        .filter(|o| table.folder(&o.path) != o.folder)
        .map(|o| (o.path.clone(), table.folder(&o.path)))
        .collect();
    if !moved.is_empty() {
        return Err(Registered::Moved(moved));
    }
    for found in columns {
        merge_columns(table, found);
    }
    let mut added = Vec::new();
    for object in &landing.objects {
        let values = path_values(&object.path);
        if table.partitions.insert(values.clone()) {
            added.push(values);
        }
    }
    table
        .landed
        .extend(landing.ranges.iter().map(|(p, r)| (*p, *r)));
    Ok(added)
}

/// Adds new columns and widens types (a conflict makes the column text).
fn merge_columns(table: &mut Table, found: &[(String, HiveType)]) {
    for (name, kind) in found {
        table.merge_column(name, *kind);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::catalog::LocalCatalog;
    use crate::lake::{Format, LandedObject, LandedRange};

    fn source() -> TableSource {
        TableSource {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topic: "ticks".into(),
            group_id: "g".into(),
            symbol_field: "Index".into(),
            time_field: "Date".into(),
            columns: BTreeMap::new(),
            kafka_metadata: false,
            time_format: None,
            time_zone: None,
        }
    }

    fn landing<'a>(
        epoch: u64,
        partition: i32,
        first: i64,
        next: i64,
        body: &'a [u8],
    ) -> Landing<'a> {
        Landing {
            table: "ticks",
            format: Format::Ndjson,
            epochs: BTreeMap::from([(partition, epoch)]),
            ranges: BTreeMap::from([(partition, LandedRange::new(first, next))]),
            objects: vec![LandedObject {
                key: format!("ticks/date=2021-01-04/part-ticks-{partition}-{first:020}.json"),
                partition,
                path: "date=2021-01-04".into(),
                folder: "ticks/date=2021-01-04".into(),
                body,
            }],
        }
    }

    #[test]
    fn the_first_scheme_holds_claims_fence_older_writers_and_offsets_only_move_forward() {
        let (_dir, store) = crate::testing::local_lake();
        let catalog = Arc::new(LocalCatalog::new(store.clone()));
        let registry = CatalogRegistry::new(catalog, store, "db");
        let body = b"{\"Index\":\"NYA\",\"Close\":1.5}\n";
        let date = ["date".to_string()];
        let ticks = source();
        let declared = |keys| Declaration {
            format: Format::Ndjson,
            keys,
            reason: "auto",
            source: &ticks,
            columns: &[],
        };
        let first = registry.declare("ticks", &declared(&date), &[0]).unwrap();
        // A second writer deciding other folders adopts the recorded ones.
        let year = ["year".to_string()];
        let second = registry.declare("ticks", &declared(&year), &[1]).unwrap();
        assert_eq!(second.table.scheme, date);
        assert!(second.epoch > first.epoch);
        assert_eq!(
            registry
                .register(&landing(first.epoch, 0, 0, 10, body))
                .unwrap(),
            Registered::Done
        );
        // A new owner of partition 0 (another member, or a sink of another group).
        let owner = registry.claim("ticks", &source(), &[0]).unwrap().unwrap();
        assert_eq!(owner.table.landed[&0], LandedRange::new(0, 10));
        let zombie = registry
            .register(&landing(first.epoch, 0, 10, 20, body))
            .unwrap();
        assert_eq!(
            zombie,
            Registered::Fenced(BTreeMap::from([(0, Fence::Claimed { by: owner.epoch })]))
        );
        // A replay from an older offset would land records twice: refused.
        let replay = registry
            .register(&landing(owner.epoch, 0, 5, 20, body))
            .unwrap();
        assert_eq!(
            replay,
            Registered::Fenced(BTreeMap::from([(0, Fence::Behind { next: 10 })]))
        );
        assert_eq!(
            registry
                .register(&landing(owner.epoch, 0, 10, 20, body))
                .unwrap(),
            Registered::Done
        );
        let state = registry.state("ticks").unwrap().unwrap();
        assert_eq!(state.landed[&0], LandedRange::new(10, 20));
        assert_eq!(state.claims[&1], second.epoch);
        assert!(registry.claim("other", &source(), &[0]).unwrap().is_none());
    }
}
