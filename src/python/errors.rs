//! Maps core errors to the Python exception hierarchy defined in `stockstream/errors.py`.

use pyo3::prelude::*;

use crate::error::Error;

pyo3::import_exception!(stockstream.errors, StockstreamError);
pyo3::import_exception!(stockstream.errors, SchemaError);
pyo3::import_exception!(stockstream.errors, NotFoundError);
pyo3::import_exception!(stockstream.errors, ConfigError);
pyo3::import_exception!(stockstream.errors, KafkaError);
pyo3::import_exception!(stockstream.errors, DeliveryError);
pyo3::import_exception!(stockstream.errors, QueryError);

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        match err {
            Error::Schema(m) => SchemaError::new_err(m),
            Error::NotFound(m) => NotFoundError::new_err(m),
            Error::Config(m) => ConfigError::new_err(m),
            Error::Kafka(m) => KafkaError::new_err(m),
            Error::Delivery(m) => DeliveryError::new_err(m),
            Error::Query(m) => QueryError::new_err(m),
            Error::Io(m) => StockstreamError::new_err(m),
        }
    }
}
