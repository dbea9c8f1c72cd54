//! The fleet status and alarms derived from the instance table: a service's
//! state is the worst state of its live instances' degrade machines, and a
//! service without a live instance is down. Per partition, how far
//! window-compute is behind flow-control and whether it is held at a parked
//! window; per dead-letter queue, how many messages are parked in it.

use super::dead_letters::DeadLetterDepth;
use super::instances::InstanceRecord;
use super::partitions::{partition_views, LagRule, PartitionView, APPLYING_SERVICE};
use super::switches::Switch;
use mdp_degrade::State;
use mdp_types::{DegradeStatus, ServiceHealth};
use serde::Serialize;
use std::collections::BTreeMap;

/// State of a service or instance, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Normal,
    Recovering,
    Degraded,
    Down,
}

impl Health {
    fn of_machine(status: &DegradeStatus) -> Health {
        // An unknown state name is shown as degraded rather than hidden.
        match status.state.parse::<State>() {
            Ok(State::Normal) => Health::Normal,
            Ok(State::Recovering) => Health::Recovering,
            Ok(State::Degraded) | Err(_) => Health::Degraded,
        }
    }
}

/// One instance as shown by `/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceView {
    pub instance: String,
    /// Heard from within the heartbeat timeout.
    pub up: bool,
    /// `down` when not up, else the worst state of its machines.
    pub state: Health,
    pub http_addr: String,
    pub started_at_ms: i64,
    pub last_seen_ms: i64,
    pub silent_ms: i64,
    pub health: ServiceHealth,
    pub degrade: Vec<DegradeStatus>,
    pub stats: BTreeMap<String, f64>,
    pub partitions: Vec<u32>,
}

/// One service as shown by `/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceView {
    pub instances: Vec<InstanceView>,
    /// Instances heard from within the heartbeat timeout.
    pub up: usize,
    pub state: Health,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Warning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// No live instance of an expected (or once seen) service.
    ServiceDown,
    /// One instance went silent while others of its service live on.
    InstanceDown,
    /// A degrade machine is degraded or recovering.
    MachineDegraded,
    /// An instance reports a failing readiness check.
    InstanceNotReady,
    /// window-compute is more than `admin.lag_alarm_windows` windows behind
    /// flow-control on a partition for longer than `admin.lag_alarm_after_ms`.
    PartitionLagging,
    /// A partition is held at a parked window: its later windows are kept,
    /// not applied, until the window is replayed (or skipped).
    PartitionHeld,
    /// A dead-letter queue holds messages.
    DeadLettersParked,
}

/// A current alarm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alarm {
    pub kind: AlarmKind,
    pub severity: Severity,
    pub service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// The parked window a held partition waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_id: Option<u64>,
    /// The stage of a dead-letter queue (`changes`, `windows`, `results`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Messages parked in that dead-letter queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    /// Since when the condition holds, ms since epoch.
    pub since_ms: i64,
    pub message: String,
}

/// The answer of `/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetStatus {
    pub services: BTreeMap<String, ServiceView>,
    /// Per partition: last window sealed, last window applied, lag, hold.
    pub partitions: Vec<PartitionView>,
    /// Each dead-letter queue as last looked at (every few seconds).
    pub dead_letters: Vec<DeadLetterDepth>,
    pub alarms: Vec<Alarm>,
    /// Operator overrides in force (filled in by the caller; empty from [`aggregate`]).
    pub switches: Vec<Switch>,
    pub generated_at_ms: i64,
}

/// Inputs of the aggregation besides the instances.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub now_ms: i64,
    /// An instance silent for longer is down.
    pub heartbeat_timeout_ms: i64,
    /// Services shown (and alarmed on) even when never heard from.
    pub expected: &'a [&'a str],
    /// When admin started listening: the `since` of a never-seen service's alarm.
    pub watching_since_ms: i64,
    /// Partitions always shown (`partitioning.partitions`).
    pub partitions: u32,
    pub lag: LagRule,
    /// Since when each lagging partition has been lagging (see
    /// [`super::partitions::LagWatch`]); a lagging partition missing here
    /// lags since now.
    pub lagging_since: &'a BTreeMap<u32, i64>,
    /// The dead-letter queues as last looked at.
    pub dead_letters: &'a [DeadLetterDepth],
}

