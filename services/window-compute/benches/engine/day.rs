//! A generated shop day: merchants and their products, then orders with their
//! items as they stand at the end of the day so far. The same seed gives the
//! same rows, so the engine and MariaDB are fed identical data.

use crate::rows::{whole_seconds, ItemRec, MerchantRec, OrderRec, ProductRec};
use chrono::{Duration, NaiveDate, NaiveDateTime};
use mdp_e2e::workload::{MerchantRow, ProductRow, Snapshot, Status, CATEGORIES, CITIES};
use mdp_e2e::zipf::Zipf;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, VecDeque};

/// Shape of the generated day.
#[derive(Debug, Clone)]
pub struct DayConfig {
    pub seed: u64,
    pub merchants: usize,
    /// Zipf exponent of merchant activity.
    pub zipf_exponent: f64,
    /// The business day the reports are looked at.
    pub day: NaiveDate,
    /// Orders of the day are created in its first `hours_elapsed` hours.
    pub hours_elapsed: u32,
    /// Share of orders synced late with a `created_at` on an earlier day.
    pub backdated_percent: u32,
    /// Late orders go back up to this many days.
    pub history_days: i64,
}

impl DayConfig {
    /// Midnight starting the day.
    pub fn midnight(&self) -> NaiveDateTime {
        self.day.and_time(chrono::NaiveTime::MIN)
    }

    /// The end of the generated part of the day: live changes start here.
    pub fn live_from(&self) -> NaiveDateTime {
        self.midnight() + Duration::hours(i64::from(self.hours_elapsed))
    }
}

/// Merchants and products (dimension tables), products grouped by merchant.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub merchants: Vec<MerchantRec>,
    pub products: Vec<ProductRec>,
    /// Merchant index → range of its products in `products`.
    ranges: Vec<(usize, usize)>,
}

impl Catalogue {
    fn generate(cfg: &DayConfig, rng: &mut StdRng) -> Self {
        let mut merchants = Vec::with_capacity(cfg.merchants);
        let mut products = Vec::new();
        let mut ranges = Vec::with_capacity(cfg.merchants);
        for id in 1..=cfg.merchants as i64 {
            let created_at = cfg.midnight() - Duration::days(rng.random_range(30..=1000));
            merchants.push(MerchantRec {
                id,
                name: format!("Merchant {id}"),
                city: CITIES[rng.random_range(0..CITIES.len())].to_string(),
                created_at,
            });
            let first = products.len();
            for _ in 0..rng.random_range(5..=15) {
                let pid = products.len() as i64 + 1;
                let category = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
                products.push(ProductRec {
                    id: pid,
                    merchant_id: id,
                    name: format!("{category} item {pid}"),
                    category: category.to_string(),
                    price_cents: rng.random_range(99..=49_999),
                });
            }
            ranges.push((first, products.len()));
        }
        Catalogue {
            merchants,
            products,
            ranges,
        }
    }
}

/// Produces the day's orders one by one, deterministically.
pub struct DayGenerator {
    cfg: DayConfig,
    rng: StdRng,
    zipf: Zipf,
    catalogue: Catalogue,
    next_order_id: i64,
    next_item_id: i64,
}

