//! The circuit-breaker state machine guarding one dependency of a service,
//! with operator overrides that hold until cleared.

use crate::clock::{Clock, SystemClock};
use crate::metrics::{self, Transition};
use mdp_types::{DegradeStatus, Override};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

/// State of a degrade machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// The primary path is used.
    Normal,
    /// The primary path is failing (or an operator forced it off): the
    /// degraded behaviour is used.
    Degraded,
    /// The primary path is being probed after an open interval; one call at a
    /// time goes through until enough of them succeed.
    Recovering,
}

impl State {
    /// The wire form used in heartbeats, logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Normal => "normal",
            State::Degraded => "degraded",
            State::Recovering => "recovering",
        }
    }

    /// Value of the `mdp_degrade_state` gauge: 0 normal, 1 degraded, 2 recovering.
    pub fn gauge_value(&self) -> i64 {
        match self {
            State::Normal => 0,
            State::Degraded => 1,
            State::Recovering => 2,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is none of `normal`, `degraded`, `recovering`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown degrade state '{0}' (expected normal, degraded or recovering)")]
pub struct UnknownState(pub String);

impl FromStr for State {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "normal" => Ok(State::Normal),
            "degraded" => Ok(State::Degraded),
            "recovering" => Ok(State::Recovering),
            other => Err(UnknownState(other.to_string())),
        }
    }
}

/// Thresholds of a degrade machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive failures in `normal` that degrade the machine (0 acts as 1).
    pub failure_threshold: u32,
    /// How long the machine stays `degraded` before it lets a probe through, ms.
    pub open_ms: u64,
    /// Successful probes in `recovering` that bring it back to `normal` (0 acts as 1).
    pub success_threshold: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            failure_threshold: 3,
            open_ms: 2000,
            success_threshold: 2,
        }
    }
}

/// A degrade machine (circuit breaker) for one dependency of one service.
///
/// Transitions:
/// - `normal` → `degraded` after `failure_threshold` consecutive failures
///   (a success resets the count);
/// - `degraded` → `recovering` once `open_ms` have passed since it degraded:
///   the next [`allow_primary`](Self::allow_primary) admits one probe (a
///   success recorded after `open_ms` counts as a successful probe too);
/// - `recovering` → `normal` after `success_threshold` successes, one probe
///   in flight at a time; any failure → `degraded` again, with a new open
///   interval.
///
/// An operator override ([`Override::ForceDegraded`] / [`Override::ForceNormal`])
/// puts the machine in that state and suspends automatic transitions until
/// [`Override::Auto`], which resumes them from the forced state.
///
/// Cloning is cheap and clones share the state; the machine is thread safe.
#[derive(Clone)]
pub struct DegradeMachine {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    machine: String,
    policy: Policy,
    clock: Arc<dyn Clock>,
    core: Mutex<Core>,
}

#[derive(Debug)]
struct Core {
    /// Effective state (equal to the forced state while an override holds).
    state: State,
    forced: Option<State>,
    since_ms: i64,
    reason: Option<String>,
    consecutive_failures: u32,
    /// Successes since entering `recovering`.
    successes: u32,
    /// When the probe currently in flight was admitted (`recovering` only).
    probe_started_ms: Option<i64>,
    transitions_total: u64,
}

impl fmt::Debug for DegradeMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = self.inner.lock();
        f.debug_struct("DegradeMachine")
            .field("service", &self.inner.service)
            .field("machine", &self.inner.machine)
            .field("policy", &self.inner.policy)
            .field("state", &core.state)
            .field("forced", &core.forced)
            .finish()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock cannot leave `Core` half-updated in a
        // way that matters more than stopping the service would.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves to `to` (no-op when already there) and sets the gauge while the
    /// lock is held, so concurrent transitions cannot leave it stale.
    fn transition(
        &self,
        core: &mut Core,
        to: State,
        reason: String,
        now: i64,
    ) -> Option<Transition> {
        if core.state == to {
            return None;
        }
        let from = core.state;
        core.state = to;
        core.since_ms = now;
        core.reason = Some(reason.clone());
        core.transitions_total += 1;
        core.probe_started_ms = None;
        match to {
            State::Normal => {
                core.consecutive_failures = 0;
                core.successes = 0;
            }
            State::Degraded => core.successes = 0,
            State::Recovering => core.successes = 0,
        }
        metrics::set_state(&self.service, &self.machine, to);
        Some(Transition { from, to, reason })
    }

    fn emit(&self, transitions: impl IntoIterator<Item = Transition>) {
        for t in transitions {
            t.emit(&self.service, &self.machine);
        }
    }

    fn open_elapsed(&self, core: &Core, now: i64) -> bool {
        now.saturating_sub(core.since_ms) >= i64::try_from(self.policy.open_ms).unwrap_or(i64::MAX)
    }
}

