//! Every transition of the machine, driven by a manual clock.

use super::*;
use crate::clock::ManualClock;
use crate::metrics;

const T0: i64 = 1_000_000;

fn machine(service: &str, policy: Policy) -> (DegradeMachine, ManualClock) {
    let clock = ManualClock::new(T0);
    let m = DegradeMachine::with_clock(service, "mysql", policy, Arc::new(clock.clone()));
    (m, clock)
}

fn default_machine(service: &str) -> (DegradeMachine, ManualClock) {
    machine(service, Policy::default())
}

fn degrade(m: &DegradeMachine) {
    for _ in 0..m.policy().failure_threshold.max(1) {
        m.record_failure("connection refused");
    }
    assert_eq!(m.state(), State::Degraded);
}

#[test]
fn starts_normal_and_allows_primary() {
    let (m, _) = default_machine("t-start");
    assert_eq!(m.state(), State::Normal);
    assert!(!m.is_degraded());
    assert!(m.allow_primary());
    assert_eq!(metrics::state_gauge("t-start", "mysql"), 0);
    let s = m.status();
    assert_eq!(s.machine, "mysql");
    assert_eq!(s.state, "normal");
    assert_eq!(s.since_ms, T0);
    assert_eq!(s.forced, None);
    assert_eq!(s.reason, None);
    assert_eq!(s.transitions_total, 0);
}

#[test]
fn default_policy_is_three_failures_two_seconds_two_successes() {
    assert_eq!(
        Policy::default(),
        Policy {
            failure_threshold: 3,
            open_ms: 2000,
            success_threshold: 2
        }
    );
}

#[test]
fn consecutive_failures_degrade_and_a_success_resets_the_count() {
    let (m, clock) = default_machine("t-fail");
    m.record_failure("e1");
    m.record_failure("e2");
    m.record_success();
    m.record_failure("e3");
    m.record_failure("e4");
    assert_eq!(m.state(), State::Normal, "count was reset by the success");
    clock.advance(10);
    m.record_failure("timeout after 5s");
    assert_eq!(m.state(), State::Degraded);
    assert!(m.is_degraded());
    assert!(!m.allow_primary());
    let s = m.status();
    assert_eq!(s.state, "degraded");
    assert_eq!(s.since_ms, T0 + 10);
    assert_eq!(s.transitions_total, 1);
    assert_eq!(
        s.reason.as_deref(),
        Some("3 consecutive failures, last: timeout after 5s")
    );
    assert_eq!(metrics::state_gauge("t-fail", "mysql"), 1);
    assert_eq!(metrics::transitions("t-fail", "mysql", State::Degraded), 1);
    assert_eq!(metrics::transitions("t-fail", "mysql", State::Normal), 0);
}

#[test]
fn degraded_admits_one_probe_after_the_open_interval() {
    let (m, clock) = default_machine("t-open");
    degrade(&m);
    clock.advance(1999);
    assert!(!m.allow_primary());
    assert_eq!(m.state(), State::Degraded);
    clock.advance(1);
    assert!(m.allow_primary(), "the probe");
    assert_eq!(m.state(), State::Recovering);
    assert!(m.is_degraded(), "recovering still counts as degraded");
    assert!(!m.allow_primary(), "one probe at a time");
    assert_eq!(m.status().since_ms, T0 + 2000);
    assert_eq!(
        m.status().reason.as_deref(),
        Some("open interval elapsed, probing primary")
    );
    assert_eq!(metrics::state_gauge("t-open", "mysql"), 2);
    assert_eq!(
        metrics::transitions("t-open", "mysql", State::Recovering),
        1
    );
}

