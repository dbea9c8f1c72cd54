//! Property: after every window, the rows the engine has emitted so far equal
//! what MariaDB returns for the same report SQL over the same table — an
//! independent engine. Decimals must match exactly (value and scale),
//! doubles within 1e-9 relative.
//!
//! Needs MariaDB at 127.0.0.1:3306 (root, no password), or the URL in
//! `MDP_TEST_MYSQL_URL`. Each run works in its own randomly named database
//! and drops it at the end.

use crate::model::{engine, fold_results, steps, windows, Fields, Rows, Step, Table};
use crate::recompute::config;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use mdp_report::{ColumnRole, Engine, MemoryStateStore};
use mdp_types::{ChangeEvent, Value};
use proptest::prelude::*;
use rust_decimal::Decimal;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{AssertSqlSafe, Row as _};
use std::collections::BTreeMap;

/// The table of the one-table reports.
const ORDERS_DDL: &str = "CREATE TABLE orders (id BIGINT PRIMARY KEY, merchant_id BIGINT NOT NULL, customer_id BIGINT NULL,
   status VARCHAR(16) NULL, amount DECIMAL(10,2) NULL, qty INT NULL, rate DOUBLE NULL,
   channel VARCHAR(8) NULL, created_at DATETIME NULL)";

/// A randomly named MariaDB database holding the test's tables, dropped at
/// the end.
pub struct Db {
    pub rt: tokio::runtime::Runtime,
    server: String,
    name: String,
    pub pool: MySqlPool,
}

impl Db {
    /// Creates the database and runs `ddl` (statements separated by `;`).
    pub fn create(ddl: &str) -> Db {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        let server = std::env::var("MDP_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_string());
        let name = format!("mdp_report_it_{:016x}", rand::random::<u64>());
        let pool = rt.block_on(async {
            let admin = MySqlPoolOptions::new()
                .max_connections(1)
                .connect(&server)
                .await
                .unwrap_or_else(|e| panic!("MariaDB at {server} is required for this test: {e}"));
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
            )))
            .execute(&admin)
            .await
            .unwrap_or_else(|e| panic!("create database: {e}"));
            admin.close().await;
            let pool = MySqlPoolOptions::new()
                .max_connections(1)
                .connect(&format!("{server}/{name}"))
                .await
                .unwrap_or_else(|e| panic!("connect: {e}"));
            sqlx::raw_sql(AssertSqlSafe(ddl.to_string()))
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("create table: {e}"));
            pool
        });
        Db {
            rt,
            server,
            name,
            pool,
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let (server, name, pool) = (self.server.clone(), self.name.clone(), self.pool.clone());
        self.rt.block_on(async move {
            pool.close().await;
            if let Ok(admin) = MySqlPoolOptions::new()
                .max_connections(1)
                .connect(&server)
                .await
            {
                let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
                    .execute(&admin)
                    .await;
                admin.close().await;
            }
        });
    }
}

/// A value reduced to what both engines must agree on.
#[derive(Debug, Clone)]
enum Norm {
    Null,
    /// Exact number; the scale when the value is a decimal.
    Num(Decimal, Option<u32>),
    Float(f64),
    Str(String),
    Date(NaiveDate),
    Dt(NaiveDateTime),
    Time(NaiveTime),
}

impl Norm {
    fn of(v: &Value) -> Norm {
        match v {
            Value::Null => Norm::Null,
            Value::I(i) => Norm::Num(Decimal::from(*i), None),
            Value::U(u) => Norm::Num(Decimal::from(*u), None),
            Value::D(d) => Norm::Num(*d, Some(d.scale())),
            Value::F(f) => Norm::Float(*f),
            Value::S(s) => Norm::Str(s.clone()),
            Value::B(b) => Norm::Str(String::from_utf8_lossy(b).into_owned()),
            Value::Date(d) => Norm::Date(*d),
            Value::Dt(d) => Norm::Dt(*d),
            Value::Time(t) => Norm::Time(*t),
        }
    }