impl DegradeMachine {
    /// A machine in `normal` state using the system clock.
    pub fn new(service: &str, machine: &str, policy: Policy) -> Self {
        Self::with_clock(service, machine, policy, Arc::new(SystemClock))
    }

    /// A machine in `normal` state reading time from `clock`.
    pub fn with_clock(service: &str, machine: &str, policy: Policy, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now_ms();
        metrics::set_state(service, machine, State::Normal);
        DegradeMachine {
            inner: Arc::new(Inner {
                service: service.to_string(),
                machine: machine.to_string(),
                policy,
                clock,
                core: Mutex::new(Core {
                    state: State::Normal,
                    forced: None,
                    since_ms: now,
                    reason: None,
                    consecutive_failures: 0,
                    successes: 0,
                    probe_started_ms: None,
                    transitions_total: 0,
                }),
            }),
        }
    }

    /// The service this machine belongs to.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The machine's name (the dependency it guards, e.g. `mysql`).
    pub fn name(&self) -> &str {
        &self.inner.machine
    }

    pub fn policy(&self) -> Policy {
        self.inner.policy
    }

    /// Records a successful call of the primary path.
    pub fn record_success(&self) {
        let now = self.inner.clock.now_ms();
        let mut out = Vec::new();
        {
            let mut core = self.inner.lock();
            if core.forced.is_some() {
                return;
            }
            match core.state {
                State::Normal => core.consecutive_failures = 0,
                State::Degraded => {
                    // Successes of calls started before the machine degraded
                    // are ignored until the open interval has passed.
                    if self.inner.open_elapsed(&core, now) {
                        out.extend(self.inner.transition(
                            &mut core,
                            State::Recovering,
                            "primary succeeded after the open interval".to_string(),
                            now,
                        ));
                        out.extend(self.count_success(&mut core, now));
                    }
                }
                State::Recovering => out.extend(self.count_success(&mut core, now)),
            }
        }
        self.inner.emit(out);
    }

    fn count_success(&self, core: &mut Core, now: i64) -> Option<Transition> {
        core.successes = core.successes.saturating_add(1);
        core.probe_started_ms = None;
        let needed = self.inner.policy.success_threshold.max(1);
        if core.successes >= needed {
            let reason = format!("{} successful probes", core.successes);
            self.inner.transition(core, State::Normal, reason, now)
        } else {
            None
        }
    }

    /// Records a failed call of the primary path; `error` becomes the reason
    /// when it degrades the machine.
    pub fn record_failure(&self, error: &str) {
        let now = self.inner.clock.now_ms();
        let mut out = None;
        {
            let mut core = self.inner.lock();
            if core.forced.is_some() {
                return;
            }
            match core.state {
                State::Normal => {
                    core.consecutive_failures = core.consecutive_failures.saturating_add(1);
                    if core.consecutive_failures >= self.inner.policy.failure_threshold.max(1) {
                        let reason = format!(
                            "{} consecutive failures, last: {error}",
                            core.consecutive_failures
                        );
                        out = self
                            .inner
                            .transition(&mut core, State::Degraded, reason, now);
                    }
                }
                // Keep the open interval running: failures of calls that were
                // not admitted by `allow_primary` must not postpone the probe.
                State::Degraded => {}
                State::Recovering => {
                    out = self.inner.transition(
                        &mut core,
                        State::Degraded,
                        format!("probe failed: {error}"),
                        now,
                    );
                }
            }
        }
        self.inner.emit(out);
    }

