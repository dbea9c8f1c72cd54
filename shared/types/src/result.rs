//! Result rows produced by window-compute and applied by result-writer.

use crate::value::Value;
use crate::window::WindowId;
use serde::{Deserialize, Serialize};

/// One report row after a window, as an absolute value (never a delta).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResultRow {
    /// Report name (the SQL file name without `.sql`).
    pub report: String,
    /// Values of the GROUP BY expressions, in GROUP BY order: the row's identity.
    pub key: Vec<Value>,
    /// The select list values in select order; empty when `deleted`.
    pub values: Vec<Value>,
    /// The group has no rows any more: remove the report row.
    pub deleted: bool,
    /// Tenant of the row for merchant-keyed reports (for filtering and auth).
    pub tenant: Option<String>,
    /// The row's date key (`YYYY-MM-DD`), when the report has one.
    pub day: Option<String>,
}

impl ResultRow {
    /// Canonical text of the key: stable identity across services.
    pub fn key_text(&self) -> String {
        key_text(&self.key)
    }
}

/// Canonical text of a group key (unit separator between parts).
pub fn key_text(key: &[Value]) -> String {
    key.iter()
        .map(Value::key_text)
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// The outcome of one window (or several merged windows) of one partition.
/// Version = (partition, window_id): result-writer applies each at most once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResultBatch {
    pub partition: u32,
    /// Highest window id folded into this batch.
    pub window_id: WindowId,
    /// Lowest window id folded into this batch (equal to `window_id` unless
    /// several pending windows were merged).
    pub first_window_id: WindowId,
    pub computed_at_ms: i64,
    /// Latest source commit time covered, ms (freshness).
    pub max_commit_ts_ms: i64,
    /// Earliest capture time of the changes in the window, ms (latency).
    pub min_captured_at_ms: i64,
    pub rows: Vec<ResultRow>,
    /// Accumulator deltas of groups of reports not keyed by merchant: such a
    /// group gathers rows of every partition, so each partition sends what
    /// its window changed and result-writer merges the deltas into the
    /// group's global state.
    #[serde(default)]
    pub partials: Vec<PartialDelta>,
}

/// What one partition's window changed in one group of a report not keyed
/// by merchant: the difference of the group's accumulators (row count,
/// counts and sums, value → count multisets), in the report engine's binary
/// state format. Deltas of one group add up in any order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartialDelta {
    /// Report name.
    pub report: String,
    /// Values of the GROUP BY expressions, in GROUP BY order.
    pub key: Vec<Value>,
    /// The encoded accumulator difference.
    pub delta: Vec<u8>,
}

impl PartialDelta {
    /// Canonical text of the key (see [`key_text`]).
    pub fn key_text(&self) -> String {
        key_text(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_without_partials_still_decode() {
        let json = r#"{"partition":3,"window_id":7,"first_window_id":7,"computed_at_ms":1,
            "max_commit_ts_ms":2,"min_captured_at_ms":3,"rows":[]}"#;
        let b: ResultBatch = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((b.partition, b.window_id), (3, 7));
        assert!(b.partials.is_empty());
        let p = PartialDelta {
            report: "city_daily".into(),
            key: vec![Value::S("Berlin".into()), Value::I(5)],
            delta: vec![1, 2, 3],
        };
        assert_eq!(p.key_text(), key_text(&p.key));
        let b = ResultBatch {
            partials: vec![p],
            ..b
        };
        let back: ResultBatch =
            serde_json::from_str(&serde_json::to_string(&b).unwrap_or_default())
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, b);
    }
}

/// What a batch result-writer has just written changed, published on the
/// fanout exchange `{prefix}.notices` after the write: a reader that cached
/// rows of these (report, merchant) pairs reads them again. A notice may be
/// lost (it is not persisted); readers bound their caches in time as well.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResultNotice {
    pub partition: u32,
    /// Highest window id of the batch.
    pub window_id: WindowId,
    pub changed: Vec<ChangedRows>,
}

/// The rows of one report and merchant that a batch changed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChangedRows {
    pub report: String,
    /// The merchant; `None` for a report not keyed by merchant.
    pub tenant: Option<String>,
}
