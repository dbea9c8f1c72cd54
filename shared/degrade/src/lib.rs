//! Degrade state machines: one circuit breaker per dependency of a service.
//!
//! A [`DegradeMachine`] moves between `normal`, `degraded` and `recovering`
//! on its own (failure thresholds, an open interval, half-open probes, after
//! resilience4j and Alibaba Sentinel) and obeys operator overrides sent from
//! admin. Every transition is logged, counted and exported as a gauge; a
//! service keeps its machines in a [`DegradeRegistry`] that feeds its
//! heartbeat and applies control commands.

mod clock;
mod machine;
mod metrics;
mod registry;

pub use clock::{Clock, ManualClock, SystemClock};
pub use machine::{DegradeMachine, Policy, State, UnknownState};
pub use registry::DegradeRegistry;
