//! A seeded planner of realistic shop changes. It keeps a model of the rows it
//! wrote (or found in the database at start) and turns each step into an
//! [`Action`]: the SQL statements of one business transaction.
//!
//! What it produces: Zipf-skewed merchant activity; order lifecycles (a cart
//! is created with items, its items are added, re-quantified and removed, it
//! is paid, shipped, refunded or cancelled); hard deletes of abandoned carts;
//! orders synced late with a `created_at` days in the past; late corrections
//! of those past orders (amounts, items, refunds, cancellations); and rare
//! product and merchant edits (dimension changes). The planner never touches
//! a database, so the same seed and clock give the same statements.
//!
//! Ids are assigned by the planner (no `AUTO_INCREMENT`): worker `w` of `n`
//! takes ids `max + 1 + w`, `max + 1 + w + n`, … so several workers — but only
//! one generator process per database — can write concurrently.

use crate::zipf::Zipf;
use chrono::{Duration as ChronoDuration, NaiveDateTime, Timelike};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::borrow::Cow;

/// Product categories of the demo catalogue.
pub const CATEGORIES: [&str; 8] = [
    "electronics",
    "grocery",
    "apparel",
    "home",
    "beauty",
    "toys",
    "books",
    "sports",
];

/// Cities merchants are in.
pub const CITIES: [&str; 8] = [
    "Hangzhou", "Shanghai", "Beijing", "Shenzhen", "Chengdu", "Wuhan", "Nanjing", "Suzhou",
];

/// Most open carts one merchant has; past it, new carts turn into payments.
const MAX_OPEN_CARTS: usize = 20;
/// Most items in one cart.
const MAX_CART_ITEMS: usize = 8;
/// Most paid (unshipped) orders remembered per merchant.
const MAX_PAID: usize = 100;
/// Most shipped orders remembered per merchant (older ones are final).
const MAX_SHIPPED: usize = 200;
/// Most past-day orders remembered for late corrections, per worker.
const MAX_HISTORY: usize = 5000;
/// Most products per merchant.
const MAX_PRODUCTS: usize = 15;
/// Merchants inserted per setup statement.
const SETUP_CHUNK: usize = 100;

/// Parameters of the generated workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Seed of the random generator; worker `w` uses `seed + w`.
    pub seed: u64,
    /// Merchants `1..=merchants` exist after setup.
    pub merchants: u64,
    /// Zipf exponent of merchant activity (0 = uniform; 1.1 = a few hot merchants).
    pub zipf_exponent: f64,
    /// Fewest and most products a new merchant gets.
    pub products_per_merchant: (u32, u32),
    /// Late-synced orders get a `created_at` up to this many days ago.
    pub history_days: u32,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            seed: 42,
            merchants: 100,
            zipf_exponent: 1.1,
            products_per_merchant: (5, 15),
            history_days: 7,
        }
    }
}

/// A bound parameter of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Int(i64),
    Text(String),
    Time(NaiveDateTime),
}

/// One SQL statement with `?` placeholders and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stmt {
    pub sql: Cow<'static, str>,
    pub args: Vec<Arg>,
}

impl Stmt {
    fn new(sql: &'static str, args: Vec<Arg>) -> Self {
        Stmt {
            sql: Cow::Borrowed(sql),
            args,
        }
    }
}

/// The kinds of business transaction the planner produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionKind {
    /// Merchants and their products created at start.
    Setup,
    NewCart,
    AddItem,
    ChangeQty,
    RemoveItem,
    Pay,
    /// Hard delete of a cart and its items.
    AbandonCart,
    Ship,
    Cancel,
    Refund,
    /// An order synced late: `created_at` days in the past.
    BackdatedOrder,
    /// A change to an order created on an earlier day.
    LateCorrection,
    ProductUpdate,
    MerchantUpdate,
}

impl ActionKind {
    /// Stable snake_case name (for logs and summaries).
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Setup => "setup",
            ActionKind::NewCart => "new_cart",
            ActionKind::AddItem => "add_item",
            ActionKind::ChangeQty => "change_qty",
            ActionKind::RemoveItem => "remove_item",
            ActionKind::Pay => "pay",
            ActionKind::AbandonCart => "abandon_cart",
            ActionKind::Ship => "ship",
            ActionKind::Cancel => "cancel",
            ActionKind::Refund => "refund",
            ActionKind::BackdatedOrder => "backdated_order",
            ActionKind::LateCorrection => "late_correction",
            ActionKind::ProductUpdate => "product_update",
            ActionKind::MerchantUpdate => "merchant_update",
        }
    }
}

/// Relative frequency of each kind in the steady workload (sums to 100).
const WEIGHTS: [(ActionKind, u32); 13] = [
    (ActionKind::NewCart, 20),
    (ActionKind::AddItem, 14),
    (ActionKind::ChangeQty, 8),
    (ActionKind::RemoveItem, 5),
    (ActionKind::Pay, 16),
    (ActionKind::AbandonCart, 4),
    (ActionKind::Ship, 12),
    (ActionKind::Cancel, 3),
    (ActionKind::Refund, 5),
    (ActionKind::BackdatedOrder, 4),
    (ActionKind::LateCorrection, 6),
    (ActionKind::ProductUpdate, 2),
    (ActionKind::MerchantUpdate, 1),
];

