//! The writer's view of the platform settings and the errors of turning them
//! into connections.

use crate::layout::ResultsUrlError;
use mdp_config::Settings;
use std::path::PathBuf;

/// Service name in heartbeats, metrics and degrade machines.
pub const SERVICE: &str = "result-writer";
/// Degrade machine for the results MySQL.
pub const MYSQL_MACHINE: &str = "mysql";
/// Degrade machine for the Redis cache.
pub const REDIS_MACHINE: &str = "redis";

/// Settings that cannot be used as they are.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    ResultsUrl(#[from] ResultsUrlError),
    #[error("results.url cannot be parsed as a MySQL URL")]
    ResultsUrlOptions(#[source] sqlx::Error),
    #[error("redis.url cannot be used")]
    RedisUrl(#[source] redis::RedisError),
    #[error("failed to read the reports directory {}", dir.display())]
    Reports {
        dir: PathBuf,
        #[source]
        source: mdp_report::ReportError,
    },
}

/// What the writer takes from [`Settings`].
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub partitions: u32,
    pub prefetch: u16,
    pub max_message_bytes: usize,
    pub reports_dir: PathBuf,
    pub listen: String,
}

impl WriterConfig {
    pub fn from_settings(s: &Settings) -> Self {
        WriterConfig {
            partitions: s.partitioning.partitions,
            prefetch: s.rabbitmq.prefetch.max(1),
            max_message_bytes: s.rabbitmq.max_message_bytes,
            reports_dir: s.reports.dir.clone(),
            listen: s.result_writer.listen.clone(),
        }
    }
}