impl DayGenerator {
    pub fn new(cfg: DayConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let catalogue = Catalogue::generate(&cfg, &mut rng);
        DayGenerator {
            zipf: Zipf::new(cfg.merchants, cfg.zipf_exponent),
            cfg,
            rng,
            catalogue,
            next_order_id: 1,
            next_item_id: 1,
        }
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// Orders generated so far.
    pub fn orders(&self) -> u64 {
        (self.next_order_id - 1) as u64
    }

    /// The next order with its items, in its current (final so far) state.
    pub fn next_order(&mut self) -> (OrderRec, Vec<ItemRec>) {
        let rng = &mut self.rng;
        let mi = self
            .zipf
            .sample(rng)
            .min(self.catalogue.merchants.len() - 1);
        let merchant_id = self.catalogue.merchants[mi].id;
        let (lo, hi) = self.catalogue.ranges[mi];
        let backdated = rng.random_range(0..100) < self.cfg.backdated_percent;
        let created_at = if backdated {
            self.cfg.midnight() - Duration::days(rng.random_range(1..=self.cfg.history_days))
                + Duration::seconds(rng.random_range(0..86_400))
        } else {
            self.cfg.midnight()
                + Duration::seconds(rng.random_range(0..i64::from(self.cfg.hours_elapsed) * 3600))
        };
        let created_at = whole_seconds(created_at);
        let status = if backdated {
            match rng.random_range(0..10) {
                0..=6 => Status::Shipped,
                7 | 8 => Status::Paid,
                _ => Status::Refunded,
            }
        } else {
            match rng.random_range(0..100) {
                0..=7 => Status::Cart,
                8..=21 => Status::Paid,
                22..=83 => Status::Shipped,
                84..=91 => Status::Refunded,
                _ => Status::Cancelled,
            }
        };
        let id = self.next_order_id;
        self.next_order_id += 1;
        let n_items = match rng.random_range(0..10) {
            0..=3 => 1,
            4..=6 => 2,
            7 | 8 => 3,
            _ => 4,
        };
        let mut items = Vec::with_capacity(n_items);
        for _ in 0..n_items {
            let p = &self.catalogue.products[rng.random_range(lo..hi)];
            items.push(ItemRec {
                id: self.next_item_id,
                merchant_id,
                order_id: id,
                product_id: p.id,
                qty: rng.random_range(1..=3),
                price_cents: p.price_cents,
                created_at,
            });
            self.next_item_id += 1;
        }
        let amount_cents: i64 = items.iter().map(|i| i.qty * i.price_cents).sum();
        let refund_cents = if status == Status::Refunded {
            if amount_cents <= 1 || rng.random_bool(0.4) {
                amount_cents
            } else {
                rng.random_range(1..amount_cents)
            }
        } else {
            0
        };
        let order = OrderRec {
            id,
            merchant_id,
            customer_id: rng.random_range(1..=1_000_000),
            status,
            amount_cents,
            refund_cents,
            created_at,
            updated_at: whole_seconds(created_at + Duration::seconds(rng.random_range(0..3600))),
        };
        (order, items)
    }
}

/// Most recent open orders kept per merchant for the live workload to act on.
const SAMPLE_CARTS: usize = 3;
const SAMPLE_PAID: usize = 5;
const SAMPLE_SHIPPED: usize = 5;
/// Past-day orders kept for late corrections.
const SAMPLE_HISTORY: usize = 2000;

type OrderWithItems = (OrderRec, Vec<ItemRec>);

/// Samples of generated orders the live workload continues from: the most
/// recent carts, paid and shipped orders of each merchant, and a uniform
/// sample of past-day orders (for late corrections).
pub struct OrderSample {
    today: NaiveDate,
    rng: StdRng,
    open: HashMap<i64, [VecDeque<OrderWithItems>; 3]>,
    history: Vec<OrderWithItems>,
    backdated_seen: u64,
}

impl OrderSample {
    pub fn new(today: NaiveDate, seed: u64) -> Self {
        OrderSample {
            today,
            rng: StdRng::seed_from_u64(seed),
            open: HashMap::new(),
            history: Vec::new(),
            backdated_seen: 0,
        }
    }

    pub fn observe(&mut self, order: &OrderRec, items: &[ItemRec]) {
        if order.created_at.date() < self.today {
            self.backdated_seen += 1;
            let entry = (order.clone(), items.to_vec());
            if self.history.len() < SAMPLE_HISTORY {
                self.history.push(entry);
            } else {
                let j = self.rng.random_range(0..self.backdated_seen);
                if let Some(slot) = self.history.get_mut(j as usize) {
                    *slot = entry;
                }
            }
            return;
        }
        let (list, cap) = match order.status {
            Status::Cart => (0, SAMPLE_CARTS),
            Status::Paid => (1, SAMPLE_PAID),
            Status::Shipped => (2, SAMPLE_SHIPPED),
            Status::Refunded | Status::Cancelled => return,
        };
        let lists = self.open.entry(order.merchant_id).or_default();
        let q = &mut lists[list];
        if q.len() == cap {
            q.pop_front();
        }
        q.push_back((order.clone(), items.to_vec()));
    }

    /// Every sampled order with its items.
    pub fn orders(&self) -> impl Iterator<Item = &OrderWithItems> {
        self.open
            .values()
            .flat_map(|lists| lists.iter().flatten())
            .chain(self.history.iter())
    }

    /// A planner snapshot: the given dimension rows, the sampled orders, and
    /// id sequences continuing above `id_base`.
    pub fn snapshot(
        &self,
        merchants: Vec<MerchantRow>,
        products: Vec<ProductRow>,
        id_base: i64,
    ) -> Snapshot {
        let open_orders = self
            .open
            .values()
            .flat_map(|lists| lists.iter().flatten())
            .map(|(o, items)| o.planner_row(items))
            .collect();
        let history = self
            .history
            .iter()
            .map(|(o, items)| o.planner_row(items))
            .collect();
        let max_product_id = products.iter().map(|p| p.id).max().unwrap_or(0);
        Snapshot {
            merchants,
            products,
            open_orders,
            history,
            max_product_id,
            max_order_id: id_base,
            max_item_id: id_base,
        }
    }
}