/// One business transaction: statements to run in one database transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub kind: ActionKind,
    /// The merchant whose rows change (0 for a setup batch of several merchants).
    pub merchant_id: i64,
    pub statements: Vec<Stmt>,
    /// Rows the statements insert, update or delete: the binlog row events it causes.
    pub expected_changes: u64,
}

/// Order status, as stored in `orders.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Cart,
    Paid,
    Shipped,
    Refunded,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Cart => "cart",
            Status::Paid => "paid",
            Status::Shipped => "shipped",
            Status::Refunded => "refunded",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cart" => Status::Cart,
            "paid" => Status::Paid,
            "shipped" => Status::Shipped,
            "refunded" => Status::Refunded,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }
}

/// A merchant row as the planner knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantRow {
    pub id: i64,
    pub city: String,
}

/// A product row as the planner knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRow {
    pub id: i64,
    pub merchant_id: i64,
    pub category: String,
    pub price_cents: i64,
}

/// An order item as the planner knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRow {
    pub id: i64,
    pub order_id: i64,
    pub product_id: i64,
    pub qty: i64,
    pub price_cents: i64,
}

/// An order as the planner knows it (items only where they matter: carts and
/// orders it created itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub id: i64,
    pub merchant_id: i64,
    pub customer_id: i64,
    pub status: Status,
    pub amount_cents: i64,
    pub refund_cents: i64,
    pub created_at: NaiveDateTime,
    pub items: Vec<ItemRow>,
}

impl OrderRow {
    fn items_total(&self) -> i64 {
        self.items.iter().map(|i| i.qty * i.price_cents).sum()
    }
}

/// What the database already holds, read once before planning starts, so a
/// generator continues where the previous one stopped.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub merchants: Vec<MerchantRow>,
    pub products: Vec<ProductRow>,
    /// Carts, paid and shipped orders of the last day (carts with their items).
    pub open_orders: Vec<OrderRow>,
    /// Orders created before today, candidates for late corrections.
    pub history: Vec<OrderRow>,
    pub max_product_id: i64,
    pub max_order_id: i64,
    pub max_item_id: i64,
}

#[derive(Debug, Clone)]
struct IdSeq {
    next: i64,
    stride: i64,
}

impl IdSeq {
    fn new(max_existing: i64, worker: u32, workers: u32) -> Self {
        IdSeq {
            next: max_existing.max(0) + 1 + i64::from(worker),
            stride: i64::from(workers.max(1)),
        }
    }

    fn take(&mut self) -> i64 {
        let id = self.next;
        self.next += self.stride;
        id
    }
}

#[derive(Debug, Clone)]
struct Merchant {
    id: i64,
    city: String,
    products: Vec<ProductRow>,
    carts: Vec<OrderRow>,
    paid: Vec<OrderRow>,
    shipped: Vec<OrderRow>,
}

/// Plans the changes of one worker. Worker `w` of `n` owns the merchants whose
/// `id % n == w`, so two workers never touch the same order.
#[derive(Debug, Clone)]
pub struct Planner {
    cfg: WorkloadConfig,
    rng: StdRng,
    zipf: Zipf,
    merchants: Vec<Merchant>,
    /// Merchant ids of this worker that do not exist yet (created by setup).
    missing: Vec<i64>,
    history: Vec<OrderRow>,
    products: IdSeq,
    orders: IdSeq,
    items: IdSeq,
}

fn seconds(t: NaiveDateTime) -> NaiveDateTime {
    t.with_nanosecond(0).unwrap_or(t)
}

impl Planner {
    /// A planner for worker `worker` of `workers`, continuing from `snapshot`.
    pub fn new(cfg: WorkloadConfig, worker: u32, workers: u32, snapshot: &Snapshot) -> Self {
        let workers = workers.max(1);
        let worker = worker % workers;
        let mine =
            |merchant_id: i64| merchant_id.rem_euclid(i64::from(workers)) == i64::from(worker);
        let mut merchants: Vec<Merchant> = snapshot
            .merchants
            .iter()
            .filter(|m| mine(m.id))
            .map(|m| Merchant {
                id: m.id,
                city: m.city.clone(),
                products: Vec::new(),
                carts: Vec::new(),
                paid: Vec::new(),
                shipped: Vec::new(),
            })
            .collect();
        merchants.sort_by_key(|m| m.id);
        let mut missing: Vec<i64> = (1..=i64::try_from(cfg.merchants).unwrap_or(i64::MAX))
            .filter(|id| mine(*id) && merchants.binary_search_by_key(id, |m| m.id).is_err())
            .collect();
        missing.sort_unstable();
        let mut planner = Planner {
            rng: StdRng::seed_from_u64(cfg.seed.wrapping_add(u64::from(worker))),
            zipf: Zipf::new(merchants.len(), cfg.zipf_exponent),
            merchants,
            missing,
            history: Vec::new(),
            products: IdSeq::new(snapshot.max_product_id, worker, workers),
            orders: IdSeq::new(snapshot.max_order_id, worker, workers),
            items: IdSeq::new(snapshot.max_item_id, worker, workers),
            cfg,
        };
        for p in snapshot.products.iter().filter(|p| mine(p.merchant_id)) {
            if let Some(m) = planner.merchant_mut(p.merchant_id) {
                m.products.push(p.clone());
            }
        }
        let mut open: Vec<&OrderRow> = snapshot
            .open_orders
            .iter()
            .filter(|o| mine(o.merchant_id))
            .collect();
        open.sort_by_key(|o| o.id);
        for o in open {
            if let Some(m) = planner.merchant_mut(o.merchant_id) {
                let list = match o.status {
                    Status::Cart => &mut m.carts,
                    Status::Paid => &mut m.paid,
                    Status::Shipped => &mut m.shipped,
                    Status::Refunded | Status::Cancelled => continue,
                };
                list.push(o.clone());
            }
        }
        for m in &mut planner.merchants {
            m.carts.truncate(MAX_OPEN_CARTS);
            m.paid.truncate(MAX_PAID);
            let excess = m.shipped.len().saturating_sub(MAX_SHIPPED);
            m.shipped.drain(..excess);
        }
        planner.history = snapshot
            .history
            .iter()
            .filter(|o| mine(o.merchant_id) && planner.merchant_index(o.merchant_id).is_some())
            .take(MAX_HISTORY)
            .cloned()
            .collect();
        planner
    }

