//! JSON documents that many writers change safely on any object store, with no lock: each
//! version is a new object `<folder>/<version, 20 digits>.json`, created only if no object
//! has that name (`If-None-Match: *` on S3, an exclusive link on a local disk). A writer
//! reads the latest version N, applies its change and creates version N + 1; if another
//! writer created it first, it reads theirs and applies its change again. This works the
//! same for processes on one machine and for machines sharing a bucket, and a writer that
//! dies at any point leaves either the old version or the new one, never a lock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ByteRange, ObjectStore};
use crate::error::{Error, Kind, Result};

/// Writers racing for one document (sink members, a compaction) retry this often.
const UPDATE_ATTEMPTS: usize = 200;
/// Versions kept behind the latest, so that a reader that listed the folder a moment ago
/// still finds the version it chose.
const KEEP: u64 = 16;
/// Old versions are deleted in batches, every this many versions.
const PRUNE_EVERY: u64 = 8;

/// The versions in `folder`, oldest first.
fn versions(store: &dyn ObjectStore, folder: &str) -> Result<Vec<u64>> {
    let prefix = format!("{folder}/");
    let mut out: Vec<u64> = store
        .list(&prefix)?
        .iter()
        .filter_map(|o| version_of(&o.key[prefix.len()..]))
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// The version a document object's name (below its folder) stands for.
fn version_of(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn key(folder: &str, version: u64) -> String {
    format!("{folder}/{version:020}.json")
}

/// The latest version of the document in `folder` and its number; `None` if there is none.
pub fn read<T: DeserializeOwned>(
    store: &dyn ObjectStore,
    folder: &str,
) -> Result<Option<(T, u64)>> {
    read_listed(store, folder, versions(store, folder)?)
}

/// The latest of `listed`, listing again if it was pruned since (a busy document).
fn read_listed<T: DeserializeOwned>(
    store: &dyn ObjectStore,
    folder: &str,
    mut listed: Vec<u64>,
) -> Result<Option<(T, u64)>> {
    for _ in 0..UPDATE_ATTEMPTS {
        let Some(&latest) = listed.last() else {
            return Ok(None);
        };
        match store.read(&key(folder, latest), ByteRange::All) {
            Ok(body) => {
                return parse(store, &key(folder, latest), &body).map(|v| Some((v, latest)))
            }
            Err(e) if e.is(Kind::NotFound) => listed = versions(store, folder)?,
            Err(e) => return Err(e),
        }
    }
    Err(Error::io(format!(
        "{} changed too fast to be read",
        store.url(folder)
    )))
}

/// The latest version of each document in the folders directly below `parent`, by folder
/// name, from one listing.
pub fn read_all<T: DeserializeOwned>(
    store: &dyn ObjectStore,
    parent: &str,
) -> Result<Vec<(String, T)>> {
    let prefix = format!("{parent}/");
    let mut latest: std::collections::BTreeMap<String, u64> = Default::default();
    for object in store.list(&prefix)? {
        let rest = &object.key[prefix.len()..];
        let Some((name, file)) = rest.split_once('/') else {
            continue;
        };
        if let Some(version) = version_of(file) {
            let seen = latest.entry(name.to_string()).or_default();
            *seen = (*seen).max(version);
        }
    }
    let mut out = Vec::new();
    for (name, version) in latest {
        let folder = format!("{parent}/{name}");
        if let Some((value, _)) = read_listed(store, &folder, vec![version])? {
            out.push((name, value));
        }
    }
    Ok(out)
}

/// Changes the document in `folder` in one step: `change` is applied to the latest version
/// (`None`: no document yet) and says whether to write; if another writer created the next
/// version first, `change` is applied again to theirs. Returns the value as written or left.
pub fn update<T: Serialize + DeserializeOwned>(
    store: &dyn ObjectStore,
    folder: &str,
    change: &mut dyn FnMut(&mut Option<T>) -> Result<bool>,
) -> Result<Option<T>> {
    for attempt in 0..UPDATE_ATTEMPTS {
        let listed = versions(store, folder)?;
        let (mut value, version) = match read_listed::<T>(store, folder, listed.clone())? {
            Some((value, version)) => (Some(value), version),
            None => (None, 0),
        };
        if !change(&mut value)? {
            return Ok(value);
        }
        let Some(written) = &value else {
            return Ok(None);
        };
        let next = version + 1;
        if store.put_new(&key(folder, next), &body(store, folder, written)?)? {
            if next % PRUNE_EVERY == 0 {
                let old: Vec<String> = listed
                    .iter()
                    .filter(|v| **v + KEEP <= next)
                    .map(|v| key(folder, *v))
                    .collect();
                // Old versions are only kept for readers in flight: a failure to delete
                // them is tried again at the next batch.
                let _ = store.delete(&old);
            }
            return Ok(value);
        }
        // Spread racing writers out, so that they do not collide again at once.
        std::thread::sleep(jitter(attempt));
    }
    Err(Error::io(format!(
        "{} kept changing under {UPDATE_ATTEMPTS} attempts to update it",
        store.url(folder)
    )))
}

fn parse<T: DeserializeOwned>(store: &dyn ObjectStore, key: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        Error::schema(format!(
            "catalog file {} is not valid: {e} (fix or delete it and crawl again)",
            store.url(key)
        ))
    })
}

