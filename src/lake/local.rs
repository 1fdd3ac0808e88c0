//! A lake in a local directory. Objects appear atomically: written to a hidden temporary
//! file beside their final name, synced, then renamed.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use polars::prelude::cloud::CloudOptions;

use super::{ByteRange, ObjectMeta, ObjectStore};
use crate::error::{Error, Result};

/// Distinguishes temporary files of concurrent writers within one process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// How long a conditional write waits for another writer's lock.
const LOCK_WAIT: Duration = Duration::from_secs(30);
/// A lock held longer than this was left by a writer that died (a swap takes milliseconds).
const STALE_LOCK: Duration = Duration::from_secs(10);

/// Whether the process that took a lock has died (known where `/proc` lists processes).
fn holder_gone(lock: &Path) -> bool {
    let Ok(pid) = fs::read_to_string(lock) else {
        return false;
    };
    let Ok(pid) = pid.trim().parse::<u32>() else {
        return false;
    };
    Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// A digest of a local object's bytes: its version tag for conditional writes.
fn tag(body: &[u8]) -> String {
    // FNV-1a: stable across processes and builds, which a conditional write needs.
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{:x}-{hash:016x}", body.len())
}

/// A directory holding the lake's objects as plain files.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Uses `root` as the lake, creating it if needed.
    pub fn open(root: PathBuf) -> Result<Self> {
        fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        if !root.is_dir() {
            return Err(Error::Config(format!(
                "lake {} is not a directory",
                root.display()
            )));
        }
        Ok(LocalStore { root })
    }

    /// Holds `<key>.lock` (created exclusively) while `f` runs: the compare and the swap of
    /// a conditional write happen under it. A lock older than `STALE_LOCK` belonged to a
    /// writer that died mid-swap and is broken.
    fn locked<T>(&self, key: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let path = self.root.join(key);
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock = dir.join(format!(
            ".{}.lock",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("object")
        ));
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
            {
                Ok(mut file) => {
                    let _ = write!(file, "{}", std::process::id());
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = holder_gone(&lock)
                        || fs::metadata(&lock)
                            .and_then(|m| m.modified())
                            .ok()
                            .and_then(|t| t.elapsed().ok())
                            .is_some_and(|age| age > STALE_LOCK);
                    if stale {
                        let _ = fs::remove_file(&lock);
                    } else if Instant::now() > deadline {
                        return Err(Error::Io(format!(
                            "{} is locked by another writer (remove {} if no writer is running)",
                            path.display(),
                            lock.display()
                        )));
                    } else {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                Err(e) => return Err(Error::io(&lock, e)),
            }
        }
        let result = f();
        let _ = fs::remove_file(&lock);
        result
    }

    fn write_synced(path: &Path, body: &[u8]) -> std::io::Result<()> {
        let mut file = fs::File::create(path)?;
        file.write_all(body)?;
        file.sync_all()
    }

    /// Writes `body` under a temporary name, syncs it and renames it to `key`; returns the
    /// folder, whose entry must still be synced for the rename to be durable.
    fn place(&self, key: &str, body: &[u8]) -> Result<PathBuf> {
        let path = self.root.join(key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
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
        let written = Self::write_synced(&temp, body).and_then(|()| fs::rename(&temp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(Error::io(&path, e));
        }
        Ok(dir)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Files written or folders synced at once: syncs mostly wait for the disk, and the
/// file system commits concurrent syncs together.
const IO_THREADS: usize = 32;

impl ObjectStore for LocalStore {
    fn put(&self, key: &str, body: &[u8]) -> Result<()> {
        // The rename is durable only once the directory entry is.
        sync_dir(&self.place(key, body)?)
    }

    /// Files are written and synced several at once, then each folder is synced once for
    /// all the files renamed into it.
    fn put_all(
        &self,
        objects: &[(&str, &[u8])],
        _stop: &mut dyn FnMut() -> bool,
    ) -> Option<Vec<Result<()>>> {
        let placed =
            crate::parallel::map_on(IO_THREADS, objects, |(key, body)| self.place(key, body));
        let mut dirs: Vec<PathBuf> = placed.iter().flatten().cloned().collect();
        dirs.sort_unstable();
        dirs.dedup();
        let synced = crate::parallel::map_on(IO_THREADS, &dirs, |dir| sync_dir(dir));
        let failed: Vec<(PathBuf, String)> = dirs
            .into_iter()
            .zip(synced)
            .filter_map(|(dir, r)| r.err().map(|e| (dir, e.to_string())))
            .collect();
        Some(
            placed
                .into_iter()
                .map(|r| {
                    let dir = r?;
                    match failed.iter().find(|(d, _)| *d == dir) {
                        Some((_, e)) => Err(Error::Io(e.clone())),
                        None => Ok(()),
                    }
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
                Err(e) => return Err(Error::io(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&dir, e))?;
                let path = entry.path();
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    // Gone since the folder was read (a writer's temporary file renamed).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(&path, e)),
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
                    out.push(ObjectMeta {
                        key,
                        size: meta.len(),
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
        read().map_err(|e| Error::io(&path, e))
    }

    fn read_tagged(&self, key: &str) -> Result<Option<(Vec<u8>, String)>> {
        match self.read(key, ByteRange::All) {
            Ok(body) => {
                let t = tag(&body);
                Ok(Some((body, t)))
            }
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put_if(&self, key: &str, body: &[u8], expected: Option<&str>) -> Result<bool> {
        self.locked(key, || {
            let current = self.read_tagged(key)?.map(|(_, t)| t);
            if current.as_deref() != expected {
                return Ok(false);
            }
            self.put(key, body).map(|()| true)
        })
    }

    fn delete(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            let path = self.root.join(key);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
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
        let results = store.put_all(&objects, &mut || false).unwrap();
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
    fn conditional_writes_refuse_a_stale_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().to_path_buf()).unwrap();
        assert!(store.put_if("c/t.json", b"one", None).unwrap());
        assert!(!store.put_if("c/t.json", b"two", None).unwrap());
        let (body, tag) = store.read_tagged("c/t.json").unwrap().unwrap();
        assert_eq!(body, b"one");
        assert!(store.put_if("c/t.json", b"two", Some(&tag)).unwrap());
        assert!(!store.put_if("c/t.json", b"three", Some(&tag)).unwrap());
        assert_eq!(store.read("c/t.json", ByteRange::All).unwrap(), b"two");
        store
            .delete(&["c/t.json".into(), "c/missing".into()])
            .unwrap();
        assert!(store.read_tagged("c/t.json").unwrap().is_none());
        assert!(store.list("").unwrap().is_empty(), "no lock file is left");
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
