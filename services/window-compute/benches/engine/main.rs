//! Engine benchmark: what one window of changes costs as the day's report
//! state grows, against re-running the report SQL in MariaDB, and how many
//! changes per second one thread sustains.
//!
//! 1. Per-window compute: the day's state is built through the engine into
//!    one partition's SQLite state file (all merchants in that partition),
//!    then windows of 1,000 live changes (order lifecycles, cart edits and
//!    deletes, late orders and corrections of earlier days) go through
//!    `PartitionState::compute` — the engine plus the state transaction
//!    (progress, result batch, commit with fsync) — at each day size.
//! 2. Baseline: the same report SQLs over the same generated day in MariaDB.
//! 3. Sustained throughput: a long live stream, window by window, on one
//!    thread, into a fresh state file.
//!
//! Run with `just bench-engine`. Environment (all optional):
//! `MDP_BENCH_ENGINE_SIZES` (orders, default `100000,1000000,10000000`),
//! `MDP_BENCH_ENGINE_BUILD_BUDGET_S` (480), `MDP_BENCH_ENGINE_WINDOWS` (300),
//! `MDP_BENCH_ENGINE_WARMUP_WINDOWS` (30), `MDP_BENCH_ENGINE_STAGE_BUDGET_S` (45, compute
//! time per day size; at least 10 windows), `MDP_BENCH_ENGINE_WINDOW_CHANGES` (1000),
//! `MDP_BENCH_ENGINE_MERCHANTS` (10000), `MDP_BENCH_ENGINE_STREAM_CHANGES` (1500000),
//! `MDP_BENCH_ENGINE_STREAM_BUDGET_S` (60), `MDP_BENCH_ENGINE_MARIADB_URL`
//! (`mysql://root@127.0.0.1:3306`, `off` to skip), `MDP_BENCH_ENGINE_BASELINE_ORDERS`
//! (1000000), `MDP_BENCH_ENGINE_REFRESHES` (3), `MDP_BENCH_ENGINE_REFRESH_BUDGET_S` (70,
//! no further refresh starts past it), `MDP_BENCH_ENGINE_SEED` (42),
//! `MDP_BENCH_ENGINE_REPORTS` (report names to keep, comma separated; default all),
//! `MDP_BENCH_ENGINE_CHUNK_MAX` (largest multiset chunk; default the engine's).

mod day;
mod interrupt;
mod mariadb;
mod measure;
mod replay;
mod rows;

use anyhow::Context;
use chrono::NaiveDate;
use day::{DayConfig, DayGenerator, OrderSample};
use mdp_e2e::workload::{Planner, Snapshot, WorkloadConfig};
use mdp_report::{ApplyStats, ChunkSizes, Engine, ReportSet, TenantColumns};
use mdp_types::{ChangeEvent, Window};
use mdp_window_compute::state::{PartitionState, SqliteStore};
use measure::{load_average, ms, sqlite_bytes, thousands, thread_cpu, Machine, Timings};
use replay::{Mix, Model, Stream};
use rows::EventFactory;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The allocator the window-compute binary runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Fewest windows measured at a day size, whatever the budget.
const MIN_WINDOWS: usize = 10;
/// Orders generated and applied per build transaction.
const BUILD_CHUNK_ORDERS: u64 = 50_000;
/// The business day of the generated data.
const DAY: (i32, u32, u32) = (2026, 11, 21);

