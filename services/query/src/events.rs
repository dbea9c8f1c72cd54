//! Metrics of the query API next to the log lines they belong to.

use crate::service::ServedBy;
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGaugeVec};
use std::sync::LazyLock;
use std::time::Instant;

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    mdp_telemetry::int_counter_vec(
        "mdp_query_requests_total",
        "Query API requests, by route and HTTP status.",
        &["route", "status"],
    )
});
static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    mdp_telemetry::histogram_vec(
        "mdp_query_latency_seconds",
        "Query API latency, by route.",
        &["route"],
        &[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ],
    )
});
static SERVED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    mdp_telemetry::int_counter_vec(
        "mdp_query_served_total",
        "Answers of the rows route, by what served them (cache, redis, mysql).",
        &["by"],
    )
});
static SOURCE_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    mdp_telemetry::int_counter_vec(
        "mdp_query_source_failures_total",
        "Failed reads of report storage, by source.",
        &["source"],
    )
});
static RATE_LIMITED: LazyLock<IntCounter> = LazyLock::new(|| {
    mdp_telemetry::int_counter(
        "mdp_query_rate_limited_total",
        "Requests refused because Redis is degraded and the MySQL read budget is used up.",
    )
});
static NOTICES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    mdp_telemetry::int_counter_vec(
        "mdp_query_notices_total",
        "Change notices received from result-writer, by outcome (recorded, malformed).",
        &["outcome"],
    )
});
static NOTICE_LINK: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    mdp_telemetry::int_gauge_vec(
        "mdp_query_notice_link_up",
        "1 while change notices are received; 0 while cached answers expire on their lifetime alone.",
        &[],
    )
});
static CACHE_OUTDATED: LazyLock<IntCounter> = LazyLock::new(|| {
    mdp_telemetry::int_counter(
        "mdp_query_cache_outdated_total",
        "Cached answers dropped because a change notice named their rows.",
    )
});

/// Registers every metric so they are exported from the start.
pub fn register() {
    LazyLock::force(&NOTICES);
    LazyLock::force(&NOTICE_LINK);
    LazyLock::force(&CACHE_OUTDATED);
    LazyLock::force(&REQUESTS);
    LazyLock::force(&LATENCY);
    LazyLock::force(&SERVED);
    LazyLock::force(&SOURCE_FAILURES);
    LazyLock::force(&RATE_LIMITED);
}

/// Times one request and counts it by status.
pub struct RequestTimer {
    route: &'static str,
    started: Instant,
}

impl RequestTimer {
    pub fn start(route: &'static str) -> Self {
        RequestTimer {
            route,
            started: Instant::now(),
        }
    }

    pub fn finish(self, status: actix_web::http::StatusCode) {
        let elapsed = self.started.elapsed();
        REQUESTS
            .with_label_values(&[self.route, status.as_str()])
            .inc();
        LATENCY
            .with_label_values(&[self.route])
            .observe(elapsed.as_secs_f64());
        tracing::debug!(
            route = self.route,
            status = status.as_u16(),
            elapsed_us = elapsed.as_micros() as u64,
            "request served"
        );
    }
}

/// Counts an answer by what served it.
pub fn served(by: ServedBy) {
    SERVED.with_label_values(&[by.as_str()]).inc();
}

/// Counts a request refused by the degraded-mode rate limit.
pub fn rate_limited() {
    tracing::warn!("request refused: redis degraded and mysql read budget used up");
    RATE_LIMITED.inc();
}

/// A storage read failed.
pub struct SourceFailed<'a> {
    pub source: &'static str,
    pub error: &'a str,
}

impl SourceFailed<'_> {
    pub fn emit(self) {
        tracing::warn!(
            source = self.source,
            error = self.error,
            "report storage read failed"
        );
        SOURCE_FAILURES.with_label_values(&[self.source]).inc();
    }
}

/// A change notice was received.
pub fn notice(outcome: &'static str) {
    NOTICES.with_label_values(&[outcome]).inc();
}

/// The change notices link went up or down.
pub fn notice_link(up: bool) {
    NOTICE_LINK
        .with_label_values(&[] as &[&str])
        .set(i64::from(up));
}

/// A cached answer was dropped: a change notice named its rows.
pub fn cache_outdated() {
    CACHE_OUTDATED.inc();
}
