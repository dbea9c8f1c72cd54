//! `mdp-bench`: end-to-end benchmark of the six services on this machine
//! (loopback only), run by `just bench`.
//!
//! 1. Pipeline throughput without loss: with ingest stopped, the seeded shop
//!    workload writes a backlog of row changes into the source as fast as it
//!    can; ingest is then started and the time until every report served by
//!    the query API equals the same SQL run in MariaDB is measured.
//! 2. Freshness at a steady rate: the workload runs at a target rate while a
//!    probe order for a dedicated merchant is committed every few hundred
//!    milliseconds; the time from its commit until the query API shows it is
//!    recorded.
//!
//! Everything it starts (service processes, databases, queues, Redis keys) is
//! removed at the end, also when a step fails or on SIGINT/SIGTERM.
//! Tuning is by environment variables (see `USAGE`).

use futures::FutureExt;
use mdp_e2e::platform::{
    api_rows, diff_rows, mysql_rows, repo_reports, Infra, JsonRow, Platform, PlatformOptions,
};
use mdp_e2e::probe::{self, PROBE_REPORT};
use mdp_e2e::runner::{self, RunError, RunOptions, RunStats};
use mdp_e2e::schema::{self, SchemaError};
use mdp_e2e::workload::WorkloadConfig;
use sqlx::mysql::MySqlPool;
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const USAGE: &str = "\
usage: mdp-bench

End-to-end benchmark of the six services (release builds next to this
binary, or in MDP_BIN_DIR) against the local RabbitMQ, MariaDB (3306),
binlog source MariaDB (3307) and Redis. Tuning by environment:

  MDP_BENCH_CHANGES        backlog row changes for the throughput run (default 200000)
  MDP_BENCH_WORKERS        generator connections (default 4)
  MDP_BENCH_MERCHANTS      merchants of the workload (default 100)
  MDP_BENCH_SEED           workload seed (default 42)
  MDP_BENCH_DRAIN_TIMEOUT_S  longest wait for the backlog to be processed (default 600)
  MDP_BENCH_RATE           target row changes/s of the freshness run (default 5000)
  MDP_BENCH_FRESHNESS_S    length of the freshness run in seconds (default 60)
  MDP_BENCH_PROBE_MS       one probe order every this many ms (default 250)
  MDP_BENCH_WINDOW_MS      flow-control window length in ms (default 1000)
  MDP_BENCH_REPORTS        comma-separated report names to run (default: every report in reports/)";

/// How often the query API is asked whether the newest probe is visible.
const PROBE_POLL: Duration = Duration::from_millis(50);
/// How long probes may take to appear after the load stops.
const PROBE_TAIL: Duration = Duration::from_secs(30);
/// Changes written (and awaited) before ingest is stopped.
const WARMUP_CHANGES: u64 = 2_000;
/// Longest wait for the platform to match the source outside the timed runs.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest wait, after the freshness load, for every report to equal the source.
const AFTER_LOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// How often served reports are compared with the oracle while draining.
const DRAIN_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("{name}={value:?}: {why}")]
    Env {
        name: &'static str,
        value: String,
        why: String,
    },
    #[error("service binaries not found in {0} (build with `cargo build --release --workspace --bins` or set MDP_BIN_DIR)")]
    Binaries(String),
    #[error("workload failed")]
    Workload(#[from] RunError),
    #[error("source schema")]
    Schema(#[from] SchemaError),
    #[error("database error while {step}")]
    Sql {
        step: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("HTTP {0}")]
    Http(String),
    #[error("{0}")]
    Timeout(String),
    #[error("interrupted")]
    Interrupted,
    #[error("a step panicked: {0}")]
    Panicked(String),
    #[error("the workload task failed: {0}")]
    Task(String),
}

fn sql_err(step: &'static str) -> impl FnOnce(sqlx::Error) -> BenchError {
    move |source| BenchError::Sql { step, source }
}

/// Benchmark parameters, from the environment.
#[derive(Debug, Clone)]
struct Params {
    changes: u64,
    workers: u32,
    merchants: u64,
    seed: u64,
    drain_timeout: Duration,
    rate: f64,
    freshness: Duration,
    probe_every: Duration,
    window_ms: u64,
    /// Report names to run; empty = every report of the repository.
    reports: Vec<String>,
    /// Concurrent readers and duration of the hot-read run.
    readers: usize,
    reads: Duration,
}

fn env_num<T>(name: &'static str, default: T, min: T, max: T) -> Result<T, BenchError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Ok(value) = std::env::var(name) else {
        return Ok(default);
    };
    let v: T = value.trim().parse().map_err(|_| BenchError::Env {
        name,
        value: value.clone(),
        why: "not a number".into(),
    })?;
    if v < min || v > max {
        return Err(BenchError::Env {
            name,
            value,
            why: format!("must be between {min} and {max}"),
        });
    }
    Ok(v)
}

