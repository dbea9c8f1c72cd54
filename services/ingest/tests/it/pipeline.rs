//! Snapshot, streaming, routing, types, positions, restart and schema change.

use crate::helpers::{
    random_suffix, settings, Broker, RunningApp, TestSource, AMQP_URL, PARTITIONS,
};
use chrono::{NaiveDate, NaiveTime};
use mdp_types::{partition_of, ChangeEvent, EventId, Op, Row, TenantId, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn row(pairs: &[(&str, Value)]) -> Row {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn dec(s: &str) -> Value {
    Value::D(s.parse().expect("decimal"))
}

fn dt(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32) -> Value {
    Value::Dt(
        NaiveDate::from_ymd_opt(y, mo, d)
            .expect("date")
            .and_hms_milli_opt(h, mi, s, ms)
            .expect("time"),
    )
}

/// Order 10 as inserted by the fixture, with another id and merchant.
fn full_order(id: i64, merchant: i64) -> Row {
    row(&[
        ("id", Value::I(id)),
        ("merchant_id", Value::I(merchant)),
        ("status", Value::S("paid".into())),
        ("amount", dec("12.30")),
        ("weight", Value::F(1.5)),
        ("ratio", Value::F(0.1)),
        ("qty", Value::I(3)),
        ("big", Value::U(u64::MAX)),
        ("created_at", dt(2026, 11, 20, 10, 0, 0, 250)),
        ("paid_at", dt(2026, 11, 20, 10, 0, 1, 0)),
        (
            "day",
            Value::Date(NaiveDate::from_ymd_opt(2026, 11, 20).expect("date")),
        ),
        (
            "t",
            Value::Time(NaiveTime::from_hms_opt(10, 30, 0).expect("time")),
        ),
        ("note", Value::S("héllo".into())),
        ("payload", Value::B(vec![0, 255])),
        ("tags", Value::S("a,c".into())),
    ])
}

fn order_11() -> Row {
    row(&[
        ("id", Value::I(11)),
        ("merchant_id", Value::I(2)),
        ("status", Value::S("new".into())),
        ("amount", dec("5.00")),
        ("weight", Value::Null),
        ("ratio", Value::Null),
        ("qty", Value::I(1)),
        ("big", Value::Null),
        ("created_at", dt(2026, 11, 21, 8, 0, 0, 0)),
        ("paid_at", Value::Null),
        ("day", Value::Null),
        ("t", Value::Null),
        ("note", Value::Null),
        ("payload", Value::Null),
        ("tags", Value::Null),
    ])
}

const FULL_ORDER_VALUES: &str = "1, 'paid', 12.30, 1.5, 0.1, 3, 18446744073709551615, \
    '2026-11-20 10:00:00.250', '2026-11-20 10:00:01', '2026-11-20', '10:30:00', 'héllo', x'00FF', 'a,c'";

async fn create_schema(source: &TestSource) {
    source
        .exec(&[
            "CREATE TABLE merchants (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL, city VARCHAR(32))",
            "CREATE TABLE orders (
                id BIGINT UNSIGNED PRIMARY KEY,
                merchant_id BIGINT NULL,
                status ENUM('new','paid','refunded') NOT NULL DEFAULT 'new',
                amount DECIMAL(12,2) NOT NULL,
                weight DOUBLE NULL,
                ratio FLOAT NULL,
                qty SMALLINT UNSIGNED NOT NULL,
                big BIGINT UNSIGNED NULL,
                created_at DATETIME(3) NOT NULL,
                paid_at TIMESTAMP NULL,
                day DATE NULL,
                t TIME NULL,
                note TEXT NULL,
                payload BLOB NULL,
                tags SET('a','b','c') NULL
            )",
            "CREATE TABLE order_items (order_id BIGINT, line INT, merchant_id BIGINT, sku VARCHAR(16),
                PRIMARY KEY (order_id, line))",
            "CREATE TABLE audit (id INT PRIMARY KEY, merchant_id INT)",
        ])
        .await;
}