    /// Merchants this worker owns (existing and still to be created).
    pub fn merchant_count(&self) -> usize {
        self.merchants.len() + self.missing.len()
    }

    fn merchant_index(&self, id: i64) -> Option<usize> {
        self.merchants.binary_search_by_key(&id, |m| m.id).ok()
    }

    fn merchant_mut(&mut self, id: i64) -> Option<&mut Merchant> {
        let idx = self.merchant_index(id)?;
        self.merchants.get_mut(idx)
    }

    /// Actions creating this worker's missing merchants with their products
    /// (batches of up to 100 merchants). Empty when all exist.
    pub fn setup_actions(&mut self, now: NaiveDateTime) -> Vec<Action> {
        let now = seconds(now);
        let missing = std::mem::take(&mut self.missing);
        let mut actions = Vec::new();
        for chunk in missing.chunks(SETUP_CHUNK) {
            let mut merchant_sql =
                String::from("INSERT INTO merchants (id, name, city, created_at) VALUES ");
            let mut merchant_args = Vec::new();
            let mut product_sql = String::from(
                "INSERT INTO products (id, merchant_id, name, category, price_cents) VALUES ",
            );
            let mut product_args = Vec::new();
            let mut changes = 0u64;
            for (i, &id) in chunk.iter().enumerate() {
                let city = CITIES[self.rng.random_range(0..CITIES.len())].to_string();
                let days_ago = self.rng.random_range(30..=1000);
                let created = now - ChronoDuration::days(days_ago);
                if i > 0 {
                    merchant_sql.push_str(", ");
                }
                merchant_sql.push_str("(?, ?, ?, ?)");
                merchant_args.extend([
                    Arg::Int(id),
                    Arg::Text(format!("Merchant {id}")),
                    Arg::Text(city.clone()),
                    Arg::Time(created),
                ]);
                changes += 1;
                let (lo, hi) = self.cfg.products_per_merchant;
                let n = self.rng.random_range(lo.max(1)..=hi.max(lo.max(1)));
                let mut products = Vec::new();
                for _ in 0..n {
                    let p = self.new_product(id);
                    if !product_args.is_empty() {
                        product_sql.push_str(", ");
                    }
                    product_sql.push_str("(?, ?, ?, ?, ?)");
                    product_args.extend([
                        Arg::Int(p.id),
                        Arg::Int(id),
                        Arg::Text(format!("{} item {}", p.category, p.id)),
                        Arg::Text(p.category.clone()),
                        Arg::Int(p.price_cents),
                    ]);
                    products.push(p);
                    changes += 1;
                }
                let merchant = Merchant {
                    id,
                    city,
                    products,
                    carts: Vec::new(),
                    paid: Vec::new(),
                    shipped: Vec::new(),
                };
                let pos = self.merchants.partition_point(|m| m.id < id);
                self.merchants.insert(pos, merchant);
            }
            let statements = vec![
                Stmt {
                    sql: Cow::Owned(merchant_sql),
                    args: merchant_args,
                },
                Stmt {
                    sql: Cow::Owned(product_sql),
                    args: product_args,
                },
            ];
            actions.push(Action {
                kind: ActionKind::Setup,
                merchant_id: 0,
                statements,
                expected_changes: changes,
            });
        }
        self.zipf = Zipf::new(self.merchants.len(), self.cfg.zipf_exponent);
        actions
    }

    fn new_product(&mut self, merchant_id: i64) -> ProductRow {
        ProductRow {
            id: self.products.take(),
            merchant_id,
            category: CATEGORIES[self.rng.random_range(0..CATEGORIES.len())].to_string(),
            price_cents: self.rng.random_range(99..=49_999),
        }
    }

    fn pick_kind(&mut self) -> ActionKind {
        let total: u32 = WEIGHTS.iter().map(|(_, w)| w).sum();
        let mut x = self.rng.random_range(0..total);
        for (kind, w) in WEIGHTS {
            if x < w {
                return kind;
            }
            x -= w;
        }
        ActionKind::NewCart
    }

