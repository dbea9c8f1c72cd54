//! Turning row images into [`ChangeEvent`]s: tenant extraction, partition
//! routing, primary keys, and rejection of rows that cannot be routed.

use super::schema::TableInfo;
use mdp_types::{partition_of, ChangeEvent, EventId, Op, Position, Row, TenantId, Value};
use std::fmt;

/// Why a captured row could not be routed to a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The table has no tenant column.
    MissingTenantColumn,
    /// The row's tenant column is NULL.
    NullTenant,
}

impl RejectReason {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MissingTenantColumn => "missing_tenant_column",
            RejectReason::NullTenant => "null_tenant",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event ready to publish, or one that goes to the dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    Event(ChangeEvent),
    Rejected {
        event: ChangeEvent,
        reason: RejectReason,
    },
}

/// What is common to the rows of one binlog rows event (or one snapshot).
#[derive(Debug, Clone, Copy)]
pub struct RowContext<'a> {
    /// Source database name.
    pub source: &'a str,
    pub table: &'a TableInfo,
    pub partitions: u32,
    pub commit_ts_ms: i64,
    pub captured_at_ms: i64,
}

/// Suffix of the id of the insert half of an update that moved a row to
/// another tenant (the delete half keeps the position's plain id).
pub const MOVED_ID_SUFFIX: &str = "+moved";

/// Builds the events for one row change. An update that moves a row to a
/// tenant of another partition is split into a delete routed by the old
/// tenant and an insert routed by the new one, so each partition sees a
/// complete history of its own rows; within one partition it stays an update
/// (tenant = the new one).
pub fn route_change(
    ctx: &RowContext<'_>,
    op: Op,
    before: Option<Row>,
    after: Option<Row>,
    position: Position,
) -> Vec<Routed> {
    let tenant_of = |row: &Option<Row>| -> Result<TenantId, RejectReason> {
        let idx = ctx.table.tenant.ok_or(RejectReason::MissingTenantColumn)?;
        let name = &ctx.table.columns[idx].name;
        let v = row
            .as_ref()
            .and_then(|r| r.get(name))
            .ok_or(RejectReason::MissingTenantColumn)?;
        TenantId::from_value(v).ok_or(RejectReason::NullTenant)
    };
    let id = EventId::from_position(ctx.source, &position);
    let make = |id: EventId, op: Op, tenant: TenantId, before: Option<Row>, after: Option<Row>| {
        let image = if op == Op::Delete {
            before.as_ref()
        } else {
            after.as_ref()
        };
        let pk = pk_values(ctx.table, image);
        let partition = partition_of(&tenant, ctx.partitions);
        ChangeEvent {
            id,
            source: ctx.source.to_string(),
            table: ctx.table.table.clone(),
            op,
            tenant,
            partition,
            pk,
            before,
            after,
            commit_ts_ms: ctx.commit_ts_ms,
            position: position.clone(),
            captured_at_ms: ctx.captured_at_ms,
        }
    };
    let reject = |reason: RejectReason, before: Option<Row>, after: Option<Row>| Routed::Rejected {
        event: make(id.clone(), op, TenantId(String::new()), before, after),
        reason,
    };

    match op {
        Op::Update => {
            let old = tenant_of(&before);
            let new = tenant_of(&after);
            match (old, new) {
                // Within one partition an update carrying both images is enough
                // (and a split would give two events the same position there).
                (Ok(old), Ok(new))
                    if old == new
                        || partition_of(&old, ctx.partitions)
                            == partition_of(&new, ctx.partitions) =>
                {
                    vec![Routed::Event(make(
                        id.clone(),
                        Op::Update,
                        new,
                        before,
                        after,
                    ))]
                }
                (Ok(old), Ok(new)) => vec![
                    Routed::Event(make(id.clone(), Op::Delete, old, before, None)),
                    Routed::Event(make(
                        EventId(format!("{id}{MOVED_ID_SUFFIX}")),
                        Op::Insert,
                        new,
                        None,
                        after,
                    )),
                ],
                (Err(reason), _) | (_, Err(reason)) => vec![reject(reason, before, after)],
            }
        }
        Op::Delete => match tenant_of(&before) {
            Ok(t) => vec![Routed::Event(make(id.clone(), op, t, before, None))],
            Err(reason) => vec![reject(reason, before, None)],
        },
        Op::Insert | Op::Snapshot => match tenant_of(&after) {
            Ok(t) => vec![Routed::Event(make(id.clone(), op, t, None, after))],
            Err(reason) => vec![reject(reason, None, after)],
        },
        Op::Reset => Vec::new(),
    }
}

/// The `Reset` event announcing a (re-)snapshot of `table` on `partition`.
pub fn reset_event(
    source: &str,
    table: &str,
    partition: u32,
    position: Position,
    now_ms: i64,
) -> ChangeEvent {
    ChangeEvent {
        id: EventId::from_position(source, &position),
        source: source.to_string(),
        table: table.to_string(),
        op: Op::Reset,
        tenant: TenantId(String::new()),
        partition,
        pk: Vec::new(),
        before: None,
        after: None,
        commit_ts_ms: now_ms,
        position,
        captured_at_ms: now_ms,
    }
}