fn body<T: Serialize>(store: &dyn ObjectStore, folder: &str, value: &T) -> Result<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::io(format!("cannot encode {}: {e}", store.url(folder))))?;
    body.push(b'\n');
    Ok(body)
}

/// A short, varying pause between attempts, growing with them: the clock's nanoseconds
/// are random enough to split writers that collided.
fn jitter(attempt: usize) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let ceiling = 1u64 << attempt.min(6);
    Duration::from_micros(u64::from(nanos) % (ceiling * 1000) + 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::LocalStore;

    #[test]
    fn concurrent_updates_lose_nothing_and_old_versions_are_pruned() {
        let (_dir, store) = crate::testing::local_lake();
        std::thread::scope(|scope| {
            for writer in 0..4 {
                let store = store.clone();
                scope.spawn(move || {
                    for i in 0..25 {
                        update::<Vec<String>>(store.as_ref(), "c/t", &mut |doc| {
                            doc.get_or_insert_with(Vec::new)
                                .push(format!("{writer}-{i}"));
                            Ok(true)
                        })
                        .unwrap();
                    }
                });
            }
        });
        let (doc, version) = read::<Vec<String>>(store.as_ref(), "c/t").unwrap().unwrap();
        assert_eq!(doc.len(), 100);
        assert_eq!(version, 100);
        let kept = versions(store.as_ref(), "c/t").unwrap();
        assert!(kept.len() <= (KEEP + PRUNE_EVERY) as usize, "{kept:?}");
        assert_eq!(*kept.last().unwrap(), 100);
    }

    #[test]
    fn an_unchanged_document_is_not_written_and_documents_are_read_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().to_path_buf()).unwrap();
        assert!(read::<u32>(&store, "c/a").unwrap().is_none());
        update::<u32>(&store, "c/a", &mut |v| {
            *v = Some(1);
            Ok(true)
        })
        .unwrap();
        let left = update::<u32>(&store, "c/a", &mut |_| Ok(false)).unwrap();
        assert_eq!(left, Some(1));
        update::<u32>(&store, "c/b", &mut |v| {
            *v = Some(2);
            Ok(true)
        })
        .unwrap();
        store.put("c/notes.txt", b"x").unwrap();
        assert_eq!(read::<u32>(&store, "c/a").unwrap(), Some((1, 1)));
        let all = read_all::<u32>(&store, "c").unwrap();
        assert_eq!(all, [("a".to_string(), 1), ("b".to_string(), 2)]);
    }
}
