//! Errors at the crate's boundaries: loading definitions and applying changes.

use std::fmt;
use std::path::PathBuf;

/// Loading the reports directory failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("failed to read reports directory {}", dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A report definition outside the supported class, or not valid SQL.
/// Displays as `file:line:column: message` (line and column are 1-based;
/// `0:0` when the position is unknown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DefinitionError {
    /// The file (or label) the SQL came from.
    pub file: String,
    pub line: u64,
    pub column: u64,
    /// What is wrong, naming the construct.
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Applying changes failed. The store may then hold part of the call's
/// writes: apply inside one store transaction and roll it back on error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("state store failed during {operation}")]
    Store {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("stored row {pk:?} of table {table} is unreadable: {reason}")]
    CorruptRow {
        table: String,
        pk: String,
        reason: String,
    },
    #[error("state of report {report} group {key:?} is unreadable: {reason}")]
    CorruptState {
        report: String,
        key: String,
        reason: String,
    },
}
