//! A chaos run: a seeded workload changes the source continuously while a
//! fault schedule SIGKILLs service instances (window-compute replicas
//! included, one for good) and stops or crashes the broker, the cache and the
//! MariaDB server. The infrastructure is private to the run
//! (`scripts/chaos-infra.sh`), so restarting it touches nothing else.
//!
//! After each fault a freshness probe (see [`crate::probe`]) is committed and
//! the fault counts as recovered when the query API serves it: the whole
//! pipeline carries changes again. At the end the load stops and every report
//! row is compared with MariaDB's recomputation over the source tables.

use crate::oracle;
use crate::platform::{repo_reports, Infra, Platform, PlatformOptions};
use crate::probe;
use crate::runner::{self, RunOptions};
use crate::workload::WorkloadConfig;
use futures::FutureExt;
use rand::{Rng, SeedableRng};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use std::collections::BTreeMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A piece of infrastructure the run owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// RabbitMQ.
    Broker,
    /// Redis.
    Cache,
    /// MariaDB holding the source tables and the report tables.
    Database,
}

impl Component {
    fn script_name(self) -> &'static str {
        match self {
            Component::Broker => "broker",
            Component::Cache => "cache",
            Component::Database => "source",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Component::Broker => "RabbitMQ",
            Component::Cache => "Redis",
            Component::Database => "MariaDB (source and results)",
        }
    }
}

/// One fault of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL a service instance; start it again unless `for_good`.
    Kill { instance: String, for_good: bool },
    /// Stop a component (SIGTERM, or SIGKILL when `crash`), then start it again.
    Restart { component: Component, crash: bool },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill {
                instance,
                for_good: false,
            } => write!(f, "SIGKILL {instance}, restart"),
            Fault::Kill {
                instance,
                for_good: true,
            } => write!(f, "SIGKILL {instance} for good"),
            Fault::Restart {
                component,
                crash: false,
            } => write!(f, "restart {}", component.label()),
            Fault::Restart {
                component,
                crash: true,
            } => write!(f, "crash and restart {}", component.label()),
        }
    }
}

/// The second window-compute replica the run starts.
pub const SECOND_COMPUTE: &str = "window-compute-2";

/// Every kind of fault once: each service killed and restarted, the broker,
/// cache and database restarted, the database crashed, and the window-compute
/// replica that owns the partitions killed for good (the other takes over).
pub fn full_schedule() -> Vec<Fault> {
    let kill = |instance: &str| Fault::Kill {
        instance: instance.into(),
        for_good: false,
    };
    vec![
        kill("ingest"),
        Fault::Restart {
            component: Component::Broker,
            crash: false,
        },
        kill("flow-control"),
        kill(SECOND_COMPUTE),
        Fault::Restart {
            component: Component::Cache,
            crash: false,
        },
        kill("result-writer"),
        Fault::Restart {
            component: Component::Database,
            crash: false,
        },
        kill("query"),
        kill("admin"),
        Fault::Restart {
            component: Component::Broker,
            crash: true,
        },
        Fault::Restart {
            component: Component::Database,
            crash: true,
        },
        Fault::Kill {
            instance: "window-compute".into(),
            for_good: true,
        },
    ]
}

/// Parameters of a run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub seed: u64,
    pub merchants: u64,
    /// Row changes per second of the continuous load.
    pub rate_per_s: f64,
    /// Row changes made before the services start (they arrive by snapshot).
    pub initial_changes: u64,
    pub faults: Vec<Fault>,
    /// Load time before each fault is drawn from this range.
    pub gap: (Duration, Duration),
    /// How long a killed instance or stopped component stays down.
    pub down: (Duration, Duration),
    /// Longest wait for the pipeline to carry a probe after a fault.
    pub recover_timeout: Duration,
    /// Longest wait for every report to equal the recomputation at the end.
    pub converge_timeout: Duration,
    pub window_ms: u64,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        ChaosOptions {
            seed: 7,
            merchants: 20,
            rate_per_s: 300.0,
            initial_changes: 300,
            faults: full_schedule(),
            gap: (Duration::from_secs(4), Duration::from_secs(10)),
            down: (Duration::from_millis(500), Duration::from_secs(4)),
            recover_timeout: Duration::from_secs(120),
            converge_timeout: Duration::from_secs(180),
            window_ms: 300,
        }
    }
}

