use crate::helpers::*;
use mdp_types::ResultBatch;
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[actix_rt::test]
async fn windows_become_exact_results_across_duplicates_bad_input_and_restarts() {
    let env = TestEnv::new().await;
    let p = 1;
    let m = merchant_in(p);
    let app = env.spawn_app().await;
    let mut results = env.results(p).await;
    let mut dlq = env.dead_letters().await;

    // Reports: the valid one is listed with its columns, the broken one as rejected.
    let reports = app.get_json("/v1/reports").await;
    assert_eq!(
        reports["reports"].as_array().map(Vec::len),
        Some(1),
        "{reports}"
    );
    assert_eq!(reports["reports"][0]["name"], REPORT);
    let columns: Vec<&str> = reports["reports"][0]["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["merchant_id", "day", "orders", "gmv"]);
    assert_eq!(reports["reports"][0]["tenant_column"], "merchant_id");
    assert_eq!(reports["reports"][0]["date_column"], "day");
    let rejected = reports["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), 1, "{reports}");
    assert!(rejected[0]["file"]
        .as_str()
        .unwrap_or_default()
        .ends_with("broken_report.sql"));
    assert!(!rejected[0]["error"].as_str().unwrap_or_default().is_empty());
    wait_metric(&app, "mdp_compute_reports_rejected 1").await;

    // Window 1: three inserts over two days.
    let mut c = Changes::new(p, 0);
    let o1 = order(1, m, "2026-11-20 10:00:00", 1000);
    let o2 = order(2, m, "2026-11-20 11:00:00", 2500);
    let o3 = order(3, m, "2026-11-21 09:00:00", 700);
    let w1 = c
        .insert(o1.clone())
        .insert(o2.clone())
        .insert(o3.clone())
        .window(1);
    env.publish_window_traced(&w1, TRACEPARENT).await;
    let (b1, msg1) = results.next_batch(WAIT).await;
    assert_eq!((b1.partition, b1.first_window_id, b1.window_id), (p, 1, 1));
    assert_eq!(
        b1.max_commit_ts_ms,
        w1.changes
            .iter()
            .map(|e| e.commit_ts_ms)
            .max()
            .expect("changes")
    );
    assert_eq!(
        b1.min_captured_at_ms,
        w1.changes
            .iter()
            .map(|e| e.captured_at_ms)
            .min()
            .expect("changes")
    );
    assert!(b1.computed_at_ms >= w1.sealed_at_ms);
    assert_eq!(
        rows_json(&b1),
        sorted(vec![
            live(m, "2026-11-20", 2, 3500),
            live(m, "2026-11-21", 1, 700)
        ])
    );
    assert_eq!(msg1.message_id.as_deref(), Some(format!("{p}:1").as_str()));
    // The result continues the window's trace (same trace id, a new span).
    let tp = msg1.traceparent.expect("result carries a traceparent");
    assert!(tp.contains(TRACE_ID), "{tp}");
    assert_ne!(tp, TRACEPARENT);

    // Window 2: an update, a delete emptying a day, and a row moving to another day.
    let o2b = order(2, m, "2026-11-20 11:00:00", 3000);
    let o1b = order(1, m, "2026-11-19 10:00:00", 1000);
    let w2 = c
        .update(o2, o2b)
        .delete(o3)
        .update(o1, o1b.clone())
        .window(2);
    env.publish_window(&w2).await;
    let (b2, msg2) = results.next_batch(WAIT).await;
    assert_eq!((b2.first_window_id, b2.window_id), (2, 2));
    assert_eq!(
        rows_json(&b2),
        sorted(vec![
            live(m, "2026-11-19", 1, 1000),
            live(m, "2026-11-20", 1, 3000),
            gone(m, "2026-11-21"),
        ])
    );

    // The same window again: not computed, the stored batch is re-published byte for byte.
    env.publish_window(&w2).await;
    let again = results.next(WAIT).await.expect("re-published batch");
    assert_eq!(again.body, msg2.body);
    assert_eq!(again.message_id, msg2.message_id);
    let parts = app.get_json("/v1/partitions").await;
    let entry = partition_entry(&parts, p).expect("partition owned");
    assert_eq!(entry["last_applied_window"], 2);
    assert_eq!(entry["windows_applied"], 2);
    assert_eq!(entry["groups"], 2);
    assert!(entry["last_computed_at_ms"].as_i64().is_some());

    // Unreadable messages go to the dead-letter queue.
    env.publish_raw(p, b"{not json".to_vec()).await;
    let dead = dlq
        .next(WAIT)
        .await
        .expect("malformed message dead-lettered");
    assert_eq!(dead.body, b"{not json");
    env.publish_raw(p, vec![b' '; 150_000]).await;
    let dead = dlq
        .next(WAIT)
        .await
        .expect("oversize message dead-lettered");
    assert_eq!(dead.body.len(), 150_000);
    wait_metric(
        &app,
        "mdp_compute_rejected_messages_total{reason=\"malformed\"}",
    )
    .await;
    wait_metric(
        &app,
        "mdp_compute_rejected_messages_total{reason=\"too_large\"}",
    )
    .await;

    // Restart on the same state: an old window is skipped silently, the next one continues.
    app.stop().await;
    let app = env.spawn_app().await;
    env.publish_window(&w1).await;
    let o4 = order(4, m, "2026-11-20 12:00:00", 500);
    let w3 = c.insert(o4).window(3);
    env.publish_window(&w3).await;
    let (b3, _) = results.next_batch(WAIT).await;
    assert_eq!(
        (b3.first_window_id, b3.window_id),
        (3, 3),
        "window 1 must not produce a batch"
    );
    assert_eq!(rows_json(&b3), vec![live(m, "2026-11-20", 2, 3500)]);

    // Catch-up: windows pile up while the service is down, then are computed
    // (merged when they are all waiting) into contiguous batches.
    app.stop().await;
    let o5 = order(5, m, "2026-11-22 08:00:00", 100);
    let o5b = order(5, m, "2026-11-22 08:00:00", 150);
    let o6 = order(6, m, "2026-11-22 09:00:00", 50);
    let w4 = c.insert(o5.clone()).window(4);
    let w5 = c.update(o5, o5b).window(5);
    let w6 = c.insert(o6).delete(o1b).window(6);
    for w in [&w4, &w5, &w6] {
        env.publish_window(w).await;
    }
    let app = env.spawn_app().await;
    let mut batches: Vec<ResultBatch> = Vec::new();
    while batches.last().map(|b| b.window_id) != Some(6) {
        let (b, _) = results.next_batch(WAIT).await;
        batches.push(b);
    }
    let mut expected_first = 4;
    let mut latest: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for b in &batches {
        assert_eq!(
            b.first_window_id, expected_first,
            "batches cover 4..=6 without gaps: {batches:?}"
        );
        assert!(b.window_id >= b.first_window_id);
        expected_first = b.window_id + 1;
        for row in rows_json(b) {
            latest.insert(row["key"].to_string(), row);
        }
    }
    assert_eq!(
        sorted(latest.into_values().collect()),
        sorted(vec![live(m, "2026-11-22", 2, 200), gone(m, "2026-11-19")])
    );
    if batches.len() == 1 {
        wait_metric(&app, "mdp_compute_windows_merged_total").await;
    }
    let parts = app.get_json("/v1/partitions").await;
    let entry = partition_entry(&parts, p).expect("partition owned");
    assert_eq!(entry["last_applied_window"], 6);
    assert_eq!(entry["windows_applied"], 3);

    app.stop().await;
    results.close().await;
    dlq.close().await;
    env.cleanup().await;
}

#[actix_rt::test]
async fn consumption_resumes_after_the_broker_cancels_the_consumers() {
    let env = TestEnv::new().await;
    let p = 1;
    let m = merchant_in(p);
    let app = env.spawn_app().await;
    let mut results = env.results(p).await;

    let mut c = Changes::new(p, 0);
    let o1 = order(1, m, "2026-11-20 10:00:00", 1000);
    env.publish_window(&c.insert(o1.clone()).window(1)).await;
    let (b1, _) = results.next_batch(WAIT).await;
    assert_eq!(rows_json(&b1), vec![live(m, "2026-11-20", 1, 1000)]);

    // Deleting the windows queue cancels the service's consumer: it must
    // rebuild its session and declare the topology again.
    let ch = env.conn.create_channel().await.expect("channel");
    ch.queue_delete(
        env.topology.windows_queue(p).as_str().into(),
        lapin::options::QueueDeleteOptions::default(),
    )
    .await
    .expect("delete windows queue");
    let _ = ch.close(200, "deleted".into()).await;

    let before = app.get_json("/v1/status").await;
    assert_eq!(
        before["stats"]["mdp_compute_amqp_sessions_total"], 1.0,
        "{before}"
    );
    // The heartbeat reports the partition's last applied window (admin's lag).
    assert_eq!(
        before["stats"][format!("partition.{p}.last_applied_window")],
        1.0,
        "{before}"
    );
    let status = wait_status(&app, |s| {
        s["stats"]["mdp_compute_amqp_sessions_total"] == 2.0
    })
    .await;
    let machines: Vec<&str> = status["degrade"]
        .as_array()
        .expect("degrade machines")
        .iter()
        .filter_map(|m| m["machine"].as_str())
        .collect();
    assert_eq!(machines, ["rabbitmq", "state"]);

    // Published once the queue exists again (mandatory publishes fail before).
    let w2 = c
        .update(o1, order(1, m, "2026-11-20 10:00:00", 1300))
        .window(2);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !env.try_publish_window(&w2).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "windows queue not declared again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (b2, _) = results.next_batch(WAIT).await;
    assert_eq!((b2.first_window_id, b2.window_id), (2, 2));
    assert_eq!(rows_json(&b2), vec![live(m, "2026-11-20", 1, 1300)]);

    app.stop().await;
    results.close().await;
    env.cleanup().await;
}

#[actix_rt::test]
async fn a_second_replica_takes_over_a_partition_and_continues_from_its_state() {
    let env = TestEnv::new().await;
    let p = 1;
    let m = merchant_in(p);
    let first = env.spawn_app().await;
    let second = env.spawn_app().await;
    let mut results = env.results(p).await;

    let mut c = Changes::new(p, 0);
    let o1 = order(1, m, "2026-11-20 10:00:00", 1000);
    env.publish_window(&c.insert(o1.clone()).window(1)).await;
    let (b1, _) = results.next_batch(WAIT).await;
    assert_eq!(rows_json(&b1), vec![live(m, "2026-11-20", 1, 1000)]);

    // Exactly one replica owns the partition.
    let owned_by_first = partition_entry(&first.get_json("/v1/partitions").await, p).is_some();
    let owned_by_second = partition_entry(&second.get_json("/v1/partitions").await, p).is_some();
    assert!(
        owned_by_first ^ owned_by_second,
        "first {owned_by_first}, second {owned_by_second}"
    );
    let (owner, standby) = if owned_by_first {
        (first, second)
    } else {
        (second, first)
    };

    owner.stop().await;
    let o1b = order(1, m, "2026-11-20 10:00:00", 1700);
    env.publish_window(
        &c.update(o1, o1b)
            .insert(order(2, m, "2026-11-20 11:00:00", 5))
            .window(2),
    )
    .await;
    let (b2, _) = results.next_batch(WAIT).await;
    assert_eq!((b2.first_window_id, b2.window_id), (2, 2));
    assert_eq!(rows_json(&b2), vec![live(m, "2026-11-20", 2, 1705)]);
    let entry =
        partition_entry(&standby.get_json("/v1/partitions").await, p).expect("standby took over");
    assert_eq!(entry["last_applied_window"], 2);

    standby.stop().await;
    results.close().await;
    env.cleanup().await;
}

#[actix_rt::test]
async fn a_process_killed_with_sigkill_restarts_without_losing_or_double_counting() {
    let env = TestEnv::new().await;
    let p = 0;
    let m = merchant_in(p);
    let mut results = env.results(p).await;
    let mut child = env.spawn_process();

    const WINDOWS: u64 = 40;
    let mut c = Changes::new(p, 0);
    let mut next_order = 0;
    for id in 1..=WINDOWS {
        for _ in 0..2 {
            next_order += 1;
            c.insert(order(next_order, m, "2026-11-20 10:00:00", next_order));
        }
        env.publish_window(&c.window(id)).await;
    }

    // Kill the process as soon as it has produced something.
    let (first, _) = results.next_batch(WAIT).await;
    assert_eq!(first.first_window_id, 1);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");

    let mut child = env.spawn_process();
    let mut covered_to = first.window_id;
    let mut latest = first;
    while latest.window_id < WINDOWS {
        let (b, _) = results.next_batch(WAIT).await;
        // A re-published batch may repeat windows, never skip one.
        assert!(b.first_window_id <= covered_to + 1, "gap before {b:?}");
        covered_to = covered_to.max(b.window_id);
        if b.window_id >= latest.window_id {
            latest = b;
        }
    }
    let total: i64 = (1..=next_order).sum();
    assert_eq!(
        rows_json(&latest),
        vec![live(m, "2026-11-20", next_order, total)]
    );

    child.kill().expect("stop");
    child.wait().expect("reap");
    results.close().await;
    env.cleanup().await;
}
