//! End-to-end tests: all six services as processes against the real
//! RabbitMQ, MariaDB (binlog source and results) and Redis.
//!
//! Needs `cargo build --workspace --bins` first (the `test` recipe does it)
//! and the source MariaDB from `scripts/source-db.sh start`.

mod chaos;
mod pipeline;
mod telemetry;

use mdp_e2e::platform as helpers;

/// The end-to-end tests each start a whole platform; running them one at a
/// time keeps a 2-core machine responsive.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
