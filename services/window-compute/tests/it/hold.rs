//! A window the engine fails on at every attempt is parked and its
//! partition held: later windows are kept, not applied, until the parked
//! window is replayed (then everything applies in order) or an operator
//! skips it. The failure is made the way an operator could meet it and fix
//! it: the stored state of a report group is damaged (the engine cannot
//! read it) and later repaired.

use crate::helpers::*;
use mdp_amqp::Topology;
use mdp_types::{ResultBatch, Window};
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// Damages every stored group of partition `p` (the service must be
/// stopped); returns the healthy rows to put back later.
fn damage_groups(env: &TestEnv, p: u32) -> Vec<(String, String, Vec<u8>)> {
    let db = rusqlite::Connection::open(env.state_file(p)).expect("open state");
    let healthy: Vec<(String, String, Vec<u8>)> = db
        .prepare("SELECT report, key, state FROM groups")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("read groups")
        .collect::<Result<_, _>>()
        .expect("groups");
    assert_eq!(healthy.len(), 1, "one group stored");
    let n = db
        .execute("UPDATE groups SET state = x'ff00ff00'", [])
        .expect("damage state");
    assert_eq!(n, 1);
    healthy
}

/// Puts the healthy group states back, as an operator repairing the state
/// would (the service keeps running).
fn repair_groups(env: &TestEnv, p: u32, healthy: &[(String, String, Vec<u8>)]) {
    let db = rusqlite::Connection::open(env.state_file(p)).expect("open state");
    db.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    for (report, key, state) in healthy {
        let n = db
            .execute(
                "UPDATE groups SET state = ?3 WHERE report = ?1 AND key = ?2",
                rusqlite::params![report, key, state],
            )
            .expect("repair state");
        assert_eq!(n, 1);
    }
}

/// Sends a dead-lettered window back to its partition queue with its body
/// and message id, as admin's replay does.
async fn replay(env: &TestEnv, p: u32, dead: &Received) {
    env.publisher
        .publish_bytes(
            &env.topology.windows_exchange(),
            &Topology::routing_key(p),
            dead.body.clone(),
            dead.message_id.as_deref(),
        )
        .await
        .expect("replay the dead-lettered window");
}

