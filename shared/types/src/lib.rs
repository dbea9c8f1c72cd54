//! Contracts between the services of the merchant data platform.
//!
//! Everything that crosses a process boundary (AMQP message bodies, HTTP
//! status payloads) is defined here, so that producer and consumer cannot
//! drift apart. Wire format is JSON (serde); see each type for its shape.

pub mod change;
pub mod partition;
pub mod result;
pub mod status;
pub mod value;
pub mod window;

pub use change::{ChangeBatch, ChangeEvent, EventId, Op, Position, Row};
pub use partition::{partition_of, Partition, TenantId};
pub use result::{ChangedRows, PartialDelta, ResultBatch, ResultNotice, ResultRow};
pub use status::{ControlCommand, DegradeStatus, Heartbeat, Override, ServiceHealth};
pub use value::Value;
pub use window::{Window, WindowId};

/// Milliseconds since the Unix epoch, the one wall-clock unit on the wire.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
