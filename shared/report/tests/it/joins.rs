//! Property: reports with joins stay exact under every change, including
//! changes of the joined rows. A small shop (merchants, products, orders,
//! order_items) changes at random — orders becoming paid, late changes of
//! old orders, category and city changes, deletes of products, merchants
//! and orders with their items, re-snapshots — and after every window the
//! rows the engine has emitted so far equal what MariaDB returns for the
//! same SQL over the current tables.

use crate::mariadb::{differences, Db};
use crate::model::{fold_results, Rows};
use crate::recompute::config;
use chrono::{NaiveDate, NaiveDateTime};
use mdp_report::{ApplyStats, Engine, MemoryStateStore, Report, ReportSet, TenantColumns};
use mdp_types::{ChangeEvent, EventId, Op, Position, Row, TenantId, Value};
use proptest::prelude::*;
use rust_decimal::Decimal;
use sqlx::AssertSqlSafe;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

pub(crate) const DDL: &str = "
CREATE TABLE merchants (id BIGINT PRIMARY KEY, name VARCHAR(32) NOT NULL, city VARCHAR(32) NULL);
CREATE TABLE products (id BIGINT PRIMARY KEY, merchant_id BIGINT NOT NULL, category VARCHAR(16) NULL,
  price DECIMAL(10,2) NOT NULL);
CREATE TABLE orders (id BIGINT PRIMARY KEY, merchant_id BIGINT NOT NULL, status VARCHAR(16) NULL,
  amount DECIMAL(10,2) NULL, created_at DATETIME NOT NULL, note VARCHAR(16) NULL);
CREATE TABLE order_items (id BIGINT PRIMARY KEY, merchant_id BIGINT NOT NULL, order_id BIGINT NOT NULL,
  product_id BIGINT NOT NULL, qty INT NOT NULL, price DECIMAL(10,2) NOT NULL)";

pub(crate) const TABLES: [&str; 4] = ["merchants", "products", "orders", "order_items"];
const CITIES: [&str; 3] = ["Paris", "Lyon", "Nice"];
const CATEGORIES: [&str; 3] = ["toys", "books", "food"];
const STATUSES: [&str; 4] = ["cart", "paid", "shipped", "cancelled"];
/// Product ids are drawn from 1..=PRODUCTS (one more than ever inserted, so
/// some items reference a product that does not exist).
const PRODUCTS: i64 = 8;

