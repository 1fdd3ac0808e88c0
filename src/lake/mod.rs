//! The lake: where its objects live (a local directory or an S3 bucket, any S3-compatible
//! endpoint, behind one small trait so writers do not care which) and how they are laid
//! out (formats, Hive folders, object names), shared by the sink, the catalog and queries.

pub mod document;
pub mod layout;
mod local;
pub mod registry;
mod s3;

use std::path::PathBuf;
use std::sync::Arc;

pub use layout::{
    escape, is_hidden, partition_of, path_values, table_folder, unescape, Format, Layout,
    ObjectName, PartitionKey, TableFormat,
};
pub use local::LocalStore;
pub use registry::{
    check_source, fence, Claim, Declaration, Fence, Fields, LandedObject, LandedRange, Landing,
    LastRecord, Registered, Registry, TableSource, TableState,
};
pub use s3::S3Store;

use polars::prelude::cloud::CloudOptions;

use crate::aws::AwsOptions;
use crate::error::{Error, Result};

/// An object found by listing: its key below the lake root, its size, and when it was
/// last written (Unix milliseconds; 0 where not known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub modified_ms: i64,
}

/// Which bytes of an object to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    All,
    /// The first n bytes (or fewer, if the object is shorter).
    Head(u64),
    /// The last n bytes (or fewer): where Parquet keeps its schema.
    Tail(u64),
}

/// How a write treats an object already at its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Replace it.
    Replace,
    /// Leave it, and say so: a data object is created once, so that a writer that lost its
    /// partitions (a zombie) cannot overwrite what their new owner wrote.
    Create,
}

/// Object storage as the lake needs it: whole-object writes that readers see completely or
/// not at all, and writes that create an object only if none is there (S3's
/// `If-None-Match: *`, an exclusive link on a local disk), which is what lets many writers
/// share a lake without locks.
pub trait ObjectStore: Send + Sync {
    /// Writes `body` at `key` (a `/`-separated path below the lake root), replacing any
    /// object already there. When this returns `Ok` the object is durable.
    fn put(&self, key: &str, body: &[u8]) -> Result<()>;

    /// Writes `body` at `key` only if no object is there: `Ok(false)` if one is (it is
    /// left as it was). When this returns `Ok(true)` the object is durable.
    fn put_new(&self, key: &str, body: &[u8]) -> Result<bool>;

    /// Writes every `(key, body)`, several at once, as `mode` says; each write's result, in
    /// order: `Ok(false)` where `Put::Create` found an object. `stop` is asked about every
    /// 100 ms while writes are under way; writes still running a moment after it said to
    /// stop are abandoned (their objects may or may not exist) and the result is `None`.
    fn put_all(
        &self,
        objects: &[(&str, &[u8])],
        mode: Put,
        stop: &mut dyn FnMut() -> bool,
    ) -> Option<Vec<Result<bool>>>;

    /// The URL of `key` in this lake, for messages, reports and readers (Polars).
    fn url(&self, key: &str) -> String;

    /// Every object whose key starts with `prefix`, keys relative to the lake root.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// The bytes of `key`, or part of them; `NotFound` if there is no such object.
    fn read(&self, key: &str, range: ByteRange) -> Result<Vec<u8>>;

    /// Deletes objects; keys that do not exist are no error.
    fn delete(&self, keys: &[String]) -> Result<()>;

    /// How Polars reaches the objects: credentials and endpoint resolved now, or `None`
    /// for local files.
    fn cloud_options(&self) -> Result<Option<CloudOptions>>;
}

/// A lake location: `s3://bucket/prefix`, `file:///dir` or a plain directory path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LakeUrl {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl LakeUrl {
    /// Parses a lake location; only local paths and `s3://` are understood.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::config(format!(
                    "lake {text:?} names no bucket: use s3://bucket/prefix"
                )));
            }
            return Ok(LakeUrl::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        let path = text.strip_prefix("file://").unwrap_or(text);
        if path.is_empty() {
            return Err(Error::config(
                "lake is empty: give a directory or s3://bucket/prefix",
            ));
        }
        if let Some((scheme, _)) = path.split_once("://") {
            return Err(Error::config(format!(
                "lake {text:?}: scheme {scheme:?} is not supported (use s3:// or a local directory)"
            )));
        }
        Ok(LakeUrl::Local(expand_home(path)))
    }
}

/// As written back: `s3://bucket/prefix` or the directory.
impl std::fmt::Display for LakeUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LakeUrl::Local(path) => write!(f, "{}", path.display()),
            LakeUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            LakeUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// `~` and `~/dir` as a shell would read them (a folder literally named `~` is never meant).
fn expand_home(path: &str) -> PathBuf {
    let home = || std::env::var_os("HOME").filter(|h| !h.is_empty());
    match path.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => match home() {
            Some(home) => PathBuf::from(home).join(rest.trim_start_matches('/')),
            None => PathBuf::from(path),
        },
        _ => PathBuf::from(path),
    }
}

/// Opens the lake at `url`, checking that it can be written to (the directory can be
/// created; the bucket exists and the credentials are accepted).
pub fn open(url: &LakeUrl, s3: &AwsOptions) -> Result<Arc<dyn ObjectStore>> {
    Ok(match url {
        LakeUrl::Local(root) => Arc::new(LocalStore::open(root.clone())?),
        LakeUrl::S3 { bucket, prefix } => Arc::new(S3Store::open(bucket, prefix, s3)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lake_locations() {
        assert_eq!(
            LakeUrl::parse("s3://b/some/prefix/").unwrap(),
            LakeUrl::S3 {
                bucket: "b".into(),
                prefix: "some/prefix".into()
            }
        );
        assert_eq!(
            LakeUrl::parse("s3://b").unwrap(),
            LakeUrl::S3 {
                bucket: "b".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            LakeUrl::parse("file:///tmp/lake").unwrap(),
            LakeUrl::Local("/tmp/lake".into())
        );
        assert_eq!(
            LakeUrl::parse("lake").unwrap(),
            LakeUrl::Local("lake".into())
        );
    }

    #[test]
    fn a_tilde_means_the_home_directory() {
        let home = PathBuf::from(std::env::var_os("HOME").unwrap());
        assert_eq!(
            LakeUrl::parse("~/lakes/x").unwrap(),
            LakeUrl::Local(home.join("lakes/x"))
        );
        assert_eq!(
            LakeUrl::parse("~x").unwrap(),
            LakeUrl::Local(PathBuf::from("~x"))
        );
    }

    #[test]
    fn rejects_unknown_schemes_and_empty_buckets() {
        for bad in ["gs://b/x", "s3:///x", ""] {
            assert!(
                matches!(LakeUrl::parse(bad), Err(e) if e.is(crate::error::Kind::Config)),
                "{bad}"
            );
        }
    }
}
