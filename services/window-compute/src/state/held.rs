//! Holding a partition at a parked window: when the engine fails on a window
//! at every attempt, the window is dead-lettered ("parked") and the
//! partition is *held* at it. Later windows are kept in the partition's
//! state, in window-id order, instead of being applied; when the parked
//! window comes back (replayed from the dead-letter queue) it is applied
//! first and the kept windows after it, so no window is applied out of
//! order and none is lost.
//!
//! Schema (in the partition's SQLite file, shared by every replica):
//! `parked(window_id, reason, since_ms, skipped)` — windows sent to the
//! dead-letter queue and not applied yet (`skipped`: dropped by an operator,
//! see [`PartitionState::skip_parked`]); `held(window_id, changes, window)` —
//! delivered windows waiting to be applied, the window as JSON.
//!
//! The partition is held at the lowest parked window above the last applied
//! one. Held windows are applied in id order up to the first parked window
//! that is not back yet (not in `held`); a parked window that is back is
//! applied like any held window.
//!
//! Crash safety rests on the progress the ordinary computation keeps
//! ([`PartitionState::compute`]): held windows are applied by it, in its one
//! transaction with the new last applied window, and it skips ids at or
//! below that window. A held or parked row at or below the last applied
//! window is therefore only a left-over, removed by
//! [`PartitionState::forget_applied`] once the result batch was published;
//! while such a held row exists the batch may not have been published yet,
//! so [`PartitionState::next_held`] hands out the stored batch to publish
//! again before anything else. A window is kept before its delivery is
//! acknowledged ([`PartitionState::hold_windows`]) and a parked row is
//! written before the window leaves the held store or its queue.

use super::{read_last_batch, read_progress, PartitionState, StateError, StoredBatch};
use mdp_types::{Window, WindowId};
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use std::borrow::Borrow;
use std::sync::Arc;

/// The tables of this module, created with the others when a state file is
/// opened.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS parked (
    window_id INTEGER PRIMARY KEY,
    reason    TEXT NOT NULL,
    since_ms  INTEGER NOT NULL,
    skipped   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS held (
    window_id INTEGER PRIMARY KEY,
    changes   INTEGER NOT NULL,
    window    BLOB NOT NULL
);
";

/// The parked window a partition is held at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    pub window_id: WindowId,
    /// The engine's error on the last attempt.
    pub reason: String,
    /// When the window was first parked, ms since epoch.
    pub since_ms: i64,
}

/// A partition's hold as committed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HoldStatus {
    pub last_applied_window: WindowId,
    /// The lowest parked window above the last applied one: later windows
    /// wait for it.
    pub hold: Option<Hold>,
    /// Parked windows not applied yet (the hold's included).
    pub parked_windows: u64,
    /// Windows in the held store above the last applied one (not applied).
    pub held_windows: u64,
    /// Held windows that can be applied now (below the first parked window
    /// that is not back yet).
    pub ready_windows: u64,
    /// Rows at or below the last applied window are left: a computation of
    /// held windows committed, its batch may still have to be published.
    pub leftovers: bool,
}

impl HoldStatus {
    /// Whether there is anything to apply or clean up in the held store.
    pub fn needs_drain(&self) -> bool {
        self.ready_windows > 0 || self.leftovers
    }
}

/// A window read back from the held store, with its stored JSON.
#[derive(Debug, Clone)]
pub struct HeldWindow {
    pub window: Arc<Window>,
    pub json: Vec<u8>,
}

/// What to do next with the held store.
#[derive(Debug)]
pub enum NextHeld {
    /// Nothing to apply now (nothing held, or everything held waits for a
    /// parked window).
    Wait(HoldStatus),
    /// Held windows were applied but maybe not published: publish this
    /// batch (again), then [`PartitionState::forget_applied`].
    Republish(Option<StoredBatch>),
    /// The next held windows to apply, in id order (one computation).
    Windows(Vec<HeldWindow>),
}

/// What [`PartitionState::hold_windows`] did with delivered windows.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldIntake {
    /// Windows at or below the last applied window: not kept.
    pub duplicates: Vec<WindowId>,
    /// The stored batch of the last applied window when it was delivered
    /// again (published again, as in the ordinary path).
    pub republish: Option<StoredBatch>,
    /// Windows now in the held store.
    pub held: Vec<WindowId>,
    /// Windows an operator skipped: dropped.
    pub dropped: Vec<WindowId>,
    pub status: HoldStatus,
}

/// Why an operator's skip was refused.
#[derive(Debug, thiserror::Error)]
pub enum SkipError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("partition {partition} is not held at a parked window")]
    NotHeld { partition: u32 },
    #[error("partition {partition} is held at window {held_at}, not at window {requested}")]
    OtherWindow {
        partition: u32,
        held_at: WindowId,
        requested: WindowId,
    },
}

