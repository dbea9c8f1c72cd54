//! Admin's model of the fleet: the instance table fed by heartbeats, the
//! status, partition lag and alarms derived from it, validated operator
//! commands and the rules of replaying dead-lettered messages.

pub mod command;
pub mod dead_letters;
pub mod instances;
pub mod partitions;
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
