//! Turns the workload planner's SQL statements into the change events the
//! binlog would carry: a model of the rows keeps every before image.

use crate::rows::{EventFactory, ItemRec, MerchantRec, OrderRec, ProductRec, Record, ReplayError};
use chrono::{Duration, NaiveDateTime};
use mdp_e2e::workload::{ActionKind, Arg, MerchantRow, Planner, ProductRow, Stmt};
use mdp_types::{ChangeEvent, Op, Window};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// The statement shapes the planner writes.
#[derive(Debug)]
enum Parsed<'a> {
    /// `INSERT INTO t (a, b) VALUES (?, ?), (?, ?)`
    Insert {
        table: &'a str,
        columns: Vec<&'a str>,
    },
    /// `UPDATE t SET a = ?, b = ? WHERE k = ?`
    Update {
        table: &'a str,
        set: Vec<&'a str>,
        key: &'a str,
    },
    /// `DELETE FROM t WHERE k = ?`
    Delete { table: &'a str, key: &'a str },
}

fn placeholder_column(part: &str) -> Option<&str> {
    part.trim().strip_suffix("= ?").map(str::trim)
}

fn parse(sql: &str) -> Result<Parsed<'_>, ReplayError> {
    let bad = || ReplayError(format!("unsupported statement: {sql}"));
    if let Some(rest) = sql.strip_prefix("INSERT INTO ") {
        let (table, rest) = rest.split_once(" (").ok_or_else(bad)?;
        let (cols, rest) = rest.split_once(')').ok_or_else(bad)?;
        if !rest.trim_start().starts_with("VALUES") {
            return Err(bad());
        }
        let columns = cols.split(',').map(str::trim).collect();
        return Ok(Parsed::Insert {
            table: table.trim(),
            columns,
        });
    }
    if let Some(rest) = sql.strip_prefix("UPDATE ") {
        let (table, rest) = rest.split_once(" SET ").ok_or_else(bad)?;
        let (set, key) = rest.split_once(" WHERE ").ok_or_else(bad)?;
        let set = set
            .split(',')
            .map(|p| placeholder_column(p).ok_or_else(bad))
            .collect::<Result<_, _>>()?;
        return Ok(Parsed::Update {
            table: table.trim(),
            set,
            key: placeholder_column(key).ok_or_else(bad)?,
        });
    }
    if let Some(rest) = sql.strip_prefix("DELETE FROM ") {
        let (table, key) = rest.split_once(" WHERE ").ok_or_else(bad)?;
        return Ok(Parsed::Delete {
            table: table.trim(),
            key: placeholder_column(key).ok_or_else(bad)?,
        });
    }
    Err(bad())
}

fn key_arg(args: &[Arg]) -> Result<i64, ReplayError> {
    match args.last() {
        Some(Arg::Int(id)) => Ok(*id),
        other => Err(ReplayError(format!(
            "expected an integer key, got {other:?}"
        ))),
    }
}

fn insert_rows<R: Record>(
    map: &mut HashMap<i64, R>,
    columns: &[&str],
    args: &[Arg],
    events: &mut EventFactory,
    out: &mut Vec<ChangeEvent>,
) -> Result<Vec<R>, ReplayError> {
    if columns.is_empty() || !args.chunks_exact(columns.len()).remainder().is_empty() {
        return Err(ReplayError(format!(
            "{}: {} arguments for {} columns",
            R::TABLE,
            args.len(),
            columns.len()
        )));
    }
    let mut inserted = Vec::new();
    for tuple in args.chunks(columns.len()) {
        let mut rec = R::default();
        for (c, a) in columns.iter().zip(tuple) {
            rec.set(c, a)?;
        }
        if map.contains_key(&rec.id()) {
            return Err(ReplayError(format!(
                "{}: duplicate id {}",
                R::TABLE,
                rec.id()
            )));
        }
        out.push(events.insert(&rec));
        map.insert(rec.id(), rec.clone());
        inserted.push(rec);
    }
    Ok(inserted)
}

fn update_row<R: Record>(
    map: &mut HashMap<i64, R>,
    set: &[&str],
    args: &[Arg],
    events: &mut EventFactory,
    out: &mut Vec<ChangeEvent>,
) -> Result<(), ReplayError> {
    let id = key_arg(args)?;
    let Some(current) = map.get_mut(&id) else {
        // MySQL updates nothing and the binlog carries no row.
        return Err(ReplayError(format!("{}: no row with id {id}", R::TABLE)));
    };
    let before = current.clone();
    for (c, a) in set.iter().zip(args) {
        current.set(c, a)?;
    }
    if current.row() != before.row() {
        out.push(events.update(&before, current));
    }
    Ok(())
}

