//! The moving parts: the RabbitMQ session supervisor, one consumer per
//! partition and one state keeper (SQLite thread) per partition.

pub mod partition_consumer;
pub mod state_keeper;
pub mod supervisor;