fn to_sql_error(e: serde_json::Error) -> StateError {
    StateError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn id_param(id: WindowId) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

fn id_of(v: i64) -> WindowId {
    WindowId::try_from(v).unwrap_or_default()
}

/// The hold figures given the last applied window `last`.
fn read_status(conn: &Connection, last: WindowId) -> Result<HoldStatus, rusqlite::Error> {
    let l = id_param(last);
    let hold = conn
        .prepare_cached(
            "SELECT window_id, reason, since_ms FROM parked
             WHERE skipped = 0 AND window_id > ?1 ORDER BY window_id LIMIT 1",
        )?
        .query_row(params![l], |r| {
            Ok(Hold {
                window_id: id_of(r.get(0)?),
                reason: r.get(1)?,
                since_ms: r.get(2)?,
            })
        })
        .optional()?;
    let parked: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM parked WHERE skipped = 0 AND window_id > ?1")?
        .query_row(params![l], |r| r.get(0))?;
    let held: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM held WHERE window_id > ?1")?
        .query_row(params![l], |r| r.get(0))?;
    let blocked_at = first_missing_parked(conn, last)?;
    let ready: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM held WHERE window_id > ?1 AND (?2 IS NULL OR window_id < ?2)",
        )?
        .query_row(params![l, blocked_at.map(id_param)], |r| r.get(0))?;
    let leftovers: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM held WHERE window_id <= ?1)
                 OR EXISTS (SELECT 1 FROM parked WHERE window_id <= ?1)",
        )?
        .query_row(params![l], |r| r.get(0))?;
    Ok(HoldStatus {
        last_applied_window: last,
        hold,
        parked_windows: parked.max(0) as u64,
        held_windows: held.max(0) as u64,
        ready_windows: ready.max(0) as u64,
        leftovers,
    })
}

/// The lowest parked window above `last` that is not back in the held store:
/// held windows from it on wait.
fn first_missing_parked(
    conn: &Connection,
    last: WindowId,
) -> Result<Option<WindowId>, rusqlite::Error> {
    let id: Option<i64> = conn
        .prepare_cached(
            "SELECT MIN(p.window_id) FROM parked p
             WHERE p.skipped = 0 AND p.window_id > ?1
               AND NOT EXISTS (SELECT 1 FROM held h WHERE h.window_id = p.window_id)",
        )?
        .query_row(params![id_param(last)], |r| r.get(0))?;
    Ok(id.map(id_of))
}

fn is_skipped(conn: &Connection, id: WindowId) -> Result<bool, rusqlite::Error> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM parked WHERE window_id = ?1 AND skipped = 1)",
    )?
    .query_row(params![id_param(id)], |r| r.get(0))
}

