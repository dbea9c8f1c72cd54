//! Flow control: rate-limits and de-duplicates change batches, keeps them in a durable KV log (sled)
//! and cuts each partition's changes into windows, published in order to window-compute.
//!
//! Start it with [`Application::build`] then [`Application::run`] inside an actix system.

pub mod actors;
pub mod broker;
pub mod configuration;
pub mod dedup;
pub mod log;
pub mod metrics;
pub mod rate_limit;
pub mod routes;
pub mod startup;
pub mod status;
pub mod window;

pub use configuration::Settings;
pub use startup::{Application, StartupError, SERVICE};
