//! ingest: change data capture from the business MySQL/MariaDB into
//! per-partition change batches on RabbitMQ.
//!
//! A consistent snapshot on first start, then the binlog as a replica; rows
//! are routed by tenant to partitions, batched, published with confirms, and
//! the binlog position is saved (sled) only once everything before it is
//! confirmed. See `startup` for how the parts are wired.

pub mod actors;
pub mod batcher;
pub mod cdc;
pub mod configuration;
pub mod metrics;
pub mod routes;
pub mod startup;
pub mod state;
pub mod store;

pub use startup::Application;

/// The service name in heartbeats, metrics and logs.
pub const SERVICE: &str = "ingest";
