//! Prometheus metrics on the default registry: idempotent constructors (the
//! same name gives the same collector, also across tests) and the text export.

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    TextEncoder,
};
use std::any::Any;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

static COLLECTORS: LazyLock<Mutex<HashMap<String, Box<dyn Any + Send + Sync>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Name used when a metric definition is rejected by Prometheus (bad name or
/// label); such a metric still works for the caller but is never exported.
const INVALID_NAME: &str = "mdp_invalid_metric";

/// Builds a collector from (name, help, label names, custom options allowed).
type Make<'a, T> = &'a dyn Fn(&str, &str, &[String], bool) -> prometheus::Result<T>;

fn get_or_register<T>(name: &str, help: &str, labels: &[&str], make: Make<'_, T>) -> T
where
    T: Collector + Clone + Send + Sync + 'static,
{
    let mut map = COLLECTORS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(existing) = map.get(name) {
        if let Some(found) = existing.downcast_ref::<T>() {
            return found.clone();
        }
        tracing::error!(
            metric = name,
            "metric registered twice with different types"
        );
        return fallback(make, labels.len());
    }
    let label_names: Vec<String> = labels.iter().map(|l| (*l).to_string()).collect();
    let collector = match make(name, help, &label_names, true) {
        Ok(collector) => collector,
        Err(error) => {
            tracing::error!(metric = name, error = %error, "invalid metric definition");
            return fallback(make, labels.len());
        }
    };
    match prometheus::register(Box::new(collector.clone())) {
        Ok(()) => {
            map.insert(name.to_string(), Box::new(collector.clone()));
        }
        Err(error) => {
            tracing::error!(metric = name, error = %error, "failed to register metric");
        }
    }
    collector
}

/// A valid, unregistered collector with `label_count` labels.
///
/// # Panics
/// Never in practice: the name, help and label names used here are valid and
/// custom options (buckets) are left out, which is all Prometheus checks.
fn fallback<T>(make: Make<'_, T>, label_count: usize) -> T {
    let labels: Vec<String> = (0..label_count).map(|i| format!("label{i}")).collect();
    match make(
        INVALID_NAME,
        "metric with an invalid definition",
        &labels,
        false,
    ) {
        Ok(collector) => collector,
        Err(error) => unreachable!("fallback metric definition rejected: {error}"),
    }
}

fn refs(labels: &[String]) -> Vec<&str> {
    labels.iter().map(String::as_str).collect()
}

/// A counter family on the default registry; the same `name` returns the same collector.
///
/// Names are `mdp_…_total`; labels must have few distinct values. An invalid
/// definition is logged and gives a working collector that is not exported.
pub fn int_counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    get_or_register(name, help, labels, &|n, h, l, _| {
        IntCounterVec::new(Opts::new(n, h), &refs(l))
    })
}

/// A single counter on the default registry; the same `name` returns the same collector.
pub fn int_counter(name: &str, help: &str) -> IntCounter {
    get_or_register(name, help, &[], &|n, h, _, _| {
        IntCounter::with_opts(Opts::new(n, h))
    })
}

/// An integer gauge family on the default registry.
pub fn int_gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    get_or_register(name, help, labels, &|n, h, l, _| {
        IntGaugeVec::new(Opts::new(n, h), &refs(l))
    })
}

/// A float gauge family on the default registry.
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    get_or_register(name, help, labels, &|n, h, l, _| {
        GaugeVec::new(Opts::new(n, h), &refs(l))
    })
}

/// A histogram family on the default registry; empty `buckets` means the
/// Prometheus default buckets (5 ms … 10 s, for latencies in seconds).
pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    get_or_register(name, help, labels, &|n, h, l, custom| {
        let mut opts = HistogramOpts::new(n, h);
        if custom && !buckets.is_empty() {
            // Checked here: Prometheus only checks buckets when a child is created, by panicking.
            if !buckets.windows(2).all(|w| w[0] < w[1]) {
                return Err(prometheus::Error::Msg(format!(
                    "histogram buckets must be strictly increasing: {buckets:?}"
                )));
            }
            opts = opts.buckets(buckets.to_vec());
        }
        HistogramVec::new(opts, &refs(l))
    })
}

/// Every metric of the default registry in the Prometheus text format.
pub fn render_metrics() -> String {
    let families = prometheus::gather();
    let mut buf = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&families, &mut buf) {
        tracing::error!(error = %error, "failed to encode metrics");
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_gives_same_collector_and_renders() {
        let a = int_counter_vec("mdp_test_things_total", "Things.", &["stage"]);
        let b = int_counter_vec("mdp_test_things_total", "Things.", &["stage"]);
        a.with_label_values(&["changes"]).inc();
        b.with_label_values(&["changes"]).inc_by(2);
        assert_eq!(a.with_label_values(&["changes"]).get(), 3);
        let text = render_metrics();
        assert!(
            text.contains("mdp_test_things_total{stage=\"changes\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("# HELP mdp_test_things_total Things."),
            "{text}"
        );
    }

    #[test]
    fn invalid_definitions_do_not_panic() {
        let bad = int_counter_vec("mdp bad name", "Bad.", &["x"]);
        bad.with_label_values(&["1"]).inc();
        assert_eq!(bad.with_label_values(&["1"]).get(), 1);
        assert!(!render_metrics().contains("mdp bad name"));
        let no_help = int_counter("mdp_test_no_help_total", "");
        no_help.inc();
        let bad_buckets = histogram_vec("mdp_test_bad_buckets", "Bad.", &[], &[2.0, 1.0]);
        bad_buckets.with_label_values(&[] as &[&str]).observe(1.0);
        let bad_label = gauge_vec("mdp_test_bad_label", "Bad.", &["not ok"]);
        bad_label.with_label_values(&["v"]).set(1.5);
        assert!(!render_metrics().contains("mdp_test_bad_label"));
    }

    #[test]
    fn type_clash_returns_a_working_unexported_collector() {
        let c = int_counter("mdp_test_clash_total", "Clash.");
        c.inc();
        let g = int_gauge_vec("mdp_test_clash_total", "Clash.", &["a"]);
        g.with_label_values(&["b"]).set(7);
        assert_eq!(g.with_label_values(&["b"]).get(), 7);
        let text = render_metrics();
        assert!(text.contains("mdp_test_clash_total 1"), "{text}");
    }

    #[test]
    fn histograms_use_given_buckets() {
        let h = histogram_vec("mdp_test_latency_seconds", "Latency.", &["op"], &[0.1, 1.0]);
        h.with_label_values(&["x"]).observe(0.5);
        let text = render_metrics();
        assert!(
            text.contains("mdp_test_latency_seconds_bucket{op=\"x\",le=\"1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mdp_test_latency_seconds_bucket{op=\"x\",le=\"0.1\"} 0"),
            "{text}"
        );
    }
}
