//! The runtime context every service instance carries: identity, settings,
//! degrade machines, readiness checks, headline stats and owned partitions.

use mdp_config::Settings;
use mdp_degrade::DegradeRegistry;
use mdp_types::{Heartbeat, ServiceHealth};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use tokio_util::sync::CancellationToken;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Identity and shared state of one service instance. Cheap to clone; clones
/// share everything.
#[derive(Clone, Debug)]
pub struct ServiceContext {
    /// Service name (`ingest`, `flow-control`, …).
    pub service: String,
    /// Unique id of this instance, see [`instance_id`].
    pub instance: String,
    pub settings: Arc<Settings>,
    pub degrade: DegradeRegistry,
    pub readiness: Readiness,
    pub stats: Stats,
    pub partitions: PartitionsOwned,
    /// Cancelled on shutdown; every task of the instance watches it.
    pub cancel: CancellationToken,
    pub started_at_ms: i64,
    http_addr: Arc<RwLock<String>>,
}

impl ServiceContext {
    pub fn new(service: &str, settings: Settings) -> Self {
        ServiceContext {
            service: service.to_string(),
            instance: instance_id(service),
            settings: Arc::new(settings),
            degrade: DegradeRegistry::default(),
            readiness: Readiness::default(),
            stats: Stats::default(),
            partitions: PartitionsOwned::default(),
            cancel: CancellationToken::new(),
            started_at_ms: mdp_types::now_ms(),
            http_addr: Arc::new(RwLock::new(String::new())),
        }
    }

    /// Records the address the HTTP server is bound to (after bind, so port 0 works).
    pub fn set_http_addr(&self, addr: SocketAddr) {
        *self.http_addr.write().unwrap_or_else(|p| p.into_inner()) = addr.to_string();
    }

    /// The bound HTTP address, empty before [`set_http_addr`](Self::set_http_addr).
    pub fn http_addr(&self) -> String {
        self.http_addr
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The instance's current heartbeat.
    pub fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            service: self.service.clone(),
            instance: self.instance.clone(),
            http_addr: self.http_addr(),
            started_at_ms: self.started_at_ms,
            sent_at_ms: mdp_types::now_ms(),
            health: self.readiness.snapshot(),
            degrade: self.degrade.statuses(),
            stats: self.stats.snapshot(),
            partitions: self.partitions.list(),
        }
    }
}

/// A unique id for an instance of `service`: `{service}@{host}-{pid}-{start_ms}`,
/// with `-{n}` appended for the n-th further instance created in the same
/// process (several instances can run in one test process).
pub fn instance_id(service: &str) -> String {
    static CREATED: AtomicU64 = AtomicU64::new(0);
    let n = CREATED.fetch_add(1, Ordering::Relaxed);
    let base = format!(
        "{service}@{}-{}-{}",
        hostname(),
        std::process::id(),
        mdp_types::now_ms()
    );
    if n == 0 {
        base
    } else {
        format!("{base}-{n}")
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_string())
}

/// Readiness checks of an instance, one per dependency (`rabbitmq`, `mysql` …).
/// The instance is ready when every check passes (and when there is none).
#[derive(Clone, Default, Debug)]
pub struct Readiness {
    checks: Arc<Mutex<BTreeMap<String, Result<(), String>>>>,
}

impl Readiness {
    /// Sets the outcome of `check`: `Ok(())` or `Err(what is wrong)`.
    pub fn set(&self, check: &str, state: Result<(), String>) {
        lock(&self.checks).insert(check.to_string(), state);
    }

    /// Removes a check that no longer applies.
    pub fn clear(&self, check: &str) {
        lock(&self.checks).remove(check);
    }

    pub fn is_ready(&self) -> bool {
        lock(&self.checks).values().all(Result::is_ok)
    }

    /// Health as reported in heartbeats and by `/readyz`: each check is `ok`
    /// or its error text.
    pub fn snapshot(&self) -> ServiceHealth {
        let checks = lock(&self.checks);
        ServiceHealth {
            live: true,
            ready: checks.values().all(Result::is_ok),
            checks: checks
                .iter()
                .map(|(name, state)| {
                    let text = match state {
                        Ok(()) => "ok".to_string(),
                        Err(e) => e.clone(),
                    };
                    (name.clone(), text)
                })
                .collect(),
        }
    }
}

/// A few headline figures of an instance (throughput, lag), named like metrics.
#[derive(Clone, Default, Debug)]
pub struct Stats {
    values: Arc<Mutex<BTreeMap<String, f64>>>,
}

impl Stats {
    pub fn set(&self, name: &str, value: f64) {
        lock(&self.values).insert(name.to_string(), value);
    }

