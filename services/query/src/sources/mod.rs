//! Where rows come from: Redis (hot, per tenant) and MySQL (complete).

pub mod mysql;
pub mod redis;

pub use self::mysql::{ReportTables, TableError};
pub use self::redis::{HotCache, HotEntry, HotError};
