//! The one configuration of the platform, shared by every service.
//!
//! Layers, later wins: `config/default.toml` compiled into the binaries → the
//! TOML file named by `MDP_CONFIG` (optional) → environment variables
//! `MDP__SECTION__KEY` (e.g. `MDP__SOURCE__URL`). Unknown keys are rejected so
//! a typo fails at start instead of being ignored.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// The defaults, kept in the repository and compiled in.
pub const DEFAULTS: &str = include_str!("../../../config/default.toml");

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to load configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A secret-bearing string (URLs with passwords): never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// The whole settings tree.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub source: SourceSettings,
    pub partitioning: PartitioningSettings,
    pub reports: ReportsSettings,
    pub rabbitmq: RabbitSettings,
    pub results: ResultsSettings,
    pub redis: RedisSettings,
    pub telemetry: TelemetrySettings,
    pub ingest: IngestSettings,
    pub flow_control: FlowControlSettings,
    pub window_compute: WindowComputeSettings,
    pub result_writer: ResultWriterSettings,
    pub query: QuerySettings,
    pub admin: AdminSettings,
}

/// The business database captured by ingest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    /// `mysql://user:password@host:port/database`; the database is the one captured.
    pub url: Secret,
    /// Server id ingest uses as a replica; unique among the source's replicas.
    pub server_id: u32,
    /// Captured tables of that database. Changes to other tables are skipped.
    pub tables: Vec<String>,
    /// Column holding the merchant id in every captured table.
    pub tenant_column: String,
    /// Per-table exceptions to `tenant_column` (e.g. `merchants = "id"`).
    #[serde(default)]
    pub tenant_columns: BTreeMap<String, String>,
    /// Take a consistent snapshot of the tables on first start.
    pub snapshot: bool,
}

impl SourceSettings {
    /// The tenant column of `table`.
    pub fn tenant_column_of(&self, table: &str) -> &str {
        self.tenant_columns
            .get(table)
            .map(String::as_str)
            .unwrap_or(&self.tenant_column)
    }

    /// The database name in `url` (the captured schema).
    pub fn database(&self) -> Option<String> {
        database_of(self.url.expose())
    }
}

/// The path component of a `mysql://…/db?…` URL.
pub fn database_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path = rest.split_once('/')?.1;
    let db = path.split(['?', '/']).next()?;
    (!db.is_empty()).then(|| db.to_string())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitioningSettings {
    /// Number of partitions P; partition = hash(merchant) mod P. Changing it
    /// on a running installation requires a rebuild of all state.
    pub partitions: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsSettings {
    /// Directory of `*.sql` report definitions; the file name is the report name.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitSettings {
    /// AMQP URL including the vhost (`%2f` for `/`).
    pub url: Secret,
    /// Prefix of every exchange and queue name, so installations can share a broker.
    pub prefix: String,
    /// Unacknowledged deliveries per consumer (basic.qos).
    pub prefetch: u16,
    /// Larger messages are rejected (dead-lettered) by consumers.
    pub max_message_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsSettings {
    /// The MySQL database holding report tables (created if missing).
    pub url: Secret,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: Secret,
    /// Prefix of every key the platform writes.
    pub key_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// OTLP/HTTP endpoint (e.g. `http://127.0.0.1:4318`); empty turns export off.
    pub otlp_endpoint: String,
    /// `json` or `pretty`.
    pub log_format: String,
    /// `tracing` EnvFilter directives; `RUST_LOG` wins when set.
    pub log_filter: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    pub listen: String,
    /// Holds the CDC position and the degrade spool (sled).
    pub data_dir: PathBuf,
    /// Most events in one published batch.
    pub batch_max_events: usize,
    /// Longest a batch waits for more events, ms.
    pub batch_max_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowControlSettings {
    pub listen: String,
    /// Holds the raw-change KV log and the window index (sled).
    pub data_dir: PathBuf,
    /// Window length, ms.
    pub window_ms: u64,
    /// A window is sealed early when it holds this many changes.
    pub window_max_changes: usize,
    /// Token-bucket refill, changes per second (across partitions).
    pub rate_limit_per_second: u32,
    /// Token-bucket size, changes.
    pub rate_limit_burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowComputeSettings {
    pub listen: String,
    /// Per-partition compute state (one SQLite file per partition).
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultWriterSettings {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySettings {
    pub listen: String,
    /// Rows per page of `/v1/reports/{name}/rows`.
    pub page_size: usize,
    /// Lifetime of entries in the in-process cache, ms.
    pub cache_ttl_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub listen: String,
    /// An instance silent for this long is shown as down, ms.
    pub heartbeat_timeout_ms: u64,
    /// A partition whose last window applied by window-compute is more than
    /// this many windows behind the last one sealed by flow-control…
    pub lag_alarm_windows: u64,
    /// …for longer than this raises a `partition_lagging` alarm, ms.
    pub lag_alarm_after_ms: u64,
}

impl Settings {
    /// Load defaults → `MDP_CONFIG` file → `MDP__…` environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var("MDP_CONFIG").ok().filter(|s| !s.is_empty());
        Self::load_from(file.as_deref(), std::env::vars())
    }

    /// Load from an explicit file and environment (for tests).
    pub fn load_from(
        file: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder
                .add_source(config::File::new(path, config::FileFormat::Toml).required(true));
        }
        let env_map: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("MDP__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("MDP")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("source.tables")
                .try_parsing(true)
                .source(Some(env_map)),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.partitioning.partitions == 0 {
            return Err(ConfigError::Invalid(
                "partitioning.partitions must be at least 1".into(),
            ));
        }
        if self.source.tables.is_empty() {
            return Err(ConfigError::Invalid(
                "source.tables must name at least one table".into(),
            ));
        }
        if self.flow_control.window_ms == 0 {
            return Err(ConfigError::Invalid(
                "flow_control.window_ms must be at least 1".into(),
            ));
        }
        if self.source.database().is_none() {
            return Err(ConfigError::Invalid(
                "source.url must name a database (mysql://…/DB)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.partitioning.partitions, 8);
        assert_eq!(s.source.tenant_column_of("merchants"), "id");
        assert_eq!(s.source.tenant_column_of("orders"), "merchant_id");
        assert_eq!(s.source.database().as_deref(), Some("shop"));
    }

    #[test]
    fn file_then_env_override() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[source]\ntables = [\"a\", \"b\"]\n[flow_control]\nwindow_ms = 250"
        )
        .unwrap();
        let s = Settings::load_from(
            Some(f.path().to_str().unwrap()),
            env(&[
                ("MDP__FLOW_CONTROL__WINDOW_MS", "500"),
                ("MDP__SOURCE__TABLES", "x,y,z"),
            ]),
        )
        .unwrap();
        assert_eq!(s.flow_control.window_ms, 500);
        assert_eq!(s.source.tables, vec!["x", "y", "z"]);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[query]\nlisten_adress = \"x\"").unwrap();
        let err = Settings::load_from(Some(f.path().to_str().unwrap()), env(&[])).unwrap_err();
        assert!(err.to_string().contains("listen_adress"), "{err}");
    }

    #[test]
    fn database_is_taken_from_url() {
        assert_eq!(
            database_of("mysql://u:p@h:1/shop?ssl=0").as_deref(),
            Some("shop")
        );
        assert_eq!(database_of("mysql://h:1"), None);
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert!(!format!("{:?}", s.rabbitmq).contains("guest"));
    }
}