fn streamed(events: &[ChangeEvent]) -> Vec<ChangeEvent> {
    let mut v: Vec<ChangeEvent> = events
        .iter()
        .filter(|e| !matches!(e.op, Op::Reset | Op::Snapshot))
        .cloned()
        .collect();
    v.sort_by(|a, b| a.position.cmp(&b.position).then_with(|| a.id.cmp(&b.id)));
    v
}

fn summary(e: &ChangeEvent) -> (String, Op, String, Vec<Value>) {
    (e.table.clone(), e.op, e.tenant.0.clone(), e.pk.clone())
}

/// Checks routing and per-queue ordering of everything received.
fn assert_routing_and_order(broker: &Broker, db: &str) {
    let mut last: HashMap<u32, mdp_types::Position> = HashMap::new();
    for r in &broker.received {
        assert_eq!(r.batch.partition, r.queue_partition);
        let first = r.batch.events.first().expect("batches are not empty");
        assert_eq!(
            r.message_id.as_deref(),
            Some(first.id.0.as_str()),
            "message id is the first event id"
        );
        let tp = r.traceparent.as_deref().unwrap_or_default();
        assert!(
            tp.starts_with("00-") && tp.len() == 55,
            "traceparent header: {tp:?}"
        );
        for e in &r.batch.events {
            assert_eq!(e.partition, r.queue_partition, "{e:?}");
            assert_eq!(e.source, db);
            if e.op != Op::Reset {
                assert_eq!(e.partition, partition_of(&e.tenant, PARTITIONS), "{e:?}");
            }
            if let Some(prev) = last.get(&e.partition) {
                assert!(
                    &e.position >= prev,
                    "positions go back in partition {}: {prev} then {}",
                    e.partition,
                    e.position
                );
            }
            last.insert(e.partition, e.position.clone());
            if !e.id.0.ends_with(mdp_ingest::cdc::events::MOVED_ID_SUFFIX) {
                assert_eq!(e.id, EventId::from_position(db, &e.position));
            }
        }
    }
}

