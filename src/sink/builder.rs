//! A sink from its options: the lake it lands in, the catalog that records its table (and
//! so its landed offsets), and whether it compacts what it lands. Each decision is made
//! here, whoever builds the sink (the Python class, the command line, a test).

use std::sync::Arc;
use std::time::Duration;

use super::{Sink, SinkConfig};
use crate::aws::AwsOptions;
use crate::catalog::{self, CatalogKind, CatalogRegistry, CompactOptions, CompactReport};
use crate::config::KafkaConfig;
use crate::error::{Error, Kind, Result};
use crate::iceberg::{self, registry::IcebergRegistry};
use crate::lake::{self, Format, LakeUrl, ObjectStore, Registry, TableFormat};

/// How long a sink waits for Kafka before giving up, unless told otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a sink lands and what records its table.
#[derive(Debug, Clone)]
pub struct LakeTarget {
    pub url: LakeUrl,
    pub aws: AwsOptions,
    /// The catalog holding the table and its landed offsets. `None`: objects only, and a
    /// restart resumes from the group's committed offsets alone.
    pub catalog: Option<CatalogKind>,
    pub database: String,
    /// Compact the table this often (it needs a catalog: compaction switches partition
    /// locations there).
    pub compact_every: Option<Duration>,
    /// How long the objects a compaction replaced stay, for readers that listed them.
    pub compact_grace: Duration,
    /// Hive folders in the catalog, or an Iceberg table (in `catalog.db` in the lake, a
    /// SQLite catalog pyiceberg opens as `SqlCatalog("stockstream", …)`, or in Glue).
    pub table_format: TableFormat,
    /// The SQLite file of an Iceberg catalog elsewhere than the lake's `catalog.db`.
    pub catalog_uri: Option<String>,
}

impl LakeTarget {
    /// The lake at `url`, its local catalog, database `stock_market`, no compaction.
    pub fn new(url: LakeUrl) -> Self {
        LakeTarget {
            url,
            aws: AwsOptions::default(),
            catalog: Some(CatalogKind::Local),
            database: catalog::DEFAULT_DATABASE.to_string(),
            compact_every: None,
            compact_grace: CompactOptions::default().grace,
            table_format: TableFormat::Hive,
            catalog_uri: None,
        }
    }

    /// Checks the options without reaching anything.
    pub fn validate(&self) -> Result<()> {
        if self.catalog.is_some() {
            catalog::check_database(&self.database)?;
        }
        if self.compact_every.is_some() && self.catalog.is_none() {
            return Err(Error::config(
                "compact_every needs a catalog (catalog=\"local\" or \"glue\"): compaction \
                 switches partition locations there",
            ));
        }
        if self.catalog == Some(CatalogKind::Glue) {
            catalog::glue_location(&self.url)?;
        }
        match self.table_format {
            TableFormat::Iceberg => {
                iceberg::catalog_at(&self.url, self.catalog, self.catalog_uri.as_deref())?;
            }
            TableFormat::Hive if self.catalog == Some(CatalogKind::Rest) => {
                return Err(Error::config(
                    "a REST catalog holds Iceberg tables: use table_format=\"iceberg\"",
                ));
            }
            TableFormat::Hive if self.catalog_uri.is_some() => {
                return Err(Error::config(
                    "catalog_uri names an Iceberg catalog: it goes with table_format=\"iceberg\"",
                ));
            }
            TableFormat::Hive => {}
        }
        Ok(())
    }

    /// The Iceberg catalog of this target's database, in `store`.
    fn iceberg(&self, store: Arc<dyn ObjectStore>) -> Result<IcebergRegistry> {
        let at = iceberg::catalog_at(&self.url, self.catalog, self.catalog_uri.as_deref())?;
        let catalog = iceberg::open_catalog(&at, &self.url, store, &self.database, &self.aws)?;
        Ok(IcebergRegistry(catalog))
    }

    /// What compacting `table` means for this target.
    fn compaction(&self, table: &str) -> CompactOptions {
        CompactOptions {
            database: self.database.clone(),
            table: Some(table.to_string()),
            grace: self.compact_grace,
            ..CompactOptions::default()
        }
    }
}

/// A sink's periodic maintenance (compaction): how many objects it merged.
type Work = Box<dyn FnMut() -> Result<usize> + Send>;

/// Builds a [`Sink`] of a topic into a lake target.
pub struct SinkBuilder {
    kafka: KafkaConfig,
    config: SinkConfig,
    target: LakeTarget,
    connect_timeout: Duration,
}

impl SinkBuilder {
    pub fn new(kafka: KafkaConfig, config: SinkConfig, target: LakeTarget) -> Self {
        SinkBuilder {
            kafka,
            config,
            target,
            connect_timeout: CONNECT_TIMEOUT,
        }
    }

    /// How long to wait for Kafka when the sink joins its group.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Checks every option without reaching Kafka, the lake or the catalog.
    pub fn validate(&self) -> Result<()> {
        self.config.validate()?;
        self.target.validate()
    }

