//! Settings of window-compute: the shared settings tree plus the compute
//! tuning (catch-up merge limits, retry policy) derived from it.

use mdp_config::Settings;
use std::path::PathBuf;
use std::time::Duration;

/// Loads the platform settings (defaults → `MDP_CONFIG` → `MDP__…` env).
pub fn load() -> Result<Settings, mdp_config::ConfigError> {
    Settings::load()
}

/// Exponential backoff between attempts: `base * 2^(attempt-1)`, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The pause before attempt `attempt + 1`, given `attempt` failures so far
    /// (at least 1), with up to 20 % jitter so replicas do not retry in step.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(16);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.max);
        let jitter = rand::random_range(0.0..0.2);
        raw.mul_f64(1.0 - jitter)
    }
}

/// How window-compute runs, derived from the settings.
#[derive(Debug, Clone)]
pub struct ComputeOptions {
    /// Number of partitions (one windows queue each).
    pub partitions: u32,
    /// Directory holding one SQLite file per partition.
    pub state_dir: PathBuf,
    /// Unacknowledged windows per partition consumer (basic.qos).
    pub prefetch: u16,
    /// Larger window messages are dead-lettered.
    pub max_message_bytes: usize,
    /// Most pending windows folded into one computation during catch-up.
    pub merge_max_windows: usize,
    /// A catch-up merge stops taking windows once it holds this many changes.
    pub merge_max_changes: usize,
    /// Attempts of a window the report engine fails on before it is
    /// dead-lettered as poison.
    pub engine_max_attempts: u32,
    /// Pause between engine attempts of a failing window.
    pub engine_backoff: Backoff,
    /// Pause between attempts while the state store fails (retried until it
    /// works: the window stays unacknowledged meanwhile).
    pub state_backoff: Backoff,
    /// Pause before reconnecting after the RabbitMQ session broke.
    pub reconnect_backoff: Backoff,
}

impl ComputeOptions {
    pub fn from_settings(s: &Settings) -> Self {
        let prefetch = s.rabbitmq.prefetch.max(1);
        ComputeOptions {
            partitions: s.partitioning.partitions,
            state_dir: s.window_compute.state_dir.clone(),
            prefetch,
            max_message_bytes: s.rabbitmq.max_message_bytes,
            merge_max_windows: usize::from(prefetch),
            merge_max_changes: 50_000,
            engine_max_attempts: 5,
            engine_backoff: Backoff {
                base: Duration::from_millis(200),
                max: Duration::from_secs(5),
            },
            state_backoff: Backoff {
                base: Duration::from_millis(200),
                max: Duration::from_secs(5),
            },
            reconnect_backoff: Backoff {
                base: Duration::from_millis(200),
                max: Duration::from_secs(5),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let first = b.delay(1);
        assert!(
            first <= Duration::from_millis(100) && first >= Duration::from_millis(80),
            "{first:?}"
        );
        let third = b.delay(3);
        assert!(
            third <= Duration::from_millis(400) && third >= Duration::from_millis(320),
            "{third:?}"
        );
        let late = b.delay(40);
        assert!(
            late <= Duration::from_secs(1) && late >= Duration::from_millis(800),
            "{late:?}"
        );
    }

    #[test]
    fn options_follow_the_settings() {
        let s = Settings::load_from(None, Vec::new()).expect("default settings");
        let o = ComputeOptions::from_settings(&s);
        assert_eq!(o.partitions, 8);
        assert_eq!(o.prefetch, 32);
        assert_eq!(o.merge_max_windows, 32);
        assert_eq!(o.state_dir, PathBuf::from("var/window-compute"));
    }
}
