//! Change batches in, windows out: exactly once, in order, across replays, rejects and restarts.

use crate::helpers::*;
use futures::FutureExt;
use mdp_types::ChangeEvent;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn offsets(changes: &[ChangeEvent]) -> Vec<u64> {
    changes.iter().map(|e| e.position.offset).collect()
}

#[tokio::test]
async fn windows_carry_every_change_once_in_order_and_survive_restarts() {
    init_telemetry();
    let prefix = format!("fctest{}", rand::random::<u32>());
    let broker = Broker::connect(&prefix).await;
    // Queues and exchanges are deleted whether the scenario passes or not.
    let outcome = AssertUnwindSafe(scenario(&prefix, &broker))
        .catch_unwind()
        .await;
    broker.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(prefix: &str, broker: &Broker) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_ch0, mut windows0) = broker.windows_consumer(0).await;
    let (_ch1, mut windows1) = broker.windows_consumer(1).await;

    // Phase 1: windows of 200 ms or 5 changes; a small rate limit.
    let mut limited = settings(prefix, dir.path(), 200, 5);
    limited.flow_control.rate_limit_per_second = 100;
    limited.flow_control.rate_limit_burst = 5;
    let app = RunningApp::start(limited);
    broker
        .publish_batch(&batch(0, (1..=7).map(|i| i * 10)))
        .await;
    // Ingest replays after a crash: 60 and 70 again, then 80, 90 new.
    broker.publish_batch(&batch(0, [60, 70, 80, 90])).await;
    broker
        .publish_raw(0, b"{\"partition\":0,\"events\":[{\"broken\":")
        .await;
    // The first batch of partition 1 carries a trace: its window continues it.
    broker
        .publish_batch_traced(&batch(1, [5]), TRACEPARENT)
        .await;
    // A batch of partition 1 routed to partition 0's queue.
    let wrong = batch(1, [7]);
    broker
        .publish_raw(0, &serde_json::to_vec(&wrong).expect("encode"))
        .await;
    broker.publish_batch(&batch(1, [10, 20, 30])).await;
    broker.publish_batch(&batch(0, [100, 110])).await;

    let expected0: Vec<u64> = (1..=11).map(|i| i * 10).collect();
    let expected1: Vec<u64> = vec![5, 10, 20, 30];
    let mut got0 = Vec::new();
    let mut got1 = Vec::new();
    collect_windows(&mut windows0, &mut got0, WAIT, |r| {
        changes_of(r).len() >= expected0.len()
    })
    .await;
    collect_windows(&mut windows1, &mut got1, WAIT, |r| {
        changes_of(r).len() >= expected1.len()
    })
    .await;
    assert_eq!(
        offsets(&changes_of(&got0)),
        expected0,
        "partition 0 windows: {got0:#?}"
    );
    assert_eq!(
        offsets(&changes_of(&got1)),
        expected1,
        "partition 1 windows: {got1:#?}"
    );
    assert_window_stream(0, &got0, 1, 1);
    assert_window_stream(1, &got1, 1, 1);
    // The first 7-change batch fills window 1 (5 changes) by size.
    assert_eq!(offsets(&got0[0].window.changes), vec![10, 20, 30, 40, 50]);
    // The changes are the ones published, not just the same positions.
    assert_eq!(got1[0].window.changes[0], event(1, 5));
    let window_tp = got1[0]
        .traceparent
        .as_deref()
        .expect("windows carry a traceparent");
    assert_eq!(
        window_tp.split('-').nth(1),
        Some(TRACE_ID),
        "window continues the batch's trace"
    );
    assert_ne!(
        window_tp, TRACEPARENT,
        "the window is published from a span of its own"
    );

    let dead = broker.drain_dead_letters(2, WAIT).await;
    assert_eq!(
        dead.len(),
        2,
        "malformed and misrouted batches are dead-lettered"
    );
    assert!(dead
        .iter()
        .any(|b| b.starts_with(b"{\"partition\":0,\"events\":[{\"broken\"")));
    assert!(dead
        .iter()
        .any(|b| serde_json::from_slice::<mdp_types::ChangeBatch>(b).is_ok_and(|x| x == wrong)));

    let last0 = got0
        .last()
        .map(|r| r.window.id)
        .expect("partition 0 windows");
    let last1 = got1
        .last()
        .map(|r| r.window.id)
        .expect("partition 1 windows");
    let parts = poll_json(&app.url("/v1/partitions"), WAIT, |v| {
        v["partitions"][0]["last_published_window_id"] == last0
            && v["partitions"][1]["last_published_window_id"] == last1
    })
    .await;
    let p0 = &parts["partitions"][0];
    assert_eq!(p0["next_seq"], 12);
    assert_eq!(p0["last_position"]["offset"], 110);
    assert_eq!(p0["open_window_changes"], 0);
    assert_eq!(p0["unpublished_windows"], 0);
    assert_eq!(p0["owned"], true);
    assert_eq!(parts["partitions"][1]["next_seq"], 5);

    let index = get_json(&app.url("/v1/windows?partition=0&limit=2")).await;
    let listed = index["windows"].as_array().expect("windows array");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], last0);
    assert_eq!(listed[0]["state"], "published");
    assert_eq!(listed[0]["last_seq"], 11);
    assert_eq!(listed[1]["id"], last0 - 1);
    let bad = reqwest::get(app.url("/v1/windows?partition=9"))
        .await
        .expect("GET");
    assert_eq!(bad.status(), 400);
    let bad_body: serde_json::Value = bad.json().await.expect("json");
    assert!(bad_body["error"]
        .as_str()
        .is_some_and(|e| e.contains("partition")));

    let metrics = reqwest::get(app.url("/metrics"))
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("mdp_flow_duplicate_events_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mdp_flow_rejected_messages_total{reason=\"malformed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mdp_flow_rejected_messages_total{reason=\"wrong_partition\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mdp_flow_events_accepted_total 15"),
        "{metrics}"
    );
    // 7 changes emptied the 5-token bucket: the next batch had to wait.
    let throttled = metric_value(&metrics, "mdp_flow_throttled_total");
    assert!(throttled >= 1.0, "{metrics}");
    app.stop();

    // Phase 2: long windows, so the new changes stay in the open window when
    // the instance stops. Replays of phase-1 changes are skipped.
    let app = RunningApp::start(settings(prefix, dir.path(), 60_000, 1000));
    broker.publish_batch(&batch(0, [100, 110, 120, 130])).await;
    broker.publish_batch(&batch(0, [140])).await;
    let parts = poll_json(&app.url("/v1/partitions"), WAIT, |v| {
        v["partitions"][0]["next_seq"] == 15
    })
    .await;
    assert_eq!(parts["partitions"][0]["open_window_changes"], 3);
    assert_eq!(parts["partitions"][0]["open_window_id"], last0 + 1);
    app.stop();

    // Nothing new was published while the window was open; at most the last
    // phase-1 window again (its published mark may not have reached disk).
    let mut again0 = Vec::new();
    let mut again1 = Vec::new();
    collect_windows(
        &mut windows0,
        &mut again0,
        Duration::from_millis(800),
        |_| false,
    )
    .await;
    collect_windows(
        &mut windows1,
        &mut again1,
        Duration::from_millis(300),
        |_| false,
    )
    .await;
    for r in again0.iter().chain(again1.iter()) {
        let original = if r.window.partition == 0 {
            &got0
        } else {
            &got1
        };
        let last = original.last().expect("a window");
        assert_eq!(
            r.window, last.window,
            "only the last window may be re-sent, unchanged"
        );
    }

    // Phase 3: the open window is recovered from the log and sealed with the next id.
    let app = RunningApp::start(settings(prefix, dir.path(), 200, 5));
    let mut got0b = Vec::new();
    collect_windows(&mut windows0, &mut got0b, WAIT, |r| {
        r.iter().any(|w| w.window.id == last0 + 1)
    })
    .await;
    let recovered: Vec<Received> = got0b.into_iter().filter(|r| r.window.id > last0).collect();
    assert_eq!(recovered.len(), 1, "{recovered:#?}");
    assert_window_stream(0, &recovered, last0 + 1, 12);
    assert_eq!(offsets(&recovered[0].window.changes), vec![120, 130, 140]);

    // New changes continue the stream.
    broker.publish_batch(&batch(0, [140, 150])).await;
    let mut got0c = Vec::new();
    collect_windows(&mut windows0, &mut got0c, WAIT, |r| {
        r.iter().any(|w| w.window.id == last0 + 2)
    })
    .await;
    let next: Vec<Received> = got0c
        .into_iter()
        .filter(|r| r.window.id > last0 + 1)
        .collect();
    assert_window_stream(0, &next, last0 + 2, 15);
    assert_eq!(offsets(&changes_of(&next)), vec![150]);

    // The broker drops the instance's connections: it reconnects and resumes.
    let status = get_json(&app.url("/v1/status")).await;
    // The heartbeat reports the last sealed window per partition (admin's lag).
    assert_eq!(
        status["stats"]["partition.0.last_sealed_window"],
        (last0 + 2) as f64,
        "{status}"
    );
    let instance = status["instance"]
        .as_str()
        .expect("instance id")
        .to_string();
    match close_connections_named(&format!("{instance} ")) {
        Some(closed) => {
            assert!(
                closed >= 2,
                "intake and window connections of {instance} were open"
            );
            broker.publish_batch(&batch(0, [150, 160])).await;
            let mut got0d = Vec::new();
            collect_windows(&mut windows0, &mut got0d, WAIT, |r| {
                r.iter().any(|w| w.window.id == last0 + 3)
            })
            .await;
            let resumed: Vec<Received> = got0d
                .into_iter()
                .filter(|r| r.window.id > last0 + 2)
                .collect();
            assert_window_stream(0, &resumed, last0 + 3, 16);
            assert_eq!(offsets(&changes_of(&resumed)), vec![160]);
            let parts = poll_json(&app.url("/v1/partitions"), WAIT, |v| {
                v["partitions"][0]["owned"] == true
            })
            .await;
            assert_eq!(parts["partitions"][0]["next_seq"], 17);
        }
        None => eprintln!("rabbitmqctl not available: connection-loss phase skipped"),
    }
    app.stop();
}