struct Settings {
    sizes: Vec<u64>,
    build_budget: Duration,
    windows: usize,
    warmup_windows: usize,
    stage_budget: Duration,
    refresh_budget: Duration,
    window_changes: usize,
    merchants: usize,
    stream_changes: u64,
    stream_budget: Duration,
    mariadb_url: Option<String>,
    baseline_orders: u64,
    refreshes: usize,
    seed: u64,
    /// Largest chunk of a multiset stored in chunks (0: the engine's default).
    chunk_max: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid number")),
        _ => Ok(default),
    }
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let sizes = match std::env::var("MDP_BENCH_ENGINE_SIZES") {
            Ok(v) if !v.trim().is_empty() => v
                .split(',')
                .map(|s| {
                    s.trim().replace('_', "").parse::<u64>().map_err(|_| {
                        anyhow::anyhow!("MDP_BENCH_ENGINE_SIZES: {s:?} is not a number")
                    })
                })
                .collect::<anyhow::Result<Vec<u64>>>()?,
            _ => vec![100_000, 1_000_000, 10_000_000],
        };
        let mut sizes: Vec<u64> = sizes.into_iter().filter(|&s| s > 0).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let mariadb_url = match std::env::var("MDP_BENCH_ENGINE_MARIADB_URL") {
            Ok(v) if v.trim() == "off" => None,
            Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
            _ => Some("mysql://root@127.0.0.1:3306".to_string()),
        };
        Ok(Settings {
            sizes,
            build_budget: Duration::from_secs(env_or("MDP_BENCH_ENGINE_BUILD_BUDGET_S", 480)?),
            windows: env_or("MDP_BENCH_ENGINE_WINDOWS", 300)?,
            warmup_windows: env_or("MDP_BENCH_ENGINE_WARMUP_WINDOWS", 30)?,
            stage_budget: Duration::from_secs(env_or("MDP_BENCH_ENGINE_STAGE_BUDGET_S", 45)?),
            refresh_budget: Duration::from_secs(env_or("MDP_BENCH_ENGINE_REFRESH_BUDGET_S", 70)?),
            window_changes: env_or("MDP_BENCH_ENGINE_WINDOW_CHANGES", 1000)?,
            merchants: env_or("MDP_BENCH_ENGINE_MERCHANTS", 10_000)?,
            stream_changes: env_or("MDP_BENCH_ENGINE_STREAM_CHANGES", 1_500_000)?,
            stream_budget: Duration::from_secs(env_or("MDP_BENCH_ENGINE_STREAM_BUDGET_S", 60)?),
            mariadb_url,
            baseline_orders: env_or("MDP_BENCH_ENGINE_BASELINE_ORDERS", 1_000_000)?,
            refreshes: env_or::<usize>("MDP_BENCH_ENGINE_REFRESHES", 3)?.max(1),
            seed: env_or("MDP_BENCH_ENGINE_SEED", 42)?,
            chunk_max: env_or("MDP_BENCH_ENGINE_CHUNK_MAX", 0)?,
        })
    }

    fn day(&self) -> anyhow::Result<DayConfig> {
        Ok(DayConfig {
            seed: self.seed,
            merchants: self.merchants.max(1),
            zipf_exponent: 1.1,
            day: NaiveDate::from_ymd_opt(DAY.0, DAY.1, DAY.2).context("valid day")?,
            hours_elapsed: 20,
            backdated_percent: 4,
            history_days: 7,
        })
    }

    fn workload(&self, seed: u64) -> WorkloadConfig {
        WorkloadConfig {
            seed,
            merchants: self.merchants.max(1) as u64,
            zipf_exponent: 1.1,
            products_per_merchant: (5, 15),
            history_days: 7,
        }
    }
}

/// The tables a join of order lines with their orders and products reads.
const JOIN_TABLES: [&str; 3] = ["order_items", "orders", "products"];

fn sql_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sql") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn load_set(
    dir: &Path,
    files: &[PathBuf],
    only: &Option<Vec<String>>,
) -> anyhow::Result<ReportSet> {
    for path in files {
        let name = path.file_name().context("file name")?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if only.as_ref().is_none_or(|o| o.iter().any(|n| n == stem)) {
            std::fs::copy(path, dir.join(name))?;
        }
    }
    let settings = mdp_config::Settings::load_from(None, Vec::new())?;
    let tenants = TenantColumns::from_settings(&settings.source);
    Ok(ReportSet::load_dir(dir, &tenants)?)
}