/// What one fault cost.
#[derive(Debug, Clone)]
pub struct FaultReport {
    pub fault: Fault,
    /// When it was injected, from the start of the load.
    pub at: Duration,
    /// How long the instance or component was down.
    pub down: Duration,
    /// From injection until a change committed afterwards was served by the
    /// query API; None when that did not happen within the timeout.
    pub recovered_after: Option<Duration>,
    /// Degrade machines that left `normal` during the fault, as `service/machine`.
    pub noticed_by: Vec<String>,
    /// Changes re-sent by ingest and dropped by flow-control as duplicates.
    pub replayed_changes: u64,
    /// Windows delivered again and recognised by window-compute.
    pub replayed_windows: u64,
    /// Result batches delivered again and skipped by result-writer.
    pub replayed_results: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct ChaosReport {
    pub seed: u64,
    pub faults: Vec<FaultReport>,
    /// Row changes the load committed while the faults happened.
    pub changes: u64,
    pub load_seconds: f64,
    /// Time from the end of the load until every report was exact.
    pub converged_after: Option<Duration>,
    /// Differences left at the end (empty when exact).
    pub differences: String,
    /// Set when the run could not be carried out at all.
    pub error: Option<String>,
}

impl ChaosReport {
    /// True when every fault recovered and every report row is exact.
    pub fn passed(&self) -> bool {
        self.error.is_none()
            && self.converged_after.is_some()
            && self.faults.iter().all(|f| f.recovered_after.is_some())
    }
}

impl fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "chaos run, seed {}", self.seed)?;
        writeln!(
            f,
            "{:>6}  {:<48} {:>6} {:>10} {:>9} {:>8} {:>8}  noticed by",
            "at s", "fault", "down s", "recover s", "changes", "windows", "results"
        )?;
        for r in &self.faults {
            let recovered = r
                .recovered_after
                .map_or("NEVER".to_string(), |d| format!("{:.1}", d.as_secs_f64()));
            writeln!(
                f,
                "{:>6.1}  {:<48} {:>6.1} {:>10} {:>9} {:>8} {:>8}  {}",
                r.at.as_secs_f64(),
                r.fault.to_string(),
                r.down.as_secs_f64(),
                recovered,
                r.replayed_changes,
                r.replayed_windows,
                r.replayed_results,
                if r.noticed_by.is_empty() {
                    "-".to_string()
                } else {
                    r.noticed_by.join(", ")
                }
            )?;
        }
        writeln!(
            f,
            "(changes, windows, results: deliveries replayed after the fault and recognised as duplicates)"
        )?;
        writeln!(
            f,
            "load: {} row changes in {:.0} s",
            self.changes, self.load_seconds
        )?;
        if let Some(e) = &self.error {
            writeln!(f, "run failed: {e}")?;
        }
        match self.converged_after {
            Some(d) => writeln!(
                f,
                "every report row equals the recomputation over the source {:.1} s after the load stopped",
                d.as_secs_f64()
            )?,
            None if self.error.is_none() => {
                writeln!(f, "reports differ from the recomputation:\n{}", self.differences)?
            }
            None => {}
        }
        write!(
            f,
            "verdict: {}",
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }
}

/// The private broker, cache and database, driven through
/// `scripts/chaos-infra.sh`.
pub struct PrivateInfra {
    script: PathBuf,
}

impl Default for PrivateInfra {
    fn default() -> Self {
        PrivateInfra {
            script: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/chaos-infra.sh"),
        }
    }
}

