//! The runtime every service shares: its [`ServiceContext`] (identity,
//! settings, degrade machines, readiness, stats, partitions, cancellation),
//! the common HTTP routes (`/healthz`, `/readyz`, `/metrics`, `/v1/status`),
//! the heartbeat actor that reports to admin and applies its control
//! commands, and the shutdown signal.

mod context;
mod heartbeat;
mod params;
mod routes;
mod shutdown;

pub use context::{instance_id, PartitionsOwned, Readiness, ServiceContext, Stats};
pub use heartbeat::{
    declare_fanout_exchanges, spawn_heartbeat, HeartbeatActor, HEARTBEAT_INTERVAL,
};
pub use params::{single_param, ParamError};
pub use routes::{common_routes, health_routes, status};
pub use shutdown::{serve_until_cancelled, shutdown_signal};