/// The reports under test: the repository's `reports/`, plus the join over
/// order lines, orders and products of `benches/engine/reports/` when no
/// repository report is such a join. `MDP_BENCH_ENGINE_REPORTS` (names, comma
/// separated) keeps only the named reports.
fn load_reports(dir: &Path, only: &Option<Vec<String>>) -> anyhow::Result<Arc<ReportSet>> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = sql_files(&manifest.join("../../reports"))?;
    let extra = sql_files(&manifest.join("benches/engine/reports"))?;
    if only.is_some() {
        let all: Vec<PathBuf> = repo.into_iter().chain(extra).collect();
        return Ok(Arc::new(load_set(dir, &all, only)?));
    }
    let set = load_set(dir, &repo, only)?;
    let has_join = set
        .reports()
        .iter()
        .any(|r| JOIN_TABLES.iter().all(|t| r.tables.iter().any(|x| x == t)));
    if has_join {
        return Ok(Arc::new(set));
    }
    println!(
        "no report in reports/ joins {}: adding {}",
        JOIN_TABLES.join(", "),
        extra
            .iter()
            .filter_map(|p| p.file_name()?.to_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Arc::new(load_set(dir, &extra, only)?))
}

/// Inserts of every merchant and product (the dimension tables).
fn catalogue_events(gen: &DayGenerator, factory: &mut EventFactory) -> Vec<ChangeEvent> {
    let c = gen.catalogue();
    let mut events = Vec::with_capacity(c.merchants.len() + c.products.len());
    events.extend(c.merchants.iter().map(|m| factory.insert(m)));
    events.extend(c.products.iter().map(|p| factory.insert(p)));
    events
}

/// Applies events through the engine in one state transaction (state build).
fn apply_bulk(
    engine: &Engine,
    state: &mut PartitionState,
    events: &[ChangeEvent],
) -> anyhow::Result<ApplyStats> {
    let tx = state.begin()?;
    let mut store = SqliteStore::new(&tx);
    let (_, stats) = engine.apply_with_stats(&mut store, events)?;
    tx.commit()?;
    Ok(stats)
}

fn disagreements(s: &ApplyStats) -> u64 {
    s.missing_group_retractions + s.inconsistent_retractions + s.malformed_events
}

fn group_counts(state: &mut PartitionState) -> anyhow::Result<Vec<(String, i64)>> {
    let tx = state.begin()?;
    let counts = {
        let mut stmt = tx.prepare("SELECT report, COUNT(*) FROM groups GROUP BY report")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<Vec<(String, i64)>, _>>()?
    };
    tx.commit()?;
    Ok(counts)
}

/// Windows of a stream run through `PartitionState::compute`.
#[derive(Default)]
struct WindowRun {
    /// Wall time per window.
    timings: Timings,
    /// CPU time per window (this thread).
    cpu: Timings,
    changes: u64,
    rows_emitted: u64,
    groups_touched: u64,
    disagreements: u64,
    /// Fewer windows than asked for: the time budget ran out.
    limited_by_budget: bool,
}

/// Wall and CPU time of one window through `PartitionState::compute`.
struct Took {
    wall: Duration,
    cpu: Duration,
}

fn compute_window(
    engine: &Engine,
    state: &mut PartitionState,
    window: &Window,
) -> anyhow::Result<(Took, ApplyStats)> {
    let computed_at_ms = window.sealed_at_ms;
    let cpu = thread_cpu();
    let started = Instant::now();
    let outcome = state.compute(engine, std::slice::from_ref(window), computed_at_ms)?;
    let took = Took {
        wall: started.elapsed(),
        cpu: thread_cpu().saturating_sub(cpu),
    };
    if outcome.applied != [window.id] {
        anyhow::bail!(
            "window {} was not applied (applied: {:?})",
            window.id,
            outcome.applied
        );
    }
    Ok((took, outcome.stats))
}

/// One day size of the scaling measurement.
struct Stage {
    target: u64,
    orders: u64,
    build_changes: u64,
    build_time: Duration,
    run: WindowRun,
    /// Windows of fact changes only (no merchant or product edits).
    facts: WindowRun,
    groups: Vec<(String, i64)>,
    state_bytes: u64,
    mix: Mix,
}

