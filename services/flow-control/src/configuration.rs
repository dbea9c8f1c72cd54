//! Flow-control's view of the settings: the values it uses, checked once at start.
//! Everything else takes a [`FlowConfig`], never the raw settings tree.

use crate::window::WindowSpec;
pub use mdp_config::Settings;
use std::path::PathBuf;
use std::time::Duration;

/// How often every partition checks whether its open window is due.
pub const TICK: Duration = Duration::from_millis(50);

/// A setting flow-control cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigurationError {
    #[error("{key} must be at least 1")]
    Zero { key: &'static str },
}

/// The checked settings flow-control runs with.
#[derive(Debug, Clone)]
pub struct FlowConfig {
    pub partitions: u32,
    /// HTTP listen address (`host:port`; port 0 picks a free port).
    pub listen: String,
    /// Directory of the sled KV log.
    pub data_dir: PathBuf,
    pub window: WindowSpec,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// Unacknowledged change batches per partition consumer.
    pub prefetch: u16,
    /// Change messages above this size are dead-lettered.
    pub max_message_bytes: usize,
    /// Window check interval.
    pub tick: Duration,
}

impl FlowConfig {
    pub fn from_settings(s: &Settings) -> Result<Self, ConfigurationError> {
        let fc = &s.flow_control;
        let checks: [(&'static str, u64); 5] = [
            (
                "flow_control.window_max_changes",
                fc.window_max_changes as u64,
            ),
            (
                "flow_control.rate_limit_per_second",
                u64::from(fc.rate_limit_per_second),
            ),
            (
                "flow_control.rate_limit_burst",
                u64::from(fc.rate_limit_burst),
            ),
            ("rabbitmq.prefetch", u64::from(s.rabbitmq.prefetch)),
            (
                "rabbitmq.max_message_bytes",
                s.rabbitmq.max_message_bytes as u64,
            ),
        ];
        if let Some((key, _)) = checks.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigurationError::Zero { key });
        }
        Ok(FlowConfig {
            partitions: s.partitioning.partitions,
            listen: fc.listen.clone(),
            data_dir: fc.data_dir.clone(),
            window: WindowSpec::new(fc.window_ms, fc.window_max_changes),
            rate_limit_per_second: fc.rate_limit_per_second,
            rate_limit_burst: fc.rate_limit_burst,
            prefetch: s.rabbitmq.prefetch,
            max_message_bytes: s.rabbitmq.max_message_bytes,
            tick: TICK,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(env: &[(&str, &str)]) -> Settings {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        match Settings::load_from(None, env) {
            Ok(s) => s,
            Err(e) => panic!("settings: {e}"),
        }
    }

    #[test]
    fn defaults_are_accepted() {
        let c = FlowConfig::from_settings(&settings(&[])).expect("defaults");
        assert_eq!(c.partitions, 8);
        assert_eq!(
            c.window,
            WindowSpec {
                window_ms: 1000,
                max_changes: 5000
            }
        );
        assert_eq!(
            (c.rate_limit_per_second, c.rate_limit_burst),
            (50_000, 10_000)
        );
    }

    #[test]
    fn zero_rate_is_rejected_naming_the_key() {
        let err = FlowConfig::from_settings(&settings(&[(
            "MDP__FLOW_CONTROL__RATE_LIMIT_PER_SECOND",
            "0",
        )]))
        .expect_err("zero rate");
        assert_eq!(
            err.to_string(),
            "flow_control.rate_limit_per_second must be at least 1"
        );
    }
}
