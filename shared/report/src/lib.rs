//! Report definitions written in MySQL SQL and the incremental engine that keeps
//! them exact under inserts, updates and deletes.
//!
//! A report is one `SELECT … FROM fact [JOIN dim ON a.x = b.y …] [WHERE …]
//! GROUP BY … [HAVING …]` file in the reports directory
//! ([`ReportSet::load_dir`]). [`Engine::apply`] folds a window of change
//! events into per-group state kept in a caller-provided [`StateStore`] and
//! returns the new absolute row of every group that changed. Before images
//! retract (weight −1), after images add (weight +1); for reports with joins
//! the engine also keeps the current rows of the tables they read, so a
//! change of a joined row retracts and re-adds the joined rows it takes part
//! in. The served rows equal what MySQL returns for the same SQL over the
//! current rows.

mod agg;
mod codec;
mod compile;
mod datum;
mod engine;
mod error;
mod eval;
mod functions;
mod multiset;
mod report;
mod rollup;
mod set;
mod spill;
mod store;
mod tenant;

pub use engine::{merge_partial, partial_row, Applied, ApplyStats, Engine};
pub use error::{DefinitionError, EngineError, ReportError};
pub use multiset::ChunkSizes;
pub use report::{ColumnDef, ColumnRole, Report};
pub use set::{RejectedReport, ReportSet};
pub use store::{IndexEntry, MemoryStateStore, RowIndex, StateStore};
pub use tenant::TenantColumns;