/// Waits until the saved position reaches the binlog end as of now (other
/// databases on the server may write meanwhile, so "at least").
async fn wait_saved_at_end(app: &RunningApp, source: &TestSource) -> serde_json::Value {
    let (file, pos) = source.master_status().await;
    let seq = |f: &str| {
        f.rsplit('.')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let target = (seq(&file), pos);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let p = app.get_json("/v1/position").await;
        let saved = (
            seq(p["saved"]["file"].as_str().unwrap_or("")),
            p["saved"]["pos"].as_u64().unwrap_or(0),
        );
        if saved >= target {
            return p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "saved position never reached {file}:{pos}: {p}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn snapshot_stream_restart_and_schema_change() {
    let source = TestSource::create().await;
    let prefix = format!("it_ingest_{}", random_suffix());
    let mut broker = Broker::connect(&prefix).await;
    let data_dir = tempfile::tempdir().expect("temp dir");
    create_schema(&source).await;
    source
        .exec(&[
            "INSERT INTO merchants VALUES (1, 'Alpha', 'Paris'), (2, 'Beta', NULL)",
            &format!("INSERT INTO orders VALUES (10, {FULL_ORDER_VALUES})"),
            "INSERT INTO orders (id, merchant_id, status, amount, qty, created_at)
                VALUES (11, 2, 'new', 5.00, 1, '2026-11-21 08:00:00')",
            "INSERT INTO order_items VALUES (10, 1, 1, 'sku-1')",
        ])
        .await;

    // ---- snapshot
    let app = RunningApp::spawn(settings(&source, &prefix, AMQP_URL, data_dir.path())).await;
    broker
        .wait_for("the snapshot", WAIT, |b| b.events().len() >= 12 + 5)
        .await;
    let events = broker.events();
    assert_eq!(events.len(), 17, "{events:#?}");
    let resets: Vec<&ChangeEvent> = events.iter().filter(|e| e.op == Op::Reset).collect();
    assert_eq!(resets.len(), (PARTITIONS * 3) as usize);
    for p in 0..PARTITIONS {
        let in_p: Vec<&ChangeEvent> = events.iter().filter(|e| e.partition == p).collect();
        let tables: Vec<&str> = in_p.iter().take(3).map(|e| e.table.as_str()).collect();
        assert_eq!(
            tables,
            vec!["merchants", "order_items", "orders"],
            "resets come first in partition {p}"
        );
        assert!(in_p
            .iter()
            .take(3)
            .all(|e| e.op == Op::Reset && e.pk.is_empty() && e.after.is_none()));
        assert!(in_p.iter().skip(3).all(|e| e.op == Op::Snapshot));
    }
    let snap_pos = &events[0].position;
    assert!(events
        .iter()
        .all(|e| e.position.snapshot && e.position.offset == snap_pos.offset));
    let by_pk = |table: &str, pk: Vec<Value>| -> ChangeEvent {
        events
            .iter()
            .find(|e| e.op == Op::Snapshot && e.table == table && e.pk == pk)
            .unwrap_or_else(|| panic!("no snapshot row {table} {pk:?}"))
            .clone()
    };
    let o10 = by_pk("orders", vec![Value::I(10)]);
    assert_eq!(o10.tenant, TenantId("1".into()));
    assert_eq!(o10.after, Some(full_order(10, 1)));
    assert!(o10.before.is_none());
    assert_eq!(by_pk("orders", vec![Value::I(11)]).after, Some(order_11()));
    let m2 = by_pk("merchants", vec![Value::I(2)]);
    assert_eq!(m2.tenant, TenantId("2".into()));
    assert_eq!(
        m2.after,
        Some(row(&[
            ("id", Value::I(2)),
            ("name", Value::S("Beta".into())),
            ("city", Value::Null)
        ]))
    );
    let item = by_pk("order_items", vec![Value::I(10), Value::I(1)]);
    assert_eq!(
        item.after.as_ref().and_then(|r| r.get("sku")).cloned(),
        Some(Value::S("sku-1".into()))
    );

    // ---- binlog streaming
    source
        .exec(&[&format!(
            "INSERT INTO orders VALUES (12, {FULL_ORDER_VALUES})"
        )])
        .await;
    source
        .exec(&["UPDATE orders SET status = 'refunded', amount = amount - 0.30 WHERE id = 12"])
        .await;
    source.exec(&["DELETE FROM orders WHERE id = 11"]).await;
    source.exec(&["INSERT INTO audit VALUES (1, 1)"]).await;
    source
        .exec(&[
            "START TRANSACTION",
            "INSERT INTO order_items VALUES (12, 1, 1, 'a'), (12, 2, 1, 'b')",
            "UPDATE merchants SET city = 'Lyon' WHERE id = 1",
            "COMMIT",
        ])
        .await;
    source
        .exec(&["UPDATE orders SET merchant_id = 2 WHERE id = 10"])
        .await;
    source.exec(&["INSERT INTO orders (id, merchant_id, amount, qty, created_at) VALUES (13, NULL, 1, 1, NOW())"]).await;
    broker
        .wait_for("the streamed changes", WAIT, |b| {
            b.events().len() >= 17 + 8 && !b.dead_letters.is_empty()
        })
        .await;
    let events = broker.events();
    assert_eq!(events.len(), 25, "{events:#?}");
    let s = streamed(&events);
    let i = |v: i64| Value::I(v);
    assert_eq!(
        s.iter().map(summary).collect::<Vec<_>>(),
        vec![
            ("orders".into(), Op::Insert, "1".into(), vec![i(12)]),
            ("orders".into(), Op::Update, "1".into(), vec![i(12)]),
            ("orders".into(), Op::Delete, "2".into(), vec![i(11)]),
            (
                "order_items".into(),
                Op::Insert,
                "1".into(),
                vec![i(12), i(1)]
            ),
            (
                "order_items".into(),
                Op::Insert,
                "1".into(),
                vec![i(12), i(2)]
            ),
            ("merchants".into(), Op::Update, "1".into(), vec![i(1)]),
            ("orders".into(), Op::Delete, "1".into(), vec![i(10)]),
            ("orders".into(), Op::Insert, "2".into(), vec![i(10)]),
        ]
    );
    // Binlog values convert exactly like snapshot values.
    assert_eq!(s[0].after, Some(full_order(12, 1)));
    assert!(s[0].before.is_none());
    let mut refunded = full_order(12, 1);
    refunded.insert("status".into(), Value::S("refunded".into()));
    refunded.insert("amount".into(), dec("12.00"));
    assert_eq!(s[1].before, Some(full_order(12, 1)));
    assert_eq!(s[1].after, Some(refunded));
    assert_eq!(s[2].before, Some(order_11()));
    assert!(s[2].after.is_none());
    // One rows event with two rows, then another event of the same transaction.
    assert_eq!(s[3].position.offset, s[4].position.offset);
    assert_eq!((s[3].position.row, s[4].position.row), (0, 1));
    assert!(s[5].position.offset > s[4].position.offset);
    assert_eq!(
        s[5].before.as_ref().and_then(|r| r.get("city")).cloned(),
        Some(Value::S("Paris".into()))
    );
    assert_eq!(
        s[5].after.as_ref().and_then(|r| r.get("city")).cloned(),
        Some(Value::S("Lyon".into()))
    );
    // The merchant change of order 10 is a delete for merchant 1 and an insert for merchant 2.
    assert_eq!(s[6].position, s[7].position);
    assert_eq!(s[6].before, Some(full_order(10, 1)));
    assert_eq!(s[7].after, Some(full_order(10, 2)));
    assert_ne!(s[6].id, s[7].id);
    for w in s.windows(2) {
        assert!(w[0].position <= w[1].position);
    }
    let now = mdp_types::now_ms();
    for e in &s {
        assert!(!e.position.snapshot);
        assert!((now - e.commit_ts_ms).abs() < 120_000, "commit ts {e:?}");
        assert!(e.captured_at_ms + 1 >= e.commit_ts_ms - 1000);
    }
    assert_routing_and_order(&broker, &source.db);
    // The row without a merchant went to the dead-letter queue.
    assert_eq!(broker.dead_letters.len(), 1);
    let dead = &broker.dead_letters[0].events[0];
    assert_eq!((dead.table.as_str(), dead.op), ("orders", Op::Insert));
    assert_eq!(
        dead.after.as_ref().and_then(|r| r.get("id")).cloned(),
        Some(Value::I(13))
    );
    assert_eq!(
        dead.after
            .as_ref()
            .and_then(|r| r.get("merchant_id"))
            .cloned(),
        Some(Value::Null)
    );

    // ---- HTTP
    let position = wait_saved_at_end(&app, &source).await;
    assert_eq!(position["events_published"], 25);
    assert_eq!(position["phase"], "streaming");
    // The lag monitor reports the distance to the source's end once a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let lag = loop {
        let p = app.get_json("/v1/position").await;
        if let (Some(lag), true) = (p["lag_bytes"].as_u64(), p["source_end"]["file"].is_string()) {
            break lag;
        }
        assert!(std::time::Instant::now() < deadline, "no lag reported: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(lag < 10_000_000, "lag {lag}");
    let healthz = reqwest::get(app.url("/healthz")).await.expect("healthz");
    assert_eq!(healthz.status(), 200);
    let readyz = reqwest::get(app.url("/readyz")).await.expect("readyz");
    assert_eq!(readyz.status(), 200);
    let metrics = reqwest::get(app.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "mdp_ingest_events_total",
        "mdp_ingest_batches_published_total",
        "mdp_ingest_publish_latency_seconds",
        "mdp_ingest_binlog_lag_bytes",
        "mdp_ingest_rejected_events_total{reason=\"null_tenant\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let status = app.get_json("/v1/status").await;
    assert_eq!(status["service"], "ingest");
    let states: BTreeMap<String, String> = status["degrade"]
        .as_array()
        .expect("degrade list")
        .iter()
        .map(|m| {
            (
                m["machine"].as_str().unwrap_or("").to_string(),
                m["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(states.get("rabbitmq").map(String::as_str), Some("normal"));
    assert_eq!(states.get("source").map(String::as_str), Some("normal"));

    // ---- restart: resumes from the saved position, publishes only what is new
    app.stop().await;
    source
        .exec(&["INSERT INTO orders (id, merchant_id, amount, qty, created_at) VALUES (14, 2, 3.50, 2, '2026-11-21 09:00:00')"])
        .await;
    let before_restart = broker.events().len();
    let app = RunningApp::spawn(settings(&source, &prefix, AMQP_URL, data_dir.path())).await;
    broker
        .wait_for("the change made while stopped", WAIT, |b| {
            b.events().len() > before_restart
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.drain().await;
    let new: Vec<ChangeEvent> = broker.events()[before_restart..].to_vec();
    assert_eq!(
        new.iter().map(summary).collect::<Vec<_>>(),
        vec![("orders".into(), Op::Insert, "2".into(), vec![i(14)])]
    );
    assert_eq!(
        new[0].after.as_ref().and_then(|r| r.get("amount")).cloned(),
        Some(dec("3.50"))
    );

    // ---- schema changes while running
    source
        .exec(&["ALTER TABLE orders ADD COLUMN extra INT NOT NULL DEFAULT 7"])
        .await;
    source
        .exec(&["INSERT INTO orders (id, merchant_id, amount, qty, created_at) VALUES (15, 1, 1.00, 1, '2026-11-21 10:00:00')"])
        .await;
    source
        .exec(&["UPDATE orders SET qty = 4 WHERE id = 15"])
        .await;
    source
        .exec(&["ALTER TABLE order_items DROP PRIMARY KEY, ADD PRIMARY KEY (order_id, line, sku)"])
        .await;
    source
        .exec(&["INSERT INTO order_items VALUES (15, 1, 1, 'z')"])
        .await;
    let before_alter = before_restart + 1;
    broker
        .wait_for("changes after ALTER TABLE", WAIT, |b| {
            b.events().len() >= before_alter + 3
        })
        .await;
    let s = streamed(&broker.events()[before_alter..]);
    assert_eq!(s.len(), 3, "{s:#?}");
    assert_eq!(
        s[0].after.as_ref().and_then(|r| r.get("extra")).cloned(),
        Some(Value::I(7))
    );
    assert_eq!(s[0].after.as_ref().map(|r| r.len()), Some(16));
    assert_eq!(s[1].op, Op::Update);
    assert_eq!(
        s[1].before.as_ref().and_then(|r| r.get("qty")).cloned(),
        Some(Value::I(1))
    );
    assert_eq!(
        s[1].after.as_ref().and_then(|r| r.get("qty")).cloned(),
        Some(Value::I(4))
    );
    assert_eq!(s[2].table, "order_items");
    assert_eq!(s[2].pk, vec![i(15), i(1), Value::S("z".into())]);

    // ---- the source drops the replication connection: reconnect, nothing lost or repeated
    let before_kill = broker.events().len();
    assert!(source.kill_dump_threads().await >= 1);
    source
        .exec(&["INSERT INTO orders (id, merchant_id, amount, qty, created_at) VALUES (16, 1, 2.00, 1, '2026-11-21 11:00:00')"])
        .await;
    broker
        .wait_for("the change after the reconnect", WAIT, |b| {
            b.events().len() > before_kill
        })
        .await;
    wait_saved_at_end(&app, &source).await;
    broker.drain().await;
    let new: Vec<ChangeEvent> = broker.events()[before_kill..].to_vec();
    assert_eq!(
        new.iter().map(summary).collect::<Vec<_>>(),
        vec![("orders".into(), Op::Insert, "1".into(), vec![i(16)])]
    );
    assert_routing_and_order(&broker, &source.db);

    app.stop().await;
    broker.cleanup().await;
    source.drop_database().await;
}
