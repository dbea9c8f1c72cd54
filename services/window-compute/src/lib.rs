//! window-compute: consumes each partition's sealed windows, applies them to
//! the partition's report state with the incremental engine and publishes
//! every changed report row as an absolute value.
//!
//! Per window: state transaction (skip windows at or below the last applied
//! one) → commit state + progress + result batch → publish the batch with a
//! broker confirm → acknowledge the window. A crash anywhere in between is
//! repaired by the redelivery: the window is a duplicate by then and the
//! stored batch is published again (result-writer applies a version once).

pub mod actors;
pub mod board;
pub mod configuration;
pub mod events;
pub mod parking;
pub mod routes;
pub mod startup;
pub mod state;

pub use startup::{Application, StartupError};

/// Service name in heartbeats, metrics and logs.
pub const SERVICE: &str = "window-compute";