#[test]
fn recovering_returns_to_normal_after_enough_successful_probes() {
    let (m, clock) = default_machine("t-recover");
    degrade(&m);
    clock.advance(2000);
    assert!(m.allow_primary());
    m.record_success();
    assert_eq!(m.state(), State::Recovering, "1 of 2 successes");
    assert!(
        m.allow_primary(),
        "next probe admitted once the first reported"
    );
    assert!(!m.allow_primary());
    m.record_success();
    assert_eq!(m.state(), State::Normal);
    assert!(m.allow_primary());
    let s = m.status();
    assert_eq!(s.reason.as_deref(), Some("2 successful probes"));
    assert_eq!(s.transitions_total, 3);
    assert_eq!(metrics::state_gauge("t-recover", "mysql"), 0);
    assert_eq!(metrics::transitions("t-recover", "mysql", State::Normal), 1);
    // Back in normal, the failure count starts from zero again.
    m.record_failure("x");
    m.record_failure("x");
    assert_eq!(m.state(), State::Normal);
}

#[test]
fn a_failed_probe_degrades_again_with_a_new_open_interval() {
    let (m, clock) = default_machine("t-reprobe");
    degrade(&m);
    clock.advance(2000);
    assert!(m.allow_primary());
    m.record_success();
    assert!(m.allow_primary());
    clock.advance(5);
    m.record_failure("still down");
    assert_eq!(m.state(), State::Degraded);
    assert_eq!(
        m.status().reason.as_deref(),
        Some("probe failed: still down")
    );
    assert_eq!(m.status().since_ms, T0 + 2005);
    clock.advance(1999);
    assert!(
        !m.allow_primary(),
        "a new open interval started at the failure"
    );
    clock.advance(1);
    assert!(m.allow_primary());
    assert_eq!(m.state(), State::Recovering);
    m.record_success();
    assert_eq!(m.state(), State::Recovering, "successes restart from zero");
    assert_eq!(
        metrics::transitions("t-reprobe", "mysql", State::Degraded),
        2
    );
    assert_eq!(
        metrics::transitions("t-reprobe", "mysql", State::Recovering),
        2
    );
}

#[test]
fn a_probe_never_reported_is_replaced_after_the_open_interval() {
    let (m, clock) = default_machine("t-lost");
    degrade(&m);
    clock.advance(2000);
    assert!(m.allow_primary());
    clock.advance(1999);
    assert!(!m.allow_primary());
    clock.advance(1);
    assert!(m.allow_primary(), "the lost probe no longer blocks");
    assert_eq!(m.state(), State::Recovering);
}

#[test]
fn failures_while_degraded_do_not_postpone_the_probe() {
    let (m, clock) = default_machine("t-nopostpone");
    degrade(&m);
    clock.advance(1500);
    m.record_failure("fallback path also saw an error");
    clock.advance(500);
    assert!(m.allow_primary());
    assert_eq!(m.state(), State::Recovering);
}

#[test]
fn successes_while_degraded_count_only_after_the_open_interval() {
    let (m, clock) = default_machine("t-lateok");
    degrade(&m);
    m.record_success();
    assert_eq!(
        m.state(),
        State::Degraded,
        "a call started before degrading"
    );
    clock.advance(2000);
    m.record_success();
    assert_eq!(m.state(), State::Recovering, "1 of 2 successes");
    m.record_success();
    assert_eq!(m.state(), State::Normal);

    let (m1, clock1) = machine(
        "t-lateok1",
        Policy {
            failure_threshold: 1,
            open_ms: 100,
            success_threshold: 1,
        },
    );
    m1.record_failure("down");
    assert_eq!(m1.state(), State::Degraded);
    clock1.advance(100);
    m1.record_success();
    assert_eq!(m1.state(), State::Normal);
    assert_eq!(
        m1.status().transitions_total,
        3,
        "degraded → recovering → normal"
    );
}

#[test]
fn zero_thresholds_act_as_one() {
    let (m, clock) = machine(
        "t-zero",
        Policy {
            failure_threshold: 0,
            open_ms: 0,
            success_threshold: 0,
        },
    );
    m.record_failure("e");
    assert_eq!(m.state(), State::Degraded);
    clock.advance(0);
    assert!(m.allow_primary());
    m.record_success();
    assert_eq!(m.state(), State::Normal);
}

