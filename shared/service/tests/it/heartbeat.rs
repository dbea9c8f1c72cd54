//! The heartbeat actor against the local RabbitMQ.

use crate::helpers::{eventually, next_matching, settings, Bus};
use mdp_degrade::{DegradeMachine, Policy, State};
use mdp_service::{spawn_heartbeat, ServiceContext};
use mdp_types::{ControlCommand, Heartbeat, Override};
use std::time::Duration;

#[actix_rt::test]
async fn publishes_heartbeats_every_second() {
    let settings = settings();
    let bus = Bus::connect(&settings).await;
    let (_ch, mut heartbeats) = bus.listen(&bus.topology.heartbeats_exchange()).await;

    let ctx = ServiceContext::new("window-compute", settings);
    ctx.set_http_addr(([127, 0, 0, 1], 18103).into());
    ctx.partitions.insert(2);
    ctx.partitions.insert(7);
    ctx.degrade.register(DegradeMachine::new(
        "window-compute",
        "kv",
        Policy::default(),
    ));
    spawn_heartbeat(ctx.clone());

    let instance = ctx.instance.clone();
    let first: Heartbeat =
        next_matching(&mut heartbeats, Duration::from_secs(10), |h: &Heartbeat| {
            h.instance == instance
        })
        .await;
    assert_eq!(first.service, "window-compute");
    assert_eq!(first.http_addr, "127.0.0.1:18103");
    assert_eq!(first.partitions, vec![2, 7]);
    assert_eq!(first.started_at_ms, ctx.started_at_ms);
    assert_eq!(first.degrade.len(), 1);
    assert_eq!(first.degrade[0].machine, "kv");
    assert_eq!(first.degrade[0].state, "normal");

    // The next one reflects changes made in between, about a second later.
    ctx.partitions.remove(7);
    let second: Heartbeat =
        next_matching(&mut heartbeats, Duration::from_secs(5), |h: &Heartbeat| {
            h.instance == instance && h.sent_at_ms > first.sent_at_ms
        })
        .await;
    let gap = second.sent_at_ms - first.sent_at_ms;
    assert!((500..=3000).contains(&gap), "heartbeats {gap} ms apart");

    ctx.cancel.cancel();
    bus.cleanup().await;
}

#[actix_rt::test]
async fn applies_control_commands_addressed_to_its_service() {
    let settings = settings();
    let bus = Bus::connect(&settings).await;
    let (_ch, mut heartbeats) = bus.listen(&bus.topology.heartbeats_exchange()).await;

    let ctx = ServiceContext::new("result-writer", settings);
    let mysql = DegradeMachine::new("result-writer", "mysql", Policy::default());
    let redis = DegradeMachine::new("result-writer", "redis", Policy::default());
    ctx.degrade.register(mysql.clone());
    ctx.degrade.register(redis.clone());
    spawn_heartbeat(ctx.clone());
    // Once a heartbeat arrived, the control consumer is bound too.
    let instance = ctx.instance.clone();
    let _: Heartbeat = next_matching(&mut heartbeats, Duration::from_secs(10), |h: &Heartbeat| {
        h.instance == instance
    })
    .await;

    let control = bus.topology.control_exchange();
    let send = |service: &str, machine: &str, action: Override| ControlCommand {
        service: service.into(),
        machine: machine.into(),
        action,
        issued_at_ms: mdp_types::now_ms(),
        reason: Some("test drill".into()),
    };
    // The first is addressed to another service and must be ignored; the
    // queue is ordered, so once the second took effect the first was seen.
    for cmd in [
        send("query", "redis", Override::ForceDegraded),
        send("result-writer", "mysql", Override::ForceDegraded),
    ] {
        bus.publisher
            .publish_json(&control, "", &cmd, None)
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
    }
    assert!(
        eventually(Duration::from_secs(5), || mysql.forced()
            == Some(State::Degraded))
        .await
    );
    assert_eq!(mysql.state(), State::Degraded);
    assert_eq!(redis.state(), State::Normal);
    assert_eq!(
        mysql.status().reason.as_deref(),
        Some("forced degraded by operator: test drill")
    );

    // The forced state shows in the following heartbeats.
    let hb: Heartbeat = next_matching(&mut heartbeats, Duration::from_secs(5), |h: &Heartbeat| {
        h.instance == instance && h.degrade.iter().any(|d| d.forced.is_some())
    })
    .await;
    let m = hb
        .degrade
        .iter()
        .find(|d| d.machine == "mysql")
        .map(|d| (d.state.clone(), d.forced.clone()));
    assert_eq!(
        m,
        Some(("degraded".to_string(), Some("degraded".to_string())))
    );

    bus.publisher
        .publish_json(
            &control,
            "",
            &send("result-writer", "mysql", Override::Auto),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
    assert!(eventually(Duration::from_secs(5), || mysql.forced().is_none()).await);

    ctx.cancel.cancel();
    bus.cleanup().await;
}

#[actix_rt::test]
async fn stops_and_closes_its_link_on_cancel() {
    let settings = settings();
    let bus = Bus::connect(&settings).await;
    let (_ch, mut heartbeats) = bus.listen(&bus.topology.heartbeats_exchange()).await;
    let ctx = ServiceContext::new("ingest", settings);
    let addr = spawn_heartbeat(ctx.clone());
    let instance = ctx.instance.clone();
    let _: Heartbeat = next_matching(&mut heartbeats, Duration::from_secs(10), |h: &Heartbeat| {
        h.instance == instance
    })
    .await;

    ctx.cancel.cancel();
    let mut stopped = false;
    for _ in 0..100 {
        if !addr.connected() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stopped, "actor still running 5 s after cancel");
    bus.cleanup().await;
}