    fn from_mysql(row: &MySqlRow, i: usize) -> Norm {
        if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
            return v.map_or(Norm::Null, |x| Norm::Num(Decimal::from(x), None));
        }
        if let Ok(v) = row.try_get::<Option<u64>, _>(i) {
            return v.map_or(Norm::Null, |x| Norm::Num(Decimal::from(x), None));
        }
        if let Ok(v) = row.try_get::<Option<Decimal>, _>(i) {
            return v.map_or(Norm::Null, |x| Norm::Num(x, Some(x.scale())));
        }
        if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
            return v.map_or(Norm::Null, Norm::Float);
        }
        if let Ok(v) = row.try_get::<Option<NaiveDateTime>, _>(i) {
            return v.map_or(Norm::Null, Norm::Dt);
        }
        if let Ok(v) = row.try_get::<Option<NaiveDate>, _>(i) {
            return v.map_or(Norm::Null, Norm::Date);
        }
        if let Ok(v) = row.try_get::<Option<NaiveTime>, _>(i) {
            return v.map_or(Norm::Null, Norm::Time);
        }
        if let Ok(v) = row.try_get::<Option<String>, _>(i) {
            return v.map_or(Norm::Null, Norm::Str);
        }
        match row.try_get::<Option<Vec<u8>>, _>(i) {
            Ok(v) => v.map_or(Norm::Null, |b| {
                Norm::Str(String::from_utf8_lossy(&b).into_owned())
            }),
            Err(e) => Norm::Str(format!("<undecodable: {e}>")),
        }
    }

    /// Identity text for matching rows by key.
    fn key(&self) -> String {
        match self {
            Norm::Num(d, _) => d.normalize().to_string(),
            other => format!("{other:?}"),
        }
    }

    fn same(&self, mysql: &Norm) -> bool {
        match (self, mysql) {
            (Norm::Null, Norm::Null) => true,
            (Norm::Num(a, sa), Norm::Num(b, sb)) => {
                a == b && (sa.is_none() || sb.is_none() || sa == sb)
            }
            (Norm::Float(a), Norm::Float(b)) => {
                (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
            }
            (Norm::Str(a), Norm::Str(b)) => a == b,
            (Norm::Date(a), Norm::Date(b)) => a == b,
            (Norm::Dt(a), Norm::Dt(b)) => a == b,
            (Norm::Time(a), Norm::Time(b)) => a == b,
            _ => false,
        }
    }
}

