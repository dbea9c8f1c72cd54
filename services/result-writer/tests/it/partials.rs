//! Reports not keyed by merchant: partial deltas of several partitions are
//! merged into one global state per group, each batch at most once.

use crate::helpers::*;
use mdp_report::{Engine, MemoryStateStore, ReportSet, TenantColumns};
use mdp_types::{ChangeEvent, EventId, Op, Position, ResultBatch, Row, TenantId, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

fn engine() -> Engine {
    let report = mdp_report::Report::parse(
        "by_status",
        "by_status.sql",
        BY_STATUS_SQL,
        &TenantColumns::default(),
    )
    .expect("report parses");
    Engine::new(Arc::new(ReportSet::from_reports([report])))
}

fn order(id: i64, merchant: i64, status: &str, amount: &str) -> Row {
    let mut r = Row::new();
    r.insert("id".into(), Value::I(id));
    r.insert("merchant_id".into(), Value::I(merchant));
    r.insert("status".into(), Value::S(status.into()));
    r.insert("amount".into(), dec(amount));
    r
}

fn change(op: Op, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
    let any = after
        .as_ref()
        .or(before.as_ref())
        .cloned()
        .unwrap_or_default();
    ChangeEvent {
        id: EventId("e".into()),
        source: "shop".into(),
        table: "orders".into(),
        op,
        tenant: TenantId(
            any.get("merchant_id")
                .map(Value::key_text)
                .unwrap_or_default(),
        ),
        partition: 0,
        pk: vec![any.get("id").cloned().unwrap_or(Value::Null)],
        before,
        after,
        commit_ts_ms: 0,
        position: Position {
            file: "binlog.000001".into(),
            offset: 4,
            row: 0,
            snapshot: false,
        },
        captured_at_ms: 0,
    }
}

/// The batch of one partition's window: the engine's partial deltas.
fn window(
    e: &Engine,
    store: &mut MemoryStateStore,
    partition: u32,
    window_id: u64,
    changes: &[ChangeEvent],
) -> ResultBatch {
    let applied = e.apply_batch(store, changes).expect("apply");
    assert!(applied.rows.is_empty());
    let mut b = batch(partition, window_id, Vec::new());
    b.partials = applied.partials;
    b
}

async fn report_rows(pool: &sqlx::MySqlPool) -> BTreeMap<String, (Option<String>, String)> {
    let rows: Vec<(String, Option<String>, String)> =
        sqlx::query_as("SELECT key_text, tenant, row_json FROM rpt_by_status")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    rows.into_iter().map(|(k, t, j)| (k, (t, j))).collect()
}

#[actix_web::test]
async fn partial_deltas_of_two_partitions_merge_once() {
    let env = TestEnv::new(2);
    let publisher = TestPublisher::new(env.topology()).await;
    let _writer = env.spawn_writer().await;
    let e = engine();
    let (mut p0, mut p1) = (MemoryStateStore::new(), MemoryStateStore::new());

    // Merchant 7 lives in partition 0, merchants 8 and 9 in partition 1.
    let a = order(1, 7, "paid", "30.00");
    let b = order(2, 8, "paid", "50.00");
    let c = order(3, 9, "paid", "30.00");
    let d = order(4, 8, "shipped", "5.00");
    let w1 = window(
        &e,
        &mut p0,
        0,
        1,
        &[change(Op::Insert, None, Some(a.clone()))],
    );
    let w2 = window(
        &e,
        &mut p1,
        1,
        1,
        &[
            change(Op::Insert, None, Some(b.clone())),
            change(Op::Insert, None, Some(c.clone())),
            change(Op::Insert, None, Some(d.clone())),
        ],
    );
    publisher.batch(&w1).await;
    publisher.batch(&w2).await;
    // A redelivered batch changes nothing.
    publisher.batch(&w1).await;
    // Partition 1: the largest paid order is cancelled, the shipped one deleted.
    let b2 = order(2, 8, "cancelled", "50.00");
    let w3 = window(
        &e,
        &mut p1,
        1,
        2,
        &[
            change(Op::Update, Some(b.clone()), Some(b2.clone())),
            change(Op::Delete, Some(d.clone()), None),
        ],
    );
    publisher.batch(&w3).await;
    // Partition 0: merchant 7's order ships too late to be paid.
    let a2 = order(1, 7, "shipped", "30.00");
    let w4 = window(
        &e,
        &mut p0,
        0,
        2,
        &[change(Op::Update, Some(a.clone()), Some(a2.clone()))],
    );
    publisher.batch(&w4).await;
    publisher.batch(&w3).await;

    let pool = env.mysql();
    wait_applied(&pool, 0, 2).await;
    wait_applied(&pool, 1, 2).await;

    let expected: BTreeMap<String, (Option<String>, String)> = [
        (
            "cancelled".to_string(),
            (
                None,
                r#"{"status":"cancelled","orders":1,"gmv":50,"merchants":1,"largest":50}"#
                    .to_string(),
            ),
        ),
        (
            "paid".to_string(),
            (
                None,
                r#"{"status":"paid","orders":1,"gmv":30,"merchants":1,"largest":30}"#.to_string(),
            ),
        ),
        (
            "shipped".to_string(),
            (
                None,
                r#"{"status":"shipped","orders":1,"gmv":30,"merchants":1,"largest":30}"#
                    .to_string(),
            ),
        ),
    ]
    .into_iter()
    .collect();
    let rows = report_rows(&pool).await;
    assert_eq!(rows, expected);

    // The global states hold exactly the live groups.
    let states: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM acc_by_status")
        .fetch_one(&pool)
        .await
        .expect("acc table");
    assert_eq!(states, 3);

    // Redis converges to the same rows under tenant `_`.
    let mut r = env.redis().await;
    let hash = format!("{}:rpt:by_status:t:_", env.prefix);
    let cached = eventually("redis rows of by_status", Duration::from_secs(20), || {
        let hash = hash.clone();
        let mut r = r.clone();
        async move {
            let m: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&hash)
                .query_async(&mut r)
                .await
                .ok()?;
            let paid = m.get("paid")?;
            (m.len() == 3 && paid.contains(r#""orders":1"#)).then_some(m)
        }
    })
    .await;
    let shipped: serde_json::Value =
        serde_json::from_str(cached.get("shipped").map_or("", String::as_str)).expect("json");
    assert_eq!(shipped["merchants"], serde_json::json!(1));
    assert_eq!(shipped["largest"], serde_json::json!(30));
    let _: Result<(), _> = redis::cmd("PING").query_async(&mut r).await;
    env.cleanup().await;
}