/// Polls `GET /v1/partitions` until the entry of `p` passes `check`.
async fn wait_partition(
    app: &TestApp,
    p: u32,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = app.get_json("/v1/partitions").await;
        if let Some(entry) = partition_entry(&body, p).filter(|e| check(e)) {
            return entry;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "partition {p} never matched: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fails if a batch of a window after `applied` arrives within `within`
/// (the stored batch of `applied` itself may be published again).
async fn no_batch_after(results: &mut Inbox, applied: u64, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) {
        let Some(msg) = results.next(left).await else {
            return;
        };
        let batch: ResultBatch = serde_json::from_slice(&msg.body).expect("result batch JSON");
        assert!(
            batch.window_id <= applied,
            "a held partition published windows {}..={}",
            batch.first_window_id,
            batch.window_id
        );
    }
}

/// Batches until one ends at `last`, skipping re-published ones at or
/// below `after`; checks that they cover `after + 1..=last` without gaps.
async fn batches_through(results: &mut Inbox, after: u64, last: u64) -> Vec<ResultBatch> {
    let mut batches: Vec<ResultBatch> = Vec::new();
    while batches.last().map(|b| b.window_id) != Some(last) {
        let (b, _) = results.next_batch(WAIT).await;
        if b.window_id <= after {
            continue;
        }
        batches.push(b);
    }
    let mut expected_first = after + 1;
    for b in &batches {
        assert_eq!(
            b.first_window_id,
            expected_first,
            "batches cover {}..={last} in order without gaps: {batches:?}",
            after + 1
        );
        expected_first = b.window_id + 1;
    }
    batches
}

/// The latest row per key over `batches`, in key order.
fn latest_rows(batches: &[ResultBatch]) -> Vec<serde_json::Value> {
    let mut latest: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for b in batches {
        for row in rows_json(b) {
            latest.insert(row["key"].to_string(), row);
        }
    }
    latest.into_values().collect()
}

/// The rows the same windows give when nothing fails: a separate service
/// instance with its own queues and state computes them.
async fn rows_without_failure(windows: &[Window]) -> Vec<serde_json::Value> {
    let env = TestEnv::new().await;
    let p = windows.first().map(|w| w.partition).unwrap_or_default();
    let last = windows.last().map(|w| w.id).unwrap_or_default();
    let app = env.spawn_app().await;
    let mut results = env.results(p).await;
    for w in windows {
        env.publish_window(w).await;
    }
    let batches = batches_through(&mut results, 0, last).await;
    let rows = latest_rows(&batches);
    app.stop().await;
    results.close().await;
    env.cleanup().await;
    rows
}

#[actix_rt::test]
async fn a_poison_window_holds_its_partition_and_its_replay_applies_it_and_the_held_windows_in_order(
) {
    let env = TestEnv::new().await;
    let p = 0;
    let m = merchant_in(p);
    let app = env.spawn_app().await;
    let mut results = env.results(p).await;
    let mut dlq = env.dead_letters().await;

    let mut c = Changes::new(p, 0);
    let o1 = order(1, m, "2026-11-20 10:00:00", 1000);
    let w1 = c.insert(o1.clone()).window(1);
    env.publish_window(&w1).await;
    let (b1, _) = results.next_batch(WAIT).await;
    assert_eq!(rows_json(&b1), vec![live(m, "2026-11-20", 1, 1000)]);
    app.stop().await;
    let healthy = damage_groups(&env, p);

    // Window 2 touches the damaged group and fails; windows 3 and 4 come
    // after it (4 touches the damaged day too).
    let o2 = order(2, m, "2026-11-23 10:00:00", 90);
    let w2 = c
        .update(o1, order(1, m, "2026-11-20 10:00:00", 1200))
        .window(2);
    let w3 = c.insert(o2.clone()).window(3);
    let w4 = c
        .update(o2, order(2, m, "2026-11-23 10:00:00", 95))
        .insert(order(3, m, "2026-11-20 12:00:00", 300))
        .window(4);
    for w in [&w2, &w3, &w4] {
        env.publish_window(w).await;
    }
    let app = env.spawn_app().await;

    let dead = dlq.next(WAIT).await.expect("poison window dead-lettered");
    assert_eq!(dead.message_id.as_deref(), Some(format!("{p}:2").as_str()));
    let entry = wait_partition(&app, p, |e| {
        e["held_at_window"] == 2 && e["held_windows"] == 2
    })
    .await;
    assert_eq!(entry["poison_windows"], 1);
    assert!(
        entry["hold_reason"]
            .as_str()
            .is_some_and(|r| r.contains("engine")),
        "{entry}"
    );
    let since = entry["held_since_ms"].as_i64().expect("held since");
    assert!(since > 0);
    let status = wait_status(&app, |s| {
        s["stats"][format!("partition.{p}.held_at_window")] == 2.0
    })
    .await;
    assert_eq!(status["stats"][format!("partition.{p}.held_windows")], 2.0);
    assert_eq!(
        status["stats"][format!("partition.{p}.held_since_ms")],
        since as f64
    );
    wait_metric(&app, "mdp_compute_held_windows{partition=\"0\"} 2").await;
    wait_metric(&app, "mdp_compute_held_at_window{partition=\"0\"} 2").await;
    wait_metric(&app, "mdp_compute_poison_windows_total 1").await;
    wait_metric(&app, "mdp_compute_windows_held_total 2").await;
    // Windows 3 and 4 are kept, not applied.
    no_batch_after(&mut results, 1, Duration::from_millis(1500)).await;

    // The hold is in the state: a new instance (no window delivered to it
    // yet) shows it too.
    app.stop().await;
    let app = env.spawn_app().await;
    let status = wait_status(&app, |s| {
        s["stats"][format!("partition.{p}.held_at_window")] == 2.0
            && s["stats"][format!("partition.{p}.held_windows")] == 2.0
    })
    .await;
    assert_eq!(
        status["stats"][format!("partition.{p}.held_since_ms")],
        since as f64
    );
    no_batch_after(&mut results, 1, Duration::from_millis(500)).await;

    // The operator repairs the state and replays the parked window: it
    // applies, then the held windows, in order.
    repair_groups(&env, p, &healthy);
    replay(&env, p, &dead).await;
    let batches = batches_through(&mut results, 1, 4).await;
    let mut all = vec![b1];
    all.extend(batches);
    let rows = latest_rows(&all);
    assert_eq!(
        rows,
        sorted(vec![
            live(m, "2026-11-20", 2, 1500),
            live(m, "2026-11-23", 1, 95)
        ])
    );
    let entry = wait_partition(&app, p, |e| {
        e["held_at_window"].is_null() && e["held_windows"] == 0
    })
    .await;
    assert_eq!(entry["last_applied_window"], 4);
    assert_eq!(entry["hold_reason"], serde_json::Value::Null);
    wait_status(&app, |s| {
        s["stats"][format!("partition.{p}.held_at_window")] == 0.0
            && s["stats"][format!("partition.{p}.held_windows")] == 0.0
    })
    .await;
    wait_metric(&app, "mdp_compute_held_windows{partition=\"0\"} 0").await;

    // Later windows take the ordinary path again; late copies are duplicates.
    env.publish_window(&w3).await;
    let w5 = c.insert(order(4, m, "2026-11-23 11:00:00", 5)).window(5);
    env.publish_window(&w5).await;
    let (b5, _) = loop {
        let (b, msg) = results.next_batch(WAIT).await;
        if b.window_id > 4 {
            break (b, msg);
        }
    };
    assert_eq!((b5.first_window_id, b5.window_id), (5, 5));
    assert_eq!(rows_json(&b5), vec![live(m, "2026-11-23", 2, 100)]);
    assert!(
        dlq.next(Duration::from_millis(300)).await.is_none(),
        "nothing else parked"
    );

    app.stop().await;
    results.close().await;
    dlq.close().await;
    env.cleanup().await;

    // The same windows without the failure give the same rows.
    assert_eq!(rows_without_failure(&[w1, w2, w3, w4]).await, rows);
}

#[actix_rt::test]
async fn an_operator_can_skip_a_parked_window_that_cannot_be_fixed() {
    let env = TestEnv::new().await;
    let p = 1;
    let m = merchant_in(p);
    let app = env.spawn_app().await;
    let mut results = env.results(p).await;
    let mut dlq = env.dead_letters().await;

    let mut c = Changes::new(p, 0);
    let o1 = order(1, m, "2026-11-20 10:00:00", 1000);
    env.publish_window(&c.insert(o1.clone()).window(1)).await;
    results.next_batch(WAIT).await;
    app.stop().await;
    damage_groups(&env, p);
    let w2 = c
        .update(o1, order(1, m, "2026-11-20 10:00:00", 1200))
        .window(2);
    let w3 = c.insert(order(2, m, "2026-11-23 10:00:00", 90)).window(3);
    env.publish_window(&w2).await;
    env.publish_window(&w3).await;
    let app = env.spawn_app().await;
    let dead = dlq.next(WAIT).await.expect("poison window dead-lettered");
    wait_partition(&app, p, |e| {
        e["held_at_window"] == 2 && e["held_windows"] == 1
    })
    .await;

    let post = |query: &str| {
        let url = format!("{}/v1/partitions/{query}", app.address);
        let http = app.http.clone();
        async move {
            let resp = http.post(url).send().await.expect("request");
            let status = resp.status().as_u16();
            (
                status,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let (status, body) = post(&format!("{p}/release-hold?skip_window=3")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["error"],
        format!("partition {p} is held at window 2, not at window 3")
    );
    let (status, body) = post(&format!("{p}/release-hold")).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = post("7/release-hold?skip_window=2").await;
    assert_eq!(status, 404);

    let (status, body) = post(&format!("{p}/release-hold?skip_window=2")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({
            "partition": p,
            "skipped_window": 2,
            "held_at_window": null,
            "held_windows": 1,
        })
    );
    // Window 3 applies without window 2's change.
    let (b3, _) = loop {
        let (b, msg) = results.next_batch(WAIT).await;
        if b.window_id > 1 {
            break (b, msg);
        }
    };
    assert_eq!((b3.first_window_id, b3.window_id), (3, 3));
    assert_eq!(rows_json(&b3), vec![live(m, "2026-11-23", 1, 90)]);
    wait_metric(&app, "mdp_compute_parked_windows_skipped_total 1").await;
    wait_partition(&app, p, |e| {
        e["held_at_window"].is_null() && e["held_windows"] == 0
    })
    .await;
    let (status, body) = post(&format!("{p}/release-hold?skip_window=2")).await;
    assert_eq!(status, 409, "{body}");

    // A late replay of the skipped window changes nothing.
    replay(&env, p, &dead).await;
    let w4 = c.insert(order(3, m, "2026-11-23 11:00:00", 10)).window(4);
    env.publish_window(&w4).await;
    let (b4, _) = results.next_batch(WAIT).await;
    assert_eq!((b4.first_window_id, b4.window_id), (4, 4));
    assert_eq!(rows_json(&b4), vec![live(m, "2026-11-23", 2, 100)]);

    app.stop().await;
    results.close().await;
    dlq.close().await;
    env.cleanup().await;
}