    /// Opens the lake (checking it can be written to), the catalog, and joins the group:
    /// a sink that records each landing in the table, and compacts it if asked.
    pub fn build(self) -> Result<Sink> {
        self.validate()?;
        let target = self.target;
        if target.table_format == TableFormat::Iceberg && self.config.format != Format::Parquet {
            return Err(Error::config(
                "an Iceberg table holds Parquet: use format=\"parquet\" (the default)",
            ));
        }
        let store = lake::open(&target.url, &target.aws)?;
        let compaction = target.compaction(&self.config.table);
        // The catalog is opened before the group is joined, so that a bad one fails first.
        let (registry, compact): (Arc<dyn Registry>, Work) = match target.table_format {
            TableFormat::Iceberg => {
                let registry = Arc::new(target.iceberg(store.clone())?);
                let table = registry.0.table(&self.config.table);
                let compact = move || {
                    let mut report = CompactReport::default();
                    iceberg::compact::compact(&table, &compaction, &mut report)?;
                    Ok(report.objects_merged)
                };
                (registry, Box::new(compact))
            }
            TableFormat::Hive => {
                let Some(kind) = target.catalog else {
                    return Sink::new(&self.kafka, self.config, store, self.connect_timeout);
                };
                let catalog = catalog::open(kind, store.clone(), &target.url, &target.aws)?;
                let registry =
                    CatalogRegistry::new(catalog.clone(), store.clone(), &target.database);
                let store = store.clone();
                let compact = move || {
                    match catalog::compact(store.as_ref(), catalog.as_ref(), &compaction) {
                        Ok(report) => Ok(report.objects_merged),
                        // Not landed yet: nothing to compact.
                        Err(e) if e.is(Kind::NotFound) => Ok(0),
                        Err(e) => Err(e),
                    }
                };
                (Arc::new(registry), Box::new(compact))
            }
        };
        let sink = Sink::new(&self.kafka, self.config, store, self.connect_timeout)?;
        let sink = sink.register_in(registry)?;
        Ok(match target.compact_every {
            Some(every) => sink.maintain_every(every, compact),
            None => sink,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedKafka;
    use crate::testing;

    fn target(dir: &std::path::Path) -> LakeTarget {
        LakeTarget::new(LakeUrl::Local(dir.to_path_buf()))
    }

    #[test]
    fn compaction_needs_a_catalog_and_glue_an_s3_lake() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = target(dir.path());
        assert!(t.validate().is_ok());
        t.compact_every = Some(Duration::from_secs(60));
        t.catalog = None;
        let e = t.validate().unwrap_err();
        assert!(e.is(Kind::Config) && e.to_string().contains("compact_every needs a catalog"));
        t.compact_every = None;
        t.catalog = Some(CatalogKind::Glue);
        assert!(t.validate().unwrap_err().to_string().contains("AWS Glue"));
    }

    #[test]
    fn the_database_is_checked_only_where_a_catalog_uses_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = target(dir.path());
        t.database = "Not-A-Name".into();
        assert!(t.validate().unwrap_err().is(Kind::Config));
        t.catalog = None;
        assert!(t.validate().is_ok());
    }

    /// Lands 30 records of a fresh topic with `target`.
    fn land(kafka: &EmbeddedKafka, topic: &str, target: LakeTarget) -> Sink {
        kafka.create_topic(topic, Some(1)).unwrap();
        let config = KafkaConfig::new(kafka.bootstrap_servers(), vec![]).unwrap();
        testing::send(&config, topic, testing::daily_ticks(0, 30));
        testing::run_sink(&config, topic, "g", target)
    }

    #[test]
    fn a_catalog_records_the_table_and_none_leaves_objects_only() {
        let kafka = EmbeddedKafka::start(1, 1).unwrap();
        let with = tempfile::tempdir().unwrap();
        let sink = land(&kafka, "with", target(with.path()));
        assert_eq!(sink.status().detail().landed, [(0, 30)]);
        assert!(with.path().join("_catalog/stock_market/with").is_dir());
        let without = tempfile::tempdir().unwrap();
        let mut t = target(without.path());
        t.catalog = None;
        let sink = land(&kafka, "without", t);
        assert_eq!(sink.status().detail().landed, [(0, 30)]);
        assert!(
            !without.path().join("_catalog").exists(),
            "nothing records a table"
        );
        let notes = sink.status().job.job_detail().notes;
        assert!(
            notes.iter().any(|n| n.contains("give partition_by")),
            "{notes:?}"
        );
        assert!(without.path().join("without").is_dir());
    }

    #[test]
    fn an_iceberg_table_needs_parquet_and_a_local_catalog_and_lands_in_catalog_db() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = target(dir.path());
        t.table_format = TableFormat::Iceberg;
        assert!(t.validate().is_ok());
        t.catalog = Some(CatalogKind::Glue);
        assert!(t.validate().unwrap_err().is(Kind::Config));
        t.catalog = Some(CatalogKind::Local);
        t.compact_every = Some(Duration::from_secs(60));
        assert!(
            t.validate().is_ok(),
            "an Iceberg table compacts in its own way"
        );
        t.compact_every = None;
        let kafka = EmbeddedKafka::start(1, 1).unwrap();
        let config = KafkaConfig::new(kafka.bootstrap_servers(), vec![]).unwrap();
        let ndjson = SinkConfig {
            format: Format::Ndjson,
            ..SinkConfig::new("t", "g")
        };
        let refused = SinkBuilder::new(config, ndjson, t.clone()).build();
        assert!(refused
            .err()
            .unwrap()
            .to_string()
            .contains("Iceberg table holds Parquet"));
        let sink = land(&kafka, "iceberg", t);
        assert_eq!(sink.status().detail().landed, [(0, 30)]);
        assert!(dir.path().join("catalog.db").is_file());
        assert!(dir.path().join("iceberg/metadata").is_dir());
        assert!(
            !dir.path().join("_catalog").exists(),
            "no Hive catalog entry"
        );
    }
}
