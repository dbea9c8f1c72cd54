//! Compact records of the shop tables and the change events ingest would
//! capture for them (full row images, as the binlog carries them).

use chrono::{NaiveDateTime, Timelike};
use mdp_e2e::workload::{Arg, ItemRow, OrderRow, Status};
use mdp_types::{ChangeEvent, EventId, Op, Position, Row, TenantId, Value};
use std::fmt;

/// Logical source name on every generated event (the shop schema).
pub const SOURCE: &str = "shop";

/// A statement or a record could not be interpreted.
#[derive(Debug)]
pub struct ReplayError(pub String);

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReplayError {}

fn int(column: &str, arg: &Arg) -> Result<i64, ReplayError> {
    match arg {
        Arg::Int(v) => Ok(*v),
        other => Err(ReplayError(format!(
            "{column}: expected an integer, got {other:?}"
        ))),
    }
}

fn text(column: &str, arg: &Arg) -> Result<String, ReplayError> {
    match arg {
        Arg::Text(v) => Ok(v.clone()),
        other => Err(ReplayError(format!(
            "{column}: expected text, got {other:?}"
        ))),
    }
}

fn time(column: &str, arg: &Arg) -> Result<NaiveDateTime, ReplayError> {
    match arg {
        Arg::Time(v) => Ok(*v),
        other => Err(ReplayError(format!(
            "{column}: expected a datetime, got {other:?}"
        ))),
    }
}

fn unknown(table: &str, column: &str) -> ReplayError {
    ReplayError(format!("unknown column {table}.{column}"))
}