fn delete_row<R: Record>(
    map: &mut HashMap<i64, R>,
    id: i64,
    events: &mut EventFactory,
    out: &mut Vec<ChangeEvent>,
) -> Result<R, ReplayError> {
    let rec = map
        .remove(&id)
        .ok_or_else(|| ReplayError(format!("{}: no row with id {id}", R::TABLE)))?;
    out.push(events.delete(&rec));
    Ok(rec)
}

/// The rows the live workload may touch, with full images.
#[derive(Debug, Clone, Default)]
pub struct Model {
    merchants: HashMap<i64, MerchantRec>,
    products: HashMap<i64, ProductRec>,
    orders: HashMap<i64, OrderRec>,
    items: HashMap<i64, ItemRec>,
    items_by_order: HashMap<i64, Vec<i64>>,
}

impl Model {
    pub fn with_catalogue(merchants: &[MerchantRec], products: &[ProductRec]) -> Self {
        Model {
            merchants: merchants.iter().map(|m| (m.id, m.clone())).collect(),
            products: products.iter().map(|p| (p.id, p.clone())).collect(),
            ..Model::default()
        }
    }

    /// Adds an existing order and its items (already in the report state).
    pub fn add_order(&mut self, order: &OrderRec, items: &[ItemRec]) {
        self.orders.insert(order.id, order.clone());
        for i in items {
            self.items.insert(i.id, i.clone());
            self.items_by_order.entry(order.id).or_default().push(i.id);
        }
    }

    /// Merchants as the planner sees them.
    pub fn planner_merchants(&self) -> Vec<MerchantRow> {
        let mut v: Vec<MerchantRow> = self
            .merchants
            .values()
            .map(|m| MerchantRow {
                id: m.id,
                city: m.city.clone(),
            })
            .collect();
        v.sort_by_key(|m| m.id);
        v
    }

    /// Products as the planner sees them.
    pub fn planner_products(&self) -> Vec<ProductRow> {
        let mut v: Vec<ProductRow> = self
            .products
            .values()
            .map(|p| ProductRow {
                id: p.id,
                merchant_id: p.merchant_id,
                category: p.category.clone(),
                price_cents: p.price_cents,
            })
            .collect();
        v.sort_by_key(|p| p.id);
        v
    }

    /// Applies one statement, appending the row events it causes.
    pub fn apply(
        &mut self,
        stmt: &Stmt,
        events: &mut EventFactory,
        out: &mut Vec<ChangeEvent>,
    ) -> Result<(), ReplayError> {
        let unsupported = || ReplayError(format!("unsupported statement: {}", stmt.sql));
        let args = stmt.args.as_slice();
        match parse(&stmt.sql)? {
            Parsed::Insert { table, columns } => match table {
                "merchants" => {
                    insert_rows(&mut self.merchants, &columns, args, events, out).map(|_| ())
                }
                "products" => {
                    insert_rows(&mut self.products, &columns, args, events, out).map(|_| ())
                }
                "orders" => insert_rows(&mut self.orders, &columns, args, events, out).map(|_| ()),
                "order_items" => {
                    let items = insert_rows(&mut self.items, &columns, args, events, out)?;
                    for i in items {
                        self.items_by_order
                            .entry(i.order_id)
                            .or_default()
                            .push(i.id);
                    }
                    Ok(())
                }
                _ => Err(unsupported()),
            },
            Parsed::Update { table, set, key } => {
                if key != "id" || set.len() + 1 != args.len() {
                    return Err(unsupported());
                }
                match table {
                    "merchants" => update_row(&mut self.merchants, &set, args, events, out),
                    "products" => update_row(&mut self.products, &set, args, events, out),
                    "orders" => update_row(&mut self.orders, &set, args, events, out),
                    "order_items" if !set.contains(&"order_id") => {
                        update_row(&mut self.items, &set, args, events, out)
                    }
                    _ => Err(unsupported()),
                }
            }
            Parsed::Delete { table, key } => {
                let id = key_arg(args)?;
                match (table, key) {
                    ("orders", "id") => {
                        delete_row(&mut self.orders, id, events, out)?;
                        Ok(())
                    }
                    ("order_items", "id") => {
                        let item = delete_row(&mut self.items, id, events, out)?;
                        if let Some(ids) = self.items_by_order.get_mut(&item.order_id) {
                            ids.retain(|&i| i != id);
                        }
                        Ok(())
                    }
                    ("order_items", "order_id") => {
                        let mut ids = self.items_by_order.remove(&id).unwrap_or_default();
                        ids.sort_unstable();
                        for item in ids {
                            delete_row(&mut self.items, item, events, out)?;
                        }
                        Ok(())
                    }
                    _ => Err(unsupported()),
                }
            }
        }
    }
}

/// How the live changes break down.
#[derive(Debug, Clone, Default)]
pub struct Mix {
    pub actions: BTreeMap<&'static str, u64>,
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    /// Changes to orders or items created before the day.
    pub past_days: u64,
    pub changes: u64,
}

