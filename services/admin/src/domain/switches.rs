//! Operator switches: the overrides admin has published and keeps in force.
//! An instance that (re)starts after a command was published reports the
//! machine unforced in its heartbeat; admin then sends the command again.

use mdp_types::{ControlCommand, Heartbeat, Override};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// One override in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Switch {
    pub service: String,
    pub machine: String,
    pub action: Override,
    pub reason: Option<String>,
    pub set_at_ms: i64,
}

#[derive(Debug, Clone)]
struct Entry {
    switch: Switch,
    last_sent_ms: i64,
}

/// Overrides in force by (service, machine). Cheap to clone; clones share.
#[derive(Debug, Clone, Default)]
pub struct Switches {
    entries: Arc<Mutex<BTreeMap<(String, String), Entry>>>,
}

impl Switches {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, String), Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a published command: a force sets the switch, `auto` clears it.
    pub fn record(&self, cmd: &ControlCommand) {
        let key = (cmd.service.clone(), cmd.machine.clone());
        let mut entries = self.lock();
        if cmd.action == Override::Auto {
            entries.remove(&key);
        } else {
            let switch = Switch {
                service: cmd.service.clone(),
                machine: cmd.machine.clone(),
                action: cmd.action,
                reason: cmd.reason.clone(),
                set_at_ms: cmd.issued_at_ms,
            };
            entries.insert(
                key,
                Entry {
                    switch,
                    last_sent_ms: cmd.issued_at_ms,
                },
            );
        }
    }

    /// The switches in force, ordered by service and machine.
    pub fn list(&self) -> Vec<Switch> {
        self.lock().values().map(|e| e.switch.clone()).collect()
    }

    /// Commands to send again because `hb` shows a switched machine not in its
    /// forced state; each switch is re-sent at most once per `min_interval_ms`.
    pub fn due(&self, hb: &Heartbeat, now_ms: i64, min_interval_ms: i64) -> Vec<ControlCommand> {
        let mut entries = self.lock();
        let mut out = Vec::new();
        for status in &hb.degrade {
            let key = (hb.service.clone(), status.machine.clone());
            let Some(entry) = entries.get_mut(&key) else {
                continue;
            };
            let wanted = match entry.switch.action {
                Override::ForceDegraded => "degraded",
                Override::ForceNormal => "normal",
                Override::Auto => continue,
            };
            if status.forced.as_deref() == Some(wanted) {
                continue;
            }
            if now_ms.saturating_sub(entry.last_sent_ms) < min_interval_ms {
                continue;
            }
            entry.last_sent_ms = now_ms;
            out.push(ControlCommand {
                service: entry.switch.service.clone(),
                machine: entry.switch.machine.clone(),
                action: entry.switch.action,
                issued_at_ms: now_ms,
                reason: entry.switch.reason.clone(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdp_types::{DegradeStatus, ServiceHealth};

    fn cmd(action: Override, at: i64) -> ControlCommand {
        ControlCommand {
            service: "query".into(),
            machine: "redis".into(),
            action,
            issued_at_ms: at,
            reason: Some("failover".into()),
        }
    }

    fn hb(forced: Option<&str>) -> Heartbeat {
        Heartbeat {
            service: "query".into(),
            instance: "q-1".into(),
            http_addr: String::new(),
            started_at_ms: 0,
            sent_at_ms: 0,
            health: ServiceHealth::default(),
            degrade: vec![DegradeStatus {
                machine: "redis".into(),
                state: "normal".into(),
                reason: None,
                since_ms: 0,
                forced: forced.map(str::to_string),
                transitions_total: 0,
            }],
            stats: Default::default(),
            partitions: vec![],
        }
    }

    #[test]
    fn an_instance_missing_the_override_gets_it_again_at_most_once_per_interval() {
        let s = Switches::default();
        s.record(&cmd(Override::ForceDegraded, 1000));
        assert!(
            s.due(&hb(Some("degraded")), 10_000, 5000).is_empty(),
            "already forced"
        );
        assert!(s.due(&hb(None), 3000, 5000).is_empty(), "just sent");
        let again = s.due(&hb(None), 6000, 5000);
        assert_eq!(again, vec![cmd(Override::ForceDegraded, 6000)]);
        assert!(s.due(&hb(None), 7000, 5000).is_empty(), "rate limited");
        assert_eq!(s.due(&hb(Some("normal")), 11_000, 5000).len(), 1);
    }

    #[test]
    fn auto_clears_the_switch() {
        let s = Switches::default();
        s.record(&cmd(Override::ForceNormal, 1));
        assert_eq!(s.list().len(), 1);
        assert_eq!(s.list()[0].action, Override::ForceNormal);
        s.record(&cmd(Override::Auto, 2));
        assert!(s.list().is_empty());
        assert!(s.due(&hb(None), 100_000, 5000).is_empty());
    }

    #[test]
    fn other_services_and_machines_are_left_alone() {
        let s = Switches::default();
        s.record(&cmd(Override::ForceDegraded, 0));
        let mut other = hb(None);
        other.service = "ingest".into();
        assert!(s.due(&other, 100_000, 5000).is_empty());
        let mut other_machine = hb(None);
        other_machine.degrade[0].machine = "mysql".into();
        assert!(s.due(&other_machine, 100_000, 5000).is_empty());
    }
}
