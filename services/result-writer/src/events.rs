//! Internal events of the writer: each `emit()` logs and counts together, so
//! a metric never drifts from the log line it belongs to.

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec};
use std::sync::LazyLock;
use std::time::Duration;

static REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    mdp_telemetry::int_counter_vec(
        "mdp_writer_rejected_messages_total",
        "Result messages dead-lettered by result-writer, by reason.",
        &["reason"],
    )
});
static DUPLICATES: LazyLock<IntCounter> = LazyLock::new(|| {
    mdp_telemetry::int_counter(
        "mdp_writer_duplicate_batches_total",
        "Result batches skipped because their window was already applied.",
    )
});
static APPLIED: LazyLock<IntCounter> = LazyLock::new(|| {
    mdp_telemetry::int_counter(
        "mdp_writer_batches_applied_total",
        "Result batches committed to MySQL.",
    )
});
static ROWS: LazyLock<IntCounter> = LazyLock::new(|| {
    mdp_telemetry::int_counter(
        "mdp_writer_rows_written_total",
        "Report rows upserted or deleted in MySQL.",
    )
});
static APPLY_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    mdp_telemetry::histogram_vec(
        "mdp_writer_apply_seconds",
        "Time to apply one result batch: MySQL transaction, then the Redis write.",
        &[],
        &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ],
    )
});
static END_TO_END_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    mdp_telemetry::histogram_vec(
        "mdp_writer_end_to_end_seconds",
        "From the capture of a batch's earliest change until its rows are written.",
        &[],
        &[
            0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
        ],
    )
});
static APPLIED_WINDOW: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    mdp_telemetry::int_gauge_vec(
        "mdp_writer_applied_window",
        "Last window id applied to MySQL, per partition.",
        &["partition"],
    )
});
static MYSQL_RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    mdp_telemetry::int_counter_vec(
        "mdp_writer_mysql_retries_total",
        "Failed attempts to apply a batch to MySQL that will be retried, by kind.",
        &["kind"],
    )
});
static CACHE_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    mdp_telemetry::int_counter_vec(
        "mdp_writer_cache_failures_total",
        "Failed Redis operations of result-writer, by operation.",
        &["operation"],
    )
});
static CACHE_REBUILT: LazyLock<IntCounter> = LazyLock::new(|| {
    mdp_telemetry::int_counter(
        "mdp_writer_cache_entries_rebuilt_total",
        "Redis report hashes rebuilt from MySQL.",
    )
});
static CACHE_ONLY: LazyLock<IntCounter> = LazyLock::new(|| {
    mdp_telemetry::int_counter(
        "mdp_writer_cache_only_batches_total",
        "Batches written to Redis ahead of MySQL while MySQL was unavailable.",
    )
});
static NOTICES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    mdp_telemetry::int_counter_vec(
        "mdp_writer_notices_total",
        "Change notices for readers' caches, by outcome (published, failed, no_link).",
        &["outcome"],
    )
});

fn histogram(v: &HistogramVec) -> Option<Histogram> {
    v.get_metric_with_label_values(&[] as &[&str]).ok()
}

/// A message was dead-lettered.
pub struct MessageRejected<'a> {
    pub partition: u32,
    pub reason: &'a str,
    pub error: &'a str,
}

impl MessageRejected<'_> {
    pub fn emit(self) {
        tracing::warn!(
            partition = self.partition,
            reason = self.reason,
            error = self.error,
            "result message rejected to the dead-letter queue"
        );
        REJECTED.with_label_values(&[self.reason]).inc();
    }
}

/// A batch whose window was already applied was skipped.
pub struct DuplicateBatch {
    pub partition: u32,
    pub window_id: i64,
    pub applied_window: i64,
}

impl DuplicateBatch {
    pub fn emit(self) {
        tracing::info!(
            partition = self.partition,
            window_id = self.window_id,
            applied_window = self.applied_window,
            "duplicate result batch skipped"
        );
        DUPLICATES.inc();
    }
}

