//! Metrics of this crate, next to the log lines that go with them. Labels are
//! limited to a few fixed values (stage, reason), never queue names or ids.

use prometheus::{HistogramVec, IntCounter, IntCounterVec};
use std::sync::LazyLock;

pub(crate) static CONNECT_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    mdp_telemetry::int_counter(
        "mdp_amqp_connect_failures_total",
        "Failed attempts to connect to RabbitMQ.",
    )
});

pub(crate) static PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    mdp_telemetry::int_counter_vec(
        "mdp_amqp_published_total",
        "Messages published and confirmed by the broker, by stage.",
        &["stage"],
    )
});

pub(crate) static PUBLISH_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    mdp_telemetry::int_counter_vec(
        "mdp_amqp_publish_failures_total",
        "Publishes that were not confirmed, by stage and reason (nack, unroutable, channel, serialize, not_confirmed, invalid).",
        &["stage", "reason"],
    )
});

pub(crate) static CONFIRM_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    mdp_telemetry::histogram_vec(
        "mdp_amqp_publish_confirm_seconds",
        "Time from publish to broker confirm, by stage.",
        &["stage"],
        &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ],
    )
});

pub(crate) static DEAD_LETTERED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    mdp_telemetry::int_counter_vec(
        "mdp_amqp_dead_lettered_total",
        "Deliveries rejected to the dead-letter exchange, by stage.",
        &["stage"],
    )
});

pub(crate) static REQUEUED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    mdp_telemetry::int_counter_vec(
        "mdp_amqp_requeued_total",
        "Deliveries returned to their queue for another attempt, by stage.",
        &["stage"],
    )
});

pub(crate) static DECODE_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    mdp_telemetry::int_counter_vec(
        "mdp_amqp_decode_failures_total",
        "Deliveries whose body could not be decoded, by reason (too_large, malformed).",
        &["reason"],
    )
});

/// The stage label of an exchange name: its last dot-separated part when it is
/// one of the platform's exchanges, else `other`.
pub(crate) fn stage_label(exchange: &str) -> &'static str {
    match exchange.rsplit('.').next().unwrap_or("") {
        "changes" => "changes",
        "windows" => "windows",
        "results" => "results",
        "heartbeats" => "heartbeats",
        "control" => "control",
        "dlx" => "dlx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_labels_are_bounded() {
        assert_eq!(stage_label("mdp.changes"), "changes");
        assert_eq!(stage_label("test-42.windows"), "windows");
        assert_eq!(stage_label("mdp.results"), "results");
        assert_eq!(stage_label("mdp.heartbeats"), "heartbeats");
        assert_eq!(stage_label("mdp.dlx"), "dlx");
        assert_eq!(stage_label(""), "other");
        assert_eq!(stage_label("merchant-123"), "other");
    }
}
