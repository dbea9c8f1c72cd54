//! Internal events of window-compute: each one logs and counts together, so
//! a metric always has the log line that explains it.

use mdp_types::WindowId;
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGaugeVec};
use std::sync::LazyLock;
use std::time::Duration;

struct Metrics {
    windows: IntCounter,
    changes: IntCounter,
    window_seconds: HistogramVec,
    result_rows: IntCounter,
    last_window: IntGaugeVec,
    merged: IntCounter,
    duplicates: IntCounter,
    republished: IntCounter,
    reports_rejected: IntGaugeVec,
    rejected_messages: IntCounterVec,
    retries: IntCounter,
    poison: IntCounter,
    state_errors: IntCounter,
    inconsistencies: IntCounterVec,
    sessions: IntCounter,
    held: IntCounter,
    held_windows: IntGaugeVec,
    held_at: IntGaugeVec,
    skipped: IntCounter,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    windows: mdp_telemetry::int_counter("mdp_compute_windows_total", "Windows applied to the compute state."),
    changes: mdp_telemetry::int_counter("mdp_compute_changes_total", "Changes applied to the compute state."),
    window_seconds: mdp_telemetry::histogram_vec(
        "mdp_compute_window_seconds",
        "Time of one computation (one window or a catch-up merge), state commit included.",
        &[],
        &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
    ),
    result_rows: mdp_telemetry::int_counter("mdp_compute_result_rows_total", "Result rows computed (each is published in its result batch)."),
    last_window: mdp_telemetry::int_gauge_vec(
        "mdp_compute_last_window",
        "Last window applied per partition.",
        &["partition"],
    ),
    merged: mdp_telemetry::int_counter(
        "mdp_compute_windows_merged_total",
        "Windows folded into a catch-up computation together with other pending windows.",
    ),
    duplicates: mdp_telemetry::int_counter(
        "mdp_compute_duplicate_windows_total",
        "Windows delivered again after they were applied (skipped).",
    ),
    republished: mdp_telemetry::int_counter(
        "mdp_compute_results_republished_total",
        "Stored result batches published again for a re-delivered last window.",
    ),
    reports_rejected: mdp_telemetry::int_gauge_vec(
        "mdp_compute_reports_rejected",
        "Report files rejected at load.",
        &[],
    ),
    rejected_messages: mdp_telemetry::int_counter_vec(
        "mdp_compute_rejected_messages_total",
        "Window messages dead-lettered because they cannot be read.",
        &["reason"],
    ),
    retries: mdp_telemetry::int_counter(
        "mdp_compute_window_retries_total",
        "Engine failures of a window that will be retried.",
    ),
    poison: mdp_telemetry::int_counter(
        "mdp_compute_poison_windows_total",
        "Windows dead-lettered after the report engine failed on every attempt (alarm).",
    ),
    state_errors: mdp_telemetry::int_counter(
        "mdp_compute_state_errors_total",
        "Failed state store operations (the windows stay unacknowledged and are retried).",
    ),
    inconsistencies: mdp_telemetry::int_counter_vec(
        "mdp_compute_inconsistent_changes_total",
        "Changes the state disagreed with (state lost, changes skipped or replayed); the affected groups need a recompute.",
        &["kind"],
    ),
    sessions: mdp_telemetry::int_counter(
        "mdp_compute_amqp_sessions_total",
        "RabbitMQ sessions started (connection, topology, consumers); more than one means reconnects.",
    ),
    held: mdp_telemetry::int_counter(
        "mdp_compute_windows_held_total",
        "Windows kept in the held store because their partition is held at a parked window (applied later).",
    ),
    held_windows: mdp_telemetry::int_gauge_vec(
        "mdp_compute_held_windows",
        "Windows in the partition's held store, not applied yet.",
        &["partition"],
    ),
    held_at: mdp_telemetry::int_gauge_vec(
        "mdp_compute_held_at_window",
        "The parked window the partition is held at (0: not held).",
        &["partition"],
    ),
    skipped: mdp_telemetry::int_counter(
        "mdp_compute_parked_windows_skipped_total",
        "Parked windows an operator gave up on: their changes are never applied.",
    ),
}
});

/// Registers every metric so they are exported before the first event.
pub fn register() {
    LazyLock::force(&METRICS);
}

/// A report file was rejected at load; the report is skipped.
pub struct ReportRejected<'a> {
    pub file: &'a std::path::Path,
    pub error: &'a str,
}

