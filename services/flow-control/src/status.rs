//! Live per-partition status shared by the actors (writers) and the HTTP routes (readers).
//! Kept outside the actors so a status request never waits behind a flush or a publish retry.

use crate::log::PartitionMeta;
use crate::window::OpenWindow;
use mdp_service::Stats;
use mdp_types::{Position, WindowId};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// One partition as served by `GET /v1/partitions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionStatus {
    pub partition: u32,
    /// Whether this instance currently consumes the partition's change queue.
    pub owned: bool,
    pub last_position: Option<Position>,
    pub next_seq: u64,
    pub open_window_id: Option<WindowId>,
    pub open_window_changes: u64,
    pub open_window_age_ms: Option<i64>,
    pub last_sealed_window_id: Option<WindowId>,
    pub last_published_window_id: Option<WindowId>,
    /// Sealed windows not yet confirmed by the broker.
    pub unpublished_windows: u64,
    /// Age of the oldest sealed, unconfirmed window (0 when none).
    pub publish_lag_ms: i64,
}

#[derive(Debug, Default)]
struct PartitionState {
    last_position: Option<Position>,
    next_seq: u64,
    open: Option<(WindowId, u64, i64)>,
    last_sealed: Option<WindowId>,
    last_published: Option<WindowId>,
    /// Sealed, unconfirmed windows: (id, sealed_at_ms), oldest first.
    pending: VecDeque<(WindowId, i64)>,
}

/// The heartbeat stat holding a partition's last sealed window id; admin
/// compares it with window-compute's `partition.{p}.last_applied_window`.
pub fn last_sealed_stat(partition: u32) -> String {
    mdp_types::status::partition_stat::name(
        partition,
        mdp_types::status::partition_stat::LAST_SEALED_WINDOW,
    )
}

/// The status of every partition.
#[derive(Clone)]
pub struct StatusBoard {
    parts: Arc<Vec<Mutex<PartitionState>>>,
    /// The instance's heartbeat stats, where the last sealed window of each
    /// partition is reported.
    stats: Stats,
}

impl StatusBoard {
    pub fn new(partitions: u32, stats: Stats) -> Self {
        StatusBoard {
            parts: Arc::new(
                (0..partitions)
                    .map(|_| Mutex::new(PartitionState::default()))
                    .collect(),
            ),
            stats,
        }
    }

    fn report_sealed(&self, partition: u32, last_sealed: Option<WindowId>) {
        if let Some(id) = last_sealed {
            self.stats.set(&last_sealed_stat(partition), id as f64);
        }
    }

    pub fn partitions(&self) -> u32 {
        self.parts.len() as u32
    }

    fn part(&self, partition: u32) -> Option<MutexGuard<'_, PartitionState>> {
        self.parts
            .get(partition as usize)
            .map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// After an append (or at start): position, next seq and the open window.
    pub fn intake(&self, partition: u32, meta: &PartitionMeta, open: Option<&OpenWindow>) {
        if let Some(mut s) = self.part(partition) {
            s.last_position = meta.last_position.clone();
            s.next_seq = meta.next_seq;
            s.open = open.map(|w| (w.id, w.changes(), w.opened_at_ms));
        }
    }

    /// A window is sealed and queued for publishing; returns the number of
    /// windows waiting for the broker.
    pub fn sealed(&self, partition: u32, id: WindowId, sealed_at_ms: i64) -> u64 {
        match self.part(partition) {
            Some(mut s) => {
                s.last_sealed = Some(s.last_sealed.map_or(id, |l| l.max(id)));
                self.report_sealed(partition, s.last_sealed);
                if !s.pending.iter().any(|(p, _)| *p == id) {
                    s.pending.push_back((id, sealed_at_ms));
                }
                if s.open.is_some_and(|(open_id, _, _)| open_id == id) {
                    s.open = None;
                }
                s.pending.len() as u64
            }
            None => 0,
        }
    }