/// The join reports checked (plus one one-table report sharing the tables).
pub const REPORTS: &[(&str, &str)] = &[
    (
        // items → orders → products: an order becoming paid brings its
        // items in; a category change moves them. `qty` is unqualified.
        "items_by_category",
        "SELECT i.merchant_id, DATE(o.created_at) AS day, p.category, COUNT(*) AS item_lines, SUM(qty) AS units,
           SUM(qty * i.price) AS revenue, COUNT(DISTINCT o.id) AS orders, MAX(p.price) AS top_price,
           AVG(i.price) AS avg_price
         FROM order_items i
         JOIN orders o ON o.id = i.order_id
         JOIN products p ON p.id = i.product_id
         WHERE o.status IN ('paid', 'shipped')
         GROUP BY i.merchant_id, day, p.category",
    ),
    (
        // Orders with or without items.
        "orders_with_items",
        "SELECT o.merchant_id, DATE(o.created_at) AS day, COUNT(*) AS joined_rows, COUNT(i.id) AS item_lines,
           COUNT(DISTINCT o.id) AS orders, SUM(i.qty) AS units, MIN(o.amount) AS min_amount,
           SUM(o.amount) AS amount_per_line, MAX(i.price) AS top_price
         FROM orders o LEFT OUTER JOIN order_items i ON i.order_id = o.id
         WHERE o.status <> 'cancelled'
         GROUP BY o.merchant_id, day",
    ),
    (
        // orders → merchants: a city change moves the merchant's history.
        // `city`, `status`, `amount`, `created_at` are unqualified.
        "city_daily",
        "SELECT o.merchant_id, city, DATE(created_at) AS day, COUNT(*) AS orders, SUM(amount) AS gmv,
           MAX(m.name) AS name
         FROM orders o INNER JOIN merchants m ON m.id = o.merchant_id
         WHERE status <> 'cancelled'
         GROUP BY o.merchant_id, city, day",
    ),
    (
        // Four tables, a LEFT join in the middle of a chain, two equalities.
        "items_city_category",
        "SELECT i.merchant_id, m.city, IFNULL(p.category, '-') AS cat, COUNT(*) AS item_lines, SUM(i.qty) AS units,
           COUNT(p.id) AS with_product, SUM(i.qty * p.price) AS list_value
         FROM order_items i
         JOIN orders o ON o.id = i.order_id AND o.merchant_id = i.merchant_id
         LEFT JOIN products p ON p.id = i.product_id
         JOIN merchants m ON m.id = o.merchant_id
         WHERE o.status <> 'cancelled'
         GROUP BY i.merchant_id, m.city, cat",
    ),
    (
        // The fact table is a dimension of the other reports.
        "merchant_totals",
        "SELECT m.id, m.city, COUNT(o.id) AS orders, SUM(o.amount) AS gmv, COUNT(*) AS joined_rows
         FROM merchants m LEFT JOIN orders o ON o.merchant_id = m.id
         GROUP BY m.id, m.city",
    ),
    (
        // merchants rolled up through a LEFT join with a WHERE term of their
        // own: a city change moves the merchant's sub-aggregates, and
        // MIN/MAX/COUNT(DISTINCT) move with them.
        "orders_by_city_left",
        "SELECT o.merchant_id, m.city, DATE(o.created_at) AS day, COUNT(*) AS orders, SUM(o.amount) AS gmv,
           MIN(o.amount) AS smallest, MAX(o.amount) AS largest, COUNT(DISTINCT o.status) AS statuses,
           AVG(o.amount) AS avg_amount
         FROM orders o LEFT JOIN merchants m ON m.id = o.merchant_id
         WHERE (m.city IS NULL OR m.city <> 'Nice') AND o.status <> 'cancelled'
         GROUP BY o.merchant_id, m.city, DATE(o.created_at)",
    ),
    (
        // products rolled up through two ON equalities (a product of another
        // merchant does not join); orders joined row by row.
        "items_by_category_of_merchant",
        "SELECT i.merchant_id, p.category, DATE(o.created_at) AS day, COUNT(*) AS item_lines, SUM(i.qty) AS units,
           MAX(i.price) AS top_price, COUNT(DISTINCT i.order_id) AS orders
         FROM order_items i
         JOIN orders o ON o.id = i.order_id
         JOIN products p ON p.id = i.product_id AND p.merchant_id = i.merchant_id
         WHERE o.status IN ('paid', 'shipped')
         GROUP BY i.merchant_id, p.category, DATE(o.created_at)",
    ),
    (
        // Keyed by the order's tenant column: the rows an inner join meets
        // are the same merchant's, so this is keyed as `i.merchant_id`.
        "lines_by_order_merchant",
        "SELECT o.merchant_id AS merchant, DATE(o.created_at) AS day, COUNT(*) AS item_lines,
           SUM(i.qty) AS units
         FROM order_items i JOIN orders o ON o.id = i.order_id
         WHERE o.status <> 'cancelled'
         GROUP BY o.merchant_id, DATE(o.created_at)",
    ),
    (
        "products_by_category",
        "SELECT merchant_id, category, COUNT(*) AS products, SUM(price) AS total
         FROM products GROUP BY merchant_id, category",
    ),
];

pub fn tenants() -> TenantColumns {
    let mut t = TenantColumns::default();
    t.per_table.insert("merchants".into(), "id".into());
    t.captured = Some(TABLES.iter().map(|s| s.to_string()).collect());
    t
}

