//! The error type shared by the whole core, with enough context (file, line, column,
//! broker) that the message alone tells a user what to fix.

use std::fmt::Display;
use std::path::Path;

/// Everything that can go wrong in the core. Each variant maps to one Python exception.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input data does not match the expected schema (missing column, unparsable value, no rows).
    #[error("{0}")]
    Schema(String),
    /// A file or object that was asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An option has an invalid value.
    #[error("{0}")]
    Config(String),
    /// Kafka could not be reached or refused a request.
    #[error("{0}")]
    Kafka(String),
    /// Some messages were handed to Kafka but never acknowledged.
    #[error("{0}")]
    Delivery(String),
    /// A query is wrong: bad SQL, an unknown table or column.
    #[error("{0}")]
    Query(String),
    /// Any other I/O failure, with the path involved.
    #[error("{0}")]
    Io(String),
}

/// Result alias used throughout the core.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A schema error located at a 1-based data row (the header is line 1, so row N is line N + 1).
    pub fn at_row(path: &Path, row: usize, column: &str, what: impl Display) -> Self {
        Error::Schema(format!(
            "{}: line {}, column {column:?}: {what}",
            path.display(),
            row + 1
        ))
    }

    /// Wraps an I/O error with the path it happened on, keeping "not found" distinguishable.
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(format!("{}: no such file", path.display()))
        } else {
            Error::Io(format!("{}: {err}", path.display()))
        }
    }
}