/// Builds the fleet status and its alarms.
pub fn aggregate(instances: &[InstanceRecord], obs: Observation<'_>) -> FleetStatus {
    let mut services: BTreeMap<String, ServiceView> = obs
        .expected
        .iter()
        .map(|name| {
            let empty = ServiceView {
                instances: vec![],
                up: 0,
                state: Health::Down,
            };
            (name.to_string(), empty)
        })
        .collect();
    // Latest receive time per service, for the `since` of a down alarm.
    let mut last_seen: BTreeMap<String, i64> = BTreeMap::new();
    let mut alarms = Vec::new();

    for rec in instances {
        let hb = &rec.heartbeat;
        let silent_ms = obs.now_ms.saturating_sub(rec.received_at_ms).max(0);
        let up = silent_ms <= obs.heartbeat_timeout_ms;
        let state = if up {
            hb.degrade
                .iter()
                .map(Health::of_machine)
                .max()
                .unwrap_or(Health::Normal)
        } else {
            Health::Down
        };
        let seen = last_seen
            .entry(hb.service.clone())
            .or_insert(rec.received_at_ms);
        *seen = (*seen).max(rec.received_at_ms);

        if up {
            machine_alarms(rec, &mut alarms);
            if let Some(since_ms) = rec.not_ready_since_ms {
                let failing: Vec<String> = hb
                    .health
                    .checks
                    .iter()
                    .filter(|(_, v)| v.as_str() != "ok")
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect();
                alarms.push(Alarm {
                    kind: AlarmKind::InstanceNotReady,
                    severity: Severity::Warning,
                    service: hb.service.clone(),
                    instance: Some(hb.instance.clone()),
                    machine: None,
                    partition: None,
                    window_id: None,
                    stage: None,
                    messages: None,
                    since_ms,
                    message: format!(
                        "{} instance {} is not ready ({})",
                        hb.service,
                        hb.instance,
                        failing.join("; ")
                    ),
                });
            }
        }

        let view = services.entry(hb.service.clone()).or_insert(ServiceView {
            instances: vec![],
            up: 0,
            state: Health::Down,
        });
        view.instances.push(InstanceView {
            instance: hb.instance.clone(),
            up,
            state,
            http_addr: hb.http_addr.clone(),
            started_at_ms: hb.started_at_ms,
            last_seen_ms: rec.received_at_ms,
            silent_ms,
            health: hb.health.clone(),
            degrade: hb.degrade.clone(),
            stats: hb.stats.clone(),
            partitions: hb.partitions.clone(),
        });
    }

    for (name, view) in services.iter_mut() {
        view.up = view.instances.iter().filter(|i| i.up).count();
        view.state = view
            .instances
            .iter()
            .filter(|i| i.up)
            .map(|i| i.state)
            .max()
            .unwrap_or(Health::Down);
        if view.up == 0 {
            let since_ms = last_seen
                .get(name)
                .map(|t| t.saturating_add(obs.heartbeat_timeout_ms))
                .unwrap_or(obs.watching_since_ms);
            let message = if view.instances.is_empty() {
                format!("{name} is down: no instance has sent a heartbeat")
            } else {
                format!(
                    "{name} is down: no heartbeat from any of its {} instances for over {} ms",
                    view.instances.len(),
                    obs.heartbeat_timeout_ms
                )
            };
            alarms.push(Alarm {
                kind: AlarmKind::ServiceDown,
                severity: Severity::Critical,
                service: name.clone(),
                instance: None,
                machine: None,
                partition: None,
                window_id: None,
                stage: None,
                messages: None,
                since_ms,
                message,
            });
        } else {
            for inst in view.instances.iter().filter(|i| !i.up) {
                alarms.push(Alarm {
                    kind: AlarmKind::InstanceDown,
                    severity: Severity::Warning,
                    service: name.clone(),
                    instance: Some(inst.instance.clone()),
                    machine: None,
                    partition: None,
                    window_id: None,
                    stage: None,
                    messages: None,
                    since_ms: inst.last_seen_ms.saturating_add(obs.heartbeat_timeout_ms),
                    message: format!(
                        "{name} instance {} is silent for {} ms",
                        inst.instance, inst.silent_ms
                    ),
                });
            }
        }
    }

    let partitions = lag_alarms(instances, &obs, &mut alarms);
    held_alarms(&partitions, &obs, &mut alarms);
    dead_letter_alarms(obs.dead_letters, &mut alarms);

    alarms.sort_by(|a, b| {
        (
            a.severity,
            &a.service,
            a.kind,
            &a.instance,
            &a.machine,
            a.partition,
        )
            .cmp(&(
                b.severity,
                &b.service,
                b.kind,
                &b.instance,
                &b.machine,
                b.partition,
            ))
    });
    FleetStatus {
        services,
        partitions,
        dead_letters: obs.dead_letters.to_vec(),
        alarms,
        switches: Vec::new(),
        generated_at_ms: obs.now_ms,
    }
}

