//! stockstream's Rust core. Everything outside `python/` is plain Rust; this file only
//! registers the Python module.

#[macro_use]
mod choice;
pub mod analytics;
pub mod aws;
pub mod catalog;
pub mod config;
pub mod embedded;
pub mod error;
pub mod iceberg;
pub mod kafka;
pub mod lake;
pub mod parallel;
pub mod producer;
pub mod progress;
pub mod query;
pub mod record;
pub mod sink;
pub mod source;

mod python;
#[cfg(test)]
mod testing;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<python::embedded::PyEmbeddedKafka>()?;
    m.add_class::<python::producer::PyProducer>()?;
    m.add_class::<python::producer::PySendReport>()?;
    m.add_class::<python::source::PyTickSource>()?;
    m.add_class::<python::schema::PyTickSchema>()?;
    m.add_class::<python::options::PyAwsOptions>()?;
    m.add_class::<python::options::PyRollPolicy>()?;
    m.add_class::<python::options::PyOutputs>()?;
    m.add_class::<python::options::PySession>()?;
    m.add_class::<python::options::PyAsOf>()?;
    m.add_class::<python::pipelines::PyPipeline>()?;
    m.add_class::<python::sink::PyLakeSink>()?;
    m.add_class::<python::pipelines::PyJobStatus>()?;
    m.add_class::<python::sink::PySinkStatus>()?;
    m.add_class::<python::analytics::PyAnalytics>()?;
    m.add_class::<python::analytics::PyAnalyticsStatus>()?;
    m.add_class::<python::lake::PyLake>()?;
    m.add_class::<python::lake::PyCrawlReport>()?;
    m.add_class::<python::lake::PyCompactReport>()?;
    m.add_class::<python::lake::PyTailInfo>()?;
    m.add_function(wrap_pyfunction!(python::lake::crawl, m)?)?;
    m.add_function(wrap_pyfunction!(python::pipelines::running_pipelines, m)?)?;
    m.add_function(wrap_pyfunction!(python::source::read_ticks, m)?)?;
    m.add_function(wrap_pyfunction!(python::source::synthetic_ticks, m)?)?;
    m.add_function(wrap_pyfunction!(python::topic::read_topic, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
