//! The catalog kept in the lake itself: one human-readable JSON document per table under
//! `_catalog/<database>/<table>/`, each change a new numbered version created only if no
//! other writer created that version first (see [`crate::lake::document`]), so that the
//! lake and its description travel together (a directory copy, an `aws s3 sync`) and
//! writers on several machines sharing a bucket never lose each other's changes.

use std::sync::Arc;

use super::{Catalog, Edit, Table};
use crate::error::Result;
use crate::lake::{document, ObjectStore};

/// The folder below the lake root holding catalog documents; readers skip `_`-folders.
pub const CATALOG_DIR: &str = "_catalog";

/// A catalog stored as JSON documents in the lake.
pub struct LocalCatalog {
    store: Arc<dyn ObjectStore>,
}

impl LocalCatalog {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        LocalCatalog { store }
    }

    fn folder(database: &str, name: &str) -> String {
        format!("{CATALOG_DIR}/{database}/{name}")
    }
}

impl Catalog for LocalCatalog {
    fn describe(&self) -> String {
        format!("the catalog in {}", self.store.url(CATALOG_DIR))
    }

    fn tables(&self, database: &str) -> Result<Vec<Table>> {
        let folder = format!("{CATALOG_DIR}/{database}");
        Ok(document::read_all(self.store.as_ref(), &folder)?
            .into_iter()
            .map(|(_, table)| table)
            .collect())
    }

    fn table(&self, database: &str, name: &str) -> Result<Option<Table>> {
        // A name from a query could climb out of the catalog folder; no table has one.
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
            return Ok(None);
        }
        Ok(document::read(self.store.as_ref(), &Self::folder(database, name))?.map(|(t, _)| t))
    }

    fn update(&self, database: &str, name: &str, change: &mut Edit) -> Result<Option<Table>> {
        document::update(self.store.as_ref(), &Self::folder(database, name), change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::Format;

    #[test]
    fn concurrent_updates_lose_nothing() {
        let (_dir, store) = crate::testing::local_lake();
        let catalog = LocalCatalog::new(store);
        std::thread::scope(|scope| {
            for writer in 0..4 {
                let catalog = &catalog;
                scope.spawn(move || {
                    for i in 0..25 {
                        catalog
                            .update("db", "t", &mut |t| {
                                let table = t.get_or_insert_with(|| {
                                    Table::new("db", "t", "t", Format::Parquet, Vec::new())
                                });
                                table.partitions.insert(vec![format!("{writer}-{i}")]);
                                Ok(true)
                            })
                            .unwrap();
                    }
                });
            }
        });
        let table = catalog.table("db", "t").unwrap().unwrap();
        assert_eq!(table.partitions.len(), 100);
        assert_eq!(catalog.tables("db").unwrap(), vec![table]);
        assert!(catalog.table("db", "../db").unwrap().is_none());
    }
}
