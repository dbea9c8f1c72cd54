//! Change data capture from MySQL/MariaDB: consistent snapshot, binlog
//! streaming, value conversion and routing of rows to partitions.

pub mod binlog;
pub mod convert;
pub mod events;
pub mod schema;
pub mod snapshot;
pub mod source;

use crate::store::BinlogPosition;
use events::RejectReason;
use mdp_types::ChangeEvent;

/// What the source reader hands to the publisher, in binlog order.
#[derive(Debug, Clone, PartialEq)]
pub enum CdcItem {
    /// A routed change.
    Event(ChangeEvent),
    /// A change that cannot be routed; goes to the changes dead-letter queue.
    Rejected {
        event: ChangeEvent,
        reason: RejectReason,
    },
    /// Every item before this one belongs to complete transactions: reading
    /// may resume here once they are all confirmed.
    Boundary(BinlogPosition),
}