pub fn engine() -> Engine {
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

/// One random change to the shop.
#[derive(Debug, Clone)]
pub enum Step {
    /// Insert merchant `id`, or change its city when it exists.
    Merchant {
        id: i64,
        city: Option<usize>,
    },
    MerchantDelete {
        id: i64,
    },
    /// Insert product `id` of merchant `merchant`, or change its category
    /// and price when it exists.
    Product {
        id: i64,
        merchant: i64,
        category: Option<usize>,
        price_cents: i64,
    },
    ProductDelete {
        id: i64,
    },
    Order {
        merchant: i64,
        status: Option<usize>,
        amount_cents: Option<i64>,
        day: u32,
        hour: u32,
    },
    /// Change the `pick`-th order: its status, its day (a late change), or
    /// only a column no report reads.
    OrderUpdate {
        pick: usize,
        status: Option<Option<usize>>,
        day: Option<u32>,
        amount_cents: Option<i64>,
    },
    /// Delete the `pick`-th order, with its items when `cascade`.
    OrderDelete {
        pick: usize,
        cascade: bool,
    },
    Item {
        order: usize,
        product: i64,
        qty: i64,
        price_cents: i64,
    },
    /// Change the `pick`-th item: its quantity, its product, or move it to
    /// another order.
    ItemUpdate {
        pick: usize,
        qty: Option<i64>,
        product: Option<i64>,
        order: Option<usize>,
    },
    ItemDelete {
        pick: usize,
    },
    /// `Reset` of one table followed by its current rows.
    Resnapshot {
        table: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let merchant = prop_oneof![5 => Just(1i64), 3 => Just(2i64), 2 => Just(3i64)];
    prop_oneof![
        2 => (1i64..=3, proptest::option::weighted(0.9, 0..CITIES.len()))
            .prop_map(|(id, city)| Step::Merchant { id, city }),
        1 => (1i64..=3).prop_map(|id| Step::MerchantDelete { id }),
        3 => (1..PRODUCTS, merchant.clone(), proptest::option::weighted(0.85, 0..CATEGORIES.len()), 1i64..5_000)
            .prop_map(|(id, merchant, category, price_cents)| Step::Product { id, merchant, category, price_cents }),
        1 => (1..PRODUCTS).prop_map(|id| Step::ProductDelete { id }),
        5 => (merchant, proptest::option::weighted(0.9, 0..STATUSES.len()),
              proptest::option::weighted(0.9, 0i64..50_000), 18u32..22, 0u32..24)
            .prop_map(|(merchant, status, amount_cents, day, hour)| Step::Order { merchant, status, amount_cents, day, hour }),
        5 => (any::<usize>(), proptest::option::of(proptest::option::weighted(0.9, 0..STATUSES.len())),
              proptest::option::weighted(0.3, 15u32..22), proptest::option::weighted(0.3, 0i64..50_000))
            .prop_map(|(pick, status, day, amount_cents)| Step::OrderUpdate { pick, status, day, amount_cents }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, cascade)| Step::OrderDelete { pick, cascade }),
        8 => (any::<usize>(), 1..=PRODUCTS, 1i64..5, 1i64..5_000)
            .prop_map(|(order, product, qty, price_cents)| Step::Item { order, product, qty, price_cents }),
        3 => (any::<usize>(), proptest::option::of(1i64..5), proptest::option::weighted(0.3, 1..=PRODUCTS),
              proptest::option::weighted(0.15, any::<usize>()))
            .prop_map(|(pick, qty, product, order)| Step::ItemUpdate { pick, qty, product, order }),
        2 => any::<usize>().prop_map(|pick| Step::ItemDelete { pick }),
        1 => (0..TABLES.len()).prop_map(|table| Step::Resnapshot { table }),
    ]
}

pub fn steps(max: usize) -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(step(), 1..max)
}

/// Window sizes, used cyclically to cut the change stream.
pub fn windows() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..30, 1..6)
}

type Table = BTreeMap<i64, Row>;

fn cents(c: i64) -> Value {
    Value::D(Decimal::new(c, 2))
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> Value) -> Value {
    v.map_or(Value::Null, f)
}

fn at(day: u32, hour: u32) -> Value {
    let dt: NaiveDateTime = NaiveDate::from_ymd_opt(2026, 11, day)
        .and_then(|d| d.and_hms_opt(hour, 30, 0))
        .unwrap_or_default();
    Value::Dt(dt)
}