#[test]
fn only_one_of_many_concurrent_callers_gets_the_probe() {
    let (m, clock) = default_machine("t-concurrent");
    degrade(&m);
    clock.advance(2000);
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || m.allow_primary())
        })
        .collect();
    let admitted = handles
        .into_iter()
        .map(|h| h.join().unwrap_or(false))
        .filter(|a| *a)
        .count();
    assert_eq!(admitted, 1);
    assert_eq!(
        metrics::transitions("t-concurrent", "mysql", State::Recovering),
        1
    );
}

#[test]
fn force_degraded_holds_until_auto() {
    let (m, clock) = default_machine("t-forcedeg");
    m.set_override(Override::ForceDegraded, Some("mysql maintenance".into()));
    assert_eq!(m.state(), State::Degraded);
    assert_eq!(m.forced(), Some(State::Degraded));
    let s = m.status();
    assert_eq!(s.forced.as_deref(), Some("degraded"));
    assert_eq!(
        s.reason.as_deref(),
        Some("forced degraded by operator: mysql maintenance")
    );
    assert_eq!(s.transitions_total, 1);
    assert_eq!(
        metrics::transitions("t-forcedeg", "mysql", State::Degraded),
        1
    );
    assert_eq!(metrics::state_gauge("t-forcedeg", "mysql"), 1);
    clock.advance(60_000);
    assert!(!m.allow_primary(), "no probe while forced");
    m.record_success();
    m.record_success();
    assert_eq!(m.state(), State::Degraded, "successes ignored while forced");

    m.set_override(Override::Auto, Some("maintenance over".into()));
    assert_eq!(m.forced(), None);
    assert_eq!(
        m.state(),
        State::Degraded,
        "auto resumes from the forced state"
    );
    assert_eq!(
        m.status().reason.as_deref(),
        Some("override cleared by operator: maintenance over")
    );
    assert!(
        m.allow_primary(),
        "the open interval has long passed: probe now"
    );
    assert_eq!(m.state(), State::Recovering);
    m.record_success();
    m.record_success();
    assert_eq!(m.state(), State::Normal);
}

#[test]
fn force_normal_holds_until_auto() {
    let (m, _) = default_machine("t-forcenorm");
    degrade(&m);
    m.set_override(Override::ForceNormal, None);
    assert_eq!(m.state(), State::Normal);
    assert_eq!(m.status().forced.as_deref(), Some("normal"));
    assert_eq!(
        m.status().reason.as_deref(),
        Some("forced normal by operator: no reason given")
    );
    assert!(m.allow_primary());
    for _ in 0..10 {
        m.record_failure("still failing");
    }
    assert_eq!(m.state(), State::Normal, "failures ignored while forced");
    assert_eq!(metrics::state_gauge("t-forcenorm", "mysql"), 0);

    m.set_override(Override::Auto, None);
    assert_eq!(m.state(), State::Normal);
    m.record_failure("a");
    m.record_failure("b");
    assert_eq!(m.state(), State::Normal, "count restarted at auto");
    m.record_failure("c");
    assert_eq!(m.state(), State::Degraded);
}

#[test]
fn forcing_the_current_state_is_not_a_transition() {
    let (m, _) = default_machine("t-forcesame");
    degrade(&m);
    m.set_override(Override::ForceDegraded, Some("keep it off".into()));
    let s = m.status();
    assert_eq!(s.transitions_total, 1);
    assert_eq!(s.forced.as_deref(), Some("degraded"));
    assert_eq!(
        s.reason.as_deref(),
        Some("forced degraded by operator: keep it off")
    );
    assert_eq!(
        metrics::transitions("t-forcesame", "mysql", State::Degraded),
        1
    );
}