impl PartitionState {
    /// Whether the held store or the parked list has any row: deliveries
    /// then go to [`PartitionState::hold_windows`] instead of being computed.
    pub fn holding(&mut self) -> Result<bool, StateError> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM parked) OR EXISTS (SELECT 1 FROM held)",
            [],
            |r| r.get(0),
        )?)
    }

    /// The committed hold of the partition.
    pub fn hold_status(&mut self) -> Result<HoldStatus, StateError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        let progress = read_progress(&tx)?;
        let status = read_status(&tx, progress.last_applied_window)?;
        tx.commit()?;
        Ok(status)
    }

    /// Keeps delivered windows in the held store (one transaction; the
    /// deliveries may be acknowledged once it returns). Windows at or below
    /// the last applied one are duplicates as in [`PartitionState::compute`];
    /// windows an operator skipped are dropped.
    pub fn hold_windows<W: Borrow<Window>>(
        &mut self,
        windows: &[W],
    ) -> Result<HeldIntake, StateError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last = read_progress(&tx)?.last_applied_window;
        let mut duplicates = Vec::new();
        let mut held = Vec::new();
        let mut dropped = Vec::new();
        for w in windows {
            let w: &Window = w.borrow();
            if w.id <= last {
                duplicates.push(w.id);
            } else if is_skipped(&tx, w.id)? {
                dropped.push(w.id);
            } else {
                let json = serde_json::to_vec(w).map_err(to_sql_error)?;
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO held (window_id, changes, window) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![
                    id_param(w.id),
                    i64::try_from(w.changes.len()).unwrap_or(i64::MAX),
                    json
                ])?;
                if !held.contains(&w.id) {
                    held.push(w.id);
                }
            }
        }
        let republish = if last > 0 && duplicates.contains(&last) {
            read_last_batch(&tx)?
        } else {
            None
        };
        let status = read_status(&tx, last)?;
        tx.commit()?;
        Ok(HeldIntake {
            duplicates,
            republish,
            held,
            dropped,
            status,
        })
    }

    /// The next held windows to apply: at most `max_windows`, and no more
    /// once they hold `max_changes` changes (at least one window), all below
    /// the first parked window that is not back. Left-overs of an earlier
    /// computation come first ([`NextHeld::Republish`]).
    pub fn next_held(
        &mut self,
        max_windows: usize,
        max_changes: usize,
    ) -> Result<NextHeld, StateError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last = read_progress(&tx)?.last_applied_window;
        let l = id_param(last);
        let unpublished: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM held WHERE window_id <= ?1)")?
            .query_row(params![l], |r| r.get(0))?;
        if unpublished {
            let batch = read_last_batch(&tx)?;
            tx.commit()?;
            return Ok(NextHeld::Republish(batch));
        }
        tx.prepare_cached("DELETE FROM parked WHERE window_id <= ?1")?
            .execute(params![l])?;
        tx.prepare_cached(
            "DELETE FROM held WHERE window_id IN (SELECT window_id FROM parked WHERE skipped = 1)",
        )?
        .execute([])?;
        let blocked_at = first_missing_parked(&tx, last)?;
        let limit = i64::try_from(max_windows.max(1)).unwrap_or(i64::MAX);
        let mut windows = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT window_id, changes, window FROM held
                 WHERE window_id > ?1 AND (?2 IS NULL OR window_id < ?2)
                 ORDER BY window_id LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![l, blocked_at.map(id_param), limit])?;
            let mut changes = 0usize;
            while let Some(row) = rows.next()? {
                let json: Vec<u8> = row.get(2)?;
                let window: Window = serde_json::from_slice(&json).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(2, Type::Blob, Box::new(e))
                })?;
                changes += usize::try_from(row.get::<_, i64>(1)?).unwrap_or(0);
                windows.push(HeldWindow {
                    window: Arc::new(window),
                    json,
                });
                if changes >= max_changes {
                    break;
                }
            }
        }
        if windows.is_empty() {
            let status = read_status(&tx, last)?;
            tx.commit()?;
            return Ok(NextHeld::Wait(status));
        }
        tx.commit()?;
        Ok(NextHeld::Windows(windows))
    }

    /// Removes held and parked rows at or below the last applied window:
    /// call it once the batch of the computation that applied them is
    /// published.
    pub fn forget_applied(&mut self) -> Result<HoldStatus, StateError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last = read_progress(&tx)?.last_applied_window;
        tx.prepare_cached("DELETE FROM held WHERE window_id <= ?1")?
            .execute(params![id_param(last)])?;
        tx.prepare_cached("DELETE FROM parked WHERE window_id <= ?1")?
            .execute(params![id_param(last)])?;
        let status = read_status(&tx, last)?;
        tx.commit()?;
        Ok(status)
    }

    /// Records that `window_id` was parked (with the engine's error as the
    /// reason) and takes it out of the held store: the partition is held at
    /// it until it is back. Parking again keeps the first time. A window
    /// already applied (by another replica meanwhile) is not parked.
    pub fn park(
        &mut self,
        window_id: WindowId,
        reason: &str,
        at_ms: i64,
    ) -> Result<HoldStatus, StateError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last = read_progress(&tx)?.last_applied_window;
        if window_id > last {
            tx.prepare_cached(
                "INSERT INTO parked (window_id, reason, since_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (window_id) DO UPDATE SET reason = excluded.reason",
            )?
            .execute(params![id_param(window_id), reason, at_ms])?;
            tx.prepare_cached("DELETE FROM held WHERE window_id = ?1")?
                .execute(params![id_param(window_id)])?;
        }
        let status = read_status(&tx, last)?;
        tx.commit()?;
        Ok(status)
    }

    /// An operator gives up on the parked window the partition is held at
    /// (`window_id` must be it): its changes are never applied, a later
    /// delivery of it is dropped, and the windows held behind it are
    /// applied.
    pub fn skip_parked(&mut self, window_id: WindowId) -> Result<HoldStatus, SkipError> {
        let partition = self.partition;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StateError::from)?;
        let last = read_progress(&tx)?.last_applied_window;
        let before = read_status(&tx, last).map_err(StateError::from)?;
        match before.hold {
            None => return Err(SkipError::NotHeld { partition }),
            Some(h) if h.window_id != window_id => {
                return Err(SkipError::OtherWindow {
                    partition,
                    held_at: h.window_id,
                    requested: window_id,
                })
            }
            Some(_) => {}
        }
        tx.prepare_cached("UPDATE parked SET skipped = 1 WHERE window_id = ?1")
            .and_then(|mut s| s.execute(params![id_param(window_id)]))
            .map_err(StateError::from)?;
        tx.prepare_cached("DELETE FROM held WHERE window_id = ?1")
            .and_then(|mut s| s.execute(params![id_param(window_id)]))
            .map_err(StateError::from)?;
        let status = read_status(&tx, last).map_err(StateError::from)?;
        tx.commit().map_err(StateError::from)?;
        Ok(status)
    }
}

#[cfg(test)]
mod tests;
