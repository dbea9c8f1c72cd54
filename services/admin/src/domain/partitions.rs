//! Lag per partition from the heartbeats: flow-control reports the last
//! window it sealed per partition (`partition.{p}.last_sealed_window`),
//! window-compute the last window it applied (`partition.{p}.last_applied_window`);
//! the difference is how many windows window-compute is behind. window-compute
//! also reports whether a partition is held at a parked window
//! (`partition.{p}.held_at_window`, `held_windows`, `held_since_ms`).

use super::instances::InstanceRecord;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The service that seals windows.
pub const SEALING_SERVICE: &str = "flow-control";
/// The service that applies them.
pub const APPLYING_SERVICE: &str = "window-compute";
use mdp_types::status::partition_stat::{
    self, HELD_AT_WINDOW, HELD_SINCE_MS, HELD_WINDOWS, LAST_APPLIED_WINDOW as APPLIED,
    LAST_SEALED_WINDOW as SEALED,
};

/// One partition as shown by `/v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionView {
    pub partition: u32,
    /// Highest window id sealed by a live flow-control instance.
    pub last_sealed_window: Option<u64>,
    /// Highest window id applied by a live window-compute instance (unknown
    /// until an instance has computed a window of the partition since it started).
    pub last_applied_window: Option<u64>,
    /// The live window-compute instance consuming the partition.
    pub owner: Option<String>,
    /// `last_sealed_window - last_applied_window` (at least 0), when both are known.
    pub lag_windows: Option<u64>,
    /// Since when the lag is above the alarm threshold, ms since epoch.
    pub lagging_since_ms: Option<i64>,
    /// The parked (dead-lettered) window the partition is held at: later
    /// windows are kept by window-compute, not applied, until it is back.
    pub held_at_window: Option<u64>,
    /// Windows window-compute keeps for the partition, not applied yet
    /// (unknown until an instance reported it).
    pub held_windows: Option<u64>,
    /// Since when the partition is held, ms since epoch.
    pub held_since_ms: Option<i64>,
}

/// When a lagging partition raises an alarm (`admin.lag_alarm_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagRule {
    /// A lag of more windows than this is "lagging".
    pub threshold_windows: u64,
    /// Lagging for at least this long raises the alarm, ms.
    pub alarm_after_ms: i64,
}

impl LagRule {
    pub fn is_lagging(&self, view: &PartitionView) -> bool {
        view.lag_windows
            .is_some_and(|lag| lag > self.threshold_windows)
    }
}

/// A window id reported as a float stat, if it is one.
fn window_id(value: f64) -> Option<u64> {
    // Window ids are far below 2^53, where f64 is exact.
    (value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value < 9.0e15)
        .then_some(value as u64)
}

fn raise(slot: &mut Option<u64>, value: u64) {
    *slot = Some(slot.map_or(value, |v| v.max(value)));
}

/// The partitions `0..partitions` (and any other partition reported) with
/// the figures of the instances heard from within `heartbeat_timeout_ms`.
/// `lagging_since_ms` is left empty (see [`LagWatch`]).
pub fn partition_views(
    instances: &[InstanceRecord],
    now_ms: i64,
    heartbeat_timeout_ms: i64,
    partitions: u32,
) -> Vec<PartitionView> {
    let mut views: BTreeMap<u32, PartitionView> = (0..partitions).map(|p| (p, empty(p))).collect();
    for rec in instances {
        if now_ms.saturating_sub(rec.received_at_ms) > heartbeat_timeout_ms {
            continue;
        }
        let hb = &rec.heartbeat;
        let what = match hb.service.as_str() {
            SEALING_SERVICE => SEALED,
            APPLYING_SERVICE => APPLIED,
            _ => continue,
        };
        for (name, value) in &hb.stats {
            let Some((p, stat)) = partition_stat::parse(name) else {
                continue;
            };
            let relevant = matches!(
                (what, stat),
                (SEALED, SEALED)
                    | (
                        APPLIED,
                        APPLIED | HELD_AT_WINDOW | HELD_WINDOWS | HELD_SINCE_MS
                    )
            );
            let Some(figure) = window_id(*value).filter(|_| relevant) else {
                continue;
            };
            let view = views.entry(p).or_insert_with(|| empty(p));
            match (what, stat) {
                (SEALED, SEALED) => raise(&mut view.last_sealed_window, figure),
                (APPLIED, APPLIED) => raise(&mut view.last_applied_window, figure),
                // Every window-compute replica reads the shared state, so
                // any of them may report a hold; 0 means not held.
                (APPLIED, HELD_AT_WINDOW) if figure > 0 => raise(&mut view.held_at_window, figure),
                (APPLIED, HELD_WINDOWS) => raise(&mut view.held_windows, figure),
                (APPLIED, HELD_SINCE_MS) if figure > 0 => {
                    let since = i64::try_from(figure).unwrap_or(i64::MAX);
                    view.held_since_ms = Some(view.held_since_ms.map_or(since, |s| s.min(since)));
                }
                _ => {}
            }
        }
        if hb.service == APPLYING_SERVICE {
            for p in &hb.partitions {
                views.entry(*p).or_insert_with(|| empty(*p)).owner = Some(hb.instance.clone());
            }
        }
    }
    views
        .into_values()
        .map(|mut v| {
            v.lag_windows = match (v.last_sealed_window, v.last_applied_window) {
                (Some(sealed), Some(applied)) => Some(sealed.saturating_sub(applied)),
                _ => None,
            };
            v
        })
        .collect()
}

