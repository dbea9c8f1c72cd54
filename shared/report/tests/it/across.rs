//! Property: reports not keyed by merchant stay exact when the change stream
//! is split by partition. Each partition applies its own changes (merchants
//! and their orders hash to one partition) and emits partial deltas; the
//! deltas of all partitions are merged into one global state per group in
//! an order that interleaves partitions, and after every round the rows
//! read from the merged states equal what MariaDB returns for the same SQL.
//! The random shop changes merchants' cities, orders' statuses and days,
//! products' categories and order lines (moving some to another merchant's
//! order), deletes merchants, products, orders and lines, and re-snapshots
//! tables.

use crate::joins::{steps, tenants, windows, Shop, Step, DDL, TABLES};
use crate::mariadb::{differences, Db};
use crate::model::Rows;
use crate::recompute::config;
use mdp_report::{merge_partial, partial_row, Engine, MemoryStateStore, Report, ReportSet};
use mdp_types::{partition_of, ChangeEvent, Op, PartialDelta, Row, TenantId, Value};
use proptest::prelude::*;
use sqlx::AssertSqlSafe;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

const PARTITIONS: u32 = 4;

/// Reports across merchants over the shop's tables.
const REPORTS: &[(&str, &str)] = &[
    (
        // A merchant's city change moves its whole history between groups.
        "city_daily_all",
        "SELECT m.city, DATE(o.created_at) AS day, COUNT(*) AS orders, SUM(o.amount) AS gmv,
           COUNT(DISTINCT o.merchant_id) AS merchants, COUNT(DISTINCT HOUR(o.created_at)) AS hours,
           MAX(o.amount) AS largest, MIN(o.amount) AS smallest, AVG(o.amount) AS avg_amount
         FROM orders o JOIN merchants m ON m.id = o.merchant_id
         WHERE o.status IN ('paid', 'shipped')
         GROUP BY m.city, DATE(o.created_at)",
    ),
    (
        // items → orders → products across merchants: an order becoming
        // paid brings its items in, a category change moves a product's
        // lines, and orders and merchants leave a category's distinct sets.
        "category_daily_all",
        "SELECT p.category, DATE(o.created_at) AS day, COUNT(*) AS item_lines, SUM(i.qty) AS units,
           SUM(i.qty * i.price) AS revenue, COUNT(DISTINCT i.order_id) AS orders,
           COUNT(DISTINCT o.merchant_id) AS merchants, MAX(i.price) AS top_price, MIN(p.price) AS cheapest
         FROM order_items i
         JOIN orders o ON o.id = i.order_id
         JOIN products p ON p.id = i.product_id AND p.merchant_id = i.merchant_id
         WHERE o.status IN ('paid', 'shipped')
         GROUP BY p.category, DATE(o.created_at)",
    ),
    (
        // Per city and hour of day through a LEFT join: orders of merchants
        // without a row or a city are the NULL city's.
        "city_hourly_all",
        "SELECT m.city, EXTRACT(HOUR FROM o.created_at) AS hour, COUNT(*) AS orders,
           COUNT(o.amount) AS with_amount,
           SUM(CASE WHEN o.status = 'paid' THEN o.amount ELSE 0 END) AS paid_amount,
           COUNT(DISTINCT DATE(o.created_at)) AS days, COUNT(DISTINCT o.merchant_id) AS merchants,
           MAX(o.created_at) AS last_at
         FROM orders o LEFT JOIN merchants m ON m.id = o.merchant_id
         WHERE o.status <> 'cart' OR o.status IS NULL
         GROUP BY m.city, EXTRACT(HOUR FROM o.created_at)",
    ),
    (
        // Four tables: order lines by the merchant's city, the product's
        // category and the order's hour. A city change, a category change
        // and an order's status or time change each move lines. (The shop's
        // product ids are shared by merchants, so ON names the merchant too:
        // a join stays inside a merchant's partition.)
        "city_category_hourly_all",
        "SELECT m.city, p.category, HOUR(o.created_at) AS hour, COUNT(*) AS item_lines,
           SUM(i.qty * i.price) AS revenue, COUNT(DISTINCT o.id) AS orders,
           COUNT(DISTINCT m.id) AS merchants, MIN(i.qty) AS min_qty, AVG(i.price) AS avg_price
         FROM order_items i
         JOIN orders o ON o.id = i.order_id
         JOIN products p ON p.id = i.product_id AND p.merchant_id = i.merchant_id
         JOIN merchants m ON m.id = o.merchant_id
         WHERE o.status <> 'cancelled'
         GROUP BY m.city, p.category, HOUR(o.created_at)",
    ),
    (
        // One table, HAVING over the merged state.
        "status_days",
        "SELECT status, COUNT(*) AS n, COUNT(DISTINCT DATE(created_at)) AS days,
           MIN(created_at) AS first_at, SUM(amount) AS total
         FROM orders GROUP BY status HAVING COUNT(*) > 1",
    ),
];