impl Mix {
    fn count(&mut self, ev: &ChangeEvent, day_start_ms: i64) {
        self.changes += 1;
        match ev.op {
            Op::Insert | Op::Snapshot => self.inserts += 1,
            Op::Update => self.updates += 1,
            Op::Delete => self.deletes += 1,
            Op::Reset => {}
        }
        let created = ev
            .after
            .as_ref()
            .or(ev.before.as_ref())
            .and_then(|r| r.get("created_at"));
        if let Some(mdp_types::Value::Dt(t)) = created {
            if ev.table != "merchants" && t.and_utc().timestamp_millis() < day_start_ms {
                self.past_days += 1;
            }
        }
    }

    pub fn describe(&self) -> String {
        let pct = |n: u64| 100.0 * n as f64 / self.changes.max(1) as f64;
        let mut actions: Vec<(&str, u64)> = self.actions.iter().map(|(k, v)| (*k, *v)).collect();
        actions.sort_by_key(|a| std::cmp::Reverse(a.1));
        let actions: Vec<String> = actions.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!(
            "{} changes: {:.0}% inserts, {:.0}% updates, {:.0}% deletes, {:.1}% on orders/items of earlier days; transactions: {}",
            self.changes,
            pct(self.inserts),
            pct(self.updates),
            pct(self.deletes),
            pct(self.past_days),
            actions.join(", ")
        )
    }
}

/// The live change stream: planner actions become row events, cut into
/// windows of a fixed number of changes (a transaction may span two).
pub struct Stream {
    planner: Planner,
    model: Model,
    events: EventFactory,
    now: NaiveDateTime,
    step: Duration,
    pending: VecDeque<ChangeEvent>,
    next_window_id: u64,
    day_start_ms: i64,
    /// Leave out merchant and product edits (a control series of fact
    /// changes only).
    pub facts_only: bool,
    pub mix: Mix,
}

impl Stream {
    pub fn new(
        planner: Planner,
        model: Model,
        start: NaiveDateTime,
        day_start: NaiveDateTime,
        first_window_id: u64,
        first_seq: u64,
    ) -> Self {
        Stream {
            planner,
            model,
            events: EventFactory::new(first_seq),
            now: start,
            step: Duration::milliseconds(2),
            pending: VecDeque::new(),
            next_window_id: first_window_id,
            day_start_ms: day_start.and_utc().timestamp_millis(),
            facts_only: false,
            mix: Mix::default(),
        }
    }

    /// The next window of exactly `changes` changes.
    pub fn next_window(&mut self, changes: usize) -> Result<Window, ReplayError> {
        let opened_at_ms = self.now.and_utc().timestamp_millis();
        let mut buf = Vec::new();
        while self.pending.len() < changes {
            self.now += self.step;
            let action = self
                .planner
                .next_action(self.now)
                .ok_or_else(|| ReplayError("the planner has no merchant".to_string()))?;
            if self.facts_only
                && matches!(
                    action.kind,
                    ActionKind::MerchantUpdate | ActionKind::ProductUpdate
                )
            {
                continue;
            }
            *self.mix.actions.entry(action.kind.name()).or_default() += 1;
            self.events.commit_ts_ms = self.now.and_utc().timestamp_millis();
            buf.clear();
            for stmt in &action.statements {
                self.model.apply(stmt, &mut self.events, &mut buf)?;
            }
            self.pending.extend(buf.drain(..));
        }
        let window_changes: Vec<ChangeEvent> = self.pending.drain(..changes).collect();
        Ok(self.seal(opened_at_ms, window_changes))
    }

    /// A window of the changes cut off by the last [`Stream::next_window`]
    /// (the rest of a transaction), if any.
    pub fn flush(&mut self) -> Option<Window> {
        if self.pending.is_empty() {
            return None;
        }
        let opened_at_ms = self.now.and_utc().timestamp_millis();
        let rest: Vec<ChangeEvent> = self.pending.drain(..).collect();
        Some(self.seal(opened_at_ms, rest))
    }

    fn seal(&mut self, opened_at_ms: i64, window_changes: Vec<ChangeEvent>) -> Window {
        for ev in &window_changes {
            self.mix.count(ev, self.day_start_ms);
        }
        let id = self.next_window_id;
        self.next_window_id += 1;
        let first_seq = window_changes.first().map_or(0, |e| e.position.offset);
        let last_seq = window_changes.last().map_or(0, |e| e.position.offset);
        Window {
            partition: 0,
            id,
            first_seq,
            last_seq,
            opened_at_ms,
            sealed_at_ms: self.now.and_utc().timestamp_millis(),
            changes: window_changes,
        }
    }

    /// Id the next window gets.
    pub fn next_window_id(&self) -> u64 {
        self.next_window_id
    }

    /// The row model, with every change made so far (call [`Stream::flush`]
    /// first so the state has seen them all).
    pub fn into_model(self) -> Model {
        self.model
    }
}
