//! Ingest's metrics (Prometheus default registry) and the internal events
//! that log and count together.

use crate::cdc::events::RejectReason;
use mdp_types::ChangeEvent;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};
use std::sync::LazyLock;

fn registered<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // A second registration (several applications in one test process) keeps
    // the first one; the metric still works, it is only exported once.
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    match IntCounterVec::new(Opts::new(name, help), labels) {
        Ok(c) => registered(c),
        Err(e) => unreachable!("static metric definition {name} is invalid: {e}"),
    }
}

/// Change events confirmed by RabbitMQ, by op.
pub static EVENTS_TOTAL: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "mdp_ingest_events_total",
        "Change events published and confirmed, by op.",
        &["op"],
    )
});

/// Rows that could not be routed, by reason.
pub static REJECTED_TOTAL: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "mdp_ingest_rejected_events_total",
        "Captured rows sent to the changes dead-letter queue, by reason.",
        &["reason"],
    )
});

/// Batches published and confirmed.
pub static BATCHES_PUBLISHED_TOTAL: LazyLock<IntCounter> =
    LazyLock::new(|| {
        match IntCounter::new(
            "mdp_ingest_batches_published_total",
            "Change batches published and confirmed.",
        ) {
            Ok(c) => registered(c),
            Err(e) => unreachable!("static metric definition is invalid: {e}"),
        }
    });

/// Failed publish attempts (the round is retried).
pub static PUBLISH_FAILURES_TOTAL: LazyLock<IntCounter> = LazyLock::new(|| {
    match IntCounter::new(
        "mdp_ingest_publish_failures_total",
        "Failed attempts to publish a round of change batches.",
    ) {
        Ok(c) => registered(c),
        Err(e) => unreachable!("static metric definition is invalid: {e}"),
    }
});

/// Source connection or stream failures (reading resumes after a backoff).
pub static SOURCE_FAILURES_TOTAL: LazyLock<IntCounter> = LazyLock::new(|| {
    match IntCounter::new(
        "mdp_ingest_source_failures_total",
        "Failures reading the source database (reconnected).",
    ) {
        Ok(c) => registered(c),
        Err(e) => unreachable!("static metric definition is invalid: {e}"),
    }
});

/// Time from publish to broker confirm of one batch.
pub static PUBLISH_LATENCY_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    let opts = HistogramOpts::new(
        "mdp_ingest_publish_latency_seconds",
        "Publish-to-confirm time of one change batch.",
    )
    .buckets(vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ]);
    match Histogram::with_opts(opts) {
        Ok(h) => registered(h),
        Err(e) => unreachable!("static metric definition is invalid: {e}"),
    }
});

/// Bytes of binlog between the saved position and the source's current end.
pub static BINLOG_LAG_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    match IntGauge::new(
        "mdp_ingest_binlog_lag_bytes",
        "Binlog bytes between the saved position and the source's end.",
    ) {
        Ok(g) => registered(g),
        Err(e) => unreachable!("static metric definition is invalid: {e}"),
    }
});

/// Touches every metric so they are exported from the start (at zero).
pub fn init() {
    for op in ["insert", "update", "delete", "snapshot", "reset"] {
        EVENTS_TOTAL.with_label_values(&[op]);
    }
    for r in [RejectReason::MissingTenantColumn, RejectReason::NullTenant] {
        REJECTED_TOTAL.with_label_values(&[r.as_str()]);
    }
    LazyLock::force(&BATCHES_PUBLISHED_TOTAL);
    LazyLock::force(&PUBLISH_FAILURES_TOTAL);
    LazyLock::force(&SOURCE_FAILURES_TOTAL);
    LazyLock::force(&PUBLISH_LATENCY_SECONDS);
    LazyLock::force(&BINLOG_LAG_BYTES);
}

/// Metric label of an op.
pub fn op_label(op: mdp_types::Op) -> &'static str {
    match op {
        mdp_types::Op::Insert => "insert",
        mdp_types::Op::Update => "update",
        mdp_types::Op::Delete => "delete",
        mdp_types::Op::Snapshot => "snapshot",
        mdp_types::Op::Reset => "reset",
    }
}

/// A captured row that cannot be routed: logged with its coordinates and counted.
pub struct RowRejected<'a> {
    pub event: &'a ChangeEvent,
    pub reason: RejectReason,
}

impl RowRejected<'_> {
    pub fn emit(&self) {
        tracing::error!(
            reason = %self.reason,
            table = %self.event.table,
            position = %self.event.position,
            event_id = %self.event.id,
            pk = ?self.event.pk,
            "row cannot be routed to a partition, sending it to the changes dead-letter queue"
        );
        REJECTED_TOTAL
            .with_label_values(&[self.reason.as_str()])
            .inc();
    }
}
