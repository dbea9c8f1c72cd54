//! The `dead_letters_parked` and `partition_held` alarms: a dead-letter
//! queue holding messages (admin looks at the queues every few seconds) and
//! a partition window-compute holds at a parked window (from its heartbeat).

use crate::helpers::{poll, spawn_app_with, test_heartbeat, TestApp};
use futures::StreamExt;
use mdp_amqp::lapin::options::BasicPublishOptions;
use mdp_amqp::lapin::types::{AMQPValue, FieldTable, LongString};
use mdp_amqp::lapin::BasicProperties;
use mdp_amqp::Stage;
use mdp_types::status::dead_letter;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The alarms of `kind` once `check` accepts them.
async fn alarms_until(
    app: &TestApp,
    kind: &str,
    check: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let found = poll(WAIT, || async {
        let body = app.get_json("/v1/alarms").await;
        let alarms: Vec<serde_json::Value> = body["alarms"]
            .as_array()
            .map(|a| a.iter().filter(|x| x["kind"] == kind).cloned().collect())
            .unwrap_or_default();
        check(&alarms).then_some(alarms)
    })
    .await;
    found.unwrap_or_else(|| panic!("{kind} alarms never matched within {WAIT:?}"))
}

#[actix_rt::test]
async fn a_dead_letter_queue_holding_messages_raises_an_alarm_until_they_are_replayed() {
    let mut app = spawn_app_with(&[("MDP__PARTITIONING__PARTITIONS", "2")]).await;
    app.declare_topology().await;
    let t = app.topology.clone();
    assert!(alarms_until(&app, "dead_letters_parked", |a| a.is_empty())
        .await
        .is_empty());

    // A held window that failed again, parked by window-compute itself: a
    // copy on the dead-letter exchange naming its partition queue.
    let mut headers = FieldTable::default();
    headers.insert(
        dead_letter::ORIGIN_QUEUE_HEADER.into(),
        long(&t.windows_queue(1)),
    );
    headers.insert(
        dead_letter::ORIGIN_EXCHANGE_HEADER.into(),
        long(&t.windows_exchange()),
    );
    headers.insert(dead_letter::ORIGIN_ROUTING_KEY_HEADER.into(), long("1"));
    headers.insert(dead_letter::REASON_HEADER.into(), long("poison"));
    let props = BasicProperties::default()
        .with_message_id("1:7".into())
        .with_delivery_mode(2)
        .with_headers(headers);
    let confirm = app
        .publisher
        .channel()
        .basic_publish(
            t.dead_letter_exchange().as_str().into(),
            Stage::Windows.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            b"{\"w\":7}",
            props,
        )
        .await
        .unwrap_or_else(|e| panic!("publish the parked copy: {e}"))
        .await
        .unwrap_or_else(|e| panic!("confirm: {e}"));
    assert!(confirm.is_ack(), "{confirm:?}");

    let alarms = alarms_until(&app, "dead_letters_parked", |a| a.len() == 1).await;
    let a = &alarms[0];
    assert_eq!(a["severity"], "warning");
    assert_eq!(a["service"], "window-compute");
    assert_eq!(a["stage"], "windows");
    assert_eq!(a["messages"], 1);
    assert!(a["since_ms"].as_i64().is_some_and(|s| s > 0), "{a}");
    assert_eq!(
        a["message"],
        format!(
            "1 messages parked in dead-letter queue {} (stage windows); see GET /v1/dead-letters, replay with POST /v1/dead-letters/windows/replay",
            t.dead_letter_queue(Stage::Windows)
        )
    );
    let status = app.get_json("/v1/status").await;
    let windows = status["dead_letters"]
        .as_array()
        .and_then(|d| d.iter().find(|x| x["stage"] == "windows"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(windows["messages"], 1, "{status:#}");
    assert_eq!(windows["queue"], t.dead_letter_queue(Stage::Windows));

    // Replayed to the queue its headers name, without them.
    let (channel, mut consumer) =
        mdp_amqp::consumer(&app.conn, &t.windows_queue(1), "alarm-test", 10)
            .await
            .unwrap_or_else(|e| panic!("consume: {e}"));
    let (status, done) = app.post("/v1/dead-letters/windows/replay").await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (&done["replayed"], &done["remaining"]),
        (&1.into(), &0.into()),
        "{done}"
    );
    let back = match tokio::time::timeout(WAIT, consumer.next()).await {
        Ok(Some(Ok(d))) => d,
        other => panic!("replayed copy not delivered: {other:?}"),
    };
    assert_eq!(back.data, b"{\"w\":7}");
    let h = back.properties.headers().clone().unwrap_or_default();
    assert!(!h.contains_key(dead_letter::ORIGIN_QUEUE_HEADER), "{h:?}");
    assert!(!h.contains_key(dead_letter::REASON_HEADER), "{h:?}");
    assert_eq!(
        h.inner().get("x-mdp-replays"),
        Some(&AMQPValue::LongLongInt(1))
    );
    mdp_amqp::ack(&back)
        .await
        .unwrap_or_else(|e| panic!("ack: {e}"));
    let _ = channel.close(200, "done".into()).await;

    // The replay leaves the queue empty: no alarm.
    let alarms = app.get_json("/v1/alarms").await;
    assert!(
        !alarms["alarms"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["kind"] == "dead_letters_parked")),
        "{alarms:#}"
    );
    app.cleanup().await;
}

