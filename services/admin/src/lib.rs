//! Admin: the operators' view of the platform. It consumes every instance's
//! heartbeat into a fleet status with alarms and per-partition lag,
//! publishes degrade overrides to the services on the control exchange, and
//! inspects and replays dead-lettered messages.

pub mod actors;
pub mod dead_letters;
pub mod domain;
pub mod routes;
pub mod startup;

pub use startup::{AdminState, Application, StartupError, SERVICE};