/// The partition views with their `lagging_since_ms`, and an alarm for each
/// partition lagging for at least `obs.lag.alarm_after_ms`.
fn lag_alarms(
    instances: &[InstanceRecord],
    obs: &Observation<'_>,
    alarms: &mut Vec<Alarm>,
) -> Vec<PartitionView> {
    let mut views = partition_views(
        instances,
        obs.now_ms,
        obs.heartbeat_timeout_ms,
        obs.partitions,
    );
    for view in views.iter_mut() {
        if !obs.lag.is_lagging(view) {
            continue;
        }
        let since_ms = obs
            .lagging_since
            .get(&view.partition)
            .copied()
            .unwrap_or(obs.now_ms);
        view.lagging_since_ms = Some(since_ms);
        let lagging_ms = obs.now_ms.saturating_sub(since_ms);
        if lagging_ms < obs.lag.alarm_after_ms {
            continue;
        }
        let consumer = match &view.owner {
            Some(owner) => format!("consumed by {owner}"),
            None => "no live instance consumes it".to_string(),
        };
        alarms.push(Alarm {
            kind: AlarmKind::PartitionLagging,
            severity: Severity::Warning,
            service: APPLYING_SERVICE.to_string(),
            instance: view.owner.clone(),
            machine: None,
            partition: Some(view.partition),
            window_id: None,
            stage: None,
            messages: None,
            since_ms,
            message: format!(
                "{APPLYING_SERVICE} is {} windows behind on partition {} (sealed {}, applied {}, {consumer}) for {lagging_ms} ms; threshold {} windows",
                view.lag_windows.unwrap_or_default(),
                view.partition,
                view.last_sealed_window.unwrap_or_default(),
                view.last_applied_window.unwrap_or_default(),
                obs.lag.threshold_windows,
            ),
        });
    }
    views
}

/// An alarm for each partition held at a parked window.
fn held_alarms(views: &[PartitionView], obs: &Observation<'_>, alarms: &mut Vec<Alarm>) {
    for view in views {
        let Some(window) = view.held_at_window else {
            continue;
        };
        let since_ms = view.held_since_ms.unwrap_or(obs.now_ms);
        let held = view
            .held_windows
            .map_or_else(|| "an unknown number of".to_string(), |n| n.to_string());
        alarms.push(Alarm {
            kind: AlarmKind::PartitionHeld,
            severity: Severity::Critical,
            service: APPLYING_SERVICE.to_string(),
            instance: view.owner.clone(),
            machine: None,
            partition: Some(view.partition),
            window_id: Some(window),
            stage: None,
            messages: None,
            since_ms,
            message: format!(
                "partition {} is held at parked window {window}: {held} later windows are kept, not applied; fix the cause and replay it (POST /v1/dead-letters/windows/replay)",
                view.partition
            ),
        });
    }
}

