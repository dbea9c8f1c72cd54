//! Admin's model of the fleet: the instance table fed by heartbeats, the
//! status and alarms derived from it, and validated operator commands.

pub mod command;
pub mod instances;
pub mod status;
pub mod switches;

/// The services of the platform; one without a live instance is `down`.
pub const EXPECTED_SERVICES: [&str; 6] = [
    "ingest",
    "flow-control",
    "window-compute",
    "result-writer",
    "query",
    "admin",
];
