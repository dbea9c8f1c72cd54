//! result-writer: applies the result batches of window-compute to the MySQL
//! report tables and the Redis hot cache.
//!
//! Each partition's batches are applied in order, each at most once: one
//! MySQL transaction checks and bumps the partition's applied window, then
//! Redis is updated and the message acknowledged. When MySQL is down nothing
//! is acknowledged (RabbitMQ keeps the batches) and Redis is written ahead;
//! when Redis is down MySQL alone is written and the cache is rebuilt later.
//! [`layout`] describes the storage that the query service reads.

pub mod actors;
pub mod cache;
pub mod configuration;
pub mod domain;
pub mod events;
pub mod layout;
pub mod routes;
pub mod startup;
pub mod store;
pub mod writer;

pub use configuration::SERVICE;
pub use startup::{Application, StartupError};
