//! What each partition of this instance did last, for `GET /v1/partitions`
//! and the heartbeat. Updated after every committed computation, and with
//! the partition's hold whenever it is read from the state.

use mdp_types::WindowId;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Latest figures of one partition as seen by this instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PartitionInfo {
    pub partition: u32,
    /// Highest window id in the committed state.
    pub last_applied_window: WindowId,
    /// Groups held in the state across all reports.
    pub groups: i64,
    /// Duration of the last computation, ms.
    pub last_compute_ms: f64,
    /// When the last computation committed, ms since epoch.
    pub last_computed_at_ms: Option<i64>,
    /// Windows this instance applied since it started.
    pub windows_applied: u64,
    /// Windows dead-lettered as poison since it started.
    pub poison_windows: u64,
    /// The parked window the partition is held at: later windows are kept
    /// in its held store, not applied, until it is back.
    pub held_at_window: Option<WindowId>,
    /// Why that window was parked (the engine's error).
    pub hold_reason: Option<String>,
    /// Since when the partition is held, ms since epoch.
    pub held_since_ms: Option<i64>,
    /// Windows in the held store, not applied yet.
    pub held_windows: u64,
}

/// Shared, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct PartitionBoard {
    inner: Arc<Mutex<BTreeMap<u32, PartitionInfo>>>,
}

impl PartitionBoard {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u32, PartitionInfo>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `f` to the partition's entry (created when missing).
    pub fn update(&self, partition: u32, f: impl FnOnce(&mut PartitionInfo)) {
        let mut map = self.lock();
        let entry = map.entry(partition).or_insert_with(|| PartitionInfo {
            partition,
            ..PartitionInfo::default()
        });
        f(entry);
    }

    pub fn get(&self, partition: u32) -> Option<PartitionInfo> {
        self.lock().get(&partition).cloned()
    }
}
