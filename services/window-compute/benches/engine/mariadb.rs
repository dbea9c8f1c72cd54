//! The reference architecture's first design: re-run every report SQL over
//! the whole day's tables in MariaDB. One refresh = each report SQL once,
//! every result row fetched.

use crate::day::{DayConfig, DayGenerator};
use crate::measure::Timings;
use crate::rows::{ItemRec, MerchantRec, OrderRec, ProductRec};
use anyhow::{bail, Context};
use chrono::NaiveDateTime;
use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Connection, Row};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What one baseline run measured.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub server_version: String,
    pub buffer_pool_bytes: u64,
    pub orders: u64,
    pub items: u64,
    pub load_method: &'static str,
    pub load: Duration,
    /// Total time of each refresh.
    pub refreshes: Timings,
    /// Per report: name, time of each run, rows returned.
    pub per_report: Vec<(String, Timings, usize)>,
}

const TABLE_COLUMNS: [(&str, &str); 4] = [
    ("merchants", "id, name, city, created_at"),
    ("products", "id, merchant_id, name, category, price_cents"),
    (
        "orders",
        "id, merchant_id, customer_id, status, amount_cents, refund_cents, created_at, updated_at",
    ),
    (
        "order_items",
        "id, merchant_id, order_id, product_id, qty, price_cents, created_at",
    ),
];

fn dt(t: &NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn merchant_csv(m: &MerchantRec) -> String {
    format!("{},{},{},{}", m.id, m.name, m.city, dt(&m.created_at))
}

fn product_csv(p: &ProductRec) -> String {
    format!(
        "{},{},{},{},{}",
        p.id, p.merchant_id, p.name, p.category, p.price_cents
    )
}

fn order_csv(o: &OrderRec) -> String {
    format!(
        "{},{},{},{},{},{},{},{}",
        o.id,
        o.merchant_id,
        o.customer_id,
        o.status.as_str(),
        o.amount_cents,
        o.refund_cents,
        dt(&o.created_at),
        dt(&o.updated_at)
    )
}

fn item_csv(i: &ItemRec) -> String {
    format!(
        "{},{},{},{},{},{},{}",
        i.id,
        i.merchant_id,
        i.order_id,
        i.product_id,
        i.qty,
        i.price_cents,
        dt(&i.created_at)
    )
}

/// Writes the day's first `orders` orders (and the catalogue) as one CSV
/// file per table; returns the files and the number of items.
fn write_csv(dir: &Path, cfg: &DayConfig, orders: u64) -> anyhow::Result<(Vec<PathBuf>, u64)> {
    let mut gen = DayGenerator::new(cfg.clone());
    let paths: Vec<PathBuf> = TABLE_COLUMNS
        .iter()
        .map(|(t, _)| dir.join(format!("{t}.csv")))
        .collect();
    let mut files = Vec::new();
    for p in &paths {
        files.push(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        ));
    }
    for m in &gen.catalogue().merchants {
        writeln!(files[0], "{}", merchant_csv(m))?;
    }
    for p in &gen.catalogue().products {
        writeln!(files[1], "{}", product_csv(p))?;
    }
    let mut items = 0u64;
    for _ in 0..orders {
        let (o, its) = gen.next_order();
        writeln!(files[2], "{}", order_csv(&o))?;
        for i in &its {
            writeln!(files[3], "{}", item_csv(i))?;
            items += 1;
        }
    }
    for f in &mut files {
        f.flush()?;
    }
    Ok((paths, items))
}

/// Server-side `LOAD DATA INFILE`: needs the server on this machine and able
/// to read the files.
async fn load_data_infile(conn: &mut MySqlConnection, files: &[PathBuf]) -> anyhow::Result<()> {
    for ((table, columns), path) in TABLE_COLUMNS.iter().zip(files) {
        let path = path
            .to_str()
            .filter(|p| {
                p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
            })
            .context("the CSV path has characters unsafe in a SQL literal")?;
        let sql = format!(
            "LOAD DATA INFILE '{path}' INTO TABLE {table} \
             FIELDS TERMINATED BY ',' LINES TERMINATED BY '\\n' ({columns})"
        );
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .with_context(|| format!("LOAD DATA INFILE into {table}"))?;
    }
    Ok(())
}

fn quote(field: &str) -> String {
    format!("'{}'", field.replace('\\', "\\\\").replace('\'', "''"))
}

/// Multi-row `INSERT`s of the same CSV files (works with a remote server).
async fn load_inserts(conn: &mut MySqlConnection, files: &[PathBuf]) -> anyhow::Result<()> {
    const ROWS_PER_STATEMENT: usize = 2000;
    for ((table, columns), path) in TABLE_COLUMNS.iter().zip(files) {
        let reader = BufReader::new(File::open(path)?);
        let mut sql = String::new();
        let mut rows = 0usize;
        let mut lines = reader.lines().peekable();
        while let Some(line) = lines.next() {
            let line = line?;
            if rows == 0 {
                sql = format!("INSERT INTO {table} ({columns}) VALUES ");
            } else {
                sql.push(',');
            }
            sql.push('(');
            let fields: Vec<String> = line.split(',').map(quote).collect();
            sql.push_str(&fields.join(","));
            sql.push(')');
            rows += 1;
            if rows == ROWS_PER_STATEMENT || lines.peek().is_none() {
                sqlx::raw_sql(AssertSqlSafe(std::mem::take(&mut sql)))
                    .execute(&mut *conn)
                    .await
                    .with_context(|| format!("inserting into {table}"))?;
                rows = 0;
            }
        }
    }
    Ok(())
}

