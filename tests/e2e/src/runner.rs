//! Executes planned changes against the shop database: reads a [`Snapshot`]
//! of what exists, creates missing merchants, then runs worker tasks that
//! each execute their planner's actions (one transaction per action) under a
//! shared rate, change budget and deadline.

use crate::workload::{
    Action, ActionKind, Arg, ItemRow, MerchantRow, OrderRow, Planner, ProductRow, Snapshot, Status,
    WorkloadConfig,
};
use chrono::{Duration as ChronoDuration, NaiveDateTime, Utc};
use sqlx::mysql::MySqlPool;
use sqlx::{AssertSqlSafe, Row};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Open orders and history rows read at start (most recent first).
const SNAPSHOT_OPEN_LIMIT: i64 = 50_000;
const SNAPSHOT_HISTORY_LIMIT: i64 = 20_000;
/// A failing action is retried for this long before the run fails.
const RETRY_BUDGET: Duration = Duration::from_secs(60);

/// Errors of a generator run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("database error while {step}")]
    Sql {
        step: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("{kind} action for merchant {merchant_id} kept failing for {seconds} s")]
    GaveUp {
        kind: &'static str,
        merchant_id: i64,
        seconds: u64,
        #[source]
        source: sqlx::Error,
    },
    #[error("{kind} action for merchant {merchant_id} was rejected by the database")]
    Rejected {
        kind: &'static str,
        merchant_id: i64,
        #[source]
        source: sqlx::Error,
    },
    #[error("a worker task failed: {0}")]
    Worker(String),
}

fn sql_err(step: &'static str) -> impl FnOnce(sqlx::Error) -> RunError {
    move |source| RunError::Sql { step, source }
}

/// Limits of a run. With neither `max_changes` nor `max_duration` it runs
/// until the stop signal.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Row changes per second across workers; `None` = as fast as possible.
    pub rate_per_s: Option<f64>,
    /// Stop once this many row changes are committed (the last action of each
    /// worker is completed whole, so a run may end a few changes past it).
    pub max_changes: Option<u64>,
    /// Stop after this long.
    pub max_duration: Option<Duration>,
    /// Print a progress line to stderr this often.
    pub progress_every: Option<Duration>,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Row changes committed by setup (merchants and products created).
    pub setup_changes: u64,
    /// Row changes committed by the workload (rows affected).
    pub changes: u64,
    /// Business transactions committed.
    pub actions: u64,
    /// Committed actions per kind.
    pub per_kind: BTreeMap<&'static str, u64>,
    /// Transient failures that were retried.
    pub retries: u64,
    pub elapsed: Duration,
}

impl RunStats {
    /// Workload changes per second over the run.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.changes as f64 / s
        } else {
            0.0
        }
    }
}

fn now_utc() -> NaiveDateTime {
    Utc::now().naive_utc()
}

