//! Python face of reading a topic snapshot.

use std::collections::HashMap;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3_polars::PyDataFrame;

use super::kafka_config::kafka_config;
use crate::error::Error;
use crate::kafka::Start;

/// Reads what a topic holds now (from each partition's start to its current end) into a
/// Polars DataFrame, without joining a consumer group — like ``kcat -C -e``.
///
/// Args:
///     bootstrap_servers: ``host:port[,…]``.
///     topic: the topic to read.
///     limit: read at most this many messages.
///     last: start at each partition's last ``last`` messages (like ``tail -n``).
///     after: ``{partition: next offset}`` to carry on from an earlier read (partitions
///         not named start at their beginning), e.g. from ``df.group_by("partition")``'s
///         highest offset + 1.
///     timeout: seconds allowed for connecting and for reading everything.
///     **config: librdkafka consumer properties (SASL/SSL settings, …).
///
/// Returns:
///     polars.DataFrame with ``partition, offset, timestamp_ms, key, value`` (value as text;
///     ``df["value"].str.json_decode()`` gives the tick fields).
///
/// Raises:
///     KafkaError: the broker cannot be reached or the messages do not arrive within ``timeout``.
#[pyfunction]
#[pyo3(signature = (bootstrap_servers, topic, *, limit=None, last=None, after=None, timeout=30.0,
                    **config))]
#[allow(clippy::too_many_arguments)]
pub fn read_topic(
    py: Python<'_>,
    bootstrap_servers: &str,
    topic: &str,
    limit: Option<usize>,
    last: Option<usize>,
    after: Option<HashMap<i32, i64>>,
    timeout: f64,
    config: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyDataFrame> {
    let config = kafka_config(bootstrap_servers, config)?;
    let timeout = Duration::try_from_secs_f64(timeout).unwrap_or(Duration::ZERO);
    let start = match (last, after) {
        (Some(_), Some(_)) => return Err(Error::config("give last or after, not both").into()),
        (Some(n), None) => Start::Last(n),
        (None, Some(next)) => Start::After(next),
        (None, None) => Start::Beginning,
    };
    let df = py.detach(|| crate::kafka::read_topic(&config, topic, &start, limit, timeout))?;
    Ok(PyDataFrame(df))
}
