//! The part of the platform settings ingest uses, validated once at start.

use mdp_config::Settings;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// Invalid ingest settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigurationError {
    #[error("source.url must name a database (mysql://…/DB)")]
    NoDatabase,
    #[error("source.url is not a valid MySQL URL: {0}")]
    BadUrl(String),
    #[error("ingest.batch_max_events must be at least 1")]
    BatchSize,
}

/// Validated ingest settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Connection options of the source database.
    pub source_opts: mysql_async::Opts,
    /// The captured database (schema) name, also the events' `source`.
    pub database: String,
    /// Captured tables.
    pub tables: BTreeSet<String>,
    /// Tenant column of every captured table.
    pub tenant_columns: BTreeMap<String, String>,
    /// Server id ingest registers with as a replica.
    pub server_id: u32,
    /// Take a consistent snapshot on first start.
    pub snapshot: bool,
    pub partitions: u32,
    pub batch_max_events: usize,
    pub batch_max_wait: Duration,
    pub data_dir: PathBuf,
}

impl IngestConfig {
    pub fn from_settings(s: &Settings) -> Result<Self, ConfigurationError> {
        let database = s.source.database().ok_or(ConfigurationError::NoDatabase)?;
        let source_opts = mysql_async::Opts::from_url(s.source.url.expose())
            .map_err(|e| ConfigurationError::BadUrl(e.to_string()))?;
        if s.ingest.batch_max_events == 0 {
            return Err(ConfigurationError::BatchSize);
        }
        let tables: BTreeSet<String> = s.source.tables.iter().cloned().collect();
        let tenant_columns = tables
            .iter()
            .map(|t| (t.clone(), s.source.tenant_column_of(t).to_string()))
            .collect();
        Ok(IngestConfig {
            source_opts,
            database,
            tables,
            tenant_columns,
            server_id: s.source.server_id,
            snapshot: s.source.snapshot,
            partitions: s.partitioning.partitions.max(1),
            batch_max_events: s.ingest.batch_max_events,
            batch_max_wait: Duration::from_millis(s.ingest.batch_max_ms),
            data_dir: s.ingest.data_dir.clone(),
        })
    }

    /// The tenant column of a captured table.
    pub fn tenant_column_of(&self, table: &str) -> &str {
        self.tenant_columns
            .get(table)
            .map(String::as_str)
            .unwrap_or("merchant_id")
    }

    /// What a saved binlog position belongs to: server, database, captured
    /// tables and their tenant columns. When any of it changes, ingest takes a
    /// new snapshot instead of resuming.
    pub fn source_identity(&self) -> String {
        let host = self.source_opts.ip_or_hostname();
        let port = self.source_opts.tcp_port();
        let tables: Vec<String> = self
            .tenant_columns
            .iter()
            .map(|(t, c)| format!("{t}({c})"))
            .collect();
        format!("{host}:{port}/{} {}", self.database, tables.join(","))
    }

    /// Whether `db.table` is captured.
    pub fn captures(&self, db: &str, table: &str) -> bool {
        db == self.database && self.tables.contains(table)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_resolve_tenant_columns() {
        let s = Settings::load_from(None, Vec::<(String, String)>::new()).unwrap();
        let c = IngestConfig::from_settings(&s).unwrap();
        assert_eq!(c.database, "shop");
        assert_eq!(c.tenant_column_of("merchants"), "id");
        assert_eq!(c.tenant_column_of("orders"), "merchant_id");
        assert!(c.captures("shop", "orders"));
        assert!(!c.captures("other", "orders"));
        assert!(!c.captures("shop", "audit_log"));
        assert_eq!(c.batch_max_wait, Duration::from_millis(20));
    }
}