fn int(row: &Row, col: &str) -> i64 {
    match row.get(col) {
        Some(Value::I(i)) => *i,
        _ => 0,
    }
}

/// A SQL literal of a value.
fn lit(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::S(s) => format!("'{s}'"),
        Value::Dt(_) => format!("'{v}'"),
        other => other.to_string(),
    }
}

/// The shop's tables, and the events and SQL that reproduce each step.
#[derive(Debug, Default)]
pub struct Shop {
    tables: [Table; 4],
    next_order: i64,
    next_item: i64,
    seq: u64,
    /// Events and statements of the steps applied so far.
    pub events: Vec<ChangeEvent>,
    pub sql: Vec<String>,
}

impl Shop {
    fn table_index(name: &str) -> usize {
        TABLES.iter().position(|t| *t == name).unwrap_or(0)
    }

    fn rows(&self, table: &str) -> &Table {
        &self.tables[Self::table_index(table)]
    }

    fn nth(&self, table: &str, pick: usize) -> Option<i64> {
        let t = self.rows(table);
        if t.is_empty() {
            return None;
        }
        t.keys().nth(pick % t.len()).copied()
    }

    fn event(&mut self, table: &str, op: Op, id: i64, before: Option<Row>, after: Option<Row>) {
        self.seq += 1;
        let tenant_col = if table == "merchants" {
            "id"
        } else {
            "merchant_id"
        };
        let tenant = after
            .as_ref()
            .or(before.as_ref())
            .and_then(|r| r.get(tenant_col))
            .map_or(String::new(), Value::key_text);
        self.events.push(ChangeEvent {
            id: EventId(format!("test/{}", self.seq)),
            source: "shop".into(),
            table: table.into(),
            op,
            tenant: TenantId(tenant),
            partition: 0,
            pk: if op == Op::Reset {
                vec![]
            } else {
                vec![Value::I(id)]
            },
            before,
            after,
            commit_ts_ms: 0,
            position: Position {
                file: "binlog.000001".into(),
                offset: self.seq,
                row: 0,
                snapshot: op == Op::Snapshot,
            },
            captured_at_ms: 0,
        });
    }

    /// Inserts or replaces row `id` of `table`.
    fn put(&mut self, table: &str, id: i64, row: Row) {
        let t = Self::table_index(table);
        let before = self.tables[t].insert(id, row.clone());
        let columns: Vec<&str> = row.keys().map(String::as_str).collect();
        let values: Vec<String> = row.values().map(lit).collect();
        self.sql.push(format!(
            "REPLACE INTO {table} ({}) VALUES ({})",
            columns.join(", "),
            values.join(", ")
        ));
        let op = if before.is_some() {
            Op::Update
        } else {
            Op::Insert
        };
        self.event(table, op, id, before, Some(row));
    }

    fn delete(&mut self, table: &str, id: i64) {
        let t = Self::table_index(table);
        if let Some(before) = self.tables[t].remove(&id) {
            self.sql
                .push(format!("DELETE FROM {table} WHERE id = {id}"));
            self.event(table, Op::Delete, id, Some(before), None);
        }
    }

