//! Heartbeats and control commands exchanged with admin.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The state of one degrade state machine, as reported to admin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DegradeStatus {
    /// Machine name, e.g. `rabbitmq`, `mysql`, `redis`.
    pub machine: String,
    /// `normal`, `degraded` or `recovering`.
    pub state: String,
    /// Why it is in this state (last error or the operator's override).
    pub reason: Option<String>,
    pub since_ms: i64,
    /// `Some("degraded")`/`Some("normal")` while an operator override holds.
    pub forced: Option<String>,
    pub transitions_total: u64,
}

/// Liveness and readiness of one service instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ServiceHealth {
    pub live: bool,
    pub ready: bool,
    /// Per dependency readiness details (`rabbitmq` → `ok` / error text).
    pub checks: BTreeMap<String, String>,
}

/// Sent by every service instance every second on the heartbeat exchange.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    pub service: String,
    /// Unique per process (host, pid, start time).
    pub instance: String,
    pub http_addr: String,
    pub started_at_ms: i64,
    pub sent_at_ms: i64,
    pub health: ServiceHealth,
    pub degrade: Vec<DegradeStatus>,
    /// A few headline figures (throughput counters, lag), named like metrics.
    pub stats: BTreeMap<String, f64>,
    /// Partitions this instance currently consumes, where relevant.
    pub partitions: Vec<u32>,
}

/// What an operator asks a degrade machine to do.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Override {
    ForceDegraded,
    ForceNormal,
    /// Clear the override: back to automatic transitions.
    Auto,
}

/// A control command published by admin; every instance of `service`
/// applies it to its machine named `machine`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ControlCommand {
    pub service: String,
    pub machine: String,
    pub action: Override,
    pub issued_at_ms: i64,
    pub reason: Option<String>,
}

/// Heartbeat stats with per-partition figures are named
/// `partition.{p}.{figure}`: flow-control reports [`LAST_SEALED_WINDOW`],
/// window-compute [`LAST_APPLIED_WINDOW`] and its hold figures
/// ([`HELD_AT_WINDOW`], [`HELD_WINDOWS`], [`HELD_SINCE_MS`]); admin compares
/// and alarms on them.
pub mod partition_stat {
    /// The last window id flow-control sealed on the partition.
    pub const LAST_SEALED_WINDOW: &str = "last_sealed_window";
    /// The last window id window-compute applied on the partition.
    pub const LAST_APPLIED_WINDOW: &str = "last_applied_window";
    /// The parked (dead-lettered) window the partition is held at, 0 when it
    /// is not held: later windows are kept, not applied, until it is back.
    pub const HELD_AT_WINDOW: &str = "held_at_window";
    /// Windows kept in the partition's held store, waiting to be applied.
    pub const HELD_WINDOWS: &str = "held_windows";
    /// Since when the partition is held, ms since epoch (0 when not held).
    pub const HELD_SINCE_MS: &str = "held_since_ms";

    /// The stat name of `figure` for `partition`.
    pub fn name(partition: u32, figure: &str) -> String {
        format!("partition.{partition}.{figure}")
    }

    /// `partition.{p}.{figure}` → `(p, figure)`.
    pub fn parse(name: &str) -> Option<(u32, &str)> {
        let rest = name.strip_prefix("partition.")?;
        let (p, figure) = rest.split_once('.')?;
        Some((p.parse().ok()?, figure))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn names_round_trip_and_other_stats_do_not_parse() {
            let n = name(3, LAST_SEALED_WINDOW);
            assert_eq!(n, "partition.3.last_sealed_window");
            assert_eq!(parse(&n), Some((3, LAST_SEALED_WINDOW)));
            assert_eq!(parse("events_published"), None);
            assert_eq!(parse("partition.x.last_sealed_window"), None);
            let held = name(12, HELD_AT_WINDOW);
            assert_eq!(held, "partition.12.held_at_window");
            assert_eq!(parse(&held), Some((12, HELD_AT_WINDOW)));
            assert_eq!(parse(&name(0, HELD_WINDOWS)), Some((0, "held_windows")));
        }
    }
}

/// Headers of a message a service parks in a dead-letter queue by
/// publishing a copy there itself (instead of the broker dead-lettering it
/// from a partition queue, which records the origin in `x-death`): where the
/// message is to be replayed to. admin's replay reads them when there is no
/// `x-death`.
pub mod dead_letter {
    /// The partition queue the message belongs to, e.g. `mdp.windows.3`.
    pub const ORIGIN_QUEUE_HEADER: &str = "x-mdp-origin-queue";
    /// The exchange it is to be published to again, e.g. `mdp.windows`.
    pub const ORIGIN_EXCHANGE_HEADER: &str = "x-mdp-origin-exchange";
    /// The routing key it is to be published with, e.g. `3`.
    pub const ORIGIN_ROUTING_KEY_HEADER: &str = "x-mdp-origin-routing-key";
    /// Why the message was parked (a short fixed label, e.g. `poison`).
    pub const REASON_HEADER: &str = "x-mdp-park-reason";
}