impl PrivateInfra {
    /// Starts the three components; returns them and their URLs.
    pub async fn start() -> Result<(PrivateInfra, Infra), String> {
        let infra = PrivateInfra::default();
        for c in [Component::Broker, Component::Cache, Component::Database] {
            infra.run("start", c).await?;
        }
        let source = infra.run("url", Component::Database).await?;
        let urls = Infra {
            source: source.clone(),
            results: source,
            amqp: infra.run("url", Component::Broker).await?,
            redis: infra.run("url", Component::Cache).await?,
        };
        Ok((infra, urls))
    }

    async fn run(&self, command: &str, component: Component) -> Result<String, String> {
        let script = self.script.clone();
        let args = [command.to_string(), component.script_name().to_string()];
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(&script)
                .args(&args)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| format!("{}: {e}", script.display()))?;
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
            } else {
                Err(format!(
                    "chaos-infra.sh {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Stops all three components.
    pub async fn down(&self) {
        let script = self.script.clone();
        let _ = tokio::task::spawn_blocking(move || {
            std::process::Command::new(script)
                .arg("down")
                .stdin(std::process::Stdio::null())
                .status()
        })
        .await;
    }
}

fn between(rng: &mut rand::rngs::StdRng, (lo, hi): (Duration, Duration)) -> Duration {
    if hi <= lo {
        return lo;
    }
    Duration::from_millis(rng.random_range(lo.as_millis() as u64..=hi.as_millis() as u64))
}

/// Counters that show replayed deliveries, summed per instance.
const REPLAY_COUNTERS: [&str; 3] = [
    "mdp_flow_duplicate_events_total",
    "mdp_compute_duplicate_windows_total",
    "mdp_writer_duplicate_batches_total",
];

/// Sum of each replay counter over the instance's label sets.
async fn scrape(client: &reqwest::Client, url: String) -> [f64; 3] {
    let mut out = [0.0; 3];
    let Ok(resp) = client.get(url).send().await else {
        return out;
    };
    let Ok(text) = resp.text().await else {
        return out;
    };
    for line in text.lines() {
        for (i, name) in REPLAY_COUNTERS.iter().enumerate() {
            if let Some(rest) = line.strip_prefix(name) {
                if rest.starts_with(' ') || rest.starts_with('{') {
                    if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                        out[i] += v;
                    }
                }
            }
        }
    }
    out
}

/// Degrade machines of every instance: `service/machine` → transitions so far.
async fn degrade_transitions(
    client: &reqwest::Client,
    platform: &Platform,
    instances: &[String],
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for instance in instances {
        let Ok(resp) = client
            .get(platform.url(instance, "/v1/status"))
            .send()
            .await
        else {
            continue;
        };
        let Ok(hb) = resp.json::<serde_json::Value>().await else {
            continue;
        };
        for m in hb["degrade"].as_array().into_iter().flatten() {
            let key = format!("{}/{}", instance, m["machine"].as_str().unwrap_or_default());
            out.insert(key, m["transitions_total"].as_u64().unwrap_or(0));
        }
    }
    out
}

struct Run<'a> {
    platform: &'a mut Platform,
    infra: &'a PrivateInfra,
    probe_pool: MySqlPool,
    client: reqwest::Client,
    probes: usize,
    /// Live instances (killed-for-good ones are removed).
    instances: Vec<String>,
    /// Replay counters of each live instance at its last scrape.
    counters: BTreeMap<String, [f64; 3]>,
}

