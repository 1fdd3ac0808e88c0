//! The error type shared by the whole core: what kind of thing went wrong (each kind maps
//! to one Python exception), a message with enough context (file, line, column, broker,
//! request) that it alone tells a user what to fix, the error it came from, and whether
//! trying again can help — decided where the error is made, where the cause is known.

use std::fmt::{self, Display};
use std::path::Path;

/// What kind of thing went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Input data does not match the expected schema (missing column, unparsable value, no rows).
    Schema,
    /// A file, object, bucket or table that was asked for does not exist.
    NotFound,
    /// An option has an invalid value, or credentials or permissions were refused.
    Config,
    /// Kafka could not be reached or refused a request.
    Kafka,
    /// Some messages were handed to Kafka but never acknowledged.
    Delivery,
    /// A query is wrong: bad SQL, an unknown table or column.
    Query,
    /// Any other I/O failure, with the path or request involved.
    Io,
}

impl Kind {
    /// Whether errors of this kind pass with time unless their maker knows better: a
    /// broker or a disk can recover; a wrong option or a malformed record cannot.
    fn transient(self) -> bool {
        matches!(self, Kind::Kafka | Kind::Delivery | Kind::Io)
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the core.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    message: String,
    retryable: bool,
    source: Option<Source>,
}

/// Result alias used throughout the core.
pub type Result<T> = std::result::Result<T, Error>;

/// Fails naming the first of `names` (`(argument, value)`) whose value is empty or blank.
pub fn non_empty(names: &[(&str, &str)]) -> Result<()> {
    match names.iter().find(|(_, value)| value.trim().is_empty()) {
        Some((name, _)) => Err(Error::config(format!("{name} is empty"))),
        None => Ok(()),
    }
}

impl Error {
    /// An error of `kind`, retryable as that kind usually is.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            retryable: kind.transient(),
            source: None,
        }
    }

    pub fn schema(message: impl Into<String>) -> Self {
        Self::new(Kind::Schema, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(Kind::Config, message)
    }

    pub fn kafka(message: impl Into<String>) -> Self {
        Self::new(Kind::Kafka, message)
    }

    pub fn delivery(message: impl Into<String>) -> Self {
        Self::new(Kind::Delivery, message)
    }

    pub fn query(message: impl Into<String>) -> Self {
        Self::new(Kind::Query, message)
    }

    pub fn io(message: impl Into<String>) -> Self {
        Self::new(Kind::Io, message)
    }

    /// The same error, saying whether trying again can help.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// The same error, keeping what caused it (`source()` in Rust, `__cause__` in Python).
    pub fn caused_by(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn is(&self, kind: Kind) -> bool {
        self.kind == kind
    }

    /// Whether the same request may succeed later (throttling, a timeout, a server error,
    /// a broker away), as opposed to failing the same way every time.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// A schema error located at a 1-based data row (the header is line 1, so row N is line N + 1).
    pub fn at_row(path: &Path, row: usize, column: &str, what: impl Display) -> Self {
        Error::schema(format!(
            "{}: line {}, column {column:?}: {what}",
            path.display(),
            row + 1
        ))
    }

    /// Wraps an I/O error with the path it happened on, keeping "not found" distinguishable.
    /// A full disk or a refused permission does not pass by itself.
    pub fn file(path: &Path, err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let error = match err.kind() {
            K::NotFound => Error::not_found(format!("{}: no such file", path.display())),
            K::PermissionDenied | K::ReadOnlyFilesystem | K::StorageFull | K::QuotaExceeded => {
                Error::io(format!("{}: {err}", path.display())).retryable(false)
            }
            _ => Error::io(format!("{}: {err}", path.display())),
        };
        error.caused_by(err)
    }
}

impl Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_a_default_retry_decision_that_its_maker_can_override() {
        assert!(Error::io("disk hiccup").is_retryable());
        assert!(Error::kafka("broker away").is_retryable());
        assert!(!Error::config("bad option").is_retryable());
        assert!(!Error::schema("bad row").is_retryable());
        assert!(!Error::io("access denied").retryable(false).is_retryable());
    }

    #[test]
    fn the_source_is_kept_and_a_full_disk_is_not_retried() {
        use std::error::Error as _;
        let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "no space");
        let err = Error::file(Path::new("/lake/x"), full);
        assert!(err.is(Kind::Io) && !err.is_retryable());
        assert_eq!(err.to_string(), "/lake/x: no space");
        assert!(err.source().unwrap().to_string().contains("no space"));
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(Error::file(Path::new("x"), missing).is(Kind::NotFound));
    }
}
