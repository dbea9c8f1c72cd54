//! The degrade machines of one service instance, by machine name.

use crate::machine::DegradeMachine;
use mdp_types::{ControlCommand, DegradeStatus};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// The machines of a service instance. Cheap to clone; clones share the set.
#[derive(Clone, Default, Debug)]
pub struct DegradeRegistry {
    machines: Arc<RwLock<BTreeMap<String, DegradeMachine>>>,
}

impl DegradeRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a machine; a machine registered earlier under the same name is replaced.
    pub fn register(&self, m: DegradeMachine) {
        self.write().insert(m.name().to_string(), m);
    }

    /// The status of every machine, ordered by machine name.
    pub fn statuses(&self) -> Vec<DegradeStatus> {
        self.read().values().map(DegradeMachine::status).collect()
    }

    pub fn get(&self, machine: &str) -> Option<DegradeMachine> {
        self.read().get(machine).cloned()
    }

    /// Names of the registered machines, ordered.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Whether any machine is degraded or recovering.
    pub fn any_degraded(&self) -> bool {
        self.read().values().any(DegradeMachine::is_degraded)
    }

    /// Applies an operator command to the named machine when it belongs to
    /// `cmd.service`; returns whether a machine took it.
    pub fn apply(&self, cmd: &ControlCommand) -> bool {
        match self.get(&cmd.machine) {
            Some(m) if m.service() == cmd.service => {
                m.set_override(cmd.action, cmd.reason.clone());
                true
            }
            _ => false,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, DegradeMachine>> {
        self.machines.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, DegradeMachine>> {
        self.machines.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::machine::{Policy, State};
    use mdp_types::Override;

    fn cmd(service: &str, machine: &str, action: Override) -> ControlCommand {
        ControlCommand {
            service: service.into(),
            machine: machine.into(),
            action,
            issued_at_ms: 1,
            reason: Some("operator drill".into()),
        }
    }

    fn registry() -> DegradeRegistry {
        let clock = Arc::new(ManualClock::new(5));
        let r = DegradeRegistry::new();
        r.register(DegradeMachine::with_clock(
            "r-query",
            "redis",
            Policy::default(),
            clock.clone(),
        ));
        r.register(DegradeMachine::with_clock(
            "r-query",
            "mysql",
            Policy::default(),
            clock,
        ));
        r
    }

    #[test]
    fn statuses_are_ordered_by_machine() {
        let r = registry();
        let names: Vec<String> = r.statuses().into_iter().map(|s| s.machine).collect();
        assert_eq!(names, vec!["mysql", "redis"]);
        assert_eq!(r.names(), vec!["mysql", "redis"]);
        assert!(r.get("redis").is_some());
        assert!(r.get("kafka").is_none());
    }

    #[test]
    fn registering_a_name_again_replaces_the_machine() {
        let r = registry();
        let replacement = DegradeMachine::new(
            "r-query",
            "redis",
            Policy {
                failure_threshold: 1,
                open_ms: 10,
                success_threshold: 1,
            },
        );
        r.register(replacement);
        assert_eq!(r.statuses().len(), 2);
        assert_eq!(
            r.get("redis").map(|m| m.policy().failure_threshold),
            Some(1)
        );
    }

    #[test]
    fn apply_overrides_the_named_machine_of_the_same_service() {
        let r = registry();
        assert!(r.apply(&cmd("r-query", "redis", Override::ForceDegraded)));
        assert_eq!(r.get("redis").map(|m| m.state()), Some(State::Degraded));
        assert_eq!(r.get("mysql").map(|m| m.state()), Some(State::Normal));
        assert!(r.any_degraded());
        let redis = r.statuses().into_iter().find(|s| s.machine == "redis");
        assert_eq!(
            redis.and_then(|s| s.reason),
            Some("forced degraded by operator: operator drill".to_string())
        );
        assert!(r.apply(&cmd("r-query", "redis", Override::Auto)));
        assert_eq!(r.get("redis").and_then(|m| m.forced()), None);
    }

    #[test]
    fn apply_ignores_other_services_and_unknown_machines() {
        let r = registry();
        assert!(!r.apply(&cmd("ingest", "redis", Override::ForceDegraded)));
        assert!(!r.apply(&cmd("r-query", "kafka", Override::ForceDegraded)));
        assert!(!r.any_degraded());
    }
}