fn row(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Row {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Datetime columns hold whole seconds, like MySQL `DATETIME`.
pub fn whole_seconds(t: NaiveDateTime) -> NaiveDateTime {
    t.with_nanosecond(0).unwrap_or(t)
}

/// One row of a shop table.
pub trait Record: Clone + Default {
    const TABLE: &'static str;
    fn id(&self) -> i64;
    /// Value of the table's tenant column.
    fn tenant(&self) -> i64;
    /// The full row image.
    fn row(&self) -> Row;
    /// Sets one column from a statement argument.
    fn set(&mut self, column: &str, arg: &Arg) -> Result<(), ReplayError>;
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MerchantRec {
    pub id: i64,
    pub name: String,
    pub city: String,
    pub created_at: NaiveDateTime,
}

impl Record for MerchantRec {
    const TABLE: &'static str = "merchants";
    fn id(&self) -> i64 {
        self.id
    }
    fn tenant(&self) -> i64 {
        self.id
    }
    fn row(&self) -> Row {
        row([
            ("id", Value::I(self.id)),
            ("name", Value::S(self.name.clone())),
            ("city", Value::S(self.city.clone())),
            ("created_at", Value::Dt(self.created_at)),
        ])
    }
    fn set(&mut self, column: &str, arg: &Arg) -> Result<(), ReplayError> {
        match column {
            "id" => self.id = int(column, arg)?,
            "name" => self.name = text(column, arg)?,
            "city" => self.city = text(column, arg)?,
            "created_at" => self.created_at = time(column, arg)?,
            _ => return Err(unknown(Self::TABLE, column)),
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProductRec {
    pub id: i64,
    pub merchant_id: i64,
    pub name: String,
    pub category: String,
    pub price_cents: i64,
}

impl Record for ProductRec {
    const TABLE: &'static str = "products";
    fn id(&self) -> i64 {
        self.id
    }
    fn tenant(&self) -> i64 {
        self.merchant_id
    }
    fn row(&self) -> Row {
        row([
            ("id", Value::I(self.id)),
            ("merchant_id", Value::I(self.merchant_id)),
            ("name", Value::S(self.name.clone())),
            ("category", Value::S(self.category.clone())),
            ("price_cents", Value::I(self.price_cents)),
        ])
    }
    fn set(&mut self, column: &str, arg: &Arg) -> Result<(), ReplayError> {
        match column {
            "id" => self.id = int(column, arg)?,
            "merchant_id" => self.merchant_id = int(column, arg)?,
            "name" => self.name = text(column, arg)?,
            "category" => self.category = text(column, arg)?,
            "price_cents" => self.price_cents = int(column, arg)?,
            _ => return Err(unknown(Self::TABLE, column)),
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderRec {
    pub id: i64,
    pub merchant_id: i64,
    pub customer_id: i64,
    pub status: Status,
    pub amount_cents: i64,
    pub refund_cents: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl Default for OrderRec {
    fn default() -> Self {
        OrderRec {
            id: 0,
            merchant_id: 0,
            customer_id: 0,
            status: Status::Cart,
            amount_cents: 0,
            refund_cents: 0,
            created_at: NaiveDateTime::default(),
            updated_at: NaiveDateTime::default(),
        }
    }
}

impl OrderRec {
    /// The order as the workload planner models it.
    pub fn planner_row(&self, items: &[ItemRec]) -> OrderRow {
        OrderRow {
            id: self.id,
            merchant_id: self.merchant_id,
            customer_id: self.customer_id,
            status: self.status,
            amount_cents: self.amount_cents,
            refund_cents: self.refund_cents,
            created_at: self.created_at,
            items: items
                .iter()
                .map(|i| ItemRow {
                    id: i.id,
                    order_id: i.order_id,
                    product_id: i.product_id,
                    qty: i.qty,
                    price_cents: i.price_cents,
                })
                .collect(),
        }
    }
}

impl Record for OrderRec {
    const TABLE: &'static str = "orders";
    fn id(&self) -> i64 {
        self.id
    }
    fn tenant(&self) -> i64 {
        self.merchant_id
    }
    fn row(&self) -> Row {
        row([
            ("id", Value::I(self.id)),
            ("merchant_id", Value::I(self.merchant_id)),
            ("customer_id", Value::I(self.customer_id)),
            ("status", Value::S(self.status.as_str().to_string())),
            ("amount_cents", Value::I(self.amount_cents)),
            ("refund_cents", Value::I(self.refund_cents)),
            ("created_at", Value::Dt(self.created_at)),
            ("updated_at", Value::Dt(self.updated_at)),
        ])
    }
    fn set(&mut self, column: &str, arg: &Arg) -> Result<(), ReplayError> {
        match column {
            "id" => self.id = int(column, arg)?,
            "merchant_id" => self.merchant_id = int(column, arg)?,
            "customer_id" => self.customer_id = int(column, arg)?,
            "status" => {
                let s = text(column, arg)?;
                self.status = Status::parse(&s)
                    .ok_or_else(|| ReplayError(format!("unknown order status {s:?}")))?;
            }
            "amount_cents" => self.amount_cents = int(column, arg)?,
            "refund_cents" => self.refund_cents = int(column, arg)?,
            "created_at" => self.created_at = time(column, arg)?,
            "updated_at" => self.updated_at = time(column, arg)?,
            _ => return Err(unknown(Self::TABLE, column)),
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemRec {
    pub id: i64,
    pub merchant_id: i64,
    pub order_id: i64,
    pub product_id: i64,
    pub qty: i64,
    pub price_cents: i64,
    pub created_at: NaiveDateTime,
}

impl Record for ItemRec {
    const TABLE: &'static str = "order_items";
    fn id(&self) -> i64 {
        self.id
    }
    fn tenant(&self) -> i64 {
        self.merchant_id
    }
    fn row(&self) -> Row {
        row([
            ("id", Value::I(self.id)),
            ("merchant_id", Value::I(self.merchant_id)),
            ("order_id", Value::I(self.order_id)),
            ("product_id", Value::I(self.product_id)),
            ("qty", Value::I(self.qty)),
            ("price_cents", Value::I(self.price_cents)),
            ("created_at", Value::Dt(self.created_at)),
        ])
    }
    fn set(&mut self, column: &str, arg: &Arg) -> Result<(), ReplayError> {
        match column {
            "id" => self.id = int(column, arg)?,
            "merchant_id" => self.merchant_id = int(column, arg)?,
            "order_id" => self.order_id = int(column, arg)?,
            "product_id" => self.product_id = int(column, arg)?,
            "qty" => self.qty = int(column, arg)?,
            "price_cents" => self.price_cents = int(column, arg)?,
            "created_at" => self.created_at = time(column, arg)?,
            _ => return Err(unknown(Self::TABLE, column)),
        }
        Ok(())
    }
}

/// Numbers events in commit order, like binlog positions of one source.
#[derive(Debug, Clone, Default)]
pub struct EventFactory {
    seq: u64,
    /// Commit time stamped on the next events (ms since epoch).
    pub commit_ts_ms: i64,
}

impl EventFactory {
    pub fn new(first_seq: u64) -> Self {
        EventFactory {
            seq: first_seq,
            commit_ts_ms: 0,
        }
    }

    fn event<R: Record>(
        &mut self,
        rec: &R,
        op: Op,
        before: Option<Row>,
        after: Option<Row>,
    ) -> ChangeEvent {
        self.seq += 1;
        let position = Position {
            file: "binlog.000001".to_string(),
            offset: self.seq,
            row: 0,
            snapshot: false,
        };
        ChangeEvent {
            id: EventId::from_position(SOURCE, &position),
            source: SOURCE.to_string(),
            table: R::TABLE.to_string(),
            op,
            tenant: TenantId(rec.tenant().to_string()),
            partition: 0,
            pk: vec![Value::I(rec.id())],
            before,
            after,
            commit_ts_ms: self.commit_ts_ms,
            position,
            captured_at_ms: self.commit_ts_ms,
        }
    }

    pub fn insert<R: Record>(&mut self, rec: &R) -> ChangeEvent {
        self.event(rec, Op::Insert, None, Some(rec.row()))
    }

    pub fn update<R: Record>(&mut self, before: &R, after: &R) -> ChangeEvent {
        self.event(after, Op::Update, Some(before.row()), Some(after.row()))
    }

    pub fn delete<R: Record>(&mut self, before: &R) -> ChangeEvent {
        self.event(before, Op::Delete, Some(before.row()), None)
    }
}
