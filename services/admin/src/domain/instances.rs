//! The table of service instances, fed by their heartbeats.

use mdp_types::Heartbeat;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// What admin knows about one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    pub heartbeat: Heartbeat,
    /// When admin received the last heartbeat, by admin's clock (so clock
    /// skew between hosts cannot make an instance look alive or dead).
    pub received_at_ms: i64,
    /// Since when the instance has reported not ready, by admin's clock.
    pub not_ready_since_ms: Option<i64>,
}

/// Instances by (service, instance). Cheap to clone; clones share the table.
#[derive(Debug, Clone, Default)]
pub struct InstanceTable {
    rows: Arc<RwLock<BTreeMap<(String, String), InstanceRecord>>>,
}

impl InstanceTable {
    /// Records a heartbeat received at `now_ms`. An older heartbeat than the
    /// one already held (redelivered or reordered) is ignored.
    pub fn record(&self, heartbeat: Heartbeat, now_ms: i64) {
        let mut rows = self.rows.write().unwrap_or_else(|p| p.into_inner());
        let key = (heartbeat.service.clone(), heartbeat.instance.clone());
        let previous = rows.get(&key);
        if previous.is_some_and(|r| r.heartbeat.sent_at_ms > heartbeat.sent_at_ms) {
            return;
        }
        let not_ready_since_ms = if heartbeat.health.ready {
            None
        } else {
            Some(
                previous
                    .and_then(|r| r.not_ready_since_ms)
                    .unwrap_or(now_ms),
            )
        };
        rows.insert(
            key,
            InstanceRecord {
                heartbeat,
                received_at_ms: now_ms,
                not_ready_since_ms,
            },
        );
    }

    /// Forgets instances silent for longer than `forget_after_ms` (restarted
    /// instances come back under a new id).
    pub fn prune(&self, now_ms: i64, forget_after_ms: i64) -> usize {
        let mut rows = self.rows.write().unwrap_or_else(|p| p.into_inner());
        let before = rows.len();
        rows.retain(|_, r| now_ms.saturating_sub(r.received_at_ms) <= forget_after_ms);
        before - rows.len()
    }

    /// Every instance, ordered by service then instance.
    pub fn snapshot(&self) -> Vec<InstanceRecord> {
        self.rows
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.rows.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdp_types::ServiceHealth;

    pub(crate) fn heartbeat(
        service: &str,
        instance: &str,
        sent_at_ms: i64,
        ready: bool,
    ) -> Heartbeat {
        Heartbeat {
            service: service.into(),
            instance: instance.into(),
            http_addr: "127.0.0.1:1".into(),
            started_at_ms: 1,
            sent_at_ms,
            health: ServiceHealth {
                live: true,
                ready,
                checks: Default::default(),
            },
            degrade: vec![],
            stats: Default::default(),
            partitions: vec![],
        }
    }

    #[test]
    fn keeps_the_newest_heartbeat_per_instance() {
        let t = InstanceTable::default();
        t.record(heartbeat("query", "q1", 100, true), 1000);
        t.record(heartbeat("query", "q1", 200, true), 1100);
        t.record(heartbeat("query", "q1", 150, true), 1200);
        t.record(heartbeat("ingest", "i1", 100, true), 1000);
        let rows = t.snapshot();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].heartbeat.service, "ingest");
        assert_eq!(rows[1].heartbeat.sent_at_ms, 200);
        assert_eq!(rows[1].received_at_ms, 1100);
    }

    #[test]
    fn remembers_since_when_an_instance_is_not_ready() {
        let t = InstanceTable::default();
        t.record(heartbeat("query", "q1", 1, false), 1000);
        t.record(heartbeat("query", "q1", 2, false), 2000);
        assert_eq!(t.snapshot()[0].not_ready_since_ms, Some(1000));
        t.record(heartbeat("query", "q1", 3, true), 3000);
        assert_eq!(t.snapshot()[0].not_ready_since_ms, None);
    }

    #[test]
    fn prunes_long_silent_instances() {
        let t = InstanceTable::default();
        t.record(heartbeat("query", "old", 1, true), 1000);
        t.record(heartbeat("query", "new", 1, true), 50_000);
        assert_eq!(t.prune(61_001, 60_000), 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.snapshot()[0].heartbeat.instance, "new");
    }
}
