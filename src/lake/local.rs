//! A lake in a local directory. Objects appear atomically: written to a hidden temporary
//! file beside their final name, synced, then renamed over it (a replacing write) or
//! linked to it (a create, which fails if the name exists).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use polars::prelude::cloud::CloudOptions;

use super::{ByteRange, ObjectMeta, ObjectStore, Put};
use crate::error::{Error, Result};

/// Distinguishes temporary files of concurrent writers within one process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A directory holding the lake's objects as plain files.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Uses `root` as the lake, creating it if needed.
    pub fn open(root: PathBuf) -> Result<Self> {
        fs::create_dir_all(&root).map_err(|e| Error::file(&root, e))?;
        if !root.is_dir() {
            return Err(Error::config(format!(
                "lake {} is not a directory",
                root.display()
            )));
        }
        Ok(LocalStore { root })
    }

    fn write_synced(path: &Path, body: &[u8]) -> std::io::Result<()> {
        let mut file = fs::File::create(path)?;
        file.write_all(body)?;
        file.sync_all()
    }

    /// Writes `body` under a temporary name, syncs it and moves it to `key` (replacing an
    /// object there, or, with `Put::Create`, only if there is none: `Ok(None)` then). Returns
    /// the folder, whose entry must still be synced for the move to be durable.
    fn place(&self, key: &str, body: &[u8], mode: Put) -> Result<Option<PathBuf>> {
        let path = self.root.join(key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, e))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        // A leading dot hides the partial file from Hive-style readers (Spark, Polars, DuckDB).
        let temp = dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let written = Self::write_synced(&temp, body).and_then(|()| match mode {
            Put::Replace => fs::rename(&temp, &path).map(|()| true),
            // A link fails if the name exists, whoever made it: the one atomic
            // create-if-absent of a whole file that every local file system offers.
            Put::Create => match fs::hard_link(&temp, &path) {
                Ok(()) => fs::remove_file(&temp).map(|()| true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    fs::remove_file(&temp).map(|()| false)
                }
                Err(e) => Err(e),
            },
        });
        match written {
            Ok(true) => Ok(Some(dir)),
            Ok(false) => Ok(None),
            Err(e) => {
                let _ = fs::remove_file(&temp);
                Err(Error::file(&path, e))
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::file(dir, e))
}

/// Files written or folders synced at once: syncs mostly wait for the disk, and the
/// file system commits concurrent syncs together.
const IO_THREADS: usize = 32;

impl ObjectStore for LocalStore {
    fn put(&self, key: &str, body: &[u8]) -> Result<()> {
        // The rename is durable only once the directory entry is.
        match self.place(key, body, Put::Replace)? {
            Some(dir) => sync_dir(&dir),
            None => Ok(()),
        }
    }

    fn put_new(&self, key: &str, body: &[u8]) -> Result<bool> {
        match self.place(key, body, Put::Create)? {
            Some(dir) => sync_dir(&dir).map(|()| true),
            None => Ok(false),
        }
    }

    /// Files are written and synced several at once, then each folder is synced once for
    /// all the files moved into it.
    fn put_all(
        &self,
        objects: &[(&str, &[u8])],
        mode: Put,
        _stop: &mut dyn FnMut() -> bool,
    ) -> Option<Vec<Result<bool>>> {
        let placed = crate::parallel::map_on(IO_THREADS, objects, |(key, body)| {
            self.place(key, body, mode)
        });
        let mut dirs: Vec<PathBuf> = placed.iter().flatten().flatten().cloned().collect();
        dirs.sort_unstable();
        dirs.dedup();
        let synced = crate::parallel::map_on(IO_THREADS, &dirs, |dir| sync_dir(dir));
        let failed: Vec<(PathBuf, Error)> = dirs
            .into_iter()
            .zip(synced)
            .filter_map(|(dir, r)| r.err().map(|e| (dir, e)))
            .collect();
        Some(
            placed
                .into_iter()
                .map(|r| match r? {
                    None => Ok(false),
                    Some(dir) => match failed.iter().find(|(d, _)| *d == dir) {
                        Some((_, e)) => Err(Error::io(e.to_string()).retryable(e.is_retryable())),
                        None => Ok(true),
                    },
                })
                .collect(),
        )
    }