/// Reads what the database holds so planners continue from it.
pub async fn load_snapshot(pool: &MySqlPool, now: NaiveDateTime) -> Result<Snapshot, RunError> {
    let mut snap = Snapshot::default();
    let step = "reading the existing shop rows";
    for row in sqlx::query("SELECT id, city FROM merchants ORDER BY id")
        .fetch_all(pool)
        .await
        .map_err(sql_err(step))?
    {
        snap.merchants.push(MerchantRow {
            id: row.try_get("id").map_err(sql_err(step))?,
            city: row.try_get("city").map_err(sql_err(step))?,
        });
    }
    for row in
        sqlx::query("SELECT id, merchant_id, category, price_cents FROM products ORDER BY id")
            .fetch_all(pool)
            .await
            .map_err(sql_err(step))?
    {
        snap.products.push(ProductRow {
            id: row.try_get("id").map_err(sql_err(step))?,
            merchant_id: row.try_get("merchant_id").map_err(sql_err(step))?,
            category: row.try_get("category").map_err(sql_err(step))?,
            price_cents: row.try_get("price_cents").map_err(sql_err(step))?,
        });
    }
    let today = now.date().and_hms_opt(0, 0, 0).unwrap_or(now);
    let order_cols = "SELECT id, merchant_id, customer_id, status, amount_cents, refund_cents, created_at FROM orders";
    let open_sql = format!(
        "{order_cols} WHERE status IN ('cart', 'paid', 'shipped') AND created_at >= ? ORDER BY created_at DESC LIMIT ?"
    );
    let open_rows = sqlx::query(AssertSqlSafe(open_sql))
        .bind(today)
        .bind(SNAPSHOT_OPEN_LIMIT)
        .fetch_all(pool)
        .await
        .map_err(sql_err(step))?;
    snap.open_orders = open_rows
        .iter()
        .map(order_row)
        .collect::<Result<_, _>>()
        .map_err(sql_err(step))?;
    let history_sql = format!(
        "{order_cols} WHERE created_at < ? AND created_at >= ? ORDER BY created_at DESC LIMIT ?"
    );
    let history_rows = sqlx::query(AssertSqlSafe(history_sql))
        .bind(today)
        .bind(today - ChronoDuration::days(31))
        .bind(SNAPSHOT_HISTORY_LIMIT)
        .fetch_all(pool)
        .await
        .map_err(sql_err(step))?;
    snap.history = history_rows
        .iter()
        .map(order_row)
        .collect::<Result<_, _>>()
        .map_err(sql_err(step))?;

    // Items of today's carts, so cart edits continue on them.
    let items = sqlx::query(
        "SELECT i.id, i.order_id, i.product_id, i.qty, i.price_cents FROM order_items i \
         JOIN orders o ON o.id = i.order_id WHERE o.status = 'cart' AND o.created_at >= ? ORDER BY i.id",
    )
    .bind(today)
    .fetch_all(pool)
    .await
    .map_err(sql_err(step))?;
    let mut by_order: BTreeMap<i64, Vec<ItemRow>> = BTreeMap::new();
    for row in items {
        let qty: i32 = row.try_get("qty").map_err(sql_err(step))?;
        let item = ItemRow {
            id: row.try_get("id").map_err(sql_err(step))?,
            order_id: row.try_get("order_id").map_err(sql_err(step))?,
            product_id: row.try_get("product_id").map_err(sql_err(step))?,
            qty: i64::from(qty),
            price_cents: row.try_get("price_cents").map_err(sql_err(step))?,
        };
        by_order.entry(item.order_id).or_default().push(item);
    }
    for o in snap
        .open_orders
        .iter_mut()
        .filter(|o| o.status == Status::Cart)
    {
        o.items = by_order.remove(&o.id).unwrap_or_default();
    }

    let row = sqlx::query(
        "SELECT (SELECT COALESCE(MAX(id), 0) FROM products) AS p, (SELECT COALESCE(MAX(id), 0) FROM orders) AS o, \
         (SELECT COALESCE(MAX(id), 0) FROM order_items) AS i",
    )
    .fetch_one(pool)
    .await
    .map_err(sql_err(step))?;
    snap.max_product_id = row.try_get("p").map_err(sql_err(step))?;
    snap.max_order_id = row.try_get("o").map_err(sql_err(step))?;
    snap.max_item_id = row.try_get("i").map_err(sql_err(step))?;
    Ok(snap)
}

fn order_row(row: &sqlx::mysql::MySqlRow) -> Result<OrderRow, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(OrderRow {
        id: row.try_get("id")?,
        merchant_id: row.try_get("merchant_id")?,
        customer_id: row.try_get("customer_id")?,
        status: Status::parse(&status).unwrap_or(Status::Shipped),
        amount_cents: row.try_get("amount_cents")?,
        refund_cents: row.try_get("refund_cents")?,
        created_at: row.try_get("created_at")?,
        items: Vec::new(),
    })
}

/// Runs `action` in one transaction; returns the rows it changed.
pub async fn execute(pool: &MySqlPool, action: &Action) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut changed = 0;
    for stmt in &action.statements {
        let mut q = sqlx::query(AssertSqlSafe(stmt.sql.clone().into_owned()));
        for arg in &stmt.args {
            q = match arg {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.clone()),
                Arg::Time(v) => q.bind(*v),
            };
        }
        changed += q.execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(changed)
}

fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            // Deadlock, lock wait timeout, server shutting down / gone.
            matches!(
                db.code().as_deref(),
                Some("40001") | Some("HY000") | Some("08S01")
            ) || db.message().contains("Deadlock")
                || db.message().contains("Lock wait timeout")
        }
        _ => false,
    }
}

fn is_duplicate_key(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23000") && db.message().contains("Duplicate"))
}

