//! `/v1/status` and `/v1/alarms` from heartbeats of test instances.

use crate::helpers::{machine, spawn_app, spawn_app_with, test_heartbeat, TIMEOUT_MS};
use std::time::Duration;

#[actix_rt::test]
async fn status_aggregates_heartbeats_and_raises_alarms() {
    let app = spawn_app().await;
    let since = mdp_types::now_ms() - 5_000;
    app.send_heartbeat(&test_heartbeat(
        "ingest",
        "test-instance-ingest-1",
        vec![machine("rabbitmq", "normal", since, None)],
    ))
    .await;
    app.send_heartbeat(&test_heartbeat(
        "query",
        "test-instance-query-1",
        vec![
            machine("mysql", "normal", since, None),
            machine(
                "redis",
                "degraded",
                since,
                Some("3 consecutive failures, last: connection refused"),
            ),
        ],
    ))
    .await;
    app.send_heartbeat(&test_heartbeat(
        "query",
        "test-instance-query-2",
        vec![machine("redis", "recovering", since, None)],
    ))
    .await;

    let status = app
        .status_until(Duration::from_secs(10), |s| {
            s["services"]["query"]["up"] == 2
                && s["services"]["admin"]["instances"][0]["health"]["checks"]["rabbitmq"] == "ok"
                && s["services"]["ingest"]["up"] == 1
        })
        .await;
    let services = &status["services"];
    assert_eq!(services["ingest"]["state"], "normal");
    assert_eq!(
        services["query"]["state"], "degraded",
        "worst machine of its instances"
    );
    assert_eq!(services["admin"]["state"], "normal");
    for down in ["flow-control", "window-compute", "result-writer"] {
        assert_eq!(services[down]["state"], "down", "{down}");
        assert_eq!(services[down]["up"], 0, "{down}");
    }
    let q1 = services["query"]["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["instance"] == "test-instance-query-1"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(q1["up"], true);
    assert_eq!(q1["state"], "degraded");
    assert_eq!(q1["partitions"], serde_json::json!([0, 3]));
    assert_eq!(q1["stats"]["test_events_total"], 42.0);
    let admin_instance = &services["admin"]["instances"][0];
    assert!(
        admin_instance["instance"]
            .as_str()
            .is_some_and(|i| i.starts_with("admin@")),
        "{admin_instance}"
    );
    assert_eq!(admin_instance["health"]["checks"]["rabbitmq"], "ok");

    let alarms = status["alarms"].as_array().cloned().unwrap_or_default();
    let summary: Vec<(String, String, String)> = alarms
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap_or("").to_string(),
                a["service"].as_str().unwrap_or("").to_string(),
                a["machine"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("service_down", "flow-control", ""),
        ("service_down", "result-writer", ""),
        ("service_down", "window-compute", ""),
        ("machine_degraded", "query", "redis"),
        ("machine_degraded", "query", "redis"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(summary, expected);
    let redis = alarms
        .iter()
        .find(|a| a["instance"] == "test-instance-query-1")
        .cloned()
        .unwrap_or_default();
    assert_eq!(redis["since_ms"], since);
    assert_eq!(redis["severity"], "warning");
    assert_eq!(
        redis["message"],
        "query redis is degraded on test-instance-query-1: 3 consecutive failures, last: connection refused"
    );

    let alarms_only = app.get_json("/v1/alarms").await;
    assert_eq!(alarms_only["alarms"].as_array().map(Vec::len), Some(5));

    // No more heartbeats from the test instances: after the timeout ingest
    // and query are down too, while admin (heartbeating itself) stays up.
    let status = app
        .status_until(Duration::from_millis(TIMEOUT_MS + 5_000), |s| {
            s["services"]["ingest"]["state"] == "down" && s["services"]["query"]["state"] == "down"
        })
        .await;
    assert_eq!(status["services"]["admin"]["state"], "normal");
    assert_eq!(status["services"]["query"]["instances"][0]["up"], false);
    assert_eq!(status["services"]["query"]["instances"][0]["state"], "down");
    let ingest_down = status["alarms"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|x| x["kind"] == "service_down" && x["service"] == "ingest")
        })
        .cloned()
        .unwrap_or_default();
    let last_seen = status["services"]["ingest"]["instances"][0]["last_seen_ms"]
        .as_i64()
        .unwrap_or(0);
    assert_eq!(
        ingest_down["since_ms"].as_i64(),
        Some(last_seen + TIMEOUT_MS as i64)
    );
    assert_eq!(
        ingest_down["message"],
        "ingest is down: no heartbeat from any of its 1 instances for over 1500 ms"
    );
    assert!(
        !status["alarms"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["kind"] == "machine_degraded")),
        "a dead instance's machines raise no alarm"
    );

    app.cleanup().await;
}