    /// The next business transaction at time `now`. `None` only when this
    /// worker owns no merchant.
    pub fn next_action(&mut self, now: NaiveDateTime) -> Option<Action> {
        if self.merchants.is_empty() {
            return None;
        }
        let now = seconds(now);
        let mi = self
            .zipf
            .sample(&mut self.rng)
            .min(self.merchants.len() - 1);
        let kind = self.pick_kind();
        let planned = match kind {
            ActionKind::NewCart => self.new_cart(mi, now),
            ActionKind::AddItem => self.add_item(mi, now),
            ActionKind::ChangeQty => self.change_qty(mi, now),
            ActionKind::RemoveItem => self.remove_item(mi, now),
            ActionKind::Pay => self.pay(mi, now),
            ActionKind::AbandonCart => self.abandon_cart(mi),
            ActionKind::Ship => self.ship(mi, now),
            ActionKind::Cancel => self.cancel(mi, now),
            ActionKind::Refund => self.refund(mi, now),
            ActionKind::BackdatedOrder => self.backdated_order(mi, now),
            ActionKind::LateCorrection => self.late_correction(now),
            ActionKind::ProductUpdate => Some(self.product_update(mi)),
            ActionKind::MerchantUpdate => Some(self.merchant_update(mi)),
            ActionKind::Setup => None,
        };
        // A kind whose precondition does not hold (no cart to pay, …) becomes a new cart.
        planned
            .or_else(|| self.new_cart(mi, now))
            .or_else(|| Some(self.product_update(mi)))
    }