/// Compares the served rows of every report with MariaDB's answer; returns
/// a description of each difference.
pub async fn differences(
    engine: &Engine,
    pool: &MySqlPool,
    served: &BTreeMap<String, Rows>,
) -> Vec<String> {
    let mut out = Vec::new();
    for report in engine.reports().reports() {
        let key_cols: Vec<usize> = report
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.role == ColumnRole::Key)
            .map(|(i, _)| i)
            .collect();
        let ident = |vals: &[Norm]| -> String {
            key_cols
                .iter()
                .map(|&i| vals[i].key())
                .collect::<Vec<_>>()
                .join(" | ")
        };
        let mine: BTreeMap<String, Vec<Norm>> = served
            .get(&report.name)
            .map(|rows| {
                rows.values()
                    .map(|vals| {
                        let n: Vec<Norm> = vals.iter().map(Norm::of).collect();
                        (ident(&n), n)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let rows = match sqlx::query(AssertSqlSafe(report.sql.clone()))
            .fetch_all(pool)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                out.push(format!("{}: MariaDB failed: {e}", report.name));
                continue;
            }
        };
        let theirs: BTreeMap<String, Vec<Norm>> = rows
            .iter()
            .map(|r| {
                let n: Vec<Norm> = (0..r.len()).map(|i| Norm::from_mysql(r, i)).collect();
                (ident(&n), n)
            })
            .collect();
        for (k, t) in &theirs {
            match mine.get(k) {
                None => out.push(format!(
                    "{}: group [{k}] missing from the engine; MariaDB has {t:?}",
                    report.name
                )),
                Some(m) => {
                    for (i, (a, b)) in m.iter().zip(t).enumerate() {
                        if !a.same(b) {
                            out.push(format!(
                                "{}: group [{k}] column {}: engine {a:?}, MariaDB {b:?}",
                                report.name, report.columns[i].name
                            ));
                        }
                    }
                }
            }
        }
        for k in mine.keys() {
            if !theirs.contains_key(k) {
                out.push(format!(
                    "{}: group [{k}] served by the engine but not in MariaDB",
                    report.name
                ));
            }
        }
    }
    out
}

fn run_case(
    db: &Db,
    steps: &[crate::model::Step],
    sizes: &[usize],
    chunked: bool,
) -> Result<(), TestCaseError> {
    let engine = crate::recompute::sized(engine(), chunked);
    let mut store = MemoryStateStore::new();
    let mut table = Table::default();
    let mut served = BTreeMap::new();
    let mut pending: Vec<ChangeEvent> = Vec::new();
    let mut sql: Vec<String> = vec!["DELETE FROM orders".into()];
    let mut in_window = 0;
    let mut window = 0;
    for (i, step) in steps.iter().enumerate() {
        let (events, stmt) = table.apply(step);
        pending.extend(events);
        sql.extend(stmt);
        in_window += 1;
        if in_window < sizes[window % sizes.len()] && i + 1 < steps.len() {
            continue;
        }
        let (rows, stats) = engine
            .apply_with_stats(&mut store, &pending)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(
            stats.missing_group_retractions + stats.inconsistent_retractions,
            0
        );
        fold_results(&mut served, rows);
        served.retain(|_, rows: &mut Rows| !rows.is_empty());
        let diffs = db.rt.block_on(async {
            if !sql.is_empty() {
                sqlx::raw_sql(AssertSqlSafe(sql.join(";\n")))
                    .execute(&db.pool)
                    .await
                    .unwrap_or_else(|e| panic!("replaying changes in MariaDB: {e}"));
            }
            differences(&engine, &db.pool, &served).await
        });
        prop_assert!(
            diffs.is_empty(),
            "after window {}:\n{}",
            window,
            diffs.join("\n")
        );
        pending.clear();
        sql.clear();
        in_window = 0;
        window += 1;
    }
    Ok(())
}

/// The comparison itself must catch a wrong number and a missing group.
fn oracle_detects_differences(db: &Db) {
    let engine = engine();
    let mut store = MemoryStateStore::new();
    let mut table = Table::default();
    let mut sql = vec!["DELETE FROM orders".to_string()];
    let mut events = Vec::new();
    for cents in [1234, 99, 5000] {
        let (ev, stmt) = table.apply(&Step::Insert(Fields {
            merchant: 1,
            customer: Some(2),
            status: Some(0),
            amount_cents: Some(cents),
            qty: Some(1),
            rate_quarters: Some(3),
            channel: Some(0),
            created: Some((20, 10, 0, 0)),
        }));
        events.extend(ev);
        sql.extend(stmt);
    }
    let mut served = BTreeMap::new();
    let rows = engine
        .apply(&mut store, &events)
        .unwrap_or_else(|e| panic!("{e}"));
    fold_results(&mut served, rows);
    let diffs = db.rt.block_on(async {
        sqlx::raw_sql(AssertSqlSafe(sql.join(";\n")))
            .execute(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        differences(&engine, &db.pool, &served).await
    });
    assert_eq!(diffs, Vec::<String>::new());
    let daily = served
        .get_mut("daily")
        .unwrap_or_else(|| panic!("no daily rows"));
    if let Some(row) = daily.values_mut().next() {
        // gmv 63.33 → 63.34
        row[4] = Value::D(Decimal::new(6334, 2));
    }
    served.remove("customers");
    let diffs = db.rt.block_on(differences(&engine, &db.pool, &served));
    assert_eq!(
        diffs,
        [
            "customers: group [1 | 2] missing from the engine; MariaDB has [Num(1, None), Num(2, None), Num(3, None), Num(63.33, Some(2)), Num(50.00, Some(2)), Num(63.33, Some(2)), Num(21.110000, Some(6)), Num(1, None), Num(1, None), Num(4, None), Num(6, None)]",
            "daily: group [1 | Date(2026-11-20)] column gmv: engine Num(63.34, Some(2)), MariaDB Num(63.33, Some(2))",
        ]
    );
}

#[test]
fn engine_results_equal_mariadb() {
    let db = Db::create(ORDERS_DDL);
    oracle_detects_differences(&db);
    let mut runner = proptest::test_runner::TestRunner::new(config(64));
    let result = runner.run(
        &(steps(200), windows(), any::<bool>()),
        |(steps, sizes, chunked)| run_case(&db, &steps, &sizes, chunked),
    );
    drop(db);
    if let Err(e) = result {
        panic!("{e}");
    }
}