/// A batch was committed.
pub struct BatchApplied {
    pub partition: u32,
    pub window_id: i64,
    pub rows: usize,
    pub elapsed: Duration,
    pub end_to_end: Option<Duration>,
}

impl BatchApplied {
    pub fn emit(self) {
        tracing::debug!(
            partition = self.partition,
            window_id = self.window_id,
            rows = self.rows,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "result batch applied"
        );
        APPLIED.inc();
        ROWS.inc_by(self.rows as u64);
        if let Some(h) = histogram(&APPLY_SECONDS) {
            h.observe(self.elapsed.as_secs_f64());
        }
        if let (Some(h), Some(e2e)) = (histogram(&END_TO_END_SECONDS), self.end_to_end) {
            h.observe(e2e.as_secs_f64());
        }
        APPLIED_WINDOW
            .with_label_values(&[&self.partition.to_string()])
            .set(self.window_id);
    }
}

/// Sets the applied-window gauge without counting an apply (duplicates at start).
pub fn applied_window(partition: u32, window_id: i64) {
    APPLIED_WINDOW
        .with_label_values(&[&partition.to_string()])
        .set(window_id);
}

/// Applying a batch failed and will be retried.
pub struct MysqlRetry<'a> {
    pub partition: u32,
    pub window_id: i64,
    pub kind: &'static str,
    pub error: &'a str,
    pub retry_in: Duration,
}

impl MysqlRetry<'_> {
    pub fn emit(self) {
        tracing::warn!(
            partition = self.partition,
            window_id = self.window_id,
            kind = self.kind,
            error = self.error,
            retry_in_ms = self.retry_in.as_millis() as u64,
            "applying result batch failed, will retry"
        );
        MYSQL_RETRIES.with_label_values(&[self.kind]).inc();
    }
}

/// A Redis operation failed.
pub struct CacheFailed<'a> {
    pub operation: &'static str,
    pub error: &'a str,
}

impl CacheFailed<'_> {
    pub fn emit(self) {
        tracing::warn!(
            operation = self.operation,
            error = self.error,
            "redis cache operation failed"
        );
        CACHE_FAILURES.with_label_values(&[self.operation]).inc();
    }
}

/// One cache entry was rebuilt from MySQL.
pub struct CacheEntryRebuilt<'a> {
    pub report: &'a str,
    pub tenant: &'a str,
    pub rows: usize,
}

impl CacheEntryRebuilt<'_> {
    pub fn emit(self) {
        tracing::info!(
            report = self.report,
            tenant = self.tenant,
            rows = self.rows,
            "cache entry rebuilt from mysql"
        );
        CACHE_REBUILT.inc();
    }
}

/// A batch went to Redis only (MySQL unavailable; it stays unacknowledged).
pub struct CacheOnlyWrite {
    pub partition: u32,
    pub window_id: i64,
}

impl CacheOnlyWrite {
    pub fn emit(self) {
        tracing::info!(
            partition = self.partition,
            window_id = self.window_id,
            "result batch cached ahead of mysql"
        );
        CACHE_ONLY.inc();
    }
}

/// A change notice (one or several batches' worth) was published or dropped.
pub struct Notice<'a> {
    pub outcome: &'static str,
    pub batches: usize,
    pub entries: usize,
    pub error: Option<&'a str>,
}

impl Notice<'_> {
    pub fn emit(self) {
        match self.error {
            Some(error) => tracing::warn!(
                outcome = self.outcome,
                batches = self.batches,
                entries = self.entries,
                error,
                "change notice dropped; readers' caches expire on their own"
            ),
            None => tracing::debug!(
                outcome = self.outcome,
                batches = self.batches,
                entries = self.entries,
                "change notice published"
            ),
        }
        NOTICES.with_label_values(&[self.outcome]).inc();
    }
}