fn empty(partition: u32) -> PartitionView {
    PartitionView {
        partition,
        last_sealed_window: None,
        last_applied_window: None,
        owner: None,
        lag_windows: None,
        lagging_since_ms: None,
        held_at_window: None,
        held_windows: None,
        held_since_ms: None,
    }
}

/// Remembers since when each partition has been lagging (lag above the
/// threshold without interruption). Cheap to clone; clones share it.
#[derive(Debug, Clone, Default)]
pub struct LagWatch {
    since: Arc<Mutex<BTreeMap<u32, i64>>>,
}

impl LagWatch {
    /// Records the current `views`: a lagging partition keeps (or starts)
    /// its `since`, any other partition loses it. Returns partition → since.
    pub fn observe(
        &self,
        views: &[PartitionView],
        rule: LagRule,
        now_ms: i64,
    ) -> BTreeMap<u32, i64> {
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        let lagging: BTreeMap<u32, i64> = views
            .iter()
            .filter(|v| rule.is_lagging(v))
            .map(|v| {
                let from = since.get(&v.partition).copied().unwrap_or(now_ms);
                (v.partition, from)
            })
            .collect();
        *since = lagging.clone();
        lagging
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdp_types::{Heartbeat, ServiceHealth};

    const NOW: i64 = 1_000_000;
    const TIMEOUT: i64 = 5000;

    fn rec(
        service: &str,
        instance: &str,
        silent_ms: i64,
        stats: &[(&str, f64)],
        partitions: &[u32],
    ) -> InstanceRecord {
        InstanceRecord {
            heartbeat: Heartbeat {
                service: service.into(),
                instance: instance.into(),
                http_addr: "127.0.0.1:9".into(),
                started_at_ms: 10,
                sent_at_ms: NOW - silent_ms,
                health: ServiceHealth::default(),
                degrade: vec![],
                stats: stats.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                partitions: partitions.to_vec(),
            },
            received_at_ms: NOW - silent_ms,
            not_ready_since_ms: None,
        }
    }

    fn figures(v: &PartitionView) -> (Option<u64>, Option<u64>, Option<&str>, Option<u64>) {
        (
            v.last_sealed_window,
            v.last_applied_window,
            v.owner.as_deref(),
            v.lag_windows,
        )
    }

    #[test]
    fn lag_is_sealed_minus_applied_with_the_owner() {
        let recs = vec![
            rec(
                "flow-control",
                "fc-1",
                100,
                &[
                    ("partition.0.last_sealed_window", 120.0),
                    ("partition.1.last_sealed_window", 7.0),
                    ("windows_sealed_total", 500.0),
                ],
                &[0, 1, 2],
            ),
            rec(
                "window-compute",
                "wc-1",
                100,
                &[
                    ("partition.0.last_applied_window", 75.0),
                    ("partition.1.last_applied_window", 7.0),
                    ("mdp_compute_windows_total", 80.0),
                ],
                &[0, 1],
            ),
            // A standby replica still reports what it applied before the
            // partition moved: the owner's newer figure wins.
            rec(
                "window-compute",
                "wc-2",
                100,
                &[("partition.0.last_applied_window", 60.0)],
                &[],
            ),
        ];
        let views = partition_views(&recs, NOW, TIMEOUT, 3);
        assert_eq!(views.len(), 3);
        assert_eq!(
            figures(&views[0]),
            (Some(120), Some(75), Some("wc-1"), Some(45))
        );
        assert_eq!(
            figures(&views[1]),
            (Some(7), Some(7), Some("wc-1"), Some(0))
        );
        assert_eq!(figures(&views[2]), (None, None, None, None));
        assert!(views.iter().all(|v| v.lagging_since_ms.is_none()));
    }

    #[test]
    fn silent_instances_and_other_services_do_not_count() {
        let recs = vec![
            rec(
                "flow-control",
                "fc-dead",
                TIMEOUT + 1,
                &[("partition.0.last_sealed_window", 99.0)],
                &[0],
            ),
            rec(
                "flow-control",
                "fc-live",
                0,
                &[("partition.0.last_sealed_window", 10.0)],
                &[0],
            ),
            rec(
                "window-compute",
                "wc-dead",
                TIMEOUT + 1,
                &[("partition.0.last_applied_window", 9.0)],
                &[0],
            ),
            // Only flow-control's sealed and window-compute's applied count.
            rec(
                "result-writer",
                "rw",
                0,
                &[
                    ("partition.0.last_applied_window", 10.0),
                    ("partition.0.last_sealed_window", 50.0),
                ],
                &[0],
            ),
            rec(
                "window-compute",
                "wc-odd",
                0,
                &[
                    ("partition.0.last_sealed_window", 50.0),
                    ("partition.x.last_applied_window", 3.0),
                    ("partition.1.last_applied_window", -1.0),
                    ("partition.1.last_applied_window.extra", 1.0),
                    ("partition.2.last_applied_window", 2.5),
                ],
                &[],
            ),
        ];
        let views = partition_views(&recs, NOW, TIMEOUT, 3);
        assert_eq!(figures(&views[0]), (Some(10), None, None, None));
        assert_eq!(figures(&views[1]), (None, None, None, None));
        assert_eq!(figures(&views[2]), (None, None, None, None));
    }

    #[test]
    fn partitions_beyond_the_configured_count_are_shown_and_lag_never_goes_negative() {
        let recs = vec![
            rec(
                "flow-control",
                "fc",
                0,
                &[("partition.9.last_sealed_window", 3.0)],
                &[],
            ),
            rec(
                "window-compute",
                "wc",
                0,
                &[("partition.9.last_applied_window", 5.0)],
                &[9],
            ),
        ];
        let views = partition_views(&recs, NOW, TIMEOUT, 1);
        let ids: Vec<u32> = views.iter().map(|v| v.partition).collect();
        assert_eq!(ids, vec![0, 9]);
        assert_eq!(figures(&views[1]), (Some(3), Some(5), Some("wc"), Some(0)));
    }

    #[test]
    fn a_hold_reported_by_a_live_window_compute_replica_is_shown() {
        let recs = vec![
            rec(
                "window-compute",
                "wc-1",
                0,
                &[
                    ("partition.0.last_applied_window", 41.0),
                    ("partition.0.held_at_window", 42.0),
                    ("partition.0.held_windows", 7.0),
                    ("partition.0.held_since_ms", 123_000.0),
                    ("partition.1.held_at_window", 0.0),
                    ("partition.1.held_windows", 0.0),
                    ("partition.1.held_since_ms", 0.0),
                ],
                &[0, 1],
            ),
            // A standby replica reads the same shared state.
            rec(
                "window-compute",
                "wc-2",
                0,
                &[
                    ("partition.0.held_at_window", 42.0),
                    ("partition.0.held_windows", 6.0),
                    ("partition.0.held_since_ms", 123_000.0),
                ],
                &[],
            ),
            // A silent replica's old hold and other services' figures do not count.
            rec(
                "window-compute",
                "wc-dead",
                TIMEOUT + 1,
                &[("partition.1.held_at_window", 5.0)],
                &[],
            ),
            rec(
                "flow-control",
                "fc",
                0,
                &[
                    ("partition.1.held_at_window", 9.0),
                    ("partition.0.last_sealed_window", 50.0),
                ],
                &[],
            ),
        ];
        let views = partition_views(&recs, NOW, TIMEOUT, 2);
        let held = |v: &PartitionView| (v.held_at_window, v.held_windows, v.held_since_ms);
        assert_eq!(held(&views[0]), (Some(42), Some(7), Some(123_000)));
        assert_eq!(held(&views[1]), (None, Some(0), None));
        assert_eq!(views[0].lag_windows, Some(9), "held windows count as lag");
    }

    #[test]
    fn the_watch_remembers_since_when_a_partition_lags() {
        let rule = LagRule {
            threshold_windows: 10,
            alarm_after_ms: 30_000,
        };
        let view = |p: u32, lag: Option<u64>| PartitionView {
            lag_windows: lag,
            ..empty(p)
        };
        let watch = LagWatch::default();
        let since = watch.observe(&[view(0, Some(11)), view(1, Some(10))], rule, 1000);
        assert_eq!(since, [(0, 1000)].into_iter().collect());
        // Still lagging: the first time stays; partition 1 starts now.
        let since = watch.observe(&[view(0, Some(50)), view(1, Some(12))], rule, 2000);
        assert_eq!(since, [(0, 1000), (1, 2000)].into_iter().collect());
        // Partition 0 caught up, partition 1's lag became unknown: both reset.
        let since = watch.observe(&[view(0, Some(3)), view(1, None)], rule, 3000);
        assert!(since.is_empty());
        let since = watch.observe(&[view(0, Some(20))], rule, 4000);
        assert_eq!(since, [(0, 4000)].into_iter().collect());
    }
}
