//! Thin Python wrappers: argument conversion, GIL release and error mapping. No logic of
//! their own lives here.

pub mod embedded;
pub mod errors;
pub mod kafka_config;
pub mod producer;
pub mod source;
pub mod topic;
