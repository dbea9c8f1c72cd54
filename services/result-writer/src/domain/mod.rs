//! Validated forms of what the writer receives: result batches checked
//! against the report definitions, ready for the stores.

mod batch;

pub use batch::{
    BatchError, PreparedBatch, PreparedDelta, PreparedPartial, PreparedRow, RowChange,
};
