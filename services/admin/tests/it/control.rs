//! `POST /v1/degrade/{service}/{machine}`: validation and publication, and
//! the whole loop through a real service instance's heartbeat actor.

use crate::helpers::{machine, next_json, spawn_app, test_heartbeat};
use mdp_degrade::{DegradeMachine, Policy, State};
use mdp_service::ServiceContext;
use mdp_types::{ControlCommand, Override};
use std::time::Duration;

#[actix_rt::test]
async fn a_degrade_command_is_published_on_the_control_exchange() {
    let app = spawn_app().await;
    let (_ch, mut control) = app.listen_control().await;
    let before = mdp_types::now_ms();

    let (status, body) = app
        .post_degrade(
            "result-writer",
            "mysql",
            r#"{"action":"force_degraded","reason":"test drill"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["published"]["service"], "result-writer");
    assert_eq!(body["published"]["action"], "force_degraded");

    let cmd: ControlCommand = next_json(&mut control, Duration::from_secs(5)).await;
    assert_eq!(cmd.service, "result-writer");
    assert_eq!(cmd.machine, "mysql");
    assert_eq!(cmd.action, Override::ForceDegraded);
    assert_eq!(cmd.reason.as_deref(), Some("test drill"));
    assert!(cmd.issued_at_ms >= before && cmd.issued_at_ms <= mdp_types::now_ms());

    let (status, _) = app
        .post_degrade("result-writer", "mysql", r#"{"action":"auto"}"#)
        .await;
    assert_eq!(status, 200);
    let cmd: ControlCommand = next_json(&mut control, Duration::from_secs(5)).await;
    assert_eq!((cmd.action, cmd.reason), (Override::Auto, None));

    app.cleanup().await;
}

#[actix_rt::test]
async fn bad_degrade_requests_get_a_400_naming_the_field() {
    let app = spawn_app().await;
    // A live query instance reporting its machines.
    app.send_heartbeat(&test_heartbeat(
        "query",
        "test-instance-query-1",
        vec![machine("redis", "normal", 1, None)],
    ))
    .await;
    app.status_until(Duration::from_secs(10), |s| {
        s["services"]["query"]["up"] == 1
    })
    .await;

    let cases = [
        ("query", "redis", r#"{"action":"off"}"#, "action: unknown action 'off' (expected force_degraded, force_normal or auto)"),
        ("query", "redis", r#"{"reason":"x"}"#, "action: missing (expected force_degraded, force_normal or auto)"),
        ("query", "mysql", r#"{"action":"auto"}"#, "machine: query has no machine 'mysql' (known: redis)"),
        ("billing", "redis", r#"{"action":"auto"}"#, "service: unknown service 'billing' (known: admin, flow-control, ingest, query, result-writer, window-compute)"),
        ("query", "redis", r#"{"action":"auto","reason":7}"#, "reason: expected a string"),
    ];
    for (service, machine, body, expected) in cases {
        let (status, json) = app.post_degrade(service, machine, body).await;
        assert_eq!(status, 400, "{service}/{machine} {body}");
        assert_eq!(json["error"], expected, "{service}/{machine} {body}");
    }
    let (status, json) = app.post_degrade("query", "redis", "not json").await;
    assert_eq!(status, 400);
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("body: not valid JSON")),
        "{json}"
    );
    app.cleanup().await;
}

#[actix_rt::test]
async fn an_override_reaches_a_running_service_and_shows_in_status() {
    let app = spawn_app().await;
    // A real instance of the query service on the same prefix.
    let ctx = ServiceContext::new("query", app.settings.clone());
    let redis = DegradeMachine::new("query", "redis", Policy::default());
    ctx.degrade.register(redis.clone());
    mdp_service::spawn_heartbeat(ctx.clone());
    app.status_until(Duration::from_secs(10), |s| {
        s["services"]["query"]["up"] == 1
    })
    .await;

    let (status, body) = app
        .post_degrade(
            "query",
            "redis",
            r#"{"action":"force_degraded","reason":"test cache failover"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let status = app
        .status_until(Duration::from_secs(10), |s| {
            s["services"]["query"]["state"] == "degraded"
        })
        .await;
    assert_eq!(redis.state(), State::Degraded);
    assert_eq!(redis.forced(), Some(State::Degraded));
    let m = &status["services"]["query"]["instances"][0]["degrade"][0];
    assert_eq!(m["forced"], "degraded");
    assert_eq!(
        m["reason"],
        "forced degraded by operator: test cache failover"
    );
    let alarm = status["alarms"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["kind"] == "machine_degraded"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(alarm["service"], "query");
    assert_eq!(alarm["instance"], ctx.instance.as_str());

    let (status, _) = app
        .post_degrade("query", "redis", r#"{"action":"force_normal"}"#)
        .await;
    assert_eq!(status, 200);
    app.status_until(Duration::from_secs(10), |s| {
        s["services"]["query"]["state"] == "normal"
    })
    .await;
    assert_eq!(redis.forced(), Some(State::Normal));

    ctx.cancel.cancel();
    app.cleanup().await;
}

#[actix_rt::test]
async fn an_instance_started_after_the_override_receives_it_too() {
    let app = spawn_app().await;
    // No query instance is running: the command reaches nobody.
    let (status, body) = app
        .post_degrade(
            "query",
            "redis",
            r#"{"action":"force_degraded","reason":"test maintenance"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let status = app.get_json("/v1/status").await;
    assert_eq!(status["switches"][0]["service"], "query");
    assert_eq!(status["switches"][0]["machine"], "redis");
    assert_eq!(status["switches"][0]["action"], "force_degraded");
    assert_eq!(status["switches"][0]["reason"], "test maintenance");

    // A query instance starting now reports redis unforced; admin sends the
    // switch again (at most every 5 s) and the instance obeys.
    let ctx = ServiceContext::new("query", app.settings.clone());
    let redis = DegradeMachine::new("query", "redis", Policy::default());
    ctx.degrade.register(redis.clone());
    mdp_service::spawn_heartbeat(ctx.clone());
    app.status_until(Duration::from_secs(15), |s| {
        s["services"]["query"]["instances"][0]["degrade"][0]["forced"] == "degraded"
    })
    .await;
    assert_eq!(redis.forced(), Some(State::Degraded));
    assert_eq!(
        redis.status().reason.as_deref(),
        Some("forced degraded by operator: test maintenance")
    );

    let (status, _) = app
        .post_degrade("query", "redis", r#"{"action":"auto"}"#)
        .await;
    assert_eq!(status, 200);
    let status = app.get_json("/v1/status").await;
    assert_eq!(status["switches"], serde_json::json!([]));

    ctx.cancel.cancel();
    app.cleanup().await;
}
