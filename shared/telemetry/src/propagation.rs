//! W3C trace-context (`traceparent`) helpers: carry the current span's trace
//! across RabbitMQ headers and HTTP, and make consumer spans children of it.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Name of the W3C trace-context header (AMQP header and HTTP header alike).
pub const TRACEPARENT: &str = "traceparent";

/// The W3C `traceparent` of `cx`, `None` when it carries no valid span.
pub fn traceparent_of_context(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The W3C `traceparent` of the current `tracing` span.
///
/// `None` when there is no current span, the span is disabled by the filter,
/// or telemetry was not initialised (no OpenTelemetry layer).
pub fn current_traceparent() -> Option<String> {
    traceparent_of_context(&tracing::Span::current().context())
}

/// The trace id (32 hex digits) of the current span, for log fields and
/// responses; `None` like [`current_traceparent`].
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The remote parent context described by a `traceparent` value.
///
/// An invalid or empty value gives an empty context (a span parented to it
/// becomes a new root), never an error.
pub fn context_from_traceparent(tp: &str) -> Context {
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert(TRACEPARENT.to_string(), tp.trim().to_string());
    TraceContextPropagator::new().extract_with_context(&Context::new(), &carrier)
}

/// Makes `span` a child of the remote span described by `tp`.
///
/// Call it right after creating the span and before entering it: once a span
/// has started its parent is fixed. Without a valid `tp` nothing changes.
pub fn set_parent(span: &tracing::Span, tp: Option<&str>) {
    let Some(tp) = tp else { return };
    let cx = context_from_traceparent(tp);
    if !cx.span().span_context().is_valid() {
        tracing::debug!(traceparent = tp, "ignoring invalid traceparent");
        return;
    }
    if let Err(error) = span.set_parent(cx) {
        tracing::debug!(error = %error, "could not set the parent of a span");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_round_trips_through_a_context() {
        let cx = context_from_traceparent(TP);
        assert!(cx.span().span_context().is_remote());
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(traceparent_of_context(&cx).as_deref(), Some(TP));
    }

    #[test]
    fn invalid_traceparent_gives_an_empty_context() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            let cx = context_from_traceparent(bad);
            assert!(!cx.span().span_context().is_valid(), "{bad}");
            assert_eq!(traceparent_of_context(&cx), None);
        }
    }

    #[test]
    fn no_subscriber_means_no_traceparent() {
        let span = tracing::info_span!("outside");
        let _entered = span.enter();
        assert_eq!(current_traceparent(), None);
        assert_eq!(current_trace_id(), None);
        // Must not panic either.
        set_parent(&tracing::Span::current(), Some(TP));
        set_parent(&tracing::Span::current(), Some("bad"));
    }
}