    fn url(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // Walk only the folder holding the prefix, not the whole lake.
        let start = match prefix.rfind('/') {
            Some(i) => self.root.join(&prefix[..i]),
            None => self.root.clone(),
        };
        let mut out = Vec::new();
        let mut dirs = vec![start];
        while let Some(dir) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::file(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::file(&dir, e))?;
                let path = entry.path();
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    // Gone since the folder was read (a writer's temporary file renamed).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::file(&path, e)),
                };
                if meta.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let Ok(relative) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let key = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                if key.starts_with(prefix) {
                    let modified = meta.modified().ok();
                    let since = modified.and_then(|t| t.duration_since(UNIX_EPOCH).ok());
                    out.push(ObjectMeta {
                        key,
                        size: meta.len(),
                        modified_ms: since.map_or(0, |d| d.as_millis() as i64),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn read(&self, key: &str, range: ByteRange) -> Result<Vec<u8>> {
        let path = self.root.join(key);
        let read = || -> std::io::Result<Vec<u8>> {
            let mut file = fs::File::open(&path)?;
            let len = file.metadata()?.len();
            let (start, count) = match range {
                ByteRange::All => (0, len),
                ByteRange::Head(n) => (0, n.min(len)),
                ByteRange::Tail(n) => (len - n.min(len), n.min(len)),
            };
            file.seek(SeekFrom::Start(start))?;
            let mut body = Vec::with_capacity(count as usize);
            file.take(count).read_to_end(&mut body)?;
            Ok(body)
        };
        read().map_err(|e| Error::file(&path, e))
    }

    fn delete(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            let path = self.root.join(key);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::file(&path, e)),
            }
        }
        Ok(())
    }

    fn cloud_options(&self) -> Result<Option<CloudOptions>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_creates_directories_replaces_objects_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("lake")).unwrap();
        store.put("t/date=2021-01-04/a.json", b"one").unwrap();
        store.put("t/date=2021-01-04/a.json", b"two").unwrap();
        let part = dir.path().join("lake/t/date=2021-01-04");
        assert_eq!(fs::read(part.join("a.json")).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&part)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }

    #[test]
    fn put_all_writes_every_object_and_reports_each_failure_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("lake")).unwrap();
        // A file where a folder must go: writes below it fail, the others land.
        fs::write(dir.path().join("lake/blocked"), b"x").unwrap();
        let bodies: Vec<(String, Vec<u8>)> = (0..40)
            .map(|i| (format!("t/m={}/o{i}.json", i % 3), vec![i as u8; 100]))
            .chain([("blocked/o.json".to_string(), b"no".to_vec())])
            .collect();
        let objects: Vec<(&str, &[u8])> = bodies
            .iter()
            .map(|(k, b)| (k.as_str(), b.as_slice()))
            .collect();
        let results = store
            .put_all(&objects, Put::Replace, &mut || false)
            .unwrap();
        assert_eq!(results.len(), 41);
        assert!(results[..40].iter().all(|r| r.is_ok()));
        assert!(results[40]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("blocked"));
        for (key, body) in &bodies[..40] {
            assert_eq!(&fs::read(dir.path().join("lake").join(key)).unwrap(), body);
        }
    }

    #[test]
    fn a_create_leaves_an_object_that_is_there_and_racing_creates_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().to_path_buf()).unwrap();
        assert!(store.put_new("t/a.parquet", b"one").unwrap());
        assert!(!store.put_new("t/a.parquet", b"two").unwrap());
        assert_eq!(store.read("t/a.parquet", ByteRange::All).unwrap(), b"one");
        let writers: Vec<u8> = (0..8).collect();
        let won = crate::parallel::map_on(8, &writers, |i| {
            store.put_new("t/b.parquet", &[*i; 1000]).unwrap()
        });
        assert_eq!(won.iter().filter(|w| **w).count(), 1);
        let body = store.read("t/b.parquet", ByteRange::All).unwrap();
        assert!(body.len() == 1000 && body.iter().all(|b| *b == body[0]));
        let results = store
            .put_all(
                &[("t/a.parquet", b"x"), ("t/c.parquet", b"y")],
                Put::Create,
                &mut || false,
            )
            .unwrap();
        let created: Vec<bool> = results.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(created, [false, true]);
        let names: Vec<String> = store.list("").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(
            names,
            ["t/a.parquet", "t/b.parquet", "t/c.parquet"],
            "no temporary file is left"
        );
    }

    #[test]
    fn a_file_in_the_way_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        fs::write(&file, b"x").unwrap();
        let err = LocalStore::open(file.clone()).unwrap_err().to_string();
        assert!(err.contains("plain"), "{err}");
    }
}