/// Runs windows of `stream` through `state` after up to `warmup` windows:
/// up to `s.windows` windows or `s.stage_budget` of compute, at least
/// [`MIN_WINDOWS`]. The stream's pending rest is applied at the end.
fn measure_windows(
    s: &Settings,
    engine: &Engine,
    state: &mut PartitionState,
    stream: &mut Stream,
    warmup: usize,
) -> anyhow::Result<WindowRun> {
    let mut run = WindowRun::default();
    let mut warm = Duration::ZERO;
    for _ in 0..warmup {
        if warm >= s.stage_budget / 4 {
            break;
        }
        let window = stream.next_window(s.window_changes)?;
        let (took, stats) = compute_window(engine, state, &window)?;
        run.disagreements += disagreements(&stats);
        warm += took.wall;
    }
    while run.timings.len() < s.windows {
        if run.timings.len() >= MIN_WINDOWS && run.timings.total() >= s.stage_budget {
            run.limited_by_budget = true;
            break;
        }
        let window = stream.next_window(s.window_changes)?;
        let (took, stats) = compute_window(engine, state, &window)?;
        run.disagreements += disagreements(&stats);
        run.timings.push(took.wall);
        run.cpu.push(took.cpu);
        run.changes += window.changes.len() as u64;
        run.rows_emitted += stats.rows_emitted;
        run.groups_touched += stats.groups_touched;
    }
    if let Some(rest) = stream.flush() {
        compute_window(engine, state, &rest)?;
    }
    Ok(run)
}

fn scaling(s: &Settings, engine: &Engine, out: &mut Vec<Stage>) -> anyhow::Result<Option<String>> {
    let cfg = s.day()?;
    let dir = crate::interrupt::tempdir("mdp-bench-state-")?;
    let mut state = PartitionState::open(dir.path(), 0)?;
    let mut gen = DayGenerator::new(cfg.clone());
    let mut factory = EventFactory::new(0);
    factory.commit_ts_ms = cfg.live_from().and_utc().timestamp_millis();

    let mut build_time = Duration::ZERO;
    let mut build_changes = 0u64;
    let mut build_disagreements = 0u64;
    let started = Instant::now();
    let catalogue = catalogue_events(&gen, &mut factory);
    build_disagreements += disagreements(&apply_bulk(engine, &mut state, &catalogue)?);
    build_changes += catalogue.len() as u64;
    build_time += started.elapsed();
    let mut model = Model::with_catalogue(&gen.catalogue().merchants, &gen.catalogue().products);
    drop(catalogue);

    let mut next_window_id = 1u64;
    let mut stop = None;
    for (stage_index, &target) in s.sizes.iter().enumerate() {
        let mut sample = OrderSample::new(cfg.day, s.seed + stage_index as u64);
        println!("- building the day up to {} orders", thousands(target));
        let mut last_report = Instant::now();
        while gen.orders() < target {
            if build_time >= s.build_budget {
                stop = Some(format!(
                    "the state build reached {} orders when its {} s budget ran out",
                    thousands(gen.orders()),
                    s.build_budget.as_secs()
                ));
                break;
            }
            let started = Instant::now();
            let n = BUILD_CHUNK_ORDERS.min(target - gen.orders());
            let mut events = Vec::with_capacity(n as usize * 4);
            for _ in 0..n {
                let (o, items) = gen.next_order();
                sample.observe(&o, &items);
                events.push(factory.insert(&o));
                events.extend(items.iter().map(|i| factory.insert(i)));
            }
            build_disagreements += disagreements(&apply_bulk(engine, &mut state, &events)?);
            build_changes += events.len() as u64;
            build_time += started.elapsed();
            if last_report.elapsed() >= Duration::from_secs(30) {
                last_report = Instant::now();
                println!(
                    "  {} orders, {} changes, {:.0} s, state {:.0} MB",
                    thousands(gen.orders()),
                    thousands(build_changes),
                    build_time.as_secs_f64(),
                    sqlite_bytes(state.path()) as f64 / 1e6
                );
            }
        }
        if build_disagreements > 0 {
            anyhow::bail!("the state build produced {build_disagreements} inconsistent retractions or malformed events");
        }
        println!(
            "  built: {} orders, {} changes in {:.1} s ({:.0} changes/s)",
            thousands(gen.orders()),
            thousands(build_changes),
            build_time.as_secs_f64(),
            build_changes as f64 / build_time.as_secs_f64().max(1e-9)
        );

        // Live changes continue from the latest orders of the build.
        for (o, items) in sample.orders() {
            model.add_order(o, items);
        }
        let id_base = 1_000_000_000 * (stage_index as i64 + 1);
        let snapshot: Snapshot =
            sample.snapshot(model.planner_merchants(), model.planner_products(), id_base);
        let planner = Planner::new(
            s.workload(s.seed + 100 + stage_index as u64),
            0,
            1,
            &snapshot,
        );
        let mut stream = Stream::new(
            planner,
            model,
            cfg.live_from(),
            cfg.midnight(),
            next_window_id,
            0,
        );
        let run = measure_windows(s, engine, &mut state, &mut stream, s.warmup_windows)?;
        // The control series: the same stream without merchant and product
        // edits, whose joins move whole histories.
        stream.facts_only = true;
        let facts = measure_windows(s, engine, &mut state, &mut stream, 0)?;
        next_window_id = stream.next_window_id();
        let mix = stream.mix.clone();
        model = stream.into_model();
        let stage = Stage {
            target,
            orders: gen.orders(),
            build_changes,
            build_time,
            groups: group_counts(&mut state)?,
            state_bytes: sqlite_bytes(state.path()),
            run,
            facts,
            mix,
        };
        println!(
            "  {} windows of {} changes at {} orders: p50 {:.2} ms, p95 {:.2} ms; without merchant and product edits: {} windows, p50 {:.2} ms, p95 {:.2} ms",
            stage.run.timings.len(),
            s.window_changes,
            thousands(stage.orders),
            ms(stage.run.timings.median()),
            ms(stage.run.timings.percentile(95.0)),
            stage.facts.timings.len(),
            ms(stage.facts.timings.median()),
            ms(stage.facts.timings.percentile(95.0))
        );
        out.push(stage);
        if stop.is_some() {
            break;
        }
    }
    Ok(stop)
}

