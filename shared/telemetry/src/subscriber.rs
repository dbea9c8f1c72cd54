//! The global tracing subscriber: EnvFilter, JSON or pretty logs on stdout and
//! an OpenTelemetry layer exporting spans over OTLP/HTTP when an endpoint is set.

use mdp_config::TelemetrySettings;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::time::Duration;
use tracing::Level;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// How long one OTLP export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long dropping the guard waits for the last spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of [`try_init_telemetry`].
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A global tracing subscriber is already installed (e.g. a second call in tests).
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialized,
}

/// Keeps span export alive; dropping it flushes and shuts the exporter down.
///
/// Export failures (no collector listening, timeouts) are logged, never
/// returned and never panic.
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    exporting: bool,
}

impl TelemetryGuard {
    /// A guard that owns nothing (telemetry was already initialised elsewhere).
    fn inert() -> Self {
        TelemetryGuard {
            provider: None,
            exporting: false,
        }
    }

    /// Whether spans are exported over OTLP by this guard's provider.
    pub fn is_exporting(&self) -> bool {
        self.exporting
    }

    /// Exports the spans finished so far; `false` when the export failed (the
    /// failure is logged). Blocks up to the export timeout.
    pub fn flush(&self) -> bool {
        match &self.provider {
            Some(provider) if self.exporting => match provider.force_flush() {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(error = %error, "span export flush failed");
                    false
                }
            },
            _ => true,
        }
    }
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("exporting", &self.exporting)
            .finish()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // The SDK's batch processor runs on its own thread and the blocking HTTP
        // client lives there too, so shutting down from a runtime thread only waits.
        if let Err(error) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!(error = %error, "span exporter shutdown reported an error");
        }
    }
}

/// Installs the global tracing subscriber for `service_name`; never fails.
///
/// - logs: JSON lines (`log_format = "json"`) or the pretty format, on stdout,
///   filtered by `RUST_LOG` when set and valid, else `settings.log_filter`,
///   else `info`;
/// - spans: spans and events at `info` and above (whatever the log filter)
///   go to an OpenTelemetry layer with `service.name = service_name`, exported
///   over OTLP/HTTP protobuf to `settings.otlp_endpoint` (`/v1/traces` is
///   appended unless present) through a batch processor; when the endpoint is
///   empty spans still get trace ids (for `traceparent`) but are not exported;
/// - the W3C trace-context propagator becomes the global propagator.
///
/// A second call (or a subscriber installed by someone else) leaves the
/// existing one in place and returns a guard that does nothing.
pub fn init_telemetry(service_name: &str, settings: &TelemetrySettings) -> TelemetryGuard {
    match try_init_telemetry(service_name, settings) {
        Ok(guard) => guard,
        Err(TelemetryError::AlreadyInitialized) => {
            tracing::debug!(
                service = service_name,
                "telemetry already initialised, keeping the existing subscriber"
            );
            TelemetryGuard::inert()
        }
    }
}

/// Like [`init_telemetry`] but reports when a global subscriber already exists.
pub fn try_init_telemetry(
    service_name: &str,
    settings: &TelemetrySettings,
) -> Result<TelemetryGuard, TelemetryError> {
    if tracing::dispatcher::has_been_set() {
        return Err(TelemetryError::AlreadyInitialized);
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    // Problems found while building are logged once the subscriber is in place.
    let mut warnings: Vec<(String, String)> = Vec::new();
    let filter = build_filter(&settings.log_filter, &mut warnings);

    let endpoint = traces_endpoint(&settings.otlp_endpoint);
    let (provider, exporting) = build_provider(service_name, endpoint.as_deref(), &mut warnings);
    let tracer = provider.tracer(service_name.to_string());

    let fmt_layer = if settings.log_format == "pretty" {
        tracing_subscriber::fmt::layer()
            .pretty()
            .with_filter(filter)
            .boxed()
    } else {
        if settings.log_format != "json" {
            warnings.push((
                format!("unknown log_format {:?}, using json", settings.log_format),
                "invalid telemetry setting".to_string(),
            ));
        }
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed()
    };
    // Spans reach the OpenTelemetry layer whatever the log filter says, so
    // traces stay whole with quiet logs. The exporter's own HTTP stack and the
    // SDK must not feed spans back into the exporter.
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter_fn(|meta| {
            *meta.level() <= Level::INFO && !is_exporter_internal(meta.target())
        }));

    let installed = Registry::default()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    if installed.is_err() {
        // Lost a race with another initialisation: drop our provider quietly.
        let _ = provider.shutdown_with_timeout(Duration::from_millis(100));
        return Err(TelemetryError::AlreadyInitialized);
    }
    opentelemetry::global::set_tracer_provider(provider.clone());

    for (error, message) in warnings {
        tracing::warn!(error = %error, "{message}");
    }
    tracing::info!(
        service = service_name,
        otlp_endpoint = endpoint.as_deref().unwrap_or(""),
        exporting,
        "telemetry initialised"
    );
    Ok(TelemetryGuard {
        provider: Some(provider),
        exporting,
    })
}

