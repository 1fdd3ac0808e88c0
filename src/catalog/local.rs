//! The catalog kept in the lake itself: one human-readable JSON file per table at
//! `_catalog/<database>/<table>.json`, written atomically like every other object, so the
//! lake and its description travel together (a directory copy, an `aws s3 sync`).

use std::sync::Arc;

use super::{Catalog, Table};
use crate::error::{Error, Result};
use crate::lake::{ByteRange, ObjectStore};

/// The folder below the lake root holding catalog files; readers skip `_`-folders.
pub const CATALOG_DIR: &str = "_catalog";

/// Writers racing for one table (sink members, a compaction) retry this often.
const UPDATE_ATTEMPTS: usize = 100;

/// A catalog stored as JSON objects in the lake.
pub struct LocalCatalog {
    store: Arc<dyn ObjectStore>,
}

impl LocalCatalog {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        LocalCatalog { store }
    }

    fn key(database: &str, name: &str) -> String {
        format!("{CATALOG_DIR}/{database}/{name}.json")
    }
}

/// Reads a JSON object of the catalog folder; `None` if it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<Option<T>> {
    let body = match store.read(key, ByteRange::All) {
        Ok(body) => body,
        Err(Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    parse_json(store, key, &body).map(Some)
}

fn parse_json<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    key: &str,
    body: &[u8],
) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        Error::Schema(format!(
            "catalog file {} is not valid: {e} (fix or delete it and crawl again)",
            store.url(key)
        ))
    })
}

fn json_body<T: serde::Serialize>(
    store: &dyn ObjectStore,
    key: &str,
    value: &T,
) -> Result<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Io(format!("cannot encode {}: {e}", store.url(key))))?;
    body.push(b'\n');
    Ok(body)
}

impl Catalog for LocalCatalog {
    fn describe(&self) -> String {
        format!("the catalog in {}", self.store.url(CATALOG_DIR))
    }

    fn tables(&self, database: &str) -> Result<Vec<Table>> {
        let folder = format!("{CATALOG_DIR}/{database}/");
        let mut tables = Vec::new();
        for object in self.store.list(&folder)? {
            let Some(name) = object.key[folder.len()..].strip_suffix(".json") else {
                continue;
            };
            if name.contains('/') {
                continue;
            }
            if let Some(table) = self.table(database, name)? {
                tables.push(table);
            }
        }
        Ok(tables)
    }

    fn table(&self, database: &str, name: &str) -> Result<Option<Table>> {
        // A name from a query could climb out of the catalog folder; no table has one.
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
            return Ok(None);
        }
        read_json(self.store.as_ref(), &Self::key(database, name))
    }

    fn update(
        &self,
        database: &str,
        name: &str,
        change: &mut dyn FnMut(&mut Option<Table>) -> Result<bool>,
    ) -> Result<Option<Table>> {
        update_json(self.store.as_ref(), &Self::key(database, name), change)
    }
}

/// Changes the JSON object at `key` in one conditional step: `change` is applied to the
/// version read (`None`: no object) and says whether to write; if another writer got
/// there first it is applied again to theirs. Returns the value as written or left.
pub fn update_json<T: serde::Serialize + serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    key: &str,
    change: &mut dyn FnMut(&mut Option<T>) -> Result<bool>,
) -> Result<Option<T>> {
    for _ in 0..UPDATE_ATTEMPTS {
        let (mut value, tag) = match store.read_tagged(key)? {
            Some((body, tag)) => (Some(parse_json::<T>(store, key, &body)?), Some(tag)),
            None => (None, None),
        };
        if !change(&mut value)? {
            return Ok(value);
        }
        let Some(written) = &value else {
            return Ok(None);
        };
        if store.put_if(key, &json_body(store, key, written)?, tag.as_deref())? {
            return Ok(value);
        }
    }
    Err(Error::Io(format!(
        "{} kept changing under {UPDATE_ATTEMPTS} attempts to update it",
        store.url(key)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::{Format, LocalStore};

    #[test]
    fn concurrent_updates_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalStore::open(dir.path().to_path_buf()).unwrap());
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
    }
}