#[actix_rt::test]
async fn a_partition_held_at_a_parked_window_raises_an_alarm_naming_it() {
    let app = spawn_app_with(&[("MDP__PARTITIONING__PARTITIONS", "2")]).await;
    let since = mdp_types::now_ms() - 30_000;
    let mut wc = test_heartbeat("window-compute", "test-wc", vec![]);
    wc.partitions = vec![0, 1];
    wc.stats = [
        ("partition.1.last_applied_window", 6.0),
        ("partition.1.held_at_window", 7.0),
        ("partition.1.held_windows", 3.0),
        ("partition.1.held_since_ms", since as f64),
        ("partition.0.held_at_window", 0.0),
        ("partition.0.held_windows", 0.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    // Heartbeats keep coming while admin is asked (the test timeout is short).
    let held = poll(WAIT, || {
        let app = &app;
        let wc = &wc;
        async move {
            let mut hb = wc.clone();
            hb.sent_at_ms = mdp_types::now_ms();
            app.send_heartbeat(&hb).await;
            let status = app.get_json("/v1/status").await;
            let alarms: Vec<serde_json::Value> = status["alarms"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|x| x["kind"] == "partition_held")
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            (!alarms.is_empty()).then_some((status, alarms))
        }
    })
    .await;
    let (status, alarms) = held.unwrap_or_else(|| panic!("no partition_held alarm"));
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    let a = &alarms[0];
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["service"], "window-compute");
    assert_eq!(a["instance"], "test-wc");
    assert_eq!(a["partition"], 1);
    assert_eq!(a["window_id"], 7);
    assert_eq!(a["since_ms"], since);
    assert_eq!(
        a["message"],
        "partition 1 is held at parked window 7: 3 later windows are kept, not applied; fix the cause and replay it (POST /v1/dead-letters/windows/replay)"
    );
    let p1 = &status["partitions"][1];
    assert_eq!(
        (
            &p1["held_at_window"],
            &p1["held_windows"],
            &p1["held_since_ms"]
        ),
        (&7.into(), &3.into(), &since.into()),
        "{p1}"
    );
    assert_eq!(
        status["partitions"][0]["held_at_window"],
        serde_json::Value::Null
    );

    // Released: the next heartbeat says 0 and the alarm goes.
    wc.stats
        .insert("partition.1.held_at_window".to_string(), 0.0);
    wc.stats.insert("partition.1.held_windows".to_string(), 0.0);
    wc.stats
        .insert("partition.1.held_since_ms".to_string(), 0.0);
    let released = poll(WAIT, || {
        let app = &app;
        let wc = &wc;
        async move {
            let mut hb = wc.clone();
            hb.sent_at_ms = mdp_types::now_ms();
            app.send_heartbeat(&hb).await;
            let alarms = app.get_json("/v1/alarms").await;
            let none = !alarms["alarms"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["kind"] == "partition_held"));
            none.then_some(())
        }
    })
    .await;
    assert!(released.is_some(), "partition_held alarm stayed");
    app.cleanup().await;
}
