//! The zero-setup broker: librdkafka's mock cluster, a real Kafka-protocol server on
//! 127.0.0.1, kept in memory.
//!
//! The mock cluster is not `Send` and stops when dropped, so it lives on a thread of its
//! own; this handle talks to that thread and can be shared freely.
//!
//! Limits to know: each partition keeps at most ~5 MiB / 100,000 batches (older records are
//! dropped, and the start offset moves); topics that clients auto-create get 4 partitions;
//! the admin API cannot create topics, [`EmbeddedKafka::create_topic`] does.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;

use crate::error::{Error, Result};

type Reply = mpsc::Sender<Result<()>>;

/// The bootstrap servers of the clusters running in this process.
static RUNNING: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Whether `bootstrap_servers` is an embedded cluster of this process (whose topics are
/// created on first use, as the admin API cannot create them).
pub fn is_embedded(bootstrap_servers: &str) -> bool {
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|b| b == bootstrap_servers)
}

enum Command {
    CreateTopic(String, i32, Reply),
}

/// A running in-process Kafka cluster.
pub struct EmbeddedKafka {
    bootstrap_servers: String,
    partitions: i32,
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedKafka {
    /// Starts a cluster of `brokers` brokers; topics made by [`create_topic`](Self::create_topic)
    /// without a count get `partitions` partitions.
    pub fn start(brokers: i32, partitions: i32) -> Result<Self> {
        if !(1..=9).contains(&brokers) || partitions < 1 {
            return Err(Error::config(format!(
                "the embedded cluster needs 1-9 brokers and at least 1 partition (got {brokers} brokers, {partitions} partitions)"
            )));
        }
        let (ready_tx, ready_rx) = mpsc::channel();
        let (commands, command_rx) = mpsc::channel::<Command>();
        let thread = std::thread::Builder::new()
            .name("stockstream-embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::kafka(format!(
                            "cannot start the embedded Kafka cluster: {e}"
                        ))));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Runs until every handle is dropped; dropping the cluster stops its brokers.
                for command in command_rx {
                    match command {
                        Command::CreateTopic(name, partitions, reply) => {
                            let result = cluster
                                .create_topic(&name, partitions, brokers.min(3))
                                .map_err(|e| Error::kafka(format!("creating topic {name:?}: {e}")));
                            let _ = reply.send(result);
                        }
                    }
                }
            })
            .map_err(|e| Error::kafka(format!("cannot start the embedded Kafka thread: {e}")))?;
        let bootstrap_servers = ready_rx
            .recv()
            .map_err(|_| Error::kafka("the embedded Kafka thread exited during start-up"))??;
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(bootstrap_servers.clone());
        Ok(EmbeddedKafka {
            bootstrap_servers,
            partitions,
            commands: Some(commands),
            thread: Some(thread),
        })
    }

    /// `host:port,…` for clients: all on 127.0.0.1.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// The partition count used when a topic is created without one.
    pub fn default_partitions(&self) -> i32 {
        self.partitions
    }

    /// Whether the cluster is still serving.
    pub fn is_running(&self) -> bool {
        self.commands.is_some()
    }

    /// Creates `name` with `partitions` partitions (default: the cluster's). Creating an
    /// existing topic again is not an error; its partition count stays as it was.
    pub fn create_topic(&self, name: &str, partitions: Option<i32>) -> Result<()> {
        let partitions = partitions.unwrap_or(self.partitions);
        if name.is_empty() || partitions < 1 {
            return Err(Error::config(format!(
                "a topic needs a name and at least one partition (got {name:?}, {partitions})"
            )));
        }
        let commands = self
            .commands
            .as_ref()
            .ok_or_else(|| Error::kafka("the embedded Kafka cluster has been stopped"))?;
        let (reply, answer) = mpsc::channel();
        commands
            .send(Command::CreateTopic(name.to_string(), partitions, reply))
            .map_err(|_| Error::kafka("the embedded Kafka cluster is not running"))?;
        answer
            .recv()
            .map_err(|_| Error::kafka("the embedded Kafka cluster is not running"))?
    }

    /// Stops the brokers. Clients still connected will see the connection drop.
    pub fn stop(&mut self) {
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|b| *b != self.bootstrap_servers);
        self.commands.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        self.stop();
    }
}
