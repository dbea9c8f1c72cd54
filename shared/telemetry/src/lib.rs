//! Telemetry shared by every service: one tracing subscriber (filter, JSON or
//! pretty logs, OTLP span export), W3C trace-context helpers and Prometheus text.
//!
//! Call [`init_telemetry`] once at the start of `main` and keep the returned
//! [`TelemetryGuard`] alive until the service exits; dropping it flushes spans.

mod metrics;
mod propagation;
mod subscriber;

pub use metrics::{
    gauge_vec, histogram_vec, int_counter, int_counter_vec, int_gauge_vec, render_metrics,
};
pub use propagation::{
    context_from_traceparent, current_trace_id, current_traceparent, set_parent,
    traceparent_of_context, TRACEPARENT,
};
pub use subscriber::{init_telemetry, try_init_telemetry, TelemetryError, TelemetryGuard};

/// Renders an error and all its sources as `outer: inner: innermost`.
///
/// The boundary error types of the platform keep their own `Display` short (no
/// cause chain); use this in log fields so the whole story lands in one line:
/// `tracing::warn!(error = %mdp_telemetry::error_chain(&e), "…")`.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some error types repeat their source's text in their own message.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connection refused")
        }
    }
    impl std::error::Error for Inner {}

    #[derive(Debug)]
    struct Outer(Inner);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("failed to export spans")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn error_chain_joins_sources() {
        assert_eq!(
            error_chain(&Outer(Inner)),
            "failed to export spans: connection refused"
        );
        assert_eq!(error_chain(&Inner), "connection refused");
    }
}