/// Executes `action`, retrying transient failures with backoff. A retry that
/// finds its insert already present means the earlier attempt committed but
/// its answer was lost; the action then counts as done.
async fn execute_with_retry(
    pool: &MySqlPool,
    action: &Action,
    retries: &AtomicU64,
) -> Result<u64, RunError> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0u32;
    loop {
        match execute(pool, action).await {
            Ok(n) => return Ok(n),
            Err(e) if attempt > 0 && is_duplicate_key(&e) => return Ok(action.expected_changes),
            Err(e) if is_transient(&e) => {
                if started.elapsed() >= RETRY_BUDGET {
                    return Err(RunError::GaveUp {
                        kind: action.kind.name(),
                        merchant_id: action.merchant_id,
                        seconds: RETRY_BUDGET.as_secs(),
                        source: e,
                    });
                }
                retries.fetch_add(1, Ordering::Relaxed);
                eprintln!("loadgen: retrying {} after error: {e}", action.kind.name());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(e) => {
                return Err(RunError::Rejected {
                    kind: action.kind.name(),
                    merchant_id: action.merchant_id,
                    source: e,
                })
            }
        }
    }
}

/// Reads the snapshot, builds one planner per worker and runs their setup
/// (missing merchants and products). Returns the planners and setup changes.
pub async fn prepare(
    pool: &MySqlPool,
    cfg: &WorkloadConfig,
    workers: u32,
) -> Result<(Vec<Planner>, u64), RunError> {
    let now = now_utc();
    let snapshot = load_snapshot(pool, now).await?;
    let workers = workers.max(1);
    let mut planners: Vec<Planner> = (0..workers)
        .map(|w| Planner::new(cfg.clone(), w, workers, &snapshot))
        .collect();
    let retries = AtomicU64::new(0);
    let mut setup_changes = 0;
    for planner in &mut planners {
        for action in planner.setup_actions(now) {
            setup_changes += execute_with_retry(pool, &action, &retries).await?;
        }
    }
    Ok((planners, setup_changes))
}

struct Shared {
    changes: AtomicU64,
    actions: AtomicU64,
    retries: AtomicU64,
}

