//! Python face of the embedded Kafka cluster.

use std::sync::Mutex;

use pyo3::prelude::*;

use crate::embedded::EmbeddedKafka;

/// An in-process Kafka cluster on 127.0.0.1 (librdkafka's mock cluster): real Kafka protocol,
/// so any client (kafka-python, confluent-kafka, kcat) in any process can use it while it runs.
///
/// Use it as a context manager, or call ``stop()``::
///
///     with stockstream.EmbeddedKafka(partitions=3) as kafka:
///         kafka.create_topic("stock-market")
///         producer = stockstream.Producer(kafka.bootstrap_servers, "stock-market")
///
/// Args:
///     partitions: partition count for ``create_topic`` and ``topics`` (topics that clients
///         auto-create always get 4).
///     brokers: number of brokers (1-9).
///     topics: topic names to create at start.
///
/// Limits: data is in memory, and each partition keeps only ~5 MiB (or 100,000 batches);
/// older records are dropped. ``Producer`` reports say when that happened.
#[pyclass(name = "EmbeddedKafka", module = "stockstream._core", frozen)]
pub struct PyEmbeddedKafka {
    inner: Mutex<EmbeddedKafka>,
    bootstrap_servers: String,
}

#[pymethods]
impl PyEmbeddedKafka {
    #[new]
    #[pyo3(signature = (partitions=4, *, brokers=1, topics=None))]
    fn new(partitions: i32, brokers: i32, topics: Option<Vec<String>>) -> PyResult<Self> {
        let kafka = EmbeddedKafka::start(brokers, partitions)?;
        for topic in topics.unwrap_or_default() {
            kafka.create_topic(&topic, None)?;
        }
        Ok(PyEmbeddedKafka {
            bootstrap_servers: kafka.bootstrap_servers().to_string(),
            inner: Mutex::new(kafka),
        })
    }

    /// ``host:port`` list to give clients as ``bootstrap_servers``.
    #[getter]
    fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Partition count used when ``create_topic`` is called without one.
    #[getter]
    fn partitions(&self) -> i32 {
        self.inner.lock().unwrap().default_partitions()
    }

    /// Whether the cluster is still serving.
    #[getter]
    fn running(&self) -> bool {
        self.inner.lock().unwrap().is_running()
    }

    /// Creates a topic (the mock cluster cannot create topics through the admin API).
    ///
    /// Creating an existing topic again is not an error and leaves it as it was.
    #[pyo3(signature = (name, partitions=None))]
    fn create_topic(&self, py: Python<'_>, name: &str, partitions: Option<i32>) -> PyResult<()> {
        let kafka = self.inner.lock().unwrap();
        Ok(py.detach(|| kafka.create_topic(name, partitions))?)
    }

    /// Stops the cluster; its data is gone. Idempotent.
    fn stop(&self, py: Python<'_>) {
        let kafka = &self.inner;
        py.detach(|| kafka.lock().unwrap().stop());
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.stop(py);
        false
    }

    fn __repr__(&self) -> String {
        let state = if self.running() { "running" } else { "stopped" };
        format!(
            "EmbeddedKafka(bootstrap_servers={:?}, {state})",
            self.bootstrap_servers
        )
    }
}
