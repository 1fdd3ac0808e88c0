//! Maps core errors to the Python exception hierarchy defined in `stockstream/errors.py`;
//! the exception's `retryable` attribute says whether the same call may succeed later.

use pyo3::prelude::*;

use crate::error::{Error, Kind};

pyo3::import_exception!(stockstream.errors, StockstreamError);
pyo3::import_exception!(stockstream.errors, SchemaError);
pyo3::import_exception!(stockstream.errors, NotFoundError);
pyo3::import_exception!(stockstream.errors, ConfigError);
pyo3::import_exception!(stockstream.errors, KafkaError);
pyo3::import_exception!(stockstream.errors, DeliveryError);
pyo3::import_exception!(stockstream.errors, QueryError);

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let message = err.message().to_string();
        let exception = match err.kind() {
            Kind::Schema => SchemaError::new_err(message),
            Kind::NotFound => NotFoundError::new_err(message),
            Kind::Config => ConfigError::new_err(message),
            Kind::Kafka => KafkaError::new_err(message),
            Kind::Delivery => DeliveryError::new_err(message),
            Kind::Query => QueryError::new_err(message),
            Kind::Io => StockstreamError::new_err(message),
        };
        Python::attach(|py| {
            let _ = exception.value(py).setattr("retryable", err.is_retryable());
        });
        exception
    }
}
