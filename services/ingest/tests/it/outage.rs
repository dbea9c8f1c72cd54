//! RabbitMQ outage: ingest stops reading, degrades, and resumes without loss.

use crate::helpers::{random_suffix, settings, Broker, Proxy, RunningApp, TestSource};
use mdp_types::{ChangeEvent, Op, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

async fn machine_state(app: &RunningApp, machine: &str) -> String {
    let status = app.get_json("/v1/status").await;
    status["degrade"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["machine"] == machine))
        .and_then(|m| m["state"].as_str())
        .unwrap_or("")
        .to_string()
}

async fn wait_state(app: &RunningApp, machine: &str, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let state = machine_state(app, machine).await;
        if state == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{machine} stayed {state}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn merchant_inserts(events: &[ChangeEvent]) -> Vec<i64> {
    let mut ids: Vec<i64> = events
        .iter()
        .filter(|e| e.table == "merchants" && e.op == Op::Insert)
        .filter_map(|e| match e.after.as_ref()?.get("id")? {
            Value::I(i) => Some(*i),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// `(file number, offset)` of a saved position as `/v1/position` shows it.
fn position_key(saved: &serde_json::Value) -> (u64, u64) {
    let file = saved["file"].as_str().expect("saved position file");
    let seq = file
        .rsplit('.')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("binlog file number");
    (seq, saved["pos"].as_u64().expect("saved position offset"))
}

#[actix_web::test]
async fn rabbitmq_outage_pauses_degrades_and_resumes() {
    let source = TestSource::create().await;
    let prefix = format!("it_ingest_{}", random_suffix());
    let mut broker = Broker::connect(&prefix).await;
    let data_dir = tempfile::tempdir().expect("temp dir");
    source
        .exec(&[
            "CREATE TABLE merchants (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL, city VARCHAR(32))",
            "INSERT INTO merchants VALUES (1, 'Alpha', 'Paris')",
        ])
        .await;
    let proxy = Proxy::start(([127, 0, 0, 1], 5672).into()).await;
    let app = RunningApp::spawn(settings(&source, &prefix, &proxy.url(), data_dir.path())).await;
    broker
        .wait_for("the snapshot", Duration::from_secs(30), |b| {
            b.events().iter().any(|e| e.op == Op::Snapshot)
        })
        .await;
    wait_state(&app, "rabbitmq", "normal", Duration::from_secs(10)).await;

    proxy.down();
    source
        .exec(&["INSERT INTO merchants VALUES (2, 'Beta', 'Rome')"])
        .await;
    wait_state(&app, "rabbitmq", "degraded", Duration::from_secs(40)).await;
    let ready = reqwest::get(app.url("/readyz")).await.expect("readyz");
    assert_eq!(
        ready.status(),
        503,
        "not ready while RabbitMQ is unreachable"
    );
    // Other databases on the source may move the position on before the
    // outage change is read (rounds without events need no broker); from
    // the unpublished change on, it stays put.
    let saved_during = app.get_json("/v1/position").await["saved"].clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        app.get_json("/v1/position").await["saved"],
        saved_during,
        "position must not advance while a change is unpublished"
    );
    broker.drain().await;
    assert_eq!(merchant_inserts(&broker.events()), Vec::<i64>::new());

    proxy.up().await;
    broker
        .wait_for(
            "the change made during the outage",
            Duration::from_secs(40),
            |b| merchant_inserts(&b.events()) == vec![2],
        )
        .await;
    let outage_change = broker
        .events()
        .into_iter()
        .find(|e| e.table == "merchants" && e.op == Op::Insert)
        .expect("the outage change")
        .position;
    assert!(
        position_key(&saved_during) < (outage_change.file_seq(), outage_change.offset),
        "the position saved during the outage ({saved_during}) must be before the unpublished change ({outage_change:?})"
    );
    source
        .exec(&["INSERT INTO merchants VALUES (3, 'Gamma', NULL)"])
        .await;
    broker
        .wait_for(
            "the change after the outage",
            Duration::from_secs(30),
            |b| merchant_inserts(&b.events()) == vec![2, 3],
        )
        .await;
    wait_state(&app, "rabbitmq", "normal", Duration::from_secs(30)).await;
    let ready = reqwest::get(app.url("/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 200);

    // Anything published twice (a round retried after a partial failure) is an identical copy.
    let mut by_id: HashMap<String, ChangeEvent> = HashMap::new();
    for e in broker.events() {
        if let Some(prev) = by_id.insert(e.id.0.clone(), e.clone()) {
            assert_eq!(prev.position, e.position);
            assert_eq!(prev.after, e.after);
        }
    }

    app.stop().await;
    proxy.down();
    broker.cleanup().await;
    source.drop_database().await;
}

#[actix_web::test]
async fn a_snapshot_never_confirmed_is_redone_on_the_next_start() {
    let source = TestSource::create().await;
    let prefix = format!("it_ingest_{}", random_suffix());
    let mut broker = Broker::connect(&prefix).await;
    let data_dir = tempfile::tempdir().expect("temp dir");
    source
        .exec(&[
            "CREATE TABLE merchants (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL, city VARCHAR(32))",
            "INSERT INTO merchants VALUES (1, 'Alpha', 'Paris'), (2, 'Beta', 'Rome')",
        ])
        .await;

    // First run: the broker is unreachable, so the snapshot is read but never confirmed.
    let proxy = Proxy::start(([127, 0, 0, 1], 5672).into()).await;
    proxy.down();
    let app = RunningApp::spawn(settings(&source, &prefix, &proxy.url(), data_dir.path())).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = app.get_json("/v1/position").await;
        if p["events_read"].as_u64().unwrap_or(0) >= 2 {
            assert!(
                p["saved"].is_null(),
                "nothing may be saved before the snapshot is confirmed: {p}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "snapshot rows were never read: {p}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;

    // Second run: the snapshot is taken again, resets first, and then saved.
    let app = RunningApp::spawn(settings(
        &source,
        &prefix,
        crate::helpers::AMQP_URL,
        data_dir.path(),
    ))
    .await;
    broker
        .wait_for("the redone snapshot", Duration::from_secs(30), |b| {
            // Partition queues are consumed independently: wait for every
            // partition's resets, not only for the rows.
            let events = b.events();
            events.iter().filter(|e| e.op == Op::Snapshot).count() >= 2
                && events.iter().filter(|e| e.op == Op::Reset).count()
                    >= (crate::helpers::PARTITIONS * 3) as usize
        })
        .await;
    let events = broker.events();
    assert_eq!(
        events.iter().filter(|e| e.op == Op::Reset).count(),
        (crate::helpers::PARTITIONS * 3) as usize
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.get_json("/v1/position").await["saved"].is_null() {
        assert!(
            Instant::now() < deadline,
            "the snapshot position was never saved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
    broker.cleanup().await;
    source.drop_database().await;
}
