//! The moving parts of ingest, one actor a file.

pub mod lag;
pub mod publisher;
pub mod reader;

pub use lag::LagMonitor;
pub use publisher::{BatchPublisher, PublisherTask};
pub use reader::{ReaderTask, SourceReader};