/// Sustained throughput of one thread over a long stream into a fresh state.
struct Sustained {
    run: WindowRun,
    wall: Duration,
    groups: i64,
    mix: Mix,
}

fn sustained(s: &Settings, engine: &Engine) -> anyhow::Result<Sustained> {
    let cfg = s.day()?;
    let dir = crate::interrupt::tempdir("mdp-bench-stream-")?;
    let mut state = PartitionState::open(dir.path(), 0)?;
    let gen = DayGenerator::new(cfg.clone());
    let mut factory = EventFactory::new(0);
    let catalogue = catalogue_events(&gen, &mut factory);
    apply_bulk(engine, &mut state, &catalogue)?;
    let model = Model::with_catalogue(&gen.catalogue().merchants, &gen.catalogue().products);
    let snapshot = Snapshot {
        merchants: model.planner_merchants(),
        products: model.planner_products(),
        max_product_id: gen.catalogue().products.len() as i64,
        ..Snapshot::default()
    };
    let planner = Planner::new(s.workload(s.seed + 1000), 0, 1, &snapshot);
    let mut stream = Stream::new(planner, model, cfg.midnight(), cfg.midnight(), 1, 0);
    let mut run = WindowRun::default();
    let started = Instant::now();
    while run.changes < s.stream_changes {
        if run.timings.total() >= s.stream_budget {
            run.limited_by_budget = true;
            break;
        }
        let window = stream.next_window(s.window_changes)?;
        let (took, stats) = compute_window(engine, &mut state, &window)?;
        run.timings.push(took.wall);
        run.cpu.push(took.cpu);
        run.changes += window.changes.len() as u64;
        run.rows_emitted += stats.rows_emitted;
        run.groups_touched += stats.groups_touched;
        run.disagreements += disagreements(&stats);
        if run.timings.len() % 250 == 0 {
            println!(
                "  {} changes, {:.0} changes/s so far",
                thousands(run.changes),
                run.changes as f64 / run.timings.total().as_secs_f64().max(1e-9)
            );
        }
    }
    let wall = started.elapsed();
    let groups = group_counts(&mut state)?.iter().map(|(_, n)| n).sum();
    Ok(Sustained {
        run,
        wall,
        groups,
        mix: stream.mix.clone(),
    })
}

