//! Sealed windows: a partition's changes over a short interval.

use crate::change::ChangeEvent;
use serde::{Deserialize, Serialize};

/// Window id, monotonic per partition (starts at 1).
pub type WindowId = u64;

/// A sealed window as published by flow-control. The changes are in the
/// partition's commit order. `first_seq..=last_seq` is the range of the
/// partition's KV log the window covers (lineage: window → log → positions).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Window {
    pub partition: u32,
    pub id: WindowId,
    pub first_seq: u64,
    pub last_seq: u64,
    pub opened_at_ms: i64,
    pub sealed_at_ms: i64,
    pub changes: Vec<ChangeEvent>,
}