    /// A window was confirmed by the broker.
    pub fn published(&self, partition: u32, id: WindowId) -> u64 {
        match self.part(partition) {
            Some(mut s) => {
                s.last_published = Some(s.last_published.map_or(id, |l| l.max(id)));
                s.pending.retain(|(p, _)| *p > id);
                s.pending.len() as u64
            }
            None => 0,
        }
    }

    /// Restores what a restart knows: the last published window.
    pub fn recovered(
        &self,
        partition: u32,
        last_published: Option<WindowId>,
        last_sealed: Option<WindowId>,
    ) {
        if let Some(mut s) = self.part(partition) {
            s.last_published = last_published;
            s.last_sealed = last_sealed;
            self.report_sealed(partition, last_sealed);
        }
    }

    pub fn snapshot(&self, partition: u32, owned: bool, now_ms: i64) -> Option<PartitionStatus> {
        let s = self.part(partition)?;
        Some(PartitionStatus {
            partition,
            owned,
            last_position: s.last_position.clone(),
            next_seq: s.next_seq,
            open_window_id: s.open.map(|o| o.0),
            open_window_changes: s.open.map_or(0, |o| o.1),
            open_window_age_ms: s.open.map(|o| now_ms.saturating_sub(o.2).max(0)),
            last_sealed_window_id: s.last_sealed,
            last_published_window_id: s.last_published,
            unpublished_windows: s.pending.len() as u64,
            publish_lag_ms: s
                .pending
                .front()
                .map_or(0, |(_, at)| now_ms.saturating_sub(*at).max(0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_lag_follows_the_oldest_unconfirmed_window() {
        let stats = Stats::default();
        let board = StatusBoard::new(2, stats.clone());
        let open = OpenWindow {
            id: 1,
            first_seq: 1,
            last_seq: 4,
            opened_at_ms: 1000,
            traceparent: None,
        };
        board.intake(
            1,
            &PartitionMeta {
                last_position: None,
                next_seq: 5,
            },
            Some(&open),
        );
        let s = board.snapshot(1, true, 1500).expect("partition 1");
        assert_eq!(
            (
                s.open_window_id,
                s.open_window_changes,
                s.open_window_age_ms
            ),
            (Some(1), 4, Some(500))
        );
        assert_eq!(board.sealed(1, 1, 2000), 1);
        assert_eq!(board.sealed(1, 2, 2100), 2);
        let s = board.snapshot(1, true, 2500).expect("partition 1");
        assert_eq!(s.open_window_id, None);
        assert_eq!(
            (
                s.unpublished_windows,
                s.publish_lag_ms,
                s.last_sealed_window_id
            ),
            (2, 500, Some(2))
        );
        assert_eq!(board.published(1, 1), 1);
        let s = board.snapshot(1, true, 2500).expect("partition 1");
        assert_eq!(
            (
                s.unpublished_windows,
                s.publish_lag_ms,
                s.last_published_window_id
            ),
            (1, 400, Some(1))
        );
        assert_eq!(board.published(1, 2), 0);
        assert!(board.snapshot(2, false, 0).is_none());
        assert_eq!(stats.get("partition.1.last_sealed_window"), Some(2.0));
        assert_eq!(stats.get("partition.0.last_sealed_window"), None);
    }

    #[test]
    fn the_last_sealed_window_is_reported_in_the_stats() {
        let stats = Stats::default();
        let board = StatusBoard::new(2, stats.clone());
        board.recovered(0, Some(6), Some(7));
        board.recovered(1, None, None);
        assert_eq!(stats.get(&last_sealed_stat(0)), Some(7.0));
        assert_eq!(stats.get(&last_sealed_stat(1)), None);
        board.sealed(0, 8, 1000);
        // A re-sealed older window does not move it back.
        board.sealed(0, 5, 1000);
        assert_eq!(stats.get(&last_sealed_stat(0)), Some(8.0));
    }
}