fn rate(changes: u64, d: Duration) -> f64 {
    changes as f64 / d.as_secs_f64().max(1e-9)
}

/// The per-window table of the scaling stages, one row per day size, and
/// the ratio of the largest size to the smallest.
fn print_windows(stages: &[Stage], pick: impl Fn(&Stage) -> &WindowRun) {
    println!(
        "   | {:>14} | {:>7} | {:>7} | {:>7} | {:>7} | {:>7} | {:>7} | {:>7} | {:>8} | {:>8} | {:>9} | {:>8} |",
        "day orders",
        "windows",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "cpu p50",
        "cpu p95",
        "groups/w",
        "rows/w",
        "groups",
        "state MB"
    );
    for st in stages {
        let run = pick(st);
        let groups: i64 = st.groups.iter().map(|(_, n)| n).sum();
        let label = if st.orders < st.target {
            format!("{}*", thousands(st.orders))
        } else {
            thousands(st.orders)
        };
        println!(
            "   | {:>14} | {:>7} | {:>7.2} | {:>7.2} | {:>7.2} | {:>7.2} | {:>7.2} | {:>7.2} | {:>8.0} | {:>8.0} | {:>9} | {:>8.1} |",
            label,
            run.timings.len(),
            ms(run.timings.median()),
            ms(run.timings.percentile(95.0)),
            ms(run.timings.percentile(99.0)),
            ms(run.timings.percentile(100.0)),
            ms(run.cpu.median()),
            ms(run.cpu.percentile(95.0)),
            run.groups_touched as f64 / run.timings.len().max(1) as f64,
            run.rows_emitted as f64 / run.timings.len().max(1) as f64,
            thousands(groups as u64),
            st.state_bytes as f64 / 1e6
        );
    }
    if let (Some(first), Some(last)) = (stages.first(), stages.last()) {
        if stages.len() > 1 {
            let (a, b) = (pick(first), pick(last));
            println!(
                "   ratio {} / {} orders: p50 {:.2}x, p95 {:.2}x; cpu p50 {:.2}x, cpu p95 {:.2}x   (target: flat within 1.5x)",
                thousands(last.orders),
                thousands(first.orders),
                ms(b.timings.median()) / ms(a.timings.median()).max(1e-9),
                ms(b.timings.percentile(95.0)) / ms(a.timings.percentile(95.0)).max(1e-9),
                ms(b.cpu.median()) / ms(a.cpu.median()).max(1e-9),
                ms(b.cpu.percentile(95.0)) / ms(a.cpu.percentile(95.0)).max(1e-9)
            );
        }
    }
}