impl Params {
    fn from_env() -> Result<Self, BenchError> {
        Ok(Params {
            changes: env_num("MDP_BENCH_CHANGES", 200_000u64, 1_000, 2_000_000)?,
            workers: env_num("MDP_BENCH_WORKERS", 4u32, 1, 32)?,
            merchants: env_num("MDP_BENCH_MERCHANTS", 100u64, 1, 100_000)?,
            seed: env_num("MDP_BENCH_SEED", 42u64, 0, u64::MAX / 2)?,
            drain_timeout: Duration::from_secs(env_num(
                "MDP_BENCH_DRAIN_TIMEOUT_S",
                600u64,
                10,
                3_600,
            )?),
            rate: env_num("MDP_BENCH_RATE", 5_000f64, 1.0, 1_000_000.0)?,
            freshness: Duration::from_secs(env_num("MDP_BENCH_FRESHNESS_S", 60u64, 5, 1_800)?),
            probe_every: Duration::from_millis(env_num("MDP_BENCH_PROBE_MS", 250u64, 20, 10_000)?),
            window_ms: env_num("MDP_BENCH_WINDOW_MS", 1_000u64, 10, 60_000)?,
            readers: env_num("MDP_BENCH_READERS", 32usize, 1, 1_024)?,
            reads: Duration::from_secs(env_num("MDP_BENCH_READS_S", 10u64, 1, 600)?),
            reports: std::env::var("MDP_BENCH_REPORTS")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    fn workload(&self, seed: u64) -> WorkloadConfig {
        WorkloadConfig {
            seed,
            merchants: self.merchants,
            ..WorkloadConfig::default()
        }
    }
}

/// Result of the throughput run.
#[derive(Debug, Default)]
struct Throughput {
    changes: u64,
    transactions: u64,
    write: Duration,
    /// Change events ingest published for the backlog (its counter restarts with it).
    events: Option<u64>,
    drain: Duration,
    /// Duration of the comparison that found every report equal (the resolution of `drain`).
    last_check: Duration,
    report_rows: usize,
}

/// Result of the freshness run.
#[derive(Debug)]
struct Freshness {
    load: RunStats,
    probes_sent: usize,
    /// Commit → visible latency of every probe that became visible.
    latencies: Vec<Duration>,
    /// Time after the load stopped until served reports equal the source
    /// again, or what still differed when the wait ended.
    settle: Result<Duration, String>,
}

/// Result of the hot-read run.
#[derive(Debug, Default)]
struct HotReads {
    elapsed: Duration,
    /// Latency of every answered request, sorted.
    latencies: Vec<Duration>,
    /// Answers with a status other than 200, and requests without an answer.
    failed: u64,
    /// Answers that came from query's in-process cache.
    from_cache: u64,
}

/// Resident memory of one service instance, kB, from `/proc/{pid}/status`.
struct Memory {
    instance: String,
    /// `VmHWM`: the peak.
    peak: Option<u64>,
    /// `VmRSS`: now.
    now: Option<u64>,
    /// `RssAnon`: now, the process's own memory (heap, stacks).
    anon: Option<u64>,
    /// `RssFile`: now, mapped file pages (the kernel reclaims them under pressure).
    file: Option<u64>,
}

fn memory(platform: &Platform) -> Vec<Memory> {
    let field = |status: &str, name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    platform
        .pids()
        .into_iter()
        .map(|(instance, pid)| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            Memory {
                instance,
                peak: field(&status, "VmHWM:"),
                now: field(&status, "VmRSS:"),
                anon: field(&status, "RssAnon:"),
                file: field(&status, "RssFile:"),
            }
        })
        .collect()
}

/// `readers` concurrent clients read one merchant's `PROBE_REPORT` rows
/// each, merchants in turn, for `duration`, on keep-alive connections.
async fn hot_reads(platform: &Platform, params: &Params) -> HotReads {
    eprintln!(
        "bench: hot reads: {} readers for {} s",
        params.readers,
        params.reads.as_secs()
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(params.readers)
        .build()
        .unwrap_or_default();
    let url = platform.url(
        "query",
        &format!("/v1/reports/{}/rows", probe::PROBE_REPORT),
    );
    let started = Instant::now();
    let deadline = started + params.reads;
    let readers: Vec<_> = (0..params.readers)
        .map(|r| {
            let client = client.clone();
            let url = url.clone();
            let merchants = params.merchants.max(1);
            tokio::spawn(async move {
                let mut out = HotReads::default();
                let mut n = r as u64;
                while Instant::now() < deadline {
                    let merchant = 1 + n % merchants;
                    n += 1;
                    let sent = Instant::now();
                    let answer = client
                        .get(&url)
                        .query(&[("merchant_id", merchant.to_string())])
                        .send()
                        .await;
                    match answer {
                        Ok(resp) if resp.status().is_success() => {
                            let body: Option<serde_json::Value> = resp.json().await.ok();
                            out.latencies.push(sent.elapsed());
                            if body.is_some_and(|b| b["served_by"] == "cache") {
                                out.from_cache += 1;
                            }
                        }
                        _ => out.failed += 1,
                    }
                }
                out
            })
        })
        .collect();
    let mut all = HotReads::default();
    for reader in readers {
        match reader.await {
            Ok(r) => {
                all.latencies.extend(r.latencies);
                all.failed += r.failed;
                all.from_cache += r.from_cache;
            }
            Err(_) => all.failed += 1,
        }
    }
    all.elapsed = started.elapsed();
    all.latencies.sort();
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A report's name, SQL and key columns.
struct ReportSpec {
    name: String,
    sql: String,
    keys: Vec<String>,
}

async fn report_specs(platform: &Platform) -> Result<Vec<ReportSpec>, BenchError> {
    let body: serde_json::Value = reqwest::get(platform.url("query", "/v1/reports"))
        .await
        .map_err(|e| BenchError::Http(format!("GET /v1/reports: {e}")))?
        .json()
        .await
        .map_err(|e| BenchError::Http(format!("GET /v1/reports: {e}")))?;
    let listed = body["reports"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for (name, sql) in &platform.reports {
        let keys = listed
            .iter()
            .find(|r| r["name"].as_str() == Some(name))
            .and_then(|r| r["columns"].as_array())
            .into_iter()
            .flatten()
            .filter(|c| c["role"] == "key")
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect::<Vec<_>>();
        if keys.is_empty() {
            return Err(BenchError::Http(format!(
                "report {name} is not listed by the query API: {body}"
            )));
        }
        out.push(ReportSpec {
            name: name.clone(),
            sql: sql.clone(),
            keys,
        });
    }
    Ok(out)
}

/// Every report's rows computed by MariaDB over the source tables.
async fn oracle(source: &MySqlPool, specs: &[ReportSpec]) -> Vec<Vec<JsonRow>> {
    let mut out = Vec::new();
    for s in specs {
        out.push(mysql_rows(source, &s.sql).await);
    }
    out
}

/// Whether every report read from the query API (all merchants at once)
/// equals `expected`; stops at the first difference.
async fn served_equal(
    platform: &Platform,
    specs: &[ReportSpec],
    expected: &[Vec<JsonRow>],
) -> Result<(), String> {
    for (s, rows) in specs.iter().zip(expected) {
        let served = api_rows(platform, &s.name, &[])
            .await
            .map_err(|e| format!("{}: query failed: {e}", s.name))?;
        let keys: Vec<&str> = s.keys.iter().map(String::as_str).collect();
        if let Some(d) = diff_rows(rows, &served, &keys) {
            return Err(format!("{}: {d}", s.name));
        }
    }
    Ok(())
}

/// Waits until the served reports equal the source as it is now (the source
/// must not change meanwhile).
async fn settle(
    platform: &Platform,
    source: &MySqlPool,
    specs: &[ReportSpec],
    timeout: Duration,
) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let expected = oracle(source, specs).await;
    loop {
        match served_equal(platform, specs, &expected).await {
            Ok(()) => return Ok(started.elapsed()),
            Err(diff) if started.elapsed() > timeout => {
                let mut differing = Vec::new();
                for (s, rows) in specs.iter().zip(&expected) {
                    let one = std::slice::from_ref(s);
                    if served_equal(platform, one, std::slice::from_ref(rows))
                        .await
                        .is_err()
                    {
                        differing.push(s.name.as_str());
                    }
                }
                return Err(BenchError::Timeout(format!(
                    "reports did not match the source within {} s (differing: {}): {diff}",
                    timeout.as_secs(),
                    differing.join(", ")
                )));
            }
            Err(_) => tokio::time::sleep(DRAIN_POLL).await,
        }
    }
}

/// Sum of `mdp_ingest_events_total` over its labels, from ingest's /metrics.
async fn ingest_events(platform: &Platform) -> Option<u64> {
    let text = reqwest::get(platform.url("ingest", "/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut total = 0f64;
    let mut found = false;
    for line in text.lines() {
        let is_metric = line.starts_with("mdp_ingest_events_total{")
            || line.starts_with("mdp_ingest_events_total ");
        if is_metric {
            if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                total += v;
                found = true;
            }
        }
    }
    found.then_some(total as u64)
}

async fn write_changes(
    pool: &MySqlPool,
    params: &Params,
    seed: u64,
    opts: RunOptions,
) -> Result<RunStats, BenchError> {
    let (planners, _) = runner::prepare(pool, &params.workload(seed), params.workers).await?;
    let (_stop_tx, stop) = watch::channel(false);
    Ok(runner::run(pool, planners, &opts, stop).await?)
}

/// Measure 1: backlog written with ingest stopped, then drained.
async fn throughput(
    platform: &mut Platform,
    source: &MySqlPool,
    specs: &[ReportSpec],
    params: &Params,
) -> Result<Throughput, BenchError> {
    eprintln!("bench: warm-up: {WARMUP_CHANGES} changes through the running platform");
    write_changes(
        source,
        params,
        params.seed,
        RunOptions {
            max_changes: Some(WARMUP_CHANGES),
            max_duration: Some(Duration::from_secs(120)),
            ..RunOptions::default()
        },
    )
    .await?;
    settle(platform, source, specs, SETTLE_TIMEOUT).await?;

    platform.kill("ingest");
    eprintln!(
        "bench: ingest stopped; writing {} changes with {} workers",
        params.changes, params.workers
    );
    let stats = write_changes(
        source,
        params,
        params.seed + 1_000,
        RunOptions {
            max_changes: Some(params.changes),
            max_duration: Some(Duration::from_secs(1_800)),
            progress_every: Some(Duration::from_secs(10)),
            ..RunOptions::default()
        },
    )
    .await?;
    eprintln!(
        "bench: wrote {} changes in {:.1} s ({:.0}/s); computing the oracle",
        stats.changes,
        stats.elapsed.as_secs_f64(),
        stats.rate()
    );
    let expected = oracle(source, specs).await;
    let report_rows = expected.iter().map(Vec::len).sum();

    eprintln!("bench: starting ingest; waiting for the backlog to be processed");
    let started = Instant::now();
    platform.start("ingest");
    platform.wait_healthy("ingest").await;
    let mut last_progress = Instant::now();
    let (drain, last_check) = loop {
        let check = Instant::now();
        let outcome = served_equal(platform, specs, &expected).await;
        let now = Instant::now();
        match outcome {
            // The reads that found everything equal ended now: the backlog was
            // processed at the latest by then.
            Ok(()) => break (now - started, now - check),
            Err(diff) if now - started > params.drain_timeout => {
                return Err(BenchError::Timeout(format!(
                    "backlog not processed within {} s: {diff}",
                    params.drain_timeout.as_secs()
                )))
            }
            Err(_) => {
                if last_progress.elapsed() >= Duration::from_secs(10) {
                    last_progress = Instant::now();
                    eprintln!(
                        "bench: draining for {:.0} s; ingest published {} events so far",
                        started.elapsed().as_secs_f64(),
                        ingest_events(platform)
                            .await
                            .map_or("?".into(), |n| n.to_string())
                    );
                }
                let spent = check.elapsed();
                if spent < DRAIN_POLL {
                    tokio::time::sleep(DRAIN_POLL - spent).await;
                }
            }
        }
    };
    Ok(Throughput {
        changes: stats.changes,
        transactions: stats.actions,
        write: stats.elapsed,
        events: ingest_events(platform).await,
        drain,
        last_check,
        report_rows,
    })
}

/// Probe orders committed so far: the instant each commit returned.
#[derive(Default)]
struct Probes {
    committed: Vec<Instant>,
}

/// Measure 2: steady load plus probes.
async fn freshness(
    platform: &Platform,
    source: &MySqlPool,
    specs: &[ReportSpec],
    params: &Params,
) -> Result<Freshness, BenchError> {
    let (planners, _) = runner::prepare(
        source,
        &params.workload(params.seed + 2_000),
        params.workers,
    )
    .await?;
    // The probe merchant is created after the planners read the merchants,
    // so the workload never touches it.
    probe::create_merchant(source)
        .await
        .map_err(sql_err("creating the probe merchant"))?;

    eprintln!(
        "bench: freshness: {} changes/s for {} s, a probe every {} ms",
        params.rate,
        params.freshness.as_secs(),
        params.probe_every.as_millis()
    );
    let (stop_tx, stop) = watch::channel(false);
    let load_pool = source.clone();
    let opts = RunOptions {
        rate_per_s: Some(params.rate),
        max_duration: Some(params.freshness),
        progress_every: Some(Duration::from_secs(10)),
        ..RunOptions::default()
    };
    let load = tokio::spawn(async move { runner::run(&load_pool, planners, &opts, stop).await });

    let probes = Arc::new(Mutex::new(Probes::default()));
    let probe_pool = schema::connect(&platform.source_url(), 2).await?;
    let prober = {
        let probes = probes.clone();
        let pool = probe_pool.clone();
        let every = params.probe_every;
        let until = Instant::now() + params.freshness;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0usize;
            while Instant::now() < until {
                tick.tick().await;
                n += 1;
                let at = probe::commit(&pool, n)
                    .await
                    .map_err(sql_err("committing a probe order"))?;
                if let Ok(mut p) = probes.lock() {
                    p.committed.push(at);
                }
            }
            Ok::<(), BenchError>(())
        })
    };

    let client = reqwest::Client::new();
    let mut latencies = Vec::new();
    let mut tail_deadline: Option<Instant> = None;
    loop {
        let committed: Vec<Instant> = probes
            .lock()
            .map(|p| p.committed.clone())
            .unwrap_or_default();
        if let Some(visible) = probe::visible(&client, platform).await {
            let now = Instant::now();
            // Probes become visible in commit order (one merchant, one partition).
            let upto = visible.min(committed.len());
            while latencies.len() < upto {
                latencies.push(now - committed[latencies.len()]);
            }
        }
        let done = prober.is_finished();
        if done && tail_deadline.is_none() {
            tail_deadline = Some(Instant::now() + PROBE_TAIL);
        }
        if done && latencies.len() >= committed.len() {
            break;
        }
        if tail_deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        tokio::time::sleep(PROBE_POLL).await;
    }
    let _ = stop_tx.send(true);
    match prober.await {
        Ok(r) => r?,
        Err(e) => return Err(BenchError::Task(e.to_string())),
    }
    let load = match load.await {
        Ok(r) => r?,
        Err(e) => return Err(BenchError::Task(e.to_string())),
    };
    let probes_sent = probes.lock().map(|p| p.committed.len()).unwrap_or(0);
    probe_pool.close().await;
    eprintln!(
        "bench: load done ({} changes in {:.1} s); checking every report against the source",
        load.changes,
        load.elapsed.as_secs_f64()
    );
    let settle = settle(platform, source, specs, AFTER_LOAD_TIMEOUT)
        .await
        .map_err(|e| e.to_string());
    Ok(Freshness {
        load,
        probes_sent,
        latencies,
        settle,
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1_000.0)
}

fn print_report(
    params: &Params,
    reports: usize,
    t: &Throughput,
    f: &Freshness,
    h: &HotReads,
    mem: &[Memory],
) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut sorted = f.latencies.clone();
    sorted.sort();
    let rate = |n: u64, d: Duration| {
        if d.as_secs_f64() > 0.0 {
            n as f64 / d.as_secs_f64()
        } else {
            0.0
        }
    };
    println!();
    println!("mdp-bench: end to end, six release services on loopback");
    println!(
        "  date        {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("  machine     {cores} cores, {}", cpu_model());
    println!(
        "  parameters  {} reports, {} merchants, {} workers, window {} ms, seed {}",
        reports, params.merchants, params.workers, params.window_ms, params.seed
    );
    println!();
    println!("  1. pipeline throughput (backlog written with ingest stopped, then drained)");
    println!("  | what                                   | value |");
    println!("  |----------------------------------------|-------|");
    println!(
        "  | backlog row changes                    | {} |",
        t.changes
    );
    println!(
        "  | source transactions                    | {} |",
        t.transactions
    );
    println!(
        "  | generator write rate (ingest stopped)  | {:.0} changes/s |",
        rate(t.changes, t.write)
    );
    println!(
        "  | binlog events published by ingest      | {} |",
        t.events.map_or("unknown".into(), |n| n.to_string())
    );
    println!(
        "  | drain time (ingest start → all equal)  | {:.1} s |",
        t.drain.as_secs_f64()
    );
    println!(
        "  | throughput, row changes               | {:.0} changes/s |",
        rate(t.changes, t.drain)
    );
    if let Some(e) = t.events {
        println!(
            "  | throughput, binlog events             | {:.0} events/s |",
            rate(e, t.drain)
        );
    }
    println!(
        "  | report rows compared with MariaDB      | {} (last comparison took {}) |",
        t.report_rows,
        ms(t.last_check)
    );
    println!();
    println!("  2. freshness (probe commit → visible in the query API)");
    println!("  | what                                   | value |");
    println!("  |----------------------------------------|-------|");
    println!(
        "  | target rate                            | {:.0} changes/s |",
        params.rate
    );
    println!(
        "  | achieved generator rate                | {:.0} changes/s ({} changes in {:.1} s) |",
        f.load.rate(),
        f.load.changes,
        f.load.elapsed.as_secs_f64()
    );
    println!(
        "  | probes committed / visible             | {} / {} |",
        f.probes_sent,
        f.latencies.len()
    );
    for (label, p) in [("p50", 50.0), ("p95", 95.0), ("p99", 99.0)] {
        println!(
            "  | latency {label}                            | {} |",
            ms(percentile(&sorted, p))
        );
    }
    println!(
        "  | latency max                            | {} |",
        ms(sorted.last().copied().unwrap_or_default())
    );
    match &f.settle {
        Ok(d) => println!(
            "  | all reports equal the source after     | {:.1} s |",
            d.as_secs_f64()
        ),
        Err(e) => {
            let first = e.lines().next().unwrap_or_default();
            println!("  | all reports equal the source after     | NOT REACHED: {first} |");
        }
    }
    println!();
    println!(
        "  Latency resolution: the query API is polled every {} ms.",
        PROBE_POLL.as_millis()
    );
    println!();
    println!(
        "  3. hot reads (one merchant's {} rows per request, merchants in turn)",
        probe::PROBE_REPORT
    );
    println!("  | what                                   | value |");
    println!("  |----------------------------------------|-------|");
    println!(
        "  | readers / duration                     | {} / {:.1} s |",
        params.readers,
        h.elapsed.as_secs_f64()
    );
    println!(
        "  | answered (200)                         | {} ({:.0} requests/s) |",
        h.latencies.len(),
        rate(h.latencies.len() as u64, h.elapsed)
    );
    println!(
        "  | served from the in-process cache       | {} |",
        h.from_cache
    );
    println!(
        "  | failed                                 | {} |",
        h.failed
    );
    for (label, p) in [("p50", 50.0), ("p99", 99.0)] {
        println!(
            "  | latency {label}                            | {:.2} ms |",
            percentile(&h.latencies, p).as_secs_f64() * 1e3
        );
    }
    println!(
        "  | latency max                            | {:.2} ms |",
        h.latencies
            .last()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    );
    println!();
    println!("  The readers run in this process, on the same cores as the services.");
    println!();
    println!("  4. memory per service instance at the end (resident, from /proc)");
    println!("  | instance                               | peak | now | now: own (anon) | now: mapped files |");
    println!("  |----------------------------------------|------|-----|-----------------|-------------------|");
    let mb = |kb: Option<u64>| {
        kb.map_or("unknown".to_string(), |kb| {
            format!("{:.0} MB", kb as f64 / 1024.0)
        })
    };
    for m in mem {
        println!(
            "  | {:<38} | {} | {} | {} | {} |",
            m.instance,
            mb(m.peak),
            mb(m.now),
            mb(m.anon),
            mb(m.file)
        );
    }
}

async fn run(platform: &mut Platform, params: &Params) -> Result<(), BenchError> {
    let source = schema::connect(&platform.source_url(), params.workers + 2).await?;
    schema::create_tables(&source).await?;
    platform.start_all().await;
    let specs = report_specs(platform).await?;
    let t = throughput(platform, &source, &specs, params).await?;
    eprintln!(
        "bench: backlog of {} changes ({} binlog events) processed in {:.1} s",
        t.changes,
        t.events.map_or("?".into(), |n| n.to_string()),
        t.drain.as_secs_f64()
    );
    let f = freshness(platform, &source, &specs, params).await?;
    source.close().await;
    let h = hot_reads(platform, params).await;
    let mem = memory(platform);
    print_report(params, specs.len(), &t, &f, &h, &mem);
    Ok(())
}

async fn bench(params: Params) -> Result<(), BenchError> {
    let bins = mdp_e2e::platform::bin_dir();
    if !bins.join("mdp-ingest").exists() {
        return Err(BenchError::Binaries(bins.display().to_string()));
    }
    eprintln!("bench: services from {}", bins.display());
    let mut reports = repo_reports();
    if !params.reports.is_empty() {
        let unknown: Vec<&String> = params
            .reports
            .iter()
            .filter(|r| !reports.iter().any(|(name, _)| name == *r))
            .collect();
        if !unknown.is_empty() {
            return Err(BenchError::Env {
                name: "MDP_BENCH_REPORTS",
                value: params.reports.join(","),
                why: format!("unknown reports {unknown:?}"),
            });
        }
        reports.retain(|(name, _)| params.reports.contains(name));
    }
    if !reports.iter().any(|(name, _)| name == PROBE_REPORT) {
        return Err(BenchError::Env {
            name: "MDP_BENCH_REPORTS",
            value: params.reports.join(","),
            why: format!("the freshness probes are read from {PROBE_REPORT}, include it"),
        });
    }
    let mut platform = Platform::prepare(PlatformOptions {
        tables: schema::TABLES.to_vec(),
        reports,
        extra_env: vec![],
        window_ms: params.window_ms,
        infra: Infra::shared(),
    })
    .await;
    let outcome = {
        let body = AssertUnwindSafe(run(&mut platform, &params)).catch_unwind();
        tokio::select! {
            r = body => match r {
                Ok(r) => r,
                Err(panic) => Err(BenchError::Panicked(
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default(),
                )),
            },
            _ = mdp_e2e::platform::interrupted() => Err(BenchError::Interrupted),
        }
    };
    if outcome.is_err() {
        eprintln!("bench: service logs (tail):\n{}", platform.all_logs_tail());
    }
    eprintln!("bench: stopping the services and removing what the run created");
    platform.teardown().await;
    outcome
}

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let params = match Params::from_env() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mdp-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The service binaries are built next to this one.
    if std::env::var_os("MDP_BIN_DIR").is_none() {
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
        {
            std::env::set_var("MDP_BIN_DIR", dir);
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mdp-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(bench(params)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("mdp-bench: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
        assert_eq!(
            percentile(&[Duration::from_millis(7)], 95.0),
            Duration::from_millis(7)
        );
    }
}