    /// Whether the caller should use the primary path now. `normal`: always;
    /// `degraded`: no until `open_ms` have passed, then yes once (the probe,
    /// entering `recovering`); `recovering`: yes when no probe is in flight
    /// (a probe not reported within `open_ms` counts as lost).
    pub fn allow_primary(&self) -> bool {
        let now = self.inner.clock.now_ms();
        let mut out = None;
        let allowed = {
            let mut core = self.inner.lock();
            match core.forced {
                Some(State::Normal) => return true,
                Some(_) => return false,
                None => {}
            }
            match core.state {
                State::Normal => true,
                State::Degraded => {
                    if self.inner.open_elapsed(&core, now) {
                        out = self.inner.transition(
                            &mut core,
                            State::Recovering,
                            "open interval elapsed, probing primary".to_string(),
                            now,
                        );
                        core.probe_started_ms = Some(now);
                        true
                    } else {
                        false
                    }
                }
                State::Recovering => {
                    let open_ms = i64::try_from(self.inner.policy.open_ms).unwrap_or(i64::MAX);
                    let free = match core.probe_started_ms {
                        None => true,
                        Some(started) => now.saturating_sub(started) >= open_ms,
                    };
                    if free {
                        core.probe_started_ms = Some(now);
                    }
                    free
                }
            }
        };
        self.inner.emit(out);
        allowed
    }

    /// The effective state (the forced one while an override holds).
    pub fn state(&self) -> State {
        self.inner.lock().state
    }

    /// `degraded` or `recovering` (also when forced degraded).
    pub fn is_degraded(&self) -> bool {
        self.state() != State::Normal
    }

    /// The state an operator override holds the machine in, if any.
    pub fn forced(&self) -> Option<State> {
        self.inner.lock().forced
    }

    /// Applies an operator override. `ForceDegraded`/`ForceNormal` hold until
    /// `Auto`, which resumes automatic transitions from the current state.
    pub fn set_override(&self, o: Override, reason: Option<String>) {
        let now = self.inner.clock.now_ms();
        let (service, machine) = (self.inner.service.as_str(), self.inner.machine.as_str());
        let why = reason.as_deref().unwrap_or("no reason given");
        let mut out = None;
        {
            let mut core = self.inner.lock();
            match o {
                Override::ForceDegraded | Override::ForceNormal => {
                    let target = if o == Override::ForceDegraded {
                        State::Degraded
                    } else {
                        State::Normal
                    };
                    core.forced = Some(target);
                    let text = format!("forced {} by operator: {why}", target.as_str());
                    out = self.inner.transition(&mut core, target, text.clone(), now);
                    if out.is_none() {
                        core.reason = Some(text);
                    }
                    core.consecutive_failures = 0;
                    core.successes = 0;
                    core.probe_started_ms = None;
                }
                Override::Auto => {
                    if core.forced.take().is_some() {
                        core.reason = Some(format!("override cleared by operator: {why}"));
                        core.consecutive_failures = 0;
                        core.successes = 0;
                        core.probe_started_ms = None;
                    }
                }
            }
        }
        let action = match o {
            Override::ForceDegraded => "force_degraded",
            Override::ForceNormal => "force_normal",
            Override::Auto => "auto",
        };
        if o == Override::ForceDegraded {
            tracing::warn!(
                service,
                machine,
                action,
                reason = why,
                "degrade override applied"
            );
        } else {
            tracing::info!(
                service,
                machine,
                action,
                reason = why,
                "degrade override applied"
            );
        }
        self.inner.emit(out);
    }

    /// The machine's state as reported in heartbeats.
    pub fn status(&self) -> DegradeStatus {
        let core = self.inner.lock();
        DegradeStatus {
            machine: self.inner.machine.clone(),
            state: core.state.as_str().to_string(),
            reason: core.reason.clone(),
            since_ms: core.since_ms,
            forced: core.forced.map(|s| s.as_str().to_string()),
            transitions_total: core.transitions_total,
        }
    }
}

#[cfg(test)]
mod tests;