impl ReportRejected<'_> {
    pub fn emit(&self) {
        tracing::error!(file = %self.file.display(), error = %self.error, "report rejected, skipped");
    }
}

/// The number of rejected report files, after loading.
pub fn reports_rejected(count: usize) {
    METRICS
        .reports_rejected
        .with_label_values(&[] as &[&str])
        .set(count as i64);
}

/// Why a window message was dead-lettered without computing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    TooLarge,
    Malformed,
    WrongPartition,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::TooLarge => "too_large",
            RejectReason::Malformed => "malformed",
            RejectReason::WrongPartition => "wrong_partition",
        }
    }
}

/// A window message that cannot be read was dead-lettered.
pub struct MessageRejected<'a> {
    pub partition: u32,
    pub reason: RejectReason,
    pub message_id: Option<&'a str>,
    pub error: &'a str,
}

impl MessageRejected<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            partition = self.partition,
            reason = self.reason.as_str(),
            message_id = self.message_id,
            error = %self.error,
            "window message dead-lettered"
        );
        METRICS
            .rejected_messages
            .with_label_values(&[self.reason.as_str()])
            .inc();
    }
}

/// One computation committed: windows applied and their batch published.
pub struct WindowsComputed {
    pub partition: u32,
    pub first_window_id: WindowId,
    pub window_id: WindowId,
    pub windows: usize,
    pub changes: usize,
    pub rows: usize,
    pub groups: i64,
    pub elapsed: Duration,
}

impl WindowsComputed {
    pub fn emit(&self) {
        tracing::debug!(
            partition = self.partition,
            first_window_id = self.first_window_id,
            window_id = self.window_id,
            windows = self.windows,
            changes = self.changes,
            rows = self.rows,
            groups = self.groups,
            elapsed_ms = self.elapsed.as_secs_f64() * 1000.0,
            "windows computed"
        );
        let m = &*METRICS;
        m.windows.inc_by(self.windows as u64);
        m.changes.inc_by(self.changes as u64);
        m.result_rows.inc_by(self.rows as u64);
        m.window_seconds
            .with_label_values(&[] as &[&str])
            .observe(self.elapsed.as_secs_f64());
        m.last_window
            .with_label_values(&[&self.partition.to_string()])
            .set(i64::try_from(self.window_id).unwrap_or(i64::MAX));
        if self.windows > 1 {
            tracing::info!(
                partition = self.partition,
                first_window_id = self.first_window_id,
                window_id = self.window_id,
                windows = self.windows,
                "pending windows merged into one computation"
            );
            m.merged.inc_by(self.windows as u64);
        }
    }
}

/// Windows delivered again after they were applied.
pub struct DuplicateWindows<'a> {
    pub partition: u32,
    pub window_ids: &'a [WindowId],
    pub republished: Option<WindowId>,
}

impl DuplicateWindows<'_> {
    pub fn emit(&self) {
        tracing::info!(
            partition = self.partition,
            window_ids = ?self.window_ids,
            republished = self.republished,
            "already applied windows skipped"
        );
        METRICS.duplicates.inc_by(self.window_ids.len() as u64);
        if self.republished.is_some() {
            METRICS.republished.inc();
        }
    }
}

/// The report engine failed on a window that will be retried.
pub struct WindowRetry<'a> {
    pub partition: u32,
    pub window_id: WindowId,
    pub attempt: u32,
    pub max_attempts: u32,
    pub delay: Duration,
    pub error: &'a str,
}

impl WindowRetry<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            partition = self.partition,
            window_id = self.window_id,
            attempt = self.attempt,
            max_attempts = self.max_attempts,
            delay_ms = self.delay.as_millis() as u64,
            error = %self.error,
            "report engine failed on a window, retrying"
        );
        METRICS.retries.inc();
    }
}

/// A window the engine failed on at every attempt was dead-lettered.
pub struct PoisonWindow<'a> {
    pub partition: u32,
    pub window_id: WindowId,
    pub attempts: u32,
    pub error: &'a str,
}

impl PoisonWindow<'_> {
    pub fn emit(&self) {
        tracing::error!(
            partition = self.partition,
            window_id = self.window_id,
            attempts = self.attempts,
            error = %self.error,
            alarm = true,
            "poison window dead-lettered; the partition is held at it until it is replayed"
        );
        METRICS.poison.inc();
    }
}

/// Delivered windows were kept in the held store (the partition is held at
/// a parked window, or still applying the windows held behind it).
pub struct WindowsHeld<'a> {
    pub partition: u32,
    pub window_ids: &'a [WindowId],
    pub held_at: Option<WindowId>,
    pub held_windows: u64,
}