fn engine() -> Engine {
    static SET: OnceLock<Arc<ReportSet>> = OnceLock::new();
    let set = SET.get_or_init(|| {
        let tenants = tenants();
        let reports = REPORTS.iter().map(|(name, sql)| {
            Report::parse(name, name, sql, &tenants).unwrap_or_else(|e| panic!("{e}"))
        });
        Arc::new(ReportSet::from_reports(reports))
    });
    Engine::new(set.clone())
}

/// The merged side, as result-writer keeps it: global states and rows.
#[derive(Default)]
struct Global {
    states: BTreeMap<(String, String), Vec<u8>>,
    served: BTreeMap<String, Rows>,
}

impl Global {
    fn merge(&mut self, engine: &Engine, delta: &PartialDelta) -> Result<(), TestCaseError> {
        let report = engine
            .reports()
            .get(&delta.report)
            .ok_or_else(|| TestCaseError::fail(format!("unknown report {}", delta.report)))?;
        let k = (delta.report.clone(), delta.key_text());
        let merged = merge_partial(report, self.states.get(&k).map(Vec::as_slice), delta)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let row = partial_row(report, &delta.key, merged.as_deref())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        match merged {
            Some(state) => self.states.insert(k.clone(), state),
            None => self.states.remove(&k),
        };
        let rows = self.served.entry(row.report.clone()).or_default();
        if row.deleted {
            rows.remove(&k.1);
        } else {
            rows.insert(k.1, row.values);
        }
        Ok(())
    }
}

/// The merchant of `row` of `table`.
fn tenant_of(table: &str, row: &Row) -> TenantId {
    let column = if table == "merchants" {
        "id"
    } else {
        "merchant_id"
    };
    TenantId(row.get(column).map_or(String::new(), Value::key_text))
}

fn partition_of_row(table: &str, row: &Row) -> usize {
    partition_of(&tenant_of(table, row), PARTITIONS) as usize
}

/// Routes events to partitions as ingest does: by tenant; an update that
/// moves a row to a merchant of another partition (an order line moved to
/// another merchant's order) as a delete there and an insert here; `Reset`
/// to every partition (each drops its share of the table before the
/// snapshot rows arrive).
fn split(events: Vec<ChangeEvent>) -> Vec<Vec<ChangeEvent>> {
    let mut out: Vec<Vec<ChangeEvent>> = (0..PARTITIONS).map(|_| Vec::new()).collect();
    for ev in events {
        match (&ev.op, &ev.before, &ev.after) {
            (Op::Reset, _, _) => {
                for p in out.iter_mut() {
                    p.push(ev.clone());
                }
            }
            (Op::Update, Some(before), Some(after))
                if partition_of_row(&ev.table, before) != partition_of_row(&ev.table, after) =>
            {
                let mut delete = ev.clone();
                delete.op = Op::Delete;
                delete.after = None;
                delete.tenant = tenant_of(&ev.table, before);
                out[partition_of_row(&ev.table, before)].push(delete);
                let p = partition_of_row(&ev.table, after);
                let mut insert = ev;
                insert.op = Op::Insert;
                insert.before = None;
                out[p].push(insert);
            }
            _ => {
                let p = partition_of(&ev.tenant, PARTITIONS) as usize;
                out[p].push(ev);
            }
        }
    }
    out
}

