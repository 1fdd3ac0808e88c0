//! Turns Python keyword arguments into a [`KafkaConfig`].

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict};

use crate::config::KafkaConfig;

/// `bootstrap_servers` plus librdkafka properties given as keyword arguments
/// (`linger_ms=5` or `**{"linger.ms": 5}`); values may be str, int, float or bool.
pub fn kafka_config(
    bootstrap_servers: &str,
    config: Option<&Bound<'_, PyDict>>,
) -> PyResult<KafkaConfig> {
    let mut properties = Vec::new();
    if let Some(config) = config {
        for (k, v) in config.iter() {
            let value = if v.is_instance_of::<PyBool>() {
                if v.extract::<bool>()? {
                    "true"
                } else {
                    "false"
                }
                .to_string()
            } else {
                v.str()?.to_string()
            };
            properties.push((k.extract::<String>()?, value));
        }
    }
    Ok(KafkaConfig::new(bootstrap_servers, properties)?)
}
