//! Metrics of flow-control (Prometheus default registry) and the internal events that log and count together.
//! Labels are low-cardinality: a rejection reason, a partition number (P is small), a seal reason.

use prometheus::{Gauge, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use std::sync::LazyLock;

fn counter(name: &str, help: &str) -> IntCounter {
    mdp_telemetry::int_counter(name, help)
}

pub static REJECTED_MESSAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    mdp_telemetry::int_counter_vec(
        "mdp_flow_rejected_messages_total",
        "Change messages dead-lettered, by reason (too_large, malformed, wrong_partition).",
        &["reason"],
    )
});

pub static THROTTLED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "mdp_flow_throttled_total",
        "Change batches that waited for the intake rate limit.",
    )
});

pub static THROTTLED_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    mdp_telemetry::histogram_vec(
        "mdp_flow_throttle_wait_seconds",
        "Time change batches waited for the intake rate limit.",
        &[],
        &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
    )
    .with_label_values(&[] as &[&str])
});

pub static INTAKE_RATE: LazyLock<Gauge> = LazyLock::new(|| {
    mdp_telemetry::gauge_vec(
        "mdp_flow_intake_rate_per_second",
        "Changes accepted per second over the last second.",
        &[],
    )
    .with_label_values(&[] as &[&str])
});

pub static DUPLICATE_EVENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "mdp_flow_duplicate_events_total",
        "Changes skipped because their position was already accepted (replays).",
    )
});

pub static EVENTS_ACCEPTED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "mdp_flow_events_accepted_total",
        "Changes appended durably to the KV log.",
    )
});

pub static WINDOWS_SEALED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    mdp_telemetry::int_counter_vec(
        "mdp_flow_windows_sealed_total",
        "Windows sealed, by reason (time, size).",
        &["reason"],
    )
});

pub static WINDOWS_PUBLISHED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "mdp_flow_windows_published_total",
        "Windows confirmed by the broker (re-publications after a restart included).",
    )
});

pub static PUBLISH_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "mdp_flow_window_publish_failures_total",
        "Failed window publications (retried).",
    )
});

pub static WINDOW_CHANGES: LazyLock<Histogram> = LazyLock::new(|| {
    mdp_telemetry::histogram_vec(
        "mdp_flow_window_changes",
        "Changes per sealed window.",
        &[],
        &[
            1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        ],
    )
    .with_label_values(&[] as &[&str])
});

pub static OPEN_WINDOW_CHANGES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    mdp_telemetry::int_gauge_vec(
        "mdp_flow_open_window_changes",
        "Changes in the partition's open window.",
        &["partition"],
    )
});

pub static UNPUBLISHED_WINDOWS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    mdp_telemetry::int_gauge_vec(
        "mdp_flow_unpublished_windows",
        "Sealed windows of the partition waiting for the broker's confirm.",
        &["partition"],
    )
});

pub static KV_FLUSH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    mdp_telemetry::histogram_vec(
        "mdp_flow_kv_flush_seconds",
        "Duration of KV log flushes (fsync).",
        &[],
        &[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ],
    )
    .with_label_values(&[] as &[&str])
});

pub static KV_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    mdp_telemetry::int_counter_vec(
        "mdp_flow_kv_errors_total",
        "Failed KV log operations, by operation (append, seal, publish_read, mark).",
        &["op"],
    )
});

pub static OWNED_PARTITIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    mdp_telemetry::int_gauge_vec(
        "mdp_flow_owned_partitions",
        "Partitions this instance currently consumes.",
        &[],
    )
    .with_label_values(&[] as &[&str])
});

/// A change message that cannot be processed: logged, counted, dead-lettered by the caller.
pub fn message_rejected(partition: u32, reason: &'static str, detail: &str) {
    tracing::warn!(
        partition,
        reason,
        error = detail,
        "change message rejected, dead-lettering"
    );
    REJECTED_MESSAGES.with_label_values(&[reason]).inc();
}

/// A KV log operation failed.
pub fn kv_failed(partition: u32, op: &'static str, error: &crate::log::LogError) {
    tracing::warn!(partition, op, error = %mdp_telemetry::error_chain(error), "kv log operation failed");
    KV_ERRORS.with_label_values(&[op]).inc();
}