    /// Applies one step.
    pub fn apply(&mut self, step: &Step) {
        match step {
            Step::Merchant { id, city } => {
                let mut row = self.rows("merchants").get(id).cloned().unwrap_or_else(|| {
                    Row::from([
                        ("id".to_string(), Value::I(*id)),
                        ("name".to_string(), Value::S(format!("shop {id}"))),
                    ])
                });
                row.insert("city".into(), opt(*city, |c| Value::S(CITIES[c].into())));
                self.put("merchants", *id, row);
            }
            Step::MerchantDelete { id } => self.delete("merchants", *id),
            Step::Product {
                id,
                merchant,
                category,
                price_cents,
            } => {
                let merchant = self
                    .rows("products")
                    .get(id)
                    .map_or(*merchant, |p| int(p, "merchant_id"));
                let row = Row::from([
                    ("id".to_string(), Value::I(*id)),
                    ("merchant_id".to_string(), Value::I(merchant)),
                    (
                        "category".to_string(),
                        opt(*category, |c| Value::S(CATEGORIES[c].into())),
                    ),
                    ("price".to_string(), cents(*price_cents)),
                ]);
                self.put("products", *id, row);
            }
            Step::ProductDelete { id } => self.delete("products", *id),
            Step::Order {
                merchant,
                status,
                amount_cents,
                day,
                hour,
            } => {
                self.next_order += 1;
                let id = self.next_order;
                let row = Row::from([
                    ("id".to_string(), Value::I(id)),
                    ("merchant_id".to_string(), Value::I(*merchant)),
                    (
                        "status".to_string(),
                        opt(*status, |s| Value::S(STATUSES[s].into())),
                    ),
                    ("amount".to_string(), opt(*amount_cents, cents)),
                    ("created_at".to_string(), at(*day, *hour)),
                    ("note".to_string(), Value::Null),
                ]);
                self.put("orders", id, row);
            }
            Step::OrderUpdate {
                pick,
                status,
                day,
                amount_cents,
            } => {
                let Some(id) = self.nth("orders", *pick) else {
                    return;
                };
                let Some(mut row) = self.rows("orders").get(&id).cloned() else {
                    return;
                };
                if let Some(s) = status {
                    row.insert("status".into(), opt(*s, |s| Value::S(STATUSES[s].into())));
                }
                if let Some(d) = day {
                    row.insert("created_at".into(), at(*d, 9));
                }
                if let Some(a) = amount_cents {
                    row.insert("amount".into(), cents(*a));
                }
                if status.is_none() && day.is_none() && amount_cents.is_none() {
                    // A change no report reads.
                    row.insert("note".into(), Value::S(format!("n{}", self.seq)));
                }
                self.put("orders", id, row);
            }
            Step::OrderDelete { pick, cascade } => {
                let Some(id) = self.nth("orders", *pick) else {
                    return;
                };
                if *cascade {
                    let items: Vec<i64> = self
                        .rows("order_items")
                        .iter()
                        .filter(|(_, r)| int(r, "order_id") == id)
                        .map(|(k, _)| *k)
                        .collect();
                    for item in items {
                        self.delete("order_items", item);
                    }
                }
                self.delete("orders", id);
            }
            Step::Item {
                order,
                product,
                qty,
                price_cents,
            } => {
                let Some(order_id) = self.nth("orders", *order) else {
                    return;
                };
                let merchant = self
                    .rows("orders")
                    .get(&order_id)
                    .map_or(0, |o| int(o, "merchant_id"));
                self.next_item += 1;
                let id = self.next_item;
                let row = Row::from([
                    ("id".to_string(), Value::I(id)),
                    ("merchant_id".to_string(), Value::I(merchant)),
                    ("order_id".to_string(), Value::I(order_id)),
                    ("product_id".to_string(), Value::I(*product)),
                    ("qty".to_string(), Value::I(*qty)),
                    ("price".to_string(), cents(*price_cents)),
                ]);
                self.put("order_items", id, row);
            }
            Step::ItemUpdate {
                pick,
                qty,
                product,
                order,
            } => {
                let Some(id) = self.nth("order_items", *pick) else {
                    return;
                };
                let Some(mut row) = self.rows("order_items").get(&id).cloned() else {
                    return;
                };
                if let Some(q) = qty {
                    row.insert("qty".into(), Value::I(*q));
                }
                if let Some(p) = product {
                    row.insert("product_id".into(), Value::I(*p));
                }
                if let Some(order_id) = order.and_then(|o| self.nth("orders", o)) {
                    let merchant = self
                        .rows("orders")
                        .get(&order_id)
                        .map_or(0, |o| int(o, "merchant_id"));
                    row.insert("order_id".into(), Value::I(order_id));
                    row.insert("merchant_id".into(), Value::I(merchant));
                }
                self.put("order_items", id, row);
            }
            Step::ItemDelete { pick } => {
                if let Some(id) = self.nth("order_items", *pick) {
                    self.delete("order_items", id);
                }
            }
            Step::Resnapshot { table } => {
                let name = TABLES[*table];
                self.event(name, Op::Reset, 0, None, None);
                let rows: Vec<(i64, Row)> = self.tables[*table]
                    .iter()
                    .map(|(k, r)| (*k, r.clone()))
                    .collect();
                for (id, row) in rows {
                    self.event(name, Op::Snapshot, id, None, Some(row));
                }
            }
        }
    }