/// An alarm for each dead-letter queue holding messages.
fn dead_letter_alarms(depths: &[DeadLetterDepth], alarms: &mut Vec<Alarm>) {
    for d in depths.iter().filter(|d| d.messages > 0) {
        let service = mdp_amqp::Stage::ALL
            .into_iter()
            .find(|s| s.as_str() == d.stage)
            .map_or("admin", super::dead_letters::consuming_service);
        alarms.push(Alarm {
            kind: AlarmKind::DeadLettersParked,
            severity: Severity::Warning,
            service: service.to_string(),
            instance: None,
            machine: None,
            partition: None,
            window_id: None,
            stage: Some(d.stage.to_string()),
            messages: Some(d.messages),
            since_ms: d.parked_since_ms.unwrap_or(d.checked_at_ms),
            message: format!(
                "{} messages parked in dead-letter queue {} (stage {}); see GET /v1/dead-letters, replay with POST /v1/dead-letters/{}/replay",
                d.messages, d.queue, d.stage, d.stage
            ),
        });
    }
}

fn machine_alarms(rec: &InstanceRecord, alarms: &mut Vec<Alarm>) {
    let hb = &rec.heartbeat;
    for m in hb
        .degrade
        .iter()
        .filter(|m| Health::of_machine(m) != Health::Normal)
    {
        let forced = if m.forced.is_some() {
            " (forced by operator)"
        } else {
            ""
        };
        let reason = m.reason.as_deref().unwrap_or("no reason reported");
        alarms.push(Alarm {
            kind: AlarmKind::MachineDegraded,
            severity: Severity::Warning,
            service: hb.service.clone(),
            instance: Some(hb.instance.clone()),
            machine: Some(m.machine.clone()),
            partition: None,
            window_id: None,
            stage: None,
            messages: None,
            since_ms: m.since_ms,
            message: format!(
                "{} {} is {}{forced} on {}: {reason}",
                hb.service, m.machine, m.state, hb.instance
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EXPECTED_SERVICES;
    use mdp_types::Heartbeat;

    const NOW: i64 = 1_000_000;
    const TIMEOUT: i64 = 5000;
    const LAG: LagRule = LagRule {
        threshold_windows: 10,
        alarm_after_ms: 30_000,
    };
    static NOT_LAGGING: BTreeMap<u32, i64> = BTreeMap::new();

    fn obs() -> Observation<'static> {
        Observation {
            now_ms: NOW,
            heartbeat_timeout_ms: TIMEOUT,
            expected: &EXPECTED_SERVICES,
            watching_since_ms: 900_000,
            partitions: 2,
            lag: LAG,
            lagging_since: &NOT_LAGGING,
            dead_letters: &[],
        }
    }

    fn machine(name: &str, state: &str, since_ms: i64, forced: Option<&str>) -> DegradeStatus {
        DegradeStatus {
            machine: name.into(),
            state: state.into(),
            reason: Some(format!("{name} reason")),
            since_ms,
            forced: forced.map(str::to_string),
            transitions_total: 1,
        }
    }

    fn rec(
        service: &str,
        instance: &str,
        silent_ms: i64,
        degrade: Vec<DegradeStatus>,
    ) -> InstanceRecord {
        InstanceRecord {
            heartbeat: Heartbeat {
                service: service.into(),
                instance: instance.into(),
                http_addr: "127.0.0.1:9".into(),
                started_at_ms: 10,
                sent_at_ms: NOW - silent_ms,
                health: ServiceHealth {
                    live: true,
                    ready: true,
                    checks: Default::default(),
                },
                degrade,
                stats: [("changes_total".to_string(), 3.0)].into_iter().collect(),
                partitions: vec![1, 2],
            },
            received_at_ms: NOW - silent_ms,
            not_ready_since_ms: None,
        }
    }

    fn all_up() -> Vec<InstanceRecord> {
        EXPECTED_SERVICES
            .iter()
            .map(|s| {
                rec(
                    s,
                    &format!("{s}-1"),
                    100,
                    vec![machine("rabbitmq", "normal", 1, None)],
                )
            })
            .collect()
    }

    #[test]
    fn no_heartbeats_means_every_expected_service_is_down() {
        let st = aggregate(&[], obs());
        assert_eq!(st.services.len(), 6);
        for (name, view) in &st.services {
            assert_eq!(view.state, Health::Down, "{name}");
            assert_eq!(view.up, 0);
        }
        assert_eq!(st.alarms.len(), 6);
        assert!(st.alarms.iter().all(|a| a.kind == AlarmKind::ServiceDown
            && a.severity == Severity::Critical
            && a.since_ms == 900_000));
        let ingest = st
            .alarms
            .iter()
            .find(|a| a.service == "ingest")
            .map(|a| a.message.clone());
        assert_eq!(
            ingest.as_deref(),
            Some("ingest is down: no instance has sent a heartbeat")
        );
    }

    #[test]
    fn all_normal_has_no_alarms() {
        let st = aggregate(&all_up(), obs());
        assert!(st.alarms.is_empty(), "{:?}", st.alarms);
        for view in st.services.values() {
            assert_eq!(view.state, Health::Normal);
            assert_eq!(view.up, 1);
        }
        let q = &st.services["query"].instances[0];
        assert_eq!(q.instance, "query-1");
        assert_eq!(q.silent_ms, 100);
        assert_eq!(q.last_seen_ms, NOW - 100);
        assert_eq!(q.partitions, vec![1, 2]);
        assert_eq!(q.stats.get("changes_total"), Some(&3.0));
    }

    #[test]
    fn service_state_is_the_worst_machine_of_its_live_instances() {
        let mut recs = all_up();
        recs.push(rec(
            "query",
            "query-2",
            0,
            vec![
                machine("mysql", "recovering", 1, None),
                machine("redis", "normal", 1, None),
            ],
        ));
        recs.push(rec(
            "result-writer",
            "rw-2",
            0,
            vec![
                machine("mysql", "recovering", 1, None),
                machine("redis", "degraded", 777, Some("degraded")),
            ],
        ));
        // A dead instance's degraded machine no longer counts.
        recs.push(rec(
            "ingest",
            "ingest-dead",
            TIMEOUT + 1,
            vec![machine("rabbitmq", "degraded", 1, None)],
        ));

        let st = aggregate(&recs, obs());
        assert_eq!(st.services["query"].state, Health::Recovering);
        assert_eq!(st.services["query"].up, 2);
        assert_eq!(st.services["result-writer"].state, Health::Degraded);
        assert_eq!(st.services["ingest"].state, Health::Normal);
        assert_eq!(st.services["ingest"].up, 1);
        let dead = st.services["ingest"]
            .instances
            .iter()
            .find(|i| i.instance == "ingest-dead");
        assert_eq!(dead.map(|i| (i.up, i.state)), Some((false, Health::Down)));

        let kinds: Vec<(AlarmKind, &str, Option<&str>)> = st
            .alarms
            .iter()
            .map(|a| (a.kind, a.service.as_str(), a.machine.as_deref()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (AlarmKind::InstanceDown, "ingest", None),
                (AlarmKind::MachineDegraded, "query", Some("mysql")),
                (AlarmKind::MachineDegraded, "result-writer", Some("mysql")),
                (AlarmKind::MachineDegraded, "result-writer", Some("redis")),
            ]
        );
        let redis = &st.alarms[3];
        assert_eq!(redis.since_ms, 777);
        assert_eq!(redis.instance.as_deref(), Some("rw-2"));
        assert_eq!(
            redis.message,
            "result-writer redis is degraded (forced by operator) on rw-2: redis reason"
        );
        assert_eq!(st.alarms[0].since_ms, NOW - TIMEOUT - 1 + TIMEOUT);
    }

    #[test]
    fn a_service_whose_instances_all_went_silent_is_down_since_the_timeout() {
        let mut recs: Vec<InstanceRecord> = all_up()
            .into_iter()
            .filter(|r| r.heartbeat.service != "flow-control")
            .collect();
        recs.push(rec("flow-control", "fc-1", 9000, vec![]));
        recs.push(rec("flow-control", "fc-2", 6000, vec![]));
        let st = aggregate(&recs, obs());
        let fc = &st.services["flow-control"];
        assert_eq!(fc.state, Health::Down);
        assert_eq!(fc.up, 0);
        assert_eq!(fc.instances.len(), 2);
        assert_eq!(
            st.alarms.len(),
            1,
            "no per-instance alarms when the service is down"
        );
        let a = &st.alarms[0];
        assert_eq!(a.kind, AlarmKind::ServiceDown);
        assert_eq!(a.since_ms, NOW - 6000 + TIMEOUT);
        assert_eq!(
            a.message,
            "flow-control is down: no heartbeat from any of its 2 instances for over 5000 ms"
        );
    }

    #[test]
    fn the_timeout_boundary_is_still_up() {
        let mut recs = all_up();
        recs.retain(|r| r.heartbeat.service != "query");
        recs.push(rec("query", "q", TIMEOUT, vec![]));
        let st = aggregate(&recs, obs());
        assert_eq!(st.services["query"].up, 1);
        assert_eq!(st.services["query"].state, Health::Normal);
    }

    #[test]
    fn unexpected_services_are_shown_and_unknown_states_count_as_degraded() {
        let mut recs = all_up();
        recs.push(rec(
            "backfill",
            "b-1",
            0,
            vec![machine("history", "half-open", 5, None)],
        ));
        let st = aggregate(&recs, obs());
        assert_eq!(st.services.len(), 7);
        assert_eq!(st.services["backfill"].state, Health::Degraded);
        assert_eq!(st.alarms.len(), 1);
        assert_eq!(st.alarms[0].kind, AlarmKind::MachineDegraded);
    }

    #[test]
    fn not_ready_instances_raise_an_alarm_naming_the_failing_checks() {
        let mut recs = all_up();
        let q = recs.iter_mut().find(|r| r.heartbeat.service == "query");
        if let Some(q) = q {
            q.heartbeat.health.ready = false;
            q.heartbeat.health.checks = [
                ("mysql".to_string(), "connection refused".to_string()),
                ("redis".to_string(), "ok".to_string()),
            ]
            .into_iter()
            .collect();
            q.not_ready_since_ms = Some(123);
        }
        let st = aggregate(&recs, obs());
        assert_eq!(st.alarms.len(), 1);
        let a = &st.alarms[0];
        assert_eq!(a.kind, AlarmKind::InstanceNotReady);
        assert_eq!(a.since_ms, 123);
        assert_eq!(
            a.message,
            "query instance query-1 is not ready (mysql: connection refused)"
        );
        assert_eq!(st.services["query"].state, Health::Normal);
    }

    /// Every service up; flow-control sealed `sealed` and window-compute
    /// (`wc-1`, consuming both partitions) applied `applied` per partition.
    fn with_windows(sealed: [f64; 2], applied: [f64; 2]) -> Vec<InstanceRecord> {
        let mut recs = all_up();
        for r in recs.iter_mut() {
            let (what, values) = match r.heartbeat.service.as_str() {
                "flow-control" => ("last_sealed_window", sealed),
                "window-compute" => {
                    r.heartbeat.instance = "wc-1".into();
                    r.heartbeat.partitions = vec![0, 1];
                    ("last_applied_window", applied)
                }
                _ => continue,
            };
            for (p, v) in values.iter().enumerate() {
                r.heartbeat
                    .stats
                    .insert(format!("partition.{p}.{what}"), *v);
            }
        }
        recs
    }

    #[test]
    fn partitions_show_sealed_applied_owner_and_lag() {
        let st = aggregate(&with_windows([120.0, 7.0], [115.0, 7.0]), obs());
        assert!(st.alarms.is_empty(), "{:?}", st.alarms);
        let expected = [
            (0, Some(120), Some(115), Some("wc-1"), Some(5)),
            (1, Some(7), Some(7), Some("wc-1"), Some(0)),
        ];
        assert_eq!(st.partitions.len(), expected.len());
        for (v, want) in st.partitions.iter().zip(expected) {
            let got = (
                v.partition,
                v.last_sealed_window,
                v.last_applied_window,
                v.owner.as_deref(),
                v.lag_windows,
            );
            assert_eq!(got, want);
        }
        let json = serde_json::to_value(&st).unwrap_or_default();
        assert_eq!(json["partitions"][0]["lag_windows"], 5);
        assert_eq!(json["partitions"][0]["owner"], "wc-1");
        assert_eq!(
            json["partitions"][1]["lagging_since_ms"],
            serde_json::Value::Null
        );

        // Without heartbeats the partitions are listed with nothing known.
        let st = aggregate(&[], obs());
        assert_eq!(st.partitions.len(), 2);
        assert!(st
            .partitions
            .iter()
            .all(|v| v.lag_windows.is_none() && v.owner.is_none()));
    }

    #[test]
    fn a_partition_lagging_longer_than_the_rule_raises_an_alarm() {
        let recs = with_windows([120.0, 50.0], [75.0, 30.0]);
        // Both lag more than 10 windows; partition 0 since 40 s, 1 since 10 s.
        let since: BTreeMap<u32, i64> =
            [(0, NOW - 40_000), (1, NOW - 10_000)].into_iter().collect();
        let st = aggregate(
            &recs,
            Observation {
                lagging_since: &since,
                ..obs()
            },
        );
        assert_eq!(st.partitions[0].lagging_since_ms, Some(NOW - 40_000));
        assert_eq!(st.partitions[1].lagging_since_ms, Some(NOW - 10_000));
        assert_eq!(st.alarms.len(), 1, "{:?}", st.alarms);
        let a = &st.alarms[0];
        assert_eq!(
            (
                a.kind,
                a.severity,
                a.service.as_str(),
                a.instance.as_deref(),
                a.partition
            ),
            (
                AlarmKind::PartitionLagging,
                Severity::Warning,
                "window-compute",
                Some("wc-1"),
                Some(0)
            )
        );
        assert_eq!(a.since_ms, NOW - 40_000);
        assert_eq!(
            a.message,
            "window-compute is 45 windows behind on partition 0 (sealed 120, applied 75, consumed by wc-1) for 40000 ms; threshold 10 windows"
        );
        let json = serde_json::to_value(&st).unwrap_or_default();
        assert_eq!(json["alarms"][0]["kind"], "partition_lagging");
        assert_eq!(json["alarms"][0]["partition"], 0);

        // A lagging partition the watch has not seen yet lags since now.
        let st = aggregate(&recs, obs());
        assert!(st.alarms.is_empty());
        assert_eq!(st.partitions[0].lagging_since_ms, Some(NOW));
    }

    #[test]
    fn a_lagging_partition_without_a_live_consumer_says_so() {
        let mut recs = with_windows([120.0, 7.0], [75.0, 7.0]);
        for r in recs.iter_mut() {
            if r.heartbeat.service == "window-compute" {
                r.heartbeat.partitions.clear();
            }
        }
        let since: BTreeMap<u32, i64> = [(0, NOW - 30_000)].into_iter().collect();
        let st = aggregate(
            &recs,
            Observation {
                lagging_since: &since,
                ..obs()
            },
        );
        assert_eq!(st.alarms.len(), 1, "{:?}", st.alarms);
        assert_eq!(st.alarms[0].instance, None);
        assert!(
            st.alarms[0]
                .message
                .contains("(sealed 120, applied 75, no live instance consumes it) for 30000 ms"),
            "{}",
            st.alarms[0].message
        );
    }

    #[test]
    fn a_held_partition_raises_a_critical_alarm_naming_partition_and_window() {
        let mut recs = with_windows([120.0, 9.0], [41.0, 9.0]);
        for r in recs.iter_mut() {
            if r.heartbeat.service == "window-compute" {
                for (k, v) in [
                    ("partition.0.held_at_window", 42.0),
                    ("partition.0.held_windows", 78.0),
                    ("partition.0.held_since_ms", (NOW - 5_000) as f64),
                    ("partition.1.held_at_window", 0.0),
                    ("partition.1.held_windows", 0.0),
                ] {
                    r.heartbeat.stats.insert(k.to_string(), v);
                }
            }
        }
        let st = aggregate(&recs, obs());
        let held: Vec<&Alarm> = st
            .alarms
            .iter()
            .filter(|a| a.kind == AlarmKind::PartitionHeld)
            .collect();
        assert_eq!(held.len(), 1, "{:?}", st.alarms);
        let a = held[0];
        assert_eq!(
            (
                a.severity,
                a.service.as_str(),
                a.instance.as_deref(),
                a.partition,
                a.window_id,
                a.since_ms
            ),
            (
                Severity::Critical,
                "window-compute",
                Some("wc-1"),
                Some(0),
                Some(42),
                NOW - 5_000
            )
        );
        assert_eq!(
            a.message,
            "partition 0 is held at parked window 42: 78 later windows are kept, not applied; fix the cause and replay it (POST /v1/dead-letters/windows/replay)"
        );
        assert_eq!(st.partitions[0].held_at_window, Some(42));
        assert_eq!(st.partitions[1].held_at_window, None);
        let json = serde_json::to_value(&st).unwrap_or_default();
        assert_eq!(json["alarms"][0]["kind"], "partition_held");
        assert_eq!(json["alarms"][0]["window_id"], 42);
        assert_eq!(json["partitions"][0]["held_windows"], 78);
    }

    #[test]
    fn dead_letter_queues_holding_messages_raise_an_alarm_per_stage() {
        let depths = [
            DeadLetterDepth {
                stage: "changes",
                queue: "mdp.dlq.changes".into(),
                messages: 0,
                parked_since_ms: None,
                checked_at_ms: NOW - 1000,
            },
            DeadLetterDepth {
                stage: "windows",
                queue: "mdp.dlq.windows".into(),
                messages: 3,
                parked_since_ms: Some(NOW - 60_000),
                checked_at_ms: NOW - 1000,
            },
        ];
        let st = aggregate(
            &all_up(),
            Observation {
                dead_letters: &depths,
                ..obs()
            },
        );
        assert_eq!(st.alarms.len(), 1, "{:?}", st.alarms);
        let a = &st.alarms[0];
        assert_eq!(
            (
                a.kind,
                a.severity,
                a.service.as_str(),
                a.stage.as_deref(),
                a.messages,
                a.since_ms
            ),
            (
                AlarmKind::DeadLettersParked,
                Severity::Warning,
                "window-compute",
                Some("windows"),
                Some(3),
                NOW - 60_000
            )
        );
        assert_eq!(
            a.message,
            "3 messages parked in dead-letter queue mdp.dlq.windows (stage windows); see GET /v1/dead-letters, replay with POST /v1/dead-letters/windows/replay"
        );
        let json = serde_json::to_value(&st).unwrap_or_default();
        assert_eq!(json["alarms"][0]["kind"], "dead_letters_parked");
        assert_eq!(json["alarms"][0]["stage"], "windows");
        assert_eq!(json["alarms"][0]["messages"], 3);
        assert_eq!(json["dead_letters"][1]["messages"], 3);
        assert!(json["alarms"][0].get("window_id").is_none());
    }

    #[test]
    fn status_serializes_with_lowercase_states() {
        let mut recs = all_up();
        recs.push(rec(
            "query",
            "q-2",
            0,
            vec![machine("redis", "degraded", 5, None)],
        ));
        let st = aggregate(&recs, obs());
        let json = serde_json::to_value(&st).unwrap_or_default();
        assert_eq!(json["services"]["query"]["state"], "degraded");
        assert_eq!(json["services"]["query"]["up"], 2);
        assert_eq!(json["services"]["ingest"]["state"], "normal");
        assert_eq!(json["alarms"][0]["kind"], "machine_degraded");
        assert_eq!(json["alarms"][0]["severity"], "warning");
        assert_eq!(json["alarms"][0]["machine"], "redis");
    }
}
