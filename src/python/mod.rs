//! Thin Python wrappers: argument conversion, GIL release and error mapping. No logic of
//! their own lives here.

pub mod analytics;
pub mod background;
pub mod embedded;
pub mod errors;
pub mod kafka_config;
pub mod lake;
pub mod options;
pub mod pipelines;
pub mod producer;
pub mod schema;
pub mod sink;
pub mod source;
pub mod topic;

use std::time::Duration;

use pyo3::PyResult;

/// A non-negative number of seconds given for option `name`.
pub fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        crate::error::Error::config(format!(
            "{name} must be a non-negative number of seconds, got {value}"
        ))
        .into()
    })
}

/// A two-column HTML table for notebooks' rich display.
pub fn html_table<K: AsRef<str>>(caption: &str, rows: &[(K, String)]) -> String {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let body: String = rows
        .iter()
        .map(|(k, v)| {
            format!(
                "<tr><th style=\"text-align:left\">{}</th><td>{}</td></tr>",
                escape(k.as_ref()),
                escape(v)
            )
        })
        .collect();
    format!(
        "<table><caption>{}</caption>{body}</table>",
        escape(caption)
    )
}

/// `Name(key=value, …)`, the plain repr matching `html_table`'s rows.
/// `(name, value as text)` of fields of `$s`, for a report's repr and HTML table.
macro_rules! shown {
    ($s:expr; $($field:ident),* $(,)?) => {
        vec![$((stringify!($field), $s.$field.to_string())),*]
    };
}
pub(crate) use shown;

/// `(name, value as Python writes it)` of optional fields of `$s`, for an option's repr.
macro_rules! py_values {
    ($s:expr; $($field:ident),* $(,)?) => {
        vec![$((stringify!($field), $crate::python::py_value(&$s.$field))),*]
    };
}
pub(crate) use py_values;

/// An optional value as Python writes it: `'text'`, `5` or `None`.
pub fn py_value<T: std::fmt::Debug>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map_or_else(|| "None".to_string(), |v| format!("{v:?}"))
}

pub fn repr_of(name: &str, fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}({})", body.join(", "))
}