fn main() -> anyhow::Result<()> {
    let s = Settings::from_env()?;
    interrupt::watch()?;
    let machine = Machine::detect();
    let load_start = load_average();
    let started = Instant::now();
    println!(
        "engine benchmark on {} CPUs ({}), load average {}",
        machine.cpus, machine.cpu_model, load_start
    );

    let reports_dir = crate::interrupt::tempdir("mdp-bench-reports-")?;
    let only: Option<Vec<String>> = std::env::var("MDP_BENCH_ENGINE_REPORTS")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.split(',').map(|n| n.trim().to_string()).collect());
    let set = load_reports(reports_dir.path(), &only)?;
    let report_sql: Vec<(String, String)> = set
        .reports()
        .iter()
        .map(|r| (r.name.clone(), r.sql.clone()))
        .collect();
    let used: Vec<String> = set
        .reports()
        .iter()
        .map(|r| format!("{} ({})", r.name, r.tables.join(", ")))
        .collect();
    let rejected: Vec<String> = set
        .rejected()
        .iter()
        .map(|r| {
            let file = r.file.file_name().map(PathBuf::from).unwrap_or_default();
            format!(
                "{}: {}",
                file.display(),
                r.error
                    .replace(&format!("{}/", reports_dir.path().display()), "")
            )
        })
        .collect();
    println!("reports used: {}", used.join(", "));
    for r in &rejected {
        println!("report rejected by the engine: {r}");
    }
    if set.reports().is_empty() {
        anyhow::bail!("no report loaded");
    }
    let mut engine = Engine::new(set.clone());
    if s.chunk_max > 0 {
        // Chunks of chunk_max/2 to chunk_max values; inline up to twice that.
        engine = engine.with_chunk_sizes(ChunkSizes {
            spill_above: 2 * s.chunk_max,
            inline_at_most: s.chunk_max / 2,
            chunk_max: s.chunk_max,
            chunk_fill: s.chunk_max / 2,
            ..ChunkSizes::default()
        });
        println!("multiset chunks of up to {} values", s.chunk_max);
    }

    println!("\n[1/3] per-window compute as the day grows");
    let mut stages = Vec::new();
    let stop = scaling(&s, &engine, &mut stages)?;

    println!("\n[2/3] MariaDB baseline");
    let baseline = match &s.mariadb_url {
        None => Err("skipped (MDP_BENCH_ENGINE_MARIADB_URL=off)".to_string()),
        Some(url) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(mariadb::run(
                url,
                &s.day()?,
                s.baseline_orders,
                &report_sql,
                s.refreshes,
                s.refresh_budget,
            ))
            .map_err(|e| format!("{e:#}"))
        }
    };
    if let Err(e) = &baseline {
        println!("  not measured: {e}");
    }

    println!("\n[3/3] sustained throughput, one thread");
    let sustained = sustained(&s, &engine)?;

    // ---- summary ----
    let line = "=".repeat(78);
    println!("\n{line}\nENGINE BENCHMARK SUMMARY\n{line}");
    println!(
        "date            {} (UTC)",
        chrono::Utc::now().format("%Y-%m-%d %H:%M")
    );
    println!(
        "machine         {} CPUs (nproc), {}, {:.1} GiB RAM",
        machine.cpus, machine.cpu_model, machine.memory_gib
    );
    println!(
        "load average    {} at start, {} at end (other processes share the CPUs)",
        load_start,
        load_average()
    );
    println!(
        "run time        {:.1} min",
        started.elapsed().as_secs_f64() / 60.0
    );
    println!("reports         {}", used.join(", "));
    for r in &rejected {
        println!("not accepted    {r}");
    }

    println!(
        "\n1. Per-window compute, windows of {} changes, one partition holding all {} merchants",
        s.window_changes,
        thousands(s.merchants as u64)
    );
    println!(
        "   (PartitionState::compute: engine + SQLite state transaction with fsync; up to {} windows after up to {} warm-up, {} s compute budget per size)",
        s.windows,
        s.warmup_windows,
        s.stage_budget.as_secs()
    );
    print_windows(&stages, |st| &st.run);
    if let Some(stop) = &stop {
        println!("   * {stop}");
    }
    println!("   The same, without merchant and product edits (fact changes only; a control series after the windows above):");
    print_windows(&stages, |st| &st.facts);
    if let Some(last) = stages.last() {
        println!(
            "   state build through the engine: {} orders, {} changes in {:.1} s ({:.0} changes/s, transactions of {} orders)",
            thousands(last.orders),
            thousands(last.build_changes),
            last.build_time.as_secs_f64(),
            rate(last.build_changes, last.build_time),
            thousands(BUILD_CHUNK_ORDERS)
        );
        println!(
            "   live mix at {} orders: {}",
            thousands(last.orders),
            last.mix.describe()
        );
        for st in &stages {
            let per: Vec<String> = st
                .groups
                .iter()
                .map(|(r, n)| format!("{r} {}", thousands(*n as u64)))
                .collect();
            println!(
                "   groups at {} orders: {}",
                thousands(st.orders),
                per.join(", ")
            );
        }
    }
    let bad: u64 = stages
        .iter()
        .map(|s| s.run.disagreements + s.facts.disagreements)
        .sum::<u64>()
        + sustained.run.disagreements;
    if bad > 0 {
        println!("   WARNING: {bad} retractions found no matching state (the generated changes and the state disagree)");
    }

    println!("\n2. Baseline: every report SQL re-run over the whole day in MariaDB");
    match &baseline {
        Err(e) => println!("   not measured: {e}"),
        Ok(b) => {
            println!(
                "   MariaDB {}, buffer pool {} MB; {} orders, {} items loaded with {} in {:.1} s",
                b.server_version,
                b.buffer_pool_bytes / (1 << 20),
                thousands(b.orders),
                thousands(b.items),
                b.load_method,
                b.load.as_secs_f64()
            );
            let runs: Vec<String> = b
                .refreshes
                .samples()
                .iter()
                .map(|d| format!("{:.2}", d.as_secs_f64()))
                .collect();
            println!(
                "   one refresh ({} reports): median {:.2} s (runs: {} s)",
                b.per_report.len(),
                b.refreshes.median().as_secs_f64(),
                runs.join(", ")
            );
            for (name, t, rows) in &b.per_report {
                println!(
                    "     {name}: median {:.2} s, {} rows",
                    t.median().as_secs_f64(),
                    thousands(*rows as u64)
                );
            }
            let nearest = stages.iter().min_by_key(|st| st.orders.abs_diff(b.orders));
            if let Some(st) = nearest {
                let p50 = st.run.timings.median();
                let p95 = st.run.timings.percentile(95.0);
                println!(
                    "   refresh / per-window compute at {} orders: {:.0}x vs p50, {:.0}x vs p95   (target: >= 100x)",
                    thousands(st.orders),
                    b.refreshes.median().as_secs_f64() / p50.as_secs_f64().max(1e-9),
                    b.refreshes.median().as_secs_f64() / p95.as_secs_f64().max(1e-9)
                );
                println!(
                    "   the same against windows without merchant and product edits: {:.0}x vs p50, {:.0}x vs p95",
                    b.refreshes.median().as_secs_f64()
                        / st.facts.timings.median().as_secs_f64().max(1e-9),
                    b.refreshes.median().as_secs_f64()
                        / st.facts.timings.percentile(95.0).as_secs_f64().max(1e-9)
                );
            }
        }
    }

    let r = &sustained.run;
    let n = r.timings.len();
    let tenth = (n / 10).max(1);
    let first = r.timings.slice(0, tenth);
    let last = r.timings.slice(n.saturating_sub(tenth), n);
    println!(
        "\n3. Sustained throughput, one thread, windows of {} changes into a fresh state",
        s.window_changes
    );
    println!(
        "   {:.0} changes/s: {} changes in {} windows, {:.1} s of compute ({:.1} s wall with change generation); {:.0} changes per CPU second",
        rate(r.changes, r.timings.total()),
        thousands(r.changes),
        n,
        r.timings.total().as_secs_f64(),
        sustained.wall.as_secs_f64(),
        rate(r.changes, r.cpu.total())
    );
    println!(
        "   window p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms; first 10% {:.0} changes/s, last 10% {:.0} changes/s; {} groups at the end",
        ms(r.timings.median()),
        ms(r.timings.percentile(95.0)),
        ms(r.timings.percentile(99.0)),
        rate(first.len() as u64 * s.window_changes as u64, first.total()),
        rate(last.len() as u64 * s.window_changes as u64, last.total()),
        thousands(sustained.groups as u64)
    );
    if sustained.run.limited_by_budget {
        println!(
            "   (stopped by the {} s compute budget before {} changes)",
            s.stream_budget.as_secs(),
            thousands(s.stream_changes)
        );
    }
    println!("   mix: {}", sustained.mix.describe());
    println!("{line}");
    Ok(())
}
