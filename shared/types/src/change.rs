//! Change events captured from the source database (CDC) and their batches.

use crate::partition::TenantId;
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// A full row image: column name → value.
pub type Row = BTreeMap<String, Value>;

/// What happened to a row.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A new row: `after` is set.
    Insert,
    /// A changed row: `before` and `after` are set (full images).
    Update,
    /// A removed row: `before` is set.
    Delete,
    /// A row read by the initial snapshot: `after` is set. Treated as an insert.
    Snapshot,
    /// Start of a (re-)snapshot of `table` for this partition: every row of
    /// `table` known downstream is forgotten before the snapshot rows arrive.
    /// Carries no images. Lets a snapshot interrupted by a crash be redone.
    Reset,
}

/// Where an event sits in the source's change history. Ordered: events of
/// one partition arrive in increasing position, which is what makes replays
/// after a crash detectable (see `flow-control`'s de-duplication).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct Position {
    /// Binlog file name, e.g. `binlog.000003`.
    pub file: String,
    /// End offset of the binlog event that carried the row (for snapshot rows:
    /// the binlog position the snapshot was consistent with).
    pub offset: u64,
    /// Index of the row inside the event (or inside the snapshot).
    pub row: u32,
    /// Snapshot rows sort before any binlog event at the same offset.
    #[serde(default, skip_serializing_if = "is_false")]
    pub snapshot: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Position {
    /// The numeric suffix of the binlog file name (`binlog.000003` → 3).
    pub fn file_seq(&self) -> u64 {
        self.file
            .rsplit('.')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn order_key(&self) -> (u64, u64, u8, u32) {
        (
            self.file_seq(),
            self.offset,
            u8::from(!self.snapshot),
            self.row,
        )
    }
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order_key().cmp(&other.order_key())
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.snapshot {
            write!(f, "snapshot@{}:{}#{}", self.file, self.offset, self.row)
        } else {
            write!(f, "{}:{}#{}", self.file, self.offset, self.row)
        }
    }
}

/// Unique id of an event, derived from its position (so a re-read of the
/// binlog after a crash yields the same ids).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(transparent)]
pub struct EventId(pub String);

impl EventId {
    pub fn from_position(source: &str, pos: &Position) -> Self {
        EventId(format!("{source}/{pos}"))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One row change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChangeEvent {
    pub id: EventId,
    /// Logical name of the source database (its schema name).
    pub source: String,
    pub table: String,
    pub op: Op,
    /// Value of the table's tenant column (merchant id).
    pub tenant: TenantId,
    /// Partition the tenant hashes to.
    pub partition: u32,
    /// Primary-key values in key order (empty for `Reset`).
    #[serde(default)]
    pub pk: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Row>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Row>,
    /// Commit time in the source, ms since epoch (second precision in binlog).
    pub commit_ts_ms: i64,
    pub position: Position,
    /// When ingest read the event, ms since epoch (freshness measurement).
    pub captured_at_ms: i64,
}

/// Changes of one partition, in position order, as published by ingest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChangeBatch {
    pub partition: u32,
    pub events: Vec<ChangeEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(file: &str, offset: u64, row: u32, snapshot: bool) -> Position {
        Position {
            file: file.into(),
            offset,
            row,
            snapshot,
        }
    }

    #[test]
    fn positions_order_by_file_number_then_offset_then_row() {
        assert!(pos("binlog.000002", 4, 0, false) > pos("binlog.000001", 900, 3, false));
        assert!(pos("binlog.000001", 900, 1, false) > pos("binlog.000001", 900, 0, false));
        assert!(pos("binlog.000001", 900, 9, true) < pos("binlog.000001", 900, 0, false));
        assert!(pos("binlog.000010", 4, 0, false) > pos("binlog.000009", 4, 0, false));
    }
}