/// Runs the planners' workloads concurrently (one task and one connection
/// each) until a limit is reached or `stop` turns true.
pub async fn run(
    pool: &MySqlPool,
    planners: Vec<Planner>,
    opts: &RunOptions,
    stop: watch::Receiver<bool>,
) -> Result<RunStats, RunError> {
    let started = Instant::now();
    let deadline = opts.max_duration.map(|d| started + d);
    let shared = Arc::new(Shared {
        changes: AtomicU64::new(0),
        actions: AtomicU64::new(0),
        retries: AtomicU64::new(0),
    });
    let workers = planners.len().max(1) as f64;
    let per_worker_rate = opts.rate_per_s.filter(|r| *r > 0.0).map(|r| r / workers);

    let progress = opts.progress_every.map(|every| {
        let shared = shared.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut last = 0u64;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
                let now = shared.changes.load(Ordering::Relaxed);
                eprintln!(
                    "loadgen: {now} changes, {:.0} changes/s over the last {} s",
                    (now - last) as f64 / every.as_secs_f64(),
                    every.as_secs()
                );
                last = now;
            }
        })
    });

    let mut tasks = Vec::new();
    for planner in planners {
        let pool = pool.clone();
        let shared = shared.clone();
        let stop = stop.clone();
        let max_changes = opts.max_changes;
        tasks.push(tokio::spawn(async move {
            worker(
                pool,
                planner,
                shared,
                stop,
                per_worker_rate,
                max_changes,
                deadline,
            )
            .await
        }));
    }
    let mut per_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(kinds)) => {
                for (k, n) in kinds {
                    *per_kind.entry(k.name()).or_default() += n;
                }
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(RunError::Worker(e.to_string()));
            }
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(RunStats {
        setup_changes: 0,
        changes: shared.changes.load(Ordering::Relaxed),
        actions: shared.actions.load(Ordering::Relaxed),
        per_kind,
        retries: shared.retries.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}

async fn worker(
    pool: MySqlPool,
    mut planner: Planner,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    rate: Option<f64>,
    max_changes: Option<u64>,
    deadline: Option<Instant>,
) -> Result<BTreeMap<ActionKind, u64>, RunError> {
    let started = Instant::now();
    let mut mine = 0u64;
    let mut kinds = BTreeMap::new();
    loop {
        if *stop.borrow() || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if max_changes.is_some_and(|max| shared.changes.load(Ordering::Relaxed) >= max) {
            break;
        }
        let Some(action) = planner.next_action(now_utc()) else {
            break;
        };
        let changed = execute_with_retry(&pool, &action, &shared.retries).await?;
        shared.changes.fetch_add(changed, Ordering::Relaxed);
        shared.actions.fetch_add(1, Ordering::Relaxed);
        *kinds.entry(action.kind).or_insert(0) += 1;
        mine += changed;
        if let Some(rate) = rate {
            // Pace on the committed count: the next action starts when this
            // worker's share of the rate allows it.
            let due = started + Duration::from_secs_f64(mine as f64 / rate);
            let due = deadline.map_or(due, |d| due.min(d));
            let now = Instant::now();
            if due > now {
                let due = tokio::time::Instant::from_std(due);
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    changed = stop.changed() => {
                        // A dropped sender never stops the run: keep pacing.
                        if changed.is_err() {
                            tokio::time::sleep_until(due).await;
                        }
                    }
                }
            }
        }
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema;
    use rand::Rng;

    /// The binlog source database (scripts/source-db.sh), or MDP_TEST_SOURCE_URL.
    fn server_url() -> String {
        std::env::var("MDP_TEST_SOURCE_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3307".to_string())
    }

    async fn scalar(pool: &MySqlPool, sql: &'static str) -> i64 {
        let row = sqlx::query(sql).fetch_one(pool).await.expect("query");
        row.try_get::<i64, _>(0).expect("integer")
    }

    #[tokio::test]
    async fn writes_consistent_shop_data_and_resumes() {
        let db = format!("shop_test_{:08x}", rand::rng().random::<u32>());
        let url = format!("{}/{db}", server_url().trim_end_matches('/'));
        let pool = schema::create(&url, 4)
            .await
            .expect("source database reachable");
        let cfg = WorkloadConfig {
            merchants: 40,
            ..WorkloadConfig::default()
        };
        let (_, stop) = watch::channel(false);

        let (planners, setup) = prepare(&pool, &cfg, 2).await.expect("prepare");
        let merchants = scalar(&pool, "SELECT COUNT(*) FROM merchants").await;
        let products = scalar(&pool, "SELECT COUNT(*) FROM products").await;
        assert_eq!(merchants, 40);
        assert_eq!(
            setup,
            (merchants + products) as u64,
            "setup changes are the rows it inserted"
        );

        let opts = RunOptions {
            max_changes: Some(2000),
            ..RunOptions::default()
        };
        let stats = run(&pool, planners, &opts, stop.clone())
            .await
            .expect("run");
        // Each worker completes its last transaction whole (at most 9 rows).
        assert!((2000..2000 + 2 * 9).contains(&stats.changes), "{stats:?}");
        assert_eq!(stats.per_kind.values().sum::<u64>(), stats.actions);

        // A second generator continues from what is there: no id collisions.
        let (planners, setup) = prepare(&pool, &cfg, 1).await.expect("prepare again");
        assert_eq!(setup, 0, "merchants exist");
        let opts = RunOptions {
            max_changes: Some(1000),
            rate_per_s: Some(5000.0),
            ..RunOptions::default()
        };
        let second = run(&pool, planners, &opts, stop).await.expect("second run");
        assert!(second.changes >= 1000, "{second:?}");

        let cart_mismatch = scalar(
            &pool,
            "SELECT COUNT(*) FROM orders o WHERE o.status = 'cart' AND o.amount_cents <> \
             (SELECT COALESCE(SUM(i.qty * i.price_cents), 0) FROM order_items i WHERE i.order_id = o.id)",
        )
        .await;
        assert_eq!(cart_mismatch, 0, "cart totals equal their items");
        let orphans = scalar(
            &pool,
            "SELECT COUNT(*) FROM order_items i LEFT JOIN orders o ON o.id = i.order_id WHERE o.id IS NULL",
        )
        .await;
        assert_eq!(orphans, 0, "deleted carts take their items with them");
        let over_refunded = scalar(
            &pool,
            "SELECT COUNT(*) FROM orders WHERE refund_cents > amount_cents",
        )
        .await;
        assert_eq!(over_refunded, 0);
        let past_days = scalar(
            &pool,
            "SELECT COUNT(*) FROM orders WHERE created_at < CURRENT_DATE()",
        )
        .await;
        assert!(past_days > 0, "late orders land on earlier days");
        let hot = scalar(
            &pool,
            "SELECT COUNT(*) FROM orders WHERE merchant_id IN (1, 2)",
        )
        .await;
        let cold = scalar(
            &pool,
            "SELECT COUNT(*) FROM orders WHERE merchant_id IN (39, 40)",
        )
        .await;
        assert!(hot > 3 * cold.max(1), "activity is skewed: {hot} vs {cold}");

        pool.close().await;
        schema::drop_database(&url).await.expect("drop");
    }
}