#[actix_rt::test]
async fn common_routes_are_served() {
    let app = spawn_app().await;
    assert_eq!(
        app.get_json("/healthz").await,
        serde_json::json!({ "status": "ok" })
    );
    let ready = app.get_json("/readyz").await;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["checks"]["rabbitmq"], "ok");
    let me = app.get_json("/v1/instance").await;
    assert_eq!(me["service"], "admin");
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap_or_else(|e| panic!("metrics: {e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains("mdp_admin_heartbeats_received_total"),
        "{metrics}"
    );
    app.cleanup().await;
}

#[actix_rt::test]
async fn partition_lag_from_heartbeats_shows_in_status_metrics_and_alarms() {
    let app = spawn_app_with(&[
        ("MDP__PARTITIONING__PARTITIONS", "2"),
        ("MDP__ADMIN__LAG_ALARM_WINDOWS", "10"),
        ("MDP__ADMIN__LAG_ALARM_AFTER_MS", "0"),
    ])
    .await;
    let mut fc = test_heartbeat("flow-control", "test-fc", vec![]);
    fc.stats = [
        ("partition.0.last_sealed_window".to_string(), 120.0),
        ("partition.1.last_sealed_window".to_string(), 9.0),
    ]
    .into_iter()
    .collect();
    let mut wc = test_heartbeat("window-compute", "test-wc", vec![]);
    wc.partitions = vec![0, 1];
    wc.stats = [
        ("partition.0.last_applied_window".to_string(), 75.0),
        ("partition.1.last_applied_window".to_string(), 9.0),
    ]
    .into_iter()
    .collect();

    // Heartbeats keep coming while admin is asked (the test timeout is short).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        for hb in [&mut fc, &mut wc] {
            hb.sent_at_ms = mdp_types::now_ms();
            app.send_heartbeat(hb).await;
        }
        let status = app.get_json("/v1/status").await;
        if status["partitions"][0]["lag_windows"] == 45
            && status["partitions"][1]["lag_windows"] == 0
        {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "partition lag never shown: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let p0 = &status["partitions"][0];
    assert_eq!(p0["partition"], 0);
    assert_eq!(p0["last_sealed_window"], 120);
    assert_eq!(p0["last_applied_window"], 75);
    assert_eq!(p0["owner"], "test-wc");
    assert!(p0["lagging_since_ms"].is_i64(), "{p0}");
    assert_eq!(
        status["partitions"][1]["lagging_since_ms"],
        serde_json::Value::Null
    );
    let lagging: Vec<&serde_json::Value> = status["alarms"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["kind"] == "partition_lagging")
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(lagging.len(), 1, "{status:#}");
    assert_eq!(lagging[0]["partition"], 0);
    assert_eq!(lagging[0]["service"], "window-compute");
    assert_eq!(lagging[0]["instance"], "test-wc");

    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap_or_else(|e| panic!("metrics: {e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains("mdp_admin_partition_lag_windows{partition=\"0\"} 45"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mdp_admin_partition_lag_windows{partition=\"1\"} 0"),
        "{metrics}"
    );
    app.cleanup().await;
}