    fn random_items(&mut self, mi: usize, order_id: i64, n: usize) -> Vec<ItemRow> {
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let m = &self.merchants[mi];
            let p = &m.products[self.rng.random_range(0..m.products.len())];
            let (product_id, price_cents) = (p.id, p.price_cents);
            items.push(ItemRow {
                id: self.items.take(),
                order_id,
                product_id,
                qty: self.rng.random_range(1..=3),
                price_cents,
            });
        }
        items
    }

    fn insert_order_stmts(order: &OrderRow, updated_at: NaiveDateTime) -> Vec<Stmt> {
        let mut stmts = vec![Stmt::new(
            "INSERT INTO orders (id, merchant_id, customer_id, status, amount_cents, refund_cents, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                Arg::Int(order.id),
                Arg::Int(order.merchant_id),
                Arg::Int(order.customer_id),
                Arg::Text(order.status.as_str().into()),
                Arg::Int(order.amount_cents),
                Arg::Int(order.refund_cents),
                Arg::Time(order.created_at),
                Arg::Time(updated_at),
            ],
        )];
        if !order.items.is_empty() {
            let mut sql = String::from(
                "INSERT INTO order_items (id, merchant_id, order_id, product_id, qty, price_cents, created_at) VALUES ",
            );
            let mut args = Vec::new();
            for (i, it) in order.items.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str("(?, ?, ?, ?, ?, ?, ?)");
                args.extend([
                    Arg::Int(it.id),
                    Arg::Int(order.merchant_id),
                    Arg::Int(order.id),
                    Arg::Int(it.product_id),
                    Arg::Int(it.qty),
                    Arg::Int(it.price_cents),
                    Arg::Time(order.created_at),
                ]);
            }
            stmts.push(Stmt {
                sql: Cow::Owned(sql),
                args,
            });
        }
        stmts
    }

    fn update_amount_stmt(order: &OrderRow, now: NaiveDateTime) -> Stmt {
        Stmt::new(
            "UPDATE orders SET amount_cents = ?, updated_at = ? WHERE id = ?",
            vec![
                Arg::Int(order.amount_cents),
                Arg::Time(now),
                Arg::Int(order.id),
            ],
        )
    }

    fn set_status_stmt(order: &OrderRow, now: NaiveDateTime) -> Stmt {
        Stmt::new(
            "UPDATE orders SET status = ?, refund_cents = ?, updated_at = ? WHERE id = ?",
            vec![
                Arg::Text(order.status.as_str().into()),
                Arg::Int(order.refund_cents),
                Arg::Time(now),
                Arg::Int(order.id),
            ],
        )
    }

    fn new_cart(&mut self, mi: usize, now: NaiveDateTime) -> Option<Action> {
        if self.merchants[mi].products.is_empty() {
            return None;
        }
        if self.merchants[mi].carts.len() >= MAX_OPEN_CARTS {
            return self.pay(mi, now);
        }
        let id = self.orders.take();
        let n = self.rng.random_range(1..=3);
        let items = self.random_items(mi, id, n);
        let m = &self.merchants[mi];
        let mut order = OrderRow {
            id,
            merchant_id: m.id,
            customer_id: self.rng.random_range(1..=1_000_000),
            status: Status::Cart,
            amount_cents: 0,
            refund_cents: 0,
            created_at: now,
            items,
        };
        order.amount_cents = order.items_total();
        let statements = Self::insert_order_stmts(&order, now);
        let changes = 1 + order.items.len() as u64;
        let merchant_id = order.merchant_id;
        self.merchants[mi].carts.push(order);
        Some(Action {
            kind: ActionKind::NewCart,
            merchant_id,
            statements,
            expected_changes: changes,
        })
    }

    fn add_item(&mut self, mi: usize, now: NaiveDateTime) -> Option<Action> {
        let m = &self.merchants[mi];
        let candidates: Vec<usize> = (0..m.carts.len())
            .filter(|&i| m.carts[i].items.len() < MAX_CART_ITEMS)
            .collect();
        if candidates.is_empty() || m.products.is_empty() {
            return None;
        }
        let ci = candidates[self.rng.random_range(0..candidates.len())];
        let order_id = m.carts[ci].id;
        let mut item = self.random_items(mi, order_id, 1);
        let item = item.pop()?;
        let m = &mut self.merchants[mi];
        let cart = &mut m.carts[ci];
        let insert = Stmt::new(
            "INSERT INTO order_items (id, merchant_id, order_id, product_id, qty, price_cents, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            vec![
                Arg::Int(item.id),
                Arg::Int(m.id),
                Arg::Int(cart.id),
                Arg::Int(item.product_id),
                Arg::Int(item.qty),
                Arg::Int(item.price_cents),
                Arg::Time(now),
            ],
        );
        cart.items.push(item);
        cart.amount_cents = cart.items_total();
        let statements = vec![insert, Self::update_amount_stmt(cart, now)];
        Some(Action {
            kind: ActionKind::AddItem,
            merchant_id: m.id,
            statements,
            expected_changes: 2,
        })
    }

    fn change_qty(&mut self, mi: usize, now: NaiveDateTime) -> Option<Action> {
        let m = &self.merchants[mi];
        let candidates: Vec<usize> = (0..m.carts.len())
            .filter(|&i| !m.carts[i].items.is_empty())
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let ci = candidates[self.rng.random_range(0..candidates.len())];
        let ii = self.rng.random_range(0..m.carts[ci].items.len());
        let old = m.carts[ci].items[ii].qty;
        let mut qty = self.rng.random_range(1..=5);
        if qty == old {
            qty = if old >= 5 { old - 1 } else { old + 1 };
        }
        let merchant_id = m.id;
        let cart = &mut self.merchants[mi].carts[ci];
        cart.items[ii].qty = qty;
        cart.amount_cents = cart.items_total();
        let statements = vec![
            Stmt::new(
                "UPDATE order_items SET qty = ? WHERE id = ?",
                vec![Arg::Int(qty), Arg::Int(cart.items[ii].id)],
            ),
            Self::update_amount_stmt(cart, now),
        ];
        Some(Action {
            kind: ActionKind::ChangeQty,
            merchant_id,
            statements,
            expected_changes: 2,
        })
    }

    fn remove_item(&mut self, mi: usize, now: NaiveDateTime) -> Option<Action> {
        let m = &self.merchants[mi];
        let candidates: Vec<usize> = (0..m.carts.len())
            .filter(|&i| m.carts[i].items.len() >= 2)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let ci = candidates[self.rng.random_range(0..candidates.len())];
        let ii = self.rng.random_range(0..m.carts[ci].items.len());
        let merchant_id = m.id;
        let cart = &mut self.merchants[mi].carts[ci];
        let removed = cart.items.remove(ii);
        cart.amount_cents = cart.items_total();
        let statements = vec![
            Stmt::new(
                "DELETE FROM order_items WHERE id = ?",
                vec![Arg::Int(removed.id)],
            ),
            Self::update_amount_stmt(cart, now),
        ];
        Some(Action {
            kind: ActionKind::RemoveItem,
            merchant_id,
            statements,
            expected_changes: 2,
        })
    }

    fn pay(&mut self, mi: usize, now: NaiveDateTime) -> Option<Action> {
        let m = &mut self.merchants[mi];
        let ci = m.carts.iter().position(|c| !c.items.is_empty())?;
        let mut order = m.carts.remove(ci);
        order.status = Status::Paid;
        // Items of a paid order no longer change; the model drops them.
        order.items = Vec::new();
        let statements = vec![Self::set_status_stmt(&order, now)];
        let merchant_id = m.id;
        m.paid.push(order);
        if m.paid.len() > MAX_PAID {
            m.paid.remove(0);
        }
        Some(Action {
            kind: ActionKind::Pay,
            merchant_id,
            statements,
            expected_changes: 1,
        })
    }

    fn abandon_cart(&mut self, mi: usize) -> Option<Action> {
        let m = &mut self.merchants[mi];
        if m.carts.is_empty() {
            return None;
        }
        // The oldest cart is the one given up on.
        let order = m.carts.remove(0);
        let mut statements = Vec::new();
        if !order.items.is_empty() {
            statements.push(Stmt::new(
                "DELETE FROM order_items WHERE order_id = ?",
                vec![Arg::Int(order.id)],
            ));
        }
        statements.push(Stmt::new(
            "DELETE FROM orders WHERE id = ?",
            vec![Arg::Int(order.id)],
        ));
        Some(Action {
            kind: ActionKind::AbandonCart,
            merchant_id: m.id,
            statements,
            expected_changes: 1 + order.items.len() as u64,
        })
    }

    fn ship(&mut self, mi: usize, now: NaiveDateTime) -> Option<Action> {
        let m = &mut self.merchants[mi];
        if m.paid.is_empty() {
            return None;
        }
        let mut order = m.paid.remove(0);
        order.status = Status::Shipped;
        let statements = vec![Self::set_status_stmt(&order, now)];
        m.shipped.push(order);
        if m.shipped.len() > MAX_SHIPPED {
            m.shipped.remove(0);
        }
        Some(Action {
            kind: ActionKind::Ship,
            merchant_id: m.id,
            statements,
            expected_changes: 1,
        })
    }

    fn cancel(&mut self, mi: usize, now: NaiveDateTime) -> Option<Action> {
        let m = &mut self.merchants[mi];
        if m.paid.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..m.paid.len());
        let mut order = m.paid.remove(i);
        order.status = Status::Cancelled;
        let statements = vec![Self::set_status_stmt(&order, now)];
        Some(Action {
            kind: ActionKind::Cancel,
            merchant_id: m.id,
            statements,
            expected_changes: 1,
        })
    }

    fn refund_amount(rng: &mut StdRng, order: &OrderRow) -> i64 {
        let open = order.amount_cents - order.refund_cents;
        if open <= 1 || rng.random_bool(0.4) {
            order.amount_cents.max(order.refund_cents)
        } else {
            order.refund_cents + rng.random_range(1..open)
        }
    }

    fn refund(&mut self, mi: usize, now: NaiveDateTime) -> Option<Action> {
        let m = &mut self.merchants[mi];
        if m.shipped.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..m.shipped.len());
        let mut order = m.shipped.remove(i);
        let refund = Self::refund_amount(&mut self.rng, &order);
        order.status = Status::Refunded;
        order.refund_cents = refund;
        let statements = vec![Self::set_status_stmt(&order, now)];
        Some(Action {
            kind: ActionKind::Refund,
            merchant_id: m.id,
            statements,
            expected_changes: 1,
        })
    }

    fn backdated_order(&mut self, mi: usize, now: NaiveDateTime) -> Option<Action> {
        if self.merchants[mi].products.is_empty() {
            return None;
        }
        let id = self.orders.take();
        let n = self.rng.random_range(1..=3);
        let items = self.random_items(mi, id, n);
        let days = self
            .rng
            .random_range(1..=i64::from(self.cfg.history_days.max(1)));
        let created = now
            - ChronoDuration::days(days)
            - ChronoDuration::seconds(self.rng.random_range(0..3600 * 12));
        let status = match self.rng.random_range(0..10) {
            0..=6 => Status::Shipped,
            7 | 8 => Status::Paid,
            _ => Status::Refunded,
        };
        let mut order = OrderRow {
            id,
            merchant_id: self.merchants[mi].id,
            customer_id: self.rng.random_range(1..=1_000_000),
            status,
            amount_cents: 0,
            refund_cents: 0,
            created_at: created,
            items,
        };
        order.amount_cents = order.items_total();
        if status == Status::Refunded {
            order.refund_cents = Self::refund_amount(&mut self.rng, &order);
        }
        let statements = Self::insert_order_stmts(&order, now);
        let changes = 1 + order.items.len() as u64;
        let merchant_id = order.merchant_id;
        self.remember_history(order);
        Some(Action {
            kind: ActionKind::BackdatedOrder,
            merchant_id,
            statements,
            expected_changes: changes,
        })
    }

    fn remember_history(&mut self, order: OrderRow) {
        if self.history.len() >= MAX_HISTORY {
            let victim = self.rng.random_range(0..self.history.len());
            self.history.swap_remove(victim);
        }
        self.history.push(order);
    }

    fn late_correction(&mut self, now: NaiveDateTime) -> Option<Action> {
        if self.history.is_empty() {
            return None;
        }
        let hi = self.rng.random_range(0..self.history.len());
        let choice = self.rng.random_range(0..10);
        let order = &mut self.history[hi];
        let merchant_id = order.merchant_id;
        let statements = match (choice, order.status) {
            // A quantity fixed on an item of a past order, and the order total with it.
            (0..=2, _) if !order.items.is_empty() => {
                let ii = (choice as usize) % order.items.len();
                let item = &mut order.items[ii];
                item.qty = if item.qty > 1 {
                    item.qty - 1
                } else {
                    item.qty + 1
                };
                let (item_id, qty) = (item.id, item.qty);
                order.amount_cents = order.items_total().max(order.refund_cents);
                vec![
                    Stmt::new(
                        "UPDATE order_items SET qty = ? WHERE id = ?",
                        vec![Arg::Int(qty), Arg::Int(item_id)],
                    ),
                    Self::update_amount_stmt(order, now),
                ]
            }
            // A late refund of a past order.
            (3..=5, Status::Paid | Status::Shipped) if order.amount_cents > order.refund_cents => {
                order.refund_cents = Self::refund_amount(&mut self.rng, order);
                order.status = Status::Refunded;
                vec![Self::set_status_stmt(order, now)]
            }
            // A past paid order cancelled after the fact.
            (6, Status::Paid) => {
                order.status = Status::Cancelled;
                vec![Self::set_status_stmt(order, now)]
            }
            // A price adjustment of the order total.
            _ => {
                let span = (order.amount_cents / 5).max(2);
                let mut delta = self.rng.random_range(1..span);
                if self.rng.random_bool(0.5) && order.amount_cents - delta >= order.refund_cents {
                    delta = -delta;
                }
                order.amount_cents += delta;
                vec![Self::update_amount_stmt(order, now)]
            }
        };
        let expected_changes = statements.len() as u64;
        Some(Action {
            kind: ActionKind::LateCorrection,
            merchant_id,
            statements,
            expected_changes,
        })
    }

    fn product_update(&mut self, mi: usize) -> Action {
        let merchant_id = self.merchants[mi].id;
        let grow = self.merchants[mi].products.len() < MAX_PRODUCTS && self.rng.random_bool(0.25);
        if grow || self.merchants[mi].products.is_empty() {
            let p = self.new_product(merchant_id);
            let stmt = Stmt::new(
                "INSERT INTO products (id, merchant_id, name, category, price_cents) VALUES (?, ?, ?, ?, ?)",
                vec![
                    Arg::Int(p.id),
                    Arg::Int(merchant_id),
                    Arg::Text(format!("{} item {}", p.category, p.id)),
                    Arg::Text(p.category.clone()),
                    Arg::Int(p.price_cents),
                ],
            );
            self.merchants[mi].products.push(p);
            return Action {
                kind: ActionKind::ProductUpdate,
                merchant_id,
                statements: vec![stmt],
                expected_changes: 1,
            };
        }
        let pi = self.rng.random_range(0..self.merchants[mi].products.len());
        let recategorise = self.rng.random_bool(0.2);
        let new_category = CATEGORIES[self.rng.random_range(0..CATEGORIES.len())];
        let pct = self.rng.random_range(-10i64..=10);
        let p = &mut self.merchants[mi].products[pi];
        let mut price = p.price_cents + p.price_cents * pct / 100;
        if price == p.price_cents || price < 1 {
            price = p.price_cents + 1;
        }
        p.price_cents = price;
        if recategorise {
            p.category = new_category.to_string();
        }
        let stmt = Stmt::new(
            "UPDATE products SET price_cents = ?, category = ? WHERE id = ?",
            vec![
                Arg::Int(p.price_cents),
                Arg::Text(p.category.clone()),
                Arg::Int(p.id),
            ],
        );
        Action {
            kind: ActionKind::ProductUpdate,
            merchant_id,
            statements: vec![stmt],
            expected_changes: 1,
        }
    }

    fn merchant_update(&mut self, mi: usize) -> Action {
        let offset = self.rng.random_range(1..CITIES.len());
        let m = &mut self.merchants[mi];
        let current = CITIES.iter().position(|c| *c == m.city).unwrap_or(0);
        m.city = CITIES[(current + offset) % CITIES.len()].to_string();
        let stmt = Stmt::new(
            "UPDATE merchants SET city = ? WHERE id = ?",
            vec![Arg::Text(m.city.clone()), Arg::Int(m.id)],
        );
        Action {
            kind: ActionKind::MerchantUpdate,
            merchant_id: m.id,
            statements: vec![stmt],
            expected_changes: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use std::collections::BTreeMap;

    fn t0() -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 11, 20)
            .and_then(|d| d.and_hms_opt(12, 0, 0))
            .expect("valid date")
    }

    fn run(planner: &mut Planner, steps: usize) -> Vec<Action> {
        let mut now = t0();
        let mut out = planner.setup_actions(now);
        for _ in 0..steps {
            now += ChronoDuration::milliseconds(250);
            out.push(planner.next_action(now).expect("merchants exist"));
        }
        out
    }

    #[test]
    fn same_seed_same_statements() {
        let cfg = WorkloadConfig {
            merchants: 20,
            ..WorkloadConfig::default()
        };
        let a = run(
            &mut Planner::new(cfg.clone(), 0, 1, &Snapshot::default()),
            500,
        );
        let b = run(
            &mut Planner::new(cfg.clone(), 0, 1, &Snapshot::default()),
            500,
        );
        assert_eq!(a, b);
        let c = run(
            &mut Planner::new(
                WorkloadConfig { seed: 7, ..cfg },
                0,
                1,
                &Snapshot::default(),
            ),
            500,
        );
        assert_ne!(a, c);
    }

    #[test]
    fn setup_creates_every_merchant_once() {
        let cfg = WorkloadConfig {
            merchants: 250,
            ..WorkloadConfig::default()
        };
        let mut p = Planner::new(cfg, 0, 1, &Snapshot::default());
        let setup = p.setup_actions(t0());
        assert_eq!(setup.len(), 3, "batches of 100");
        let merchants: usize = setup.iter().map(|a| a.statements[0].args.len() / 4).sum();
        assert_eq!(merchants, 250);
        assert!(p.setup_actions(t0()).is_empty(), "second setup is a no-op");
        // Placeholders match the bound arguments.
        for a in &setup {
            for s in &a.statements {
                assert_eq!(s.sql.matches('?').count(), s.args.len());
            }
        }
    }

    #[test]
    fn workers_split_merchants_and_ids() {
        let cfg = WorkloadConfig {
            merchants: 10,
            ..WorkloadConfig::default()
        };
        let snap = Snapshot {
            max_order_id: 100,
            ..Snapshot::default()
        };
        let mut w0 = Planner::new(cfg.clone(), 0, 2, &snap);
        let mut w1 = Planner::new(cfg, 1, 2, &snap);
        let a0 = run(&mut w0, 300);
        let a1 = run(&mut w1, 300);
        for a in a0.iter().filter(|a| a.kind != ActionKind::Setup) {
            assert_eq!(a.merchant_id % 2, 0, "{a:?}");
        }
        for a in a1.iter().filter(|a| a.kind != ActionKind::Setup) {
            assert_eq!(a.merchant_id % 2, 1, "{a:?}");
        }
        let new_order_ids = |acts: &[Action]| -> Vec<i64> {
            acts.iter()
                .flat_map(|a| a.statements.iter())
                .filter(|s| s.sql.starts_with("INSERT INTO orders"))
                .filter_map(|s| match s.args.first() {
                    Some(Arg::Int(id)) => Some(*id),
                    _ => None,
                })
                .collect()
        };
        let ids0 = new_order_ids(&a0);
        let ids1 = new_order_ids(&a1);
        assert!(!ids0.is_empty() && !ids1.is_empty());
        assert!(ids0.iter().all(|id| *id > 100 && (id - 101) % 2 == 0));
        assert!(ids1.iter().all(|id| *id > 100 && (id - 102) % 2 == 0));
    }

    #[test]
    fn mix_covers_lifecycle_deletes_and_late_changes() {
        let cfg = WorkloadConfig {
            merchants: 50,
            ..WorkloadConfig::default()
        };
        let mut p = Planner::new(cfg, 0, 1, &Snapshot::default());
        let actions = run(&mut p, 5000);
        let mut kinds: BTreeMap<ActionKind, usize> = BTreeMap::new();
        for a in &actions {
            *kinds.entry(a.kind).or_default() += 1;
            for s in &a.statements {
                assert_eq!(s.sql.matches('?').count(), s.args.len(), "{}", s.sql);
            }
            assert!(a.expected_changes >= 1);
        }
        for kind in [
            ActionKind::NewCart,
            ActionKind::AddItem,
            ActionKind::ChangeQty,
            ActionKind::RemoveItem,
            ActionKind::Pay,
            ActionKind::AbandonCart,
            ActionKind::Ship,
            ActionKind::Cancel,
            ActionKind::Refund,
            ActionKind::BackdatedOrder,
            ActionKind::LateCorrection,
            ActionKind::ProductUpdate,
            ActionKind::MerchantUpdate,
        ] {
            assert!(
                kinds.get(&kind).copied().unwrap_or(0) > 0,
                "{kind:?} never planned: {kinds:?}"
            );
        }
        // Backdated orders are created on earlier days, late corrections touch them.
        let backdated = actions
            .iter()
            .filter(|a| a.kind == ActionKind::BackdatedOrder);
        for a in backdated {
            match a.statements[0].args.get(6) {
                Some(Arg::Time(created)) => assert!(created.date() < t0().date(), "{created}"),
                other => panic!("created_at missing: {other:?}"),
            }
        }
        // The busiest merchant (rank 0 = id 1) sees far more work than the median one.
        let per_merchant = |id: i64| actions.iter().filter(|a| a.merchant_id == id).count();
        assert!(
            per_merchant(1) > 5 * per_merchant(25).max(1),
            "{} vs {}",
            per_merchant(1),
            per_merchant(25)
        );
    }

    #[test]
    fn amounts_match_items_and_refunds_never_exceed_amounts() {
        let cfg = WorkloadConfig {
            merchants: 5,
            ..WorkloadConfig::default()
        };
        let mut p = Planner::new(cfg, 0, 1, &Snapshot::default());
        run(&mut p, 3000);
        for m in &p.merchants {
            for c in &m.carts {
                assert_eq!(c.amount_cents, c.items_total(), "cart {}", c.id);
                assert!(!c.items.is_empty());
            }
            for o in m.paid.iter().chain(&m.shipped) {
                assert!(o.refund_cents <= o.amount_cents);
            }
        }
        for o in &p.history {
            assert!(o.refund_cents <= o.amount_cents, "{o:?}");
            assert!(o.amount_cents >= 0);
        }
    }

    #[test]
    fn continues_from_a_snapshot() {
        let created = t0() - ChronoDuration::hours(1);
        let snap = Snapshot {
            merchants: vec![MerchantRow {
                id: 1,
                city: "Wuhan".into(),
            }],
            products: vec![ProductRow {
                id: 9,
                merchant_id: 1,
                category: "toys".into(),
                price_cents: 500,
            }],
            open_orders: vec![OrderRow {
                id: 40,
                merchant_id: 1,
                customer_id: 3,
                status: Status::Cart,
                amount_cents: 1000,
                refund_cents: 0,
                created_at: created,
                items: vec![ItemRow {
                    id: 70,
                    order_id: 40,
                    product_id: 9,
                    qty: 2,
                    price_cents: 500,
                }],
            }],
            history: Vec::new(),
            max_product_id: 9,
            max_order_id: 40,
            max_item_id: 70,
        };
        let cfg = WorkloadConfig {
            merchants: 1,
            ..WorkloadConfig::default()
        };
        let mut p = Planner::new(cfg, 0, 1, &snap);
        assert!(p.setup_actions(t0()).is_empty(), "merchant 1 exists");
        let actions = run(&mut p, 200);
        let touches_cart_40 = actions.iter().any(|a| {
            a.statements
                .iter()
                .any(|s| s.sql.contains("orders") && s.args.last() == Some(&Arg::Int(40)))
        });
        assert!(touches_cart_40, "the loaded cart is worked on");
        for a in &actions {
            for s in &a.statements {
                if s.sql.starts_with("INSERT INTO orders") {
                    assert!(matches!(s.args[0], Arg::Int(id) if id > 40));
                }
                if s.sql.starts_with("INSERT INTO products") {
                    assert!(matches!(s.args[0], Arg::Int(id) if id > 9));
                }
            }
        }
    }
}