impl WindowsHeld<'_> {
    pub fn emit(&self) {
        tracing::info!(
            partition = self.partition,
            window_ids = ?self.window_ids,
            held_at_window = self.held_at,
            held_windows = self.held_windows,
            "windows held behind a parked window"
        );
        METRICS.held.inc_by(self.window_ids.len() as u64);
    }
}

/// The parked window a partition was held at is applied (or was skipped):
/// the held windows behind it follow.
pub struct HoldReleased {
    pub partition: u32,
    pub window_id: WindowId,
    pub held_since_ms: i64,
}

impl HoldReleased {
    pub fn emit(&self) {
        tracing::info!(
            partition = self.partition,
            window_id = self.window_id,
            held_ms = mdp_types::now_ms().saturating_sub(self.held_since_ms),
            "partition hold released"
        );
    }
}

/// Deliveries of a parked window an operator skipped were dropped.
pub struct SkippedWindowsDropped<'a> {
    pub partition: u32,
    pub window_ids: &'a [WindowId],
}

impl SkippedWindowsDropped<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            partition = self.partition,
            window_ids = ?self.window_ids,
            "delivery of a skipped parked window dropped"
        );
    }
}

/// An operator gave up on the parked window a partition was held at.
pub struct ParkedWindowSkipped {
    pub partition: u32,
    pub window_id: WindowId,
    pub held_windows: u64,
}

impl ParkedWindowSkipped {
    pub fn emit(&self) {
        tracing::warn!(
            partition = self.partition,
            window_id = self.window_id,
            held_windows = self.held_windows,
            "parked window skipped by an operator; its changes are not applied"
        );
        METRICS.skipped.inc();
    }
}

/// The hold figures of a partition as last read from its state.
pub fn hold_gauges(partition: u32, held_at: Option<WindowId>, held_windows: u64) {
    let p = partition.to_string();
    METRICS
        .held_windows
        .with_label_values(&[&p])
        .set(i64::try_from(held_windows).unwrap_or(i64::MAX));
    METRICS
        .held_at
        .with_label_values(&[&p])
        .set(held_at.map_or(0, |w| i64::try_from(w).unwrap_or(i64::MAX)));
}

/// A state store operation failed; the windows stay unacknowledged.
pub struct StateFailed<'a> {
    pub partition: u32,
    pub attempt: u32,
    pub delay: Duration,
    pub error: &'a str,
}

impl StateFailed<'_> {
    pub fn emit(&self) {
        tracing::error!(
            partition = self.partition,
            attempt = self.attempt,
            delay_ms = self.delay.as_millis() as u64,
            error = %self.error,
            "state store failed, retrying"
        );
        METRICS.state_errors.inc();
    }
}

/// The engine found changes that disagree with the state: a sign of lost
/// state or skipped/replayed changes (the affected groups need a recompute).
pub struct Inconsistencies<'a> {
    pub partition: u32,
    pub first_window_id: WindowId,
    pub window_id: WindowId,
    pub stats: &'a mdp_report::ApplyStats,
}

impl Inconsistencies<'_> {
    pub fn emit(&self) {
        let s = self.stats;
        let kinds = [
            ("missing_group_retraction", s.missing_group_retractions),
            ("inconsistent_retraction", s.inconsistent_retractions),
            ("malformed_event", s.malformed_events),
            ("missing_column", s.missing_columns),
            ("row_mismatch", s.row_mismatches),
        ];
        if kinds.iter().all(|(_, n)| *n == 0) {
            return;
        }
        tracing::warn!(
            partition = self.partition,
            first_window_id = self.first_window_id,
            window_id = self.window_id,
            missing_group_retractions = s.missing_group_retractions,
            inconsistent_retractions = s.inconsistent_retractions,
            malformed_events = s.malformed_events,
            missing_columns = s.missing_columns,
            row_mismatches = s.row_mismatches,
            "changes disagree with the compute state"
        );
        for (kind, n) in kinds {
            if n > 0 {
                METRICS.inconsistencies.with_label_values(&[kind]).inc_by(n);
            }
        }
    }
}

/// A RabbitMQ session started: topology declared, every partition consumed.
pub struct SessionStarted {
    pub partitions: usize,
}

impl SessionStarted {
    pub fn emit(&self) {
        tracing::info!(partitions = self.partitions, "consuming windows");
        METRICS.sessions.inc();
    }
}