    /// Deletes every row (items first).
    pub fn delete_all(&mut self) {
        for table in TABLES.iter().rev() {
            let ids: Vec<i64> = self.rows(table).keys().copied().collect();
            for id in ids {
                self.delete(table, id);
            }
        }
    }
}

fn assert_clean(stats: &ApplyStats) -> Result<(), TestCaseError> {
    prop_assert_eq!(stats.missing_group_retractions, 0, "{:?}", stats);
    prop_assert_eq!(stats.inconsistent_retractions, 0, "{:?}", stats);
    prop_assert_eq!(stats.malformed_events, 0, "{:?}", stats);
    prop_assert_eq!(stats.missing_columns, 0, "{:?}", stats);
    prop_assert_eq!(stats.row_mismatches, 0, "{:?}", stats);
    Ok(())
}

fn run_case(db: &Db, steps: &[Step], sizes: &[usize], chunked: bool) -> Result<(), TestCaseError> {
    let engine = crate::recompute::sized(engine(), chunked);
    let mut store = MemoryStateStore::new();
    let mut shop = Shop::default();
    shop.sql
        .extend(TABLES.iter().map(|t| format!("DELETE FROM {t}")));
    let mut served: BTreeMap<String, Rows> = BTreeMap::new();
    let mut in_window = 0;
    let mut window = 0;
    let flush = |shop: &mut Shop,
                 store: &mut MemoryStateStore,
                 served: &mut BTreeMap<String, Rows>,
                 window: usize|
     -> Result<(), TestCaseError> {
        let events = std::mem::take(&mut shop.events);
        let sql = std::mem::take(&mut shop.sql);
        let (rows, stats) = engine
            .apply_with_stats(store, &events)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        assert_clean(&stats)?;
        fold_results(served, rows);
        served.retain(|_, rows: &mut Rows| !rows.is_empty());
        let diffs = db.rt.block_on(async {
            if !sql.is_empty() {
                sqlx::raw_sql(AssertSqlSafe(sql.join(";\n")))
                    .execute(&db.pool)
                    .await
                    .unwrap_or_else(|e| panic!("replaying changes in MariaDB: {e}"));
            }
            differences(&engine, &db.pool, served).await
        });
        prop_assert!(
            diffs.is_empty(),
            "after window {}:\n{}",
            window,
            diffs.join("\n")
        );
        Ok(())
    };
    for (i, step) in steps.iter().enumerate() {
        shop.apply(step);
        in_window += 1;
        if in_window < sizes[window % sizes.len()] && i + 1 < steps.len() {
            continue;
        }
        flush(&mut shop, &mut store, &mut served, window)?;
        in_window = 0;
        window += 1;
    }
    // Deleting every row leaves no rows served and no state behind.
    shop.delete_all();
    flush(&mut shop, &mut store, &mut served, window)?;
    prop_assert!(served.is_empty(), "rows left: {:?}", served);
    prop_assert_eq!(store.size_bytes(), 0, "state left: {:?}", store);
    Ok(())
}

#[test]
fn labelling_dimensions_are_rolled_up() {
    let e = engine();
    assert_eq!(e.rolled_up("items_city_category"), Some("merchants"));
    assert_eq!(e.rolled_up("orders_by_city_left"), Some("merchants"));
    assert_eq!(
        e.rolled_up("items_by_category_of_merchant"),
        Some("products")
    );
    // Read by an aggregate: joined row by row.
    assert_eq!(e.rolled_up("orders_with_items"), None);
    assert_eq!(e.rolled_up("products_by_category"), None);
}

#[test]
fn join_reports_equal_mariadb() {
    let db = Db::create(DDL);
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