    /// Adds `delta` to `name` (starting from 0).
    pub fn add(&self, name: &str, delta: f64) {
        *lock(&self.values).entry(name.to_string()).or_insert(0.0) += delta;
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        lock(&self.values).get(name).copied()
    }

    pub fn snapshot(&self) -> BTreeMap<String, f64> {
        lock(&self.values).clone()
    }
}

/// The partitions this instance currently consumes.
#[derive(Clone, Default, Debug)]
pub struct PartitionsOwned {
    set: Arc<Mutex<BTreeSet<u32>>>,
}

impl PartitionsOwned {
    /// Returns whether the partition was newly added.
    pub fn insert(&self, p: u32) -> bool {
        lock(&self.set).insert(p)
    }

    /// Returns whether the partition was owned.
    pub fn remove(&self, p: u32) -> bool {
        lock(&self.set).remove(&p)
    }

    pub fn contains(&self, p: u32) -> bool {
        lock(&self.set).contains(&p)
    }

    /// Owned partitions in increasing order.
    pub fn list(&self) -> Vec<u32> {
        lock(&self.set).iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdp_degrade::{DegradeMachine, Policy};

    fn settings() -> Settings {
        match Settings::load_from(None, Vec::new()) {
            Ok(s) => s,
            Err(e) => panic!("default settings must load: {e}"),
        }
    }

    #[test]
    fn instance_ids_are_unique_and_name_the_service() {
        let a = instance_id("query");
        let b = instance_id("query");
        assert_ne!(a, b);
        assert!(a.starts_with("query@"), "{a}");
        assert!(a.contains(&format!("-{}-", std::process::id())), "{a}");
    }

    #[test]
    fn readiness_is_the_conjunction_of_checks() {
        let r = Readiness::default();
        assert!(r.is_ready(), "no checks yet");
        r.set("rabbitmq", Ok(()));
        r.set("mysql", Err("connection refused".into()));
        assert!(!r.is_ready());
        let h = r.snapshot();
        assert!(h.live);
        assert!(!h.ready);
        assert_eq!(h.checks.get("rabbitmq").map(String::as_str), Some("ok"));
        assert_eq!(
            h.checks.get("mysql").map(String::as_str),
            Some("connection refused")
        );
        r.set("mysql", Ok(()));
        assert!(r.is_ready());
        r.set("redis", Err("down".into()));
        r.clear("redis");
        assert!(r.snapshot().ready);
    }

    #[test]
    fn stats_set_and_add() {
        let s = Stats::default();
        s.add("changes_total", 5.0);
        s.add("changes_total", 2.5);
        s.set("lag_ms", 40.0);
        s.set("lag_ms", 12.0);
        assert_eq!(s.get("changes_total"), Some(7.5));
        assert_eq!(s.snapshot().get("lag_ms"), Some(&12.0));
        assert_eq!(s.get("missing"), None);
    }

    #[test]
    fn partitions_are_listed_in_order() {
        let p = PartitionsOwned::default();
        assert!(p.insert(5));
        assert!(p.insert(1));
        assert!(!p.insert(5));
        assert_eq!(p.list(), vec![1, 5]);
        assert!(p.remove(5));
        assert!(!p.remove(5));
        assert!(p.contains(1));
        assert_eq!(p.list(), vec![1]);
    }

    #[test]
    fn heartbeat_reflects_the_context() {
        let ctx = ServiceContext::new("result-writer", settings());
        ctx.set_http_addr("127.0.0.1:8104".parse().unwrap_or_else(|e| panic!("{e}")));
        ctx.readiness.set("mysql", Err("down".into()));
        ctx.stats.set("rows_written_total", 10.0);
        ctx.partitions.insert(3);
        let m = DegradeMachine::new("result-writer", "mysql", Policy::default());
        ctx.degrade.register(m.clone());
        m.set_override(mdp_types::Override::ForceDegraded, Some("drill".into()));

        let hb = ctx.heartbeat();
        assert_eq!(hb.service, "result-writer");
        assert_eq!(hb.instance, ctx.instance);
        assert_eq!(hb.http_addr, "127.0.0.1:8104");
        assert_eq!(hb.started_at_ms, ctx.started_at_ms);
        assert!(hb.sent_at_ms >= ctx.started_at_ms);
        assert!(!hb.health.ready);
        assert_eq!(hb.stats.get("rows_written_total"), Some(&10.0));
        assert_eq!(hb.partitions, vec![3]);
        assert_eq!(hb.degrade.len(), 1);
        assert_eq!(hb.degrade[0].state, "degraded");
        assert_eq!(hb.degrade[0].forced.as_deref(), Some("degraded"));
    }
}
