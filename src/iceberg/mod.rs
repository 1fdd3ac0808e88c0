//! Iceberg tables in the lake, beside the Hive-style ones: a catalog pointer per table
//! (`pointer`), and the table's metadata, manifests and snapshots (`table`), whose summaries
//! carry the Kafka offsets landed, so the table is where a sink resumes.

pub mod pointer;
pub mod registry;
pub mod schema;
pub mod table;
