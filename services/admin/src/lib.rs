//! Admin: the operators' view of the platform. It consumes every instance's
//! heartbeat into a fleet status with alarms and publishes degrade overrides
//! to the services on the control exchange.

pub mod actors;
pub mod domain;
pub mod routes;
pub mod startup;

pub use startup::{AdminState, Application, StartupError, SERVICE};