impl Run<'_> {
    /// Commits the next probe, retrying while the database is unreachable,
    /// and waits until the query API serves it.
    async fn probe(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        self.probes += 1;
        loop {
            match probe::commit(&self.probe_pool, self.probes).await {
                Ok(_) => break,
                // The commit went through but its answer was lost.
                Err(sqlx::Error::Database(e)) if e.message().contains("Duplicate") => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("probe {} not committed: {e}", self.probes))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        loop {
            if probe::visible(&self.client, self.platform)
                .await
                .is_some_and(|n| n >= self.probes)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "probe {} not served within {} s",
                    self.probes,
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn scrape_all(&mut self) -> BTreeMap<String, [f64; 3]> {
        let mut out = BTreeMap::new();
        for instance in &self.instances {
            let url = self.platform.url(instance, "/metrics");
            out.insert(instance.clone(), scrape(&self.client, url).await);
        }
        out
    }

    async fn inject(
        &mut self,
        fault: &Fault,
        at: Duration,
        down: Duration,
        recover_timeout: Duration,
    ) -> Result<FaultReport, String> {
        let before = degrade_transitions(&self.client, self.platform, &self.instances).await;
        let started = Instant::now();
        let mut restarted = None;
        match fault {
            Fault::Kill { instance, for_good } => {
                self.platform.kill(instance);
                if *for_good {
                    self.instances.retain(|i| i != instance);
                    self.counters.remove(instance);
                } else {
                    tokio::time::sleep(down).await;
                    let service = if instance == SECOND_COMPUTE {
                        "window-compute"
                    } else {
                        instance.as_str()
                    };
                    self.platform.start_instance(instance, service);
                    self.platform.wait_healthy(instance).await;
                    restarted = Some(instance.clone());
                }
            }
            Fault::Restart { component, crash } => {
                self.infra
                    .run(if *crash { "kill" } else { "stop" }, *component)
                    .await?;
                tokio::time::sleep(down).await;
                self.infra.run("start", *component).await?;
            }
        }
        let down = started.elapsed();
        let recovered_after = match self.probe(recover_timeout).await {
            Ok(()) => Some(started.elapsed()),
            Err(e) => {
                eprintln!("chaos: {fault}: {e}");
                None
            }
        };
        // Machines that moved during the fault.
        let after = degrade_transitions(&self.client, self.platform, &self.instances).await;
        let noticed_by = after
            .iter()
            .filter(|(k, v)| {
                let instance_restarted = restarted
                    .as_ref()
                    .is_some_and(|r| k.starts_with(&format!("{r}/")));
                !instance_restarted && before.get(*k).is_some_and(|b| *v > b)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let now = self.scrape_all().await;
        let mut replay = [0u64; 3];
        for (instance, values) in &now {
            let base = match (&restarted, self.counters.get(instance)) {
                (Some(r), _) if r == instance => [0.0; 3],
                (_, Some(b)) => *b,
                (_, None) => [0.0; 3],
            };
            for i in 0..3 {
                replay[i] += (values[i] - base[i]).max(0.0) as u64;
            }
        }
        self.counters = now;
        Ok(FaultReport {
            fault: fault.clone(),
            at,
            down,
            recovered_after,
            noticed_by,
            replayed_changes: replay[0],
            replayed_windows: replay[1],
            replayed_results: replay[2],
        })
    }
}

/// Runs the whole schedule on a private infrastructure and reports.
pub async fn run(opts: &ChaosOptions) -> ChaosReport {
    let mut report = ChaosReport {
        seed: opts.seed,
        faults: Vec::new(),
        changes: 0,
        load_seconds: 0.0,
        converged_after: None,
        differences: String::new(),
        error: None,
    };
    let (infra, urls) = match PrivateInfra::start().await {
        Ok(x) => x,
        Err(e) => {
            report.error = Some(format!("starting the private infrastructure: {e}"));
            return report;
        }
    };
    // Whatever happens (a setup step panics, too), the private
    // infrastructure is stopped at the end.
    let outcome = AssertUnwindSafe(async {
        let mut platform = Platform::prepare(PlatformOptions {
            tables: crate::schema::TABLES.to_vec(),
            reports: repo_reports(),
            extra_env: vec![],
            window_ms: opts.window_ms,
            infra: urls,
        })
        .await;
        let result = run_on(&mut platform, &infra, opts, &mut report).await;
        if let Err(e) = result {
            report.error = Some(e);
        }
        if !report.passed() {
            eprintln!("{}", platform.all_logs_tail());
        }
        platform.teardown().await;
    })
    .catch_unwind()
    .await;
    if let Err(panic) = outcome {
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a step panicked".into());
        report.error = Some(text);
    }
    infra.down().await;
    report
}

async fn run_on(
    platform: &mut Platform,
    infra: &PrivateInfra,
    opts: &ChaosOptions,
    report: &mut ChaosReport,
) -> Result<(), String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let source = MySqlPoolOptions::new()
        .max_connections(4)
        .connect(&platform.source_url())
        .await
        .map_err(|e| format!("connecting to the source: {e}"))?;
    crate::schema::create_tables(&source)
        .await
        .map_err(|e| format!("creating the shop tables: {e}"))?;
    let workload = |seed: u64| WorkloadConfig {
        seed,
        merchants: opts.merchants,
        history_days: 5,
        ..WorkloadConfig::default()
    };
    let (planners, _) = runner::prepare(&source, &workload(opts.seed), 2)
        .await
        .map_err(|e| format!("preparing the workload: {e}"))?;
    let (_keep, never) = tokio::sync::watch::channel(false);
    runner::run(
        &source,
        planners,
        &RunOptions {
            max_changes: Some(opts.initial_changes),
            max_duration: Some(Duration::from_secs(120)),
            ..RunOptions::default()
        },
        never,
    )
    .await
    .map_err(|e| format!("initial changes: {e}"))?;

    platform.start_all().await;
    platform.start_instance(SECOND_COMPUTE, "window-compute");
    platform.wait_healthy(SECOND_COMPUTE).await;

    let (planners, _) = runner::prepare(&source, &workload(opts.seed + 1), 2)
        .await
        .map_err(|e| format!("preparing the workload: {e}"))?;
    probe::create_merchant(&source)
        .await
        .map_err(|e| format!("creating the probe merchant: {e}"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load_pool = source.clone();
    let rate = opts.rate_per_s;
    let load = tokio::spawn(async move {
        let opts = RunOptions {
            rate_per_s: Some(rate),
            max_duration: Some(Duration::from_secs(3600)),
            ..RunOptions::default()
        };
        runner::run(&load_pool, planners, &opts, stop_rx).await
    });
    let load_started = Instant::now();

    let mut instances: Vec<String> = crate::platform::SERVICES
        .iter()
        .map(|s| s.to_string())
        .collect();
    instances.push(SECOND_COMPUTE.to_string());
    let mut run = Run {
        platform,
        infra,
        probe_pool: source.clone(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?,
        probes: 0,
        instances,
        counters: BTreeMap::new(),
    };
    // The pipeline carries changes before the first fault.
    run.probe(opts.recover_timeout)
        .await
        .map_err(|e| format!("before any fault: {e}"))?;
    run.counters = run.scrape_all().await;

    for fault in &opts.faults {
        tokio::time::sleep(between(&mut rng, opts.gap)).await;
        if load.is_finished() {
            break;
        }
        let down = between(&mut rng, opts.down);
        let at = load_started.elapsed();
        eprintln!("chaos: {:>6.1} s  {fault}", at.as_secs_f64());
        let r = run.inject(fault, at, down, opts.recover_timeout).await?;
        eprintln!(
            "chaos: {fault}: {}",
            r.recovered_after
                .map_or("did not recover".to_string(), |d| format!(
                    "recovered in {:.1} s",
                    d.as_secs_f64()
                ))
        );
        report.faults.push(r);
    }
    let _ = stop_tx.send(true);
    let stats = load
        .await
        .map_err(|e| format!("load task: {e}"))?
        .map_err(|e| format!("load: {e}"))?;
    report.changes = stats.changes;
    report.load_seconds = stats.elapsed.as_secs_f64();

    match oracle::wait_converged(run.platform, &source, opts.merchants, opts.converge_timeout).await
    {
        Ok(d) => report.converged_after = Some(d),
        Err(d) => report.differences = d,
    }
    source.close().await;
    Ok(())
}
