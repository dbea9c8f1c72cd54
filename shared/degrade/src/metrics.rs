//! Prometheus metrics of degrade machines, registered once on the default
//! registry, and the transition event that logs, counts and traces together.

use crate::machine::State;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use std::sync::LazyLock;

static TRANSITIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    // The name and labels are constants that satisfy Prometheus' naming rules,
    // so construction cannot fail.
    #[allow(clippy::expect_used)]
    let counter = IntCounterVec::new(
        Opts::new(
            "mdp_degrade_transitions_total",
            "State changes of degrade machines, by the state entered.",
        ),
        &["service", "machine", "to"],
    )
    .expect("valid metric definition");
    register(counter)
});

static STATE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    let gauge = IntGaugeVec::new(
        Opts::new(
            "mdp_degrade_state",
            "Current state of each degrade machine: 0 normal, 1 degraded, 2 recovering.",
        ),
        &["service", "machine"],
    )
    .expect("valid metric definition");
    register(gauge)
});

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // Registration fails only when the same metric is already registered,
    // which leaves the existing one exported; nothing to do then.
    if let Err(error) = prometheus::default_registry().register(Box::new(c.clone())) {
        tracing::debug!(%error, "degrade metric already registered");
    }
    c
}

/// Sets the state gauge of a machine.
pub(crate) fn set_state(service: &str, machine: &str, state: State) {
    STATE
        .with_label_values(&[service, machine])
        .set(state.gauge_value());
}

/// Current value of the state gauge (for tests and diagnostics).
#[cfg(test)]
pub(crate) fn state_gauge(service: &str, machine: &str) -> i64 {
    STATE.with_label_values(&[service, machine]).get()
}

/// Current value of the transition counter (for tests and diagnostics).
#[cfg(test)]
pub(crate) fn transitions(service: &str, machine: &str, to: State) -> u64 {
    TRANSITIONS
        .with_label_values(&[service, machine, to.as_str()])
        .get()
}

/// One state change of one machine.
#[derive(Debug, Clone)]
pub(crate) struct Transition {
    pub from: State,
    pub to: State,
    pub reason: String,
}

impl Transition {
    /// Logs the transition (warn when degrading, info otherwise) inside its own
    /// span, so it also shows in traces, and counts it.
    pub(crate) fn emit(&self, service: &str, machine: &str) {
        let span = tracing::info_span!(
            "degrade_transition",
            service,
            machine,
            from = self.from.as_str(),
            to = self.to.as_str()
        );
        let _entered = span.enter();
        let (from, to, reason) = (self.from.as_str(), self.to.as_str(), self.reason.as_str());
        match self.to {
            State::Degraded => {
                tracing::warn!(
                    service,
                    machine,
                    from,
                    to,
                    reason,
                    "degrade machine degraded"
                )
            }
            State::Recovering => {
                tracing::info!(
                    service,
                    machine,
                    from,
                    to,
                    reason,
                    "degrade machine probing primary"
                )
            }
            State::Normal => {
                tracing::info!(
                    service,
                    machine,
                    from,
                    to,
                    reason,
                    "degrade machine recovered"
                )
            }
        }
        TRANSITIONS.with_label_values(&[service, machine, to]).inc();
    }
}
