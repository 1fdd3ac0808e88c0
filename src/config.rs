//! Typed, validated configuration for Kafka clients: stockstream's defaults, overridable
//! by any librdkafka property, so the same code runs against the embedded broker or a
//! SASL/SSL cluster.

use rdkafka::config::ClientConfig;

use crate::error::{Error, Result};

/// Producer defaults: durable (idempotent, acks=all), batched and compressed. Compression
/// also keeps the embedded broker's fixed ~5 MiB per-partition log from overflowing.
pub const PRODUCER_DEFAULTS: [(&str, &str); 10] = [
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("compression.type", "zstd"),
    ("linger.ms", "20"),
    ("batch.size", "1000000"),
    ("batch.num.messages", "10000"),
    ("queue.buffering.max.messages", "1000000"),
    // The Java client's partitioner, so a symbol lands on the same partition whichever
    // client (Kafka Connect, kafka-python, Java) produced it.
    ("partitioner", "murmur2_random"),
    ("message.timeout.ms", "120000"),
    ("client.id", "stockstream"),
];

/// Settings that mark credentials: their values never appear in errors or reprs.
const SECRET_KEYS: [&str; 6] = [
    "password",
    "secret",
    "token",
    "passphrase",
    "private.key",
    // sasl.oauthbearer.config carries client secrets inline.
    "sasl.oauthbearer.config",
];
/// Properties whose value is key material or a keystore, by their ending.
const SECRET_ENDINGS: [&str; 3] = [".pem", ".key", ".jks"];

/// Where a Kafka client connects and which librdkafka properties it overrides.
#[derive(Clone, Default)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub properties: Vec<(String, String)>,
}

impl KafkaConfig {
    /// A configuration for `bootstrap_servers` with `properties` on top of the defaults.
    /// Property names may use `_` for `.` (`linger_ms`), which suits Python keyword arguments.
    pub fn new(bootstrap_servers: &str, properties: Vec<(String, String)>) -> Result<Self> {
        if bootstrap_servers.trim().is_empty() {
            return Err(Error::config(
                "bootstrap_servers is empty: give host:port of at least one broker",
            ));
        }
        let properties = properties
            .into_iter()
            .map(|(k, v)| (k.replace('_', "."), v))
            .collect();
        Ok(KafkaConfig {
            bootstrap_servers: bootstrap_servers.to_string(),
            properties,
        })
    }

    /// A librdkafka configuration: `defaults`, then the bootstrap servers, then the user's properties.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        for (k, v) in defaults {
            cfg.set(*k, *v);
        }
        cfg.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in &self.properties {
            cfg.set(k, v);
        }
        cfg
    }

    /// Turns a librdkafka creation error into a message that names the offending property
    /// without echoing secret values.
    pub fn creation_error(&self, err: rdkafka::error::KafkaError) -> Error {
        let mut text = err.to_string();
        for (k, v) in &self.properties {
            if is_secret(k) && !v.is_empty() {
                text = text.replace(v.as_str(), "***");
            }
        }
        Error::config(format!("invalid Kafka client configuration: {text}"))
    }
}

/// Whether a property holds a credential.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('_', ".");
    SECRET_KEYS.iter().any(|s| key.contains(s)) || SECRET_ENDINGS.iter().any(|e| key.ends_with(e))
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let props: Vec<_> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &props)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_properties_override_defaults_and_accept_underscores() {
        let cfg = KafkaConfig::new("h:9092", vec![("linger_ms".into(), "0".into())]).unwrap();
        let c = cfg.client_config(&PRODUCER_DEFAULTS);
        assert_eq!(c.get("linger.ms"), Some("0"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("bootstrap.servers"), Some("h:9092"));
    }

    #[test]
    fn secrets_are_hidden_from_debug_output() {
        let cfg =
            KafkaConfig::new("h:9092", vec![("sasl.password".into(), "hunter2".into())]).unwrap();
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("***"),
            "{shown}"
        );
    }

    #[test]
    fn credentials_are_recognised_by_pattern_not_by_a_list() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "sasl.oauthbearer.assertion.private.key.pem",
            "ssl.key.pem",
            "ssl.keystore.password",
            "some.vendor.token",
            "ssl_certificate_pem",
            "client.jks",
        ] {
            assert!(is_secret(key), "{key}");
        }
        for key in [
            "bootstrap.servers",
            "ssl.key.location",
            "sasl.username",
            "linger.ms",
        ] {
            assert!(!is_secret(key), "{key}");
        }
    }

    #[test]
    fn empty_bootstrap_is_rejected() {
        assert!(matches!(
            KafkaConfig::new(" ", vec![]),
            Err(e) if e.is(crate::error::Kind::Config)
        ));
    }
}