fn pk_values(table: &TableInfo, image: Option<&Row>) -> Vec<Value> {
    let Some(row) = image else { return Vec::new() };
    table
        .pk
        .iter()
        .map(|i| {
            row.get(&table.columns[*i].name)
                .cloned()
                .unwrap_or(Value::Null)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cdc::convert::ColumnKind;
    use crate::cdc::schema::ColumnInfo;

    fn table() -> TableInfo {
        let cols = ["id", "merchant_id", "amount"]
            .iter()
            .map(|n| ColumnInfo {
                name: n.to_string(),
                kind: ColumnKind::Int,
            })
            .collect();
        TableInfo::new("orders", cols, "merchant_id", &["id".to_string()])
    }

    fn row(id: i64, merchant: Value, amount: i64) -> Option<Row> {
        let mut r = Row::new();
        r.insert("id".into(), Value::I(id));
        r.insert("merchant_id".into(), merchant);
        r.insert("amount".into(), Value::I(amount));
        Some(r)
    }

    fn pos(row: u32) -> Position {
        Position {
            file: "binlog.000001".into(),
            offset: 900,
            row,
            snapshot: false,
        }
    }

    fn ctx(t: &TableInfo) -> RowContext<'_> {
        RowContext {
            source: "shop",
            table: t,
            partitions: 8,
            commit_ts_ms: 1_000,
            captured_at_ms: 2_000,
        }
    }

    fn event(r: &Routed) -> &ChangeEvent {
        match r {
            Routed::Event(e) => e,
            Routed::Rejected { .. } => panic!("expected an event, got {r:?}"),
        }
    }

    #[test]
    fn insert_is_routed_by_tenant_with_pk() {
        let t = table();
        let out = route_change(
            &ctx(&t),
            Op::Insert,
            None,
            row(5, Value::I(42), 100),
            pos(0),
        );
        assert_eq!(out.len(), 1);
        let e = event(&out[0]);
        assert_eq!(e.tenant, TenantId("42".into()));
        assert_eq!(e.partition, partition_of(&TenantId("42".into()), 8));
        assert_eq!(e.pk, vec![Value::I(5)]);
        assert_eq!(e.id, EventId("shop/binlog.000001:900#0".into()));
        assert!(e.before.is_none());
        assert_eq!(e.after.as_ref().unwrap()["amount"], Value::I(100));
        assert_eq!(e.commit_ts_ms, 1_000);
    }

    #[test]
    fn delete_is_routed_by_the_before_image() {
        let t = table();
        let out = route_change(&ctx(&t), Op::Delete, row(5, Value::I(7), 1), None, pos(1));
        let e = event(&out[0]);
        assert_eq!(e.op, Op::Delete);
        assert_eq!(e.tenant, TenantId("7".into()));
        assert_eq!(e.pk, vec![Value::I(5)]);
        assert!(e.after.is_none());
    }

    #[test]
    fn update_moving_tenant_splits_into_delete_and_insert() {
        let t = table();
        let out = route_change(
            &ctx(&t),
            Op::Update,
            row(5, Value::I(1), 10),
            row(5, Value::I(2), 10),
            pos(3),
        );
        assert_eq!(out.len(), 2);
        let (d, i) = (event(&out[0]), event(&out[1]));
        assert_eq!((d.op, d.tenant.as_str()), (Op::Delete, "1"));
        assert_eq!((i.op, i.tenant.as_str()), (Op::Insert, "2"));
        assert_eq!(d.partition, partition_of(&TenantId("1".into()), 8));
        assert_eq!(i.partition, partition_of(&TenantId("2".into()), 8));
        assert_ne!(d.id, i.id);
        assert_eq!(d.position, i.position);
        assert!(d.after.is_none() && i.before.is_none());
    }

    #[test]
    fn update_moving_tenant_within_a_partition_stays_an_update() {
        let t = table();
        let mut c = ctx(&t);
        c.partitions = 1;
        let out = route_change(
            &c,
            Op::Update,
            row(5, Value::I(1), 10),
            row(5, Value::I(2), 10),
            pos(3),
        );
        assert_eq!(out.len(), 1);
        let e = event(&out[0]);
        assert_eq!((e.op, e.tenant.as_str(), e.partition), (Op::Update, "2", 0));
        assert_eq!(e.before.as_ref().unwrap()["merchant_id"], Value::I(1));
        assert_eq!(e.after.as_ref().unwrap()["merchant_id"], Value::I(2));
    }

    #[test]
    fn update_within_tenant_keeps_both_images() {
        let t = table();
        let out = route_change(
            &ctx(&t),
            Op::Update,
            row(5, Value::I(1), 10),
            row(5, Value::I(1), 20),
            pos(0),
        );
        assert_eq!(out.len(), 1);
        let e = event(&out[0]);
        assert_eq!(e.before.as_ref().unwrap()["amount"], Value::I(10));
        assert_eq!(e.after.as_ref().unwrap()["amount"], Value::I(20));
    }

    #[test]
    fn rows_without_tenant_are_rejected_with_reason() {
        let t = table();
        let out = route_change(&ctx(&t), Op::Insert, None, row(5, Value::Null, 1), pos(0));
        assert!(matches!(
            &out[0],
            Routed::Rejected {
                reason: RejectReason::NullTenant,
                ..
            }
        ));
        let no_col = TableInfo::new(
            "orders",
            vec![ColumnInfo {
                name: "id".into(),
                kind: ColumnKind::Int,
            }],
            "merchant_id",
            &["id".to_string()],
        );
        let out = route_change(
            &ctx(&no_col),
            Op::Insert,
            None,
            row(5, Value::I(1), 1),
            pos(0),
        );
        assert!(matches!(
            &out[0],
            Routed::Rejected {
                reason: RejectReason::MissingTenantColumn,
                ..
            }
        ));
    }
}