/// The tracer provider: resource `service.name`, and a batch OTLP/HTTP
/// exporter when `endpoint` is set and the exporter could be built.
fn build_provider(
    service_name: &str,
    endpoint: Option<&str>,
    warnings: &mut Vec<(String, String)>,
) -> (SdkTracerProvider, bool) {
    let resource = Resource::builder()
        .with_service_name(service_name.to_string())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    let mut exporting = false;
    if let Some(endpoint) = endpoint {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
        {
            Ok(exporter) => {
                builder = builder.with_batch_exporter(exporter);
                exporting = true;
            }
            Err(error) => warnings.push((
                format!("span export disabled: {error}"),
                "failed to build the OTLP span exporter".to_string(),
            )),
        }
    }
    (builder.build(), exporting)
}

fn is_exporter_internal(target: &str) -> bool {
    ["opentelemetry", "hyper", "reqwest", "h2", "tower", "rustls"]
        .iter()
        .any(|prefix| target.starts_with(prefix))
}

/// `RUST_LOG` (when set and valid) wins over the configured directives.
fn build_filter(configured: &str, warnings: &mut Vec<(String, String)>) -> EnvFilter {
    if let Ok(env) = std::env::var(EnvFilter::DEFAULT_ENV) {
        if !env.trim().is_empty() {
            match EnvFilter::try_new(&env) {
                Ok(filter) => return filter,
                Err(error) => warnings.push((
                    format!("RUST_LOG={env:?}: {error}"),
                    "ignoring invalid RUST_LOG".to_string(),
                )),
            }
        }
    }
    match EnvFilter::try_new(configured) {
        Ok(filter) => filter,
        Err(error) => {
            warnings.push((
                format!("log_filter={configured:?}: {error}"),
                "invalid telemetry.log_filter, using info".to_string(),
            ));
            EnvFilter::new("info")
        }
    }
}

/// The OTLP/HTTP traces URL for a configured endpoint; `None` when export is off.
pub(crate) fn traces_endpoint(configured: &str) -> Option<String> {
    let base = configured.trim().trim_end_matches('/');
    if base.is_empty() {
        return None;
    }
    if base.ends_with("/v1/traces") {
        Some(base.to_string())
    } else {
        Some(format!("{base}/v1/traces"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Span as _, Tracer as _};
    use std::time::Instant;

    /// A local port nothing listens on.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        port
    }

    fn export_to_nowhere() {
        let endpoint = traces_endpoint(&format!("http://127.0.0.1:{}", closed_port()));
        let mut warnings = Vec::new();
        let (provider, exporting) = build_provider("mdp-test", endpoint.as_deref(), &mut warnings);
        assert!(exporting);
        assert!(warnings.is_empty());
        let tracer = provider.tracer("mdp-test");
        for i in 0..10 {
            let mut span = tracer.start(format!("work-{i}"));
            span.end();
        }
        let guard = TelemetryGuard {
            provider: Some(provider),
            exporting,
        };
        let started = Instant::now();
        assert!(!guard.flush(), "flush to a closed port must report failure");
        drop(guard);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_collector_never_fails_on_a_multi_thread_runtime() {
        export_to_nowhere();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn unreachable_collector_never_fails_on_a_current_thread_runtime() {
        export_to_nowhere();
    }

    #[actix_rt::test]
    async fn unreachable_collector_never_fails_on_an_actix_runtime() {
        export_to_nowhere();
    }

    #[test]
    fn unreachable_collector_never_fails_without_a_runtime() {
        export_to_nowhere();
    }

    #[test]
    fn traces_endpoint_appends_the_signal_path_once() {
        assert_eq!(traces_endpoint(""), None);
        assert_eq!(traces_endpoint("  "), None);
        assert_eq!(
            traces_endpoint("http://127.0.0.1:4318").as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            traces_endpoint("http://collector:4318/").as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(
            traces_endpoint("http://collector:4318/v1/traces").as_deref(),
            Some("http://collector:4318/v1/traces")
        );
    }

    #[test]
    fn exporter_targets_are_recognised() {
        assert!(is_exporter_internal("opentelemetry_sdk::trace"));
        assert!(is_exporter_internal("hyper_util::client"));
        assert!(is_exporter_internal("reqwest::blocking"));
        assert!(!is_exporter_internal("mdp_ingest::binlog"));
    }

    #[test]
    fn invalid_configured_filter_falls_back() {
        let mut warnings = Vec::new();
        // RUST_LOG may be set by whoever runs the tests; only check the fallback path.
        if std::env::var(EnvFilter::DEFAULT_ENV).is_err() {
            let filter = build_filter("info,=[", &mut warnings);
            assert_eq!(filter.to_string(), "info");
            assert_eq!(warnings.len(), 1);
        }
    }
}