#[test]
fn auto_without_override_changes_nothing() {
    let (m, _) = default_machine("t-autonoop");
    m.record_failure("x");
    m.set_override(Override::Auto, Some("noop".into()));
    assert_eq!(m.state(), State::Normal);
    assert_eq!(m.status().reason, None);
    m.record_failure("y");
    m.record_failure("z");
    assert_eq!(
        m.state(),
        State::Degraded,
        "the failure count survived auto"
    );
}

#[test]
fn switching_between_overrides_transitions_directly() {
    let (m, _) = default_machine("t-switch");
    m.set_override(Override::ForceDegraded, None);
    m.set_override(Override::ForceNormal, None);
    assert_eq!(m.state(), State::Normal);
    assert_eq!(m.forced(), Some(State::Normal));
    assert_eq!(m.status().transitions_total, 2);
    assert_eq!(metrics::transitions("t-switch", "mysql", State::Normal), 1);
}

#[test]
fn state_names_round_trip() {
    for s in [State::Normal, State::Degraded, State::Recovering] {
        assert_eq!(s.as_str().parse::<State>(), Ok(s));
        assert_eq!(s.to_string(), s.as_str());
    }
    assert_eq!(
        "down".parse::<State>(),
        Err(UnknownState("down".to_string()))
    );
    assert_eq!(State::Recovering.gauge_value(), 2);
}

thread_local! {
    static CAPTURED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes log output into the current thread's capture buffer.
struct ThreadBuffer;

impl std::io::Write for ThreadBuffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        CAPTURED.with(|c| c.borrow_mut().extend_from_slice(data));
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures the JSON log lines written by this thread while `f` runs.
///
/// One global subscriber writes into per-thread buffers: a thread-scoped
/// subscriber would race with tests on other threads over tracing's global
/// callsite cache and miss events.
fn capture_logs(f: impl FnOnce()) -> Vec<serde_json::Value> {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(|| ThreadBuffer)
            .try_init();
    });
    CAPTURED.with(|c| c.borrow_mut().clear());
    f();
    let bytes = CAPTURED.with(|c| std::mem::take(&mut *c.borrow_mut()));
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn every_transition_is_logged_with_its_fields() {
    let (m, clock) = default_machine("t-logs");
    let logs = capture_logs(|| {
        degrade(&m);
        clock.advance(2000);
        m.allow_primary();
        m.record_success();
        m.allow_primary();
        m.record_success();
    });
    let transitions: Vec<(String, String, String)> = logs
        .iter()
        .filter(|l| l["fields"]["to"].is_string())
        .map(|l| {
            assert_eq!(l["fields"]["service"], "t-logs");
            assert_eq!(l["fields"]["machine"], "mysql");
            assert!(l["fields"]["reason"].is_string());
            (
                l["level"].as_str().unwrap_or("").to_string(),
                l["fields"]["from"].as_str().unwrap_or("").to_string(),
                l["fields"]["to"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("WARN", "normal", "degraded"),
        ("INFO", "degraded", "recovering"),
        ("INFO", "recovering", "normal"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(transitions, expected);
    let degraded = logs
        .iter()
        .find(|l| l["fields"]["to"] == "degraded")
        .map(|l| l["fields"]["reason"].clone());
    assert_eq!(
        degraded,
        Some(serde_json::json!(
            "3 consecutive failures, last: connection refused"
        ))
    );
}

#[test]
fn overrides_are_logged() {
    let (m, _) = default_machine("t-overridelog");
    let logs = capture_logs(|| {
        m.set_override(Override::ForceDegraded, Some("drill".into()));
        m.set_override(Override::Auto, None);
    });
    let actions: Vec<&str> = logs
        .iter()
        .filter_map(|l| l["fields"]["action"].as_str())
        .collect();
    assert_eq!(actions, vec!["force_degraded", "auto"]);
    assert!(logs.iter().any(|l| l["fields"]["to"] == "degraded"
        && l["fields"]["reason"] == "forced degraded by operator: drill"));
}