fn run_case(db: &Db, steps: &[Step], sizes: &[usize], chunked: bool) -> Result<(), TestCaseError> {
    let engine = crate::recompute::sized(engine(), chunked);
    let mut stores: Vec<MemoryStateStore> =
        (0..PARTITIONS).map(|_| MemoryStateStore::new()).collect();
    let mut global = Global::default();
    let mut shop = Shop::default();
    shop.sql
        .extend(TABLES.iter().map(|t| format!("DELETE FROM {t}")));
    let mut in_window = 0;
    let mut round = 0;
    let mut flush = |shop: &mut Shop, global: &mut Global, round: usize| {
        let events = std::mem::take(&mut shop.events);
        let sql = std::mem::take(&mut shop.sql);
        let mut deltas: Vec<Vec<PartialDelta>> = Vec::new();
        for (p, events) in split(events).into_iter().enumerate() {
            let applied = engine
                .apply_batch(&mut stores[p], &events)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(applied.rows.is_empty(), "rows of reports across merchants");
            let s = &applied.stats;
            prop_assert_eq!(
                s.missing_group_retractions + s.inconsistent_retractions + s.row_mismatches,
                0,
                "{:?}",
                s
            );
            deltas.push(applied.partials);
        }
        // Interleave partitions: one delta of each in turn, starting with a
        // different partition every round.
        let mut queues: Vec<std::vec::IntoIter<PartialDelta>> =
            deltas.into_iter().map(Vec::into_iter).collect();
        let n = queues.len();
        let mut live = true;
        while live {
            live = false;
            for i in 0..n {
                if let Some(d) = queues[(i + round) % n].next() {
                    global.merge(&engine, &d)?;
                    live = true;
                }
            }
        }
        let diffs = db.rt.block_on(async {
            if !sql.is_empty() {
                sqlx::raw_sql(AssertSqlSafe(sql.join(";\n")))
                    .execute(&db.pool)
                    .await
                    .unwrap_or_else(|e| panic!("replaying changes in MariaDB: {e}"));
            }
            differences(&engine, &db.pool, &global.served).await
        });
        prop_assert!(
            diffs.is_empty(),
            "after round {}:\n{}",
            round,
            diffs.join("\n")
        );
        Ok(())
    };
    for (i, step) in steps.iter().enumerate() {
        shop.apply(step);
        in_window += 1;
        if in_window < sizes[round % sizes.len()] && i + 1 < steps.len() {
            continue;
        }
        flush(&mut shop, &mut global, round)?;
        in_window = 0;
        round += 1;
    }
    // Deleting every row leaves no rows, no merged state and no partition
    // state behind.
    shop.delete_all();
    flush(&mut shop, &mut global, round)?;
    global.served.retain(|_, rows| !rows.is_empty());
    prop_assert!(global.served.is_empty(), "rows left: {:?}", global.served);
    prop_assert!(global.states.is_empty(), "merged states left");
    for s in &stores {
        prop_assert_eq!(s.size_bytes(), 0, "state left: {:?}", s);
    }
    Ok(())
}

#[test]
fn merchants_hash_to_several_partitions() {
    let parts: std::collections::BTreeSet<u32> = (1..=3)
        .map(|m| partition_of(&mdp_types::TenantId(m.to_string()), PARTITIONS))
        .collect();
    assert!(parts.len() > 1, "merchants 1..=3 all in one partition");
}

#[test]
fn reports_across_merchants_merged_from_partitions_equal_mariadb() {
    let db = Db::create(DDL);
    let mut runner = proptest::test_runner::TestRunner::new(config(48));
    let result = runner.run(
        &(steps(200), windows(), any::<bool>()),
        |(steps, sizes, chunked)| run_case(&db, &steps, &sizes, chunked),
    );
    drop(db);
    if let Err(e) = result {
        panic!("{e}");
    }
}
