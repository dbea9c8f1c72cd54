//! The query service's view of the platform settings.

use mdp_config::Settings;
use std::path::PathBuf;
use std::time::Duration;

/// Service name in heartbeats, metrics and degrade machines.
pub const SERVICE: &str = "query";
/// Degrade machine for Redis (the hot path).
pub const REDIS_MACHINE: &str = "redis";
/// Degrade machine for the results MySQL.
pub const MYSQL_MACHINE: &str = "mysql";

/// What the query service takes from [`Settings`].
#[derive(Debug, Clone)]
pub struct QueryConfig {
    pub listen: String,
    pub page_size: usize,
    pub cache_ttl: Duration,
    pub partitions: u32,
    pub reports_dir: PathBuf,
    pub max_connections: u32,
}

impl QueryConfig {
    pub fn from_settings(s: &Settings) -> Self {
        QueryConfig {
            listen: s.query.listen.clone(),
            page_size: s.query.page_size.max(1),
            cache_ttl: Duration::from_millis(s.query.cache_ttl_ms),
            partitions: s.partitioning.partitions,
            reports_dir: s.reports.dir.clone(),
            max_connections: s.results.max_connections,
        }
    }
}