async fn truncate_all(conn: &mut MySqlConnection) -> anyhow::Result<()> {
    for (table, _) in TABLE_COLUMNS {
        sqlx::raw_sql(AssertSqlSafe(format!("TRUNCATE TABLE {table}")))
            .execute(&mut *conn)
            .await
            .with_context(|| format!("truncating {table}"))?;
    }
    Ok(())
}

/// Creates a randomly named database, loads the day, runs `refreshes`
/// refreshes of `reports` (name, SQL), and drops the database in every case.
pub async fn run(
    server_url: &str,
    cfg: &DayConfig,
    orders: u64,
    reports: &[(String, String)],
    refreshes: usize,
    budget: Duration,
) -> anyhow::Result<Baseline> {
    let db = format!("mdp_bench_{:016x}", rand::random::<u64>());
    let url = format!("{}/{db}", server_url.trim_end_matches('/'));
    let pool = mdp_e2e::schema::create(&url, 1)
        .await
        .context("creating the baseline database")?;
    pool.close().await;
    crate::interrupt::register_database(&url);
    let result = measure(&url, cfg, orders, reports, refreshes, budget).await;
    let dropped = mdp_e2e::schema::drop_database(&url).await;
    crate::interrupt::forget_database(&url);
    match (result, dropped) {
        (Ok(b), Ok(())) => Ok(b),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(anyhow::Error::new(e).context(format!("dropping database {db}"))),
    }
}

async fn measure(
    url: &str,
    cfg: &DayConfig,
    orders: u64,
    reports: &[(String, String)],
    refreshes: usize,
    budget: Duration,
) -> anyhow::Result<Baseline> {
    let options = mdp_e2e::schema::DbUrl::parse(url)?.database_options()?;
    let mut conn = MySqlConnection::connect_with(&options)
        .await
        .context("connecting to MariaDB")?;
    let row = sqlx::query("SELECT VERSION() AS v, @@innodb_buffer_pool_size AS bp")
        .fetch_one(&mut conn)
        .await?;
    let server_version: String = row.try_get("v")?;
    let buffer_pool_bytes: u64 = row.try_get::<u64, _>("bp").unwrap_or(0);

    let dir = crate::interrupt::tempdir("mdp-bench-csv-")?;
    make_readable(dir.path())?;
    let started = Instant::now();
    let (files, items) = write_csv(dir.path(), cfg, orders)?;
    println!(
        "  baseline data written as CSV in {:.1} s: {} orders, {} items",
        started.elapsed().as_secs_f64(),
        orders,
        items
    );
    for f in &files {
        make_readable(f)?;
    }

    sqlx::raw_sql("SET SESSION unique_checks = 0, foreign_key_checks = 0")
        .execute(&mut conn)
        .await?;
    let started = Instant::now();
    let load_method = match load_data_infile(&mut conn, &files).await {
        Ok(()) => "LOAD DATA INFILE",
        Err(e) => {
            println!("  LOAD DATA INFILE not usable ({e:#}); loading with multi-row INSERTs");
            truncate_all(&mut conn).await?;
            load_inserts(&mut conn, &files).await?;
            "multi-row INSERT"
        }
    };
    sqlx::raw_sql("ANALYZE TABLE merchants, products, orders, order_items")
        .execute(&mut conn)
        .await?;
    let load = started.elapsed();
    let counted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&mut conn)
        .await?;
    if counted as u64 != orders {
        bail!("loaded {counted} orders, expected {orders}");
    }
    println!(
        "  loaded with {load_method} (+ ANALYZE TABLE) in {:.1} s",
        load.as_secs_f64()
    );

    let mut per_report: Vec<(String, Timings, usize)> = reports
        .iter()
        .map(|(name, _)| (name.clone(), Timings::default(), 0))
        .collect();
    let mut totals = Timings::default();
    for run in 1..=refreshes {
        if totals.total() >= budget {
            println!(
                "  no further refresh: the {} s budget is spent",
                budget.as_secs()
            );
            break;
        }
        let mut total = Duration::ZERO;
        for ((_, sql), (name, timings, rows)) in reports.iter().zip(per_report.iter_mut()) {
            let started = Instant::now();
            let fetched = sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                .fetch_all(&mut conn)
                .await
                .with_context(|| format!("running report {name}"))?;
            let d = started.elapsed();
            timings.push(d);
            *rows = fetched.len();
            total += d;
        }
        println!("  refresh {run}/{refreshes}: {:.2} s", total.as_secs_f64());
        totals.push(total);
    }
    conn.close().await?;
    Ok(Baseline {
        server_version,
        buffer_pool_bytes,
        orders,
        items,
        load_method,
        load,
        refreshes: totals,
        per_report,
    })
}

/// Lets the database server (another user) read the CSV files.
fn make_readable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting permissions of {}", path.display()))
}
