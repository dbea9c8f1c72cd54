//! `GET /v1/dead-letters` and `POST /v1/dead-letters/{stage}/replay` against
//! the local RabbitMQ, with messages parked the ways the services park them:
//! `mdp_amqp::dead_letter` (flow-control's and window-compute's rejects and
//! poison windows), a plain `basic.reject` without requeue, and ingest's
//! direct publish to the dead-letter exchange.

use crate::helpers::{poll, settings, spawn_app_with, TestApp};
use futures::StreamExt;
use mdp_admin::Application;
use mdp_amqp::lapin::message::Delivery;
use mdp_amqp::lapin::options::{BasicGetOptions, BasicRejectOptions};
use mdp_amqp::lapin::types::AMQPValue;
use mdp_amqp::lapin::{Channel, Consumer};
use mdp_amqp::{OutgoingMessage, Stage};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn publish(app: &TestApp, exchange: &str, routing_key: &str, body: &str, id: &str) {
    app.publisher
        .publish(OutgoingMessage {
            exchange,
            routing_key,
            body: body.as_bytes().to_vec(),
            message_id: Some(id),
            traceparent: Some(TRACEPARENT.to_string()),
            mandatory: true,
        })
        .await
        .unwrap_or_else(|e| panic!("publish to {exchange}/{routing_key}: {e}"));
}

/// A consumer of a partition queue (single-active-consumer queues refuse
/// `basic.get`).
struct Inbox {
    channel: Channel,
    consumer: Consumer,
    queue: String,
}

impl Inbox {
    async fn open(app: &TestApp, queue: &str) -> Inbox {
        let (channel, consumer) = mdp_amqp::consumer(&app.conn, queue, "admin-test", 100)
            .await
            .unwrap_or_else(|e| panic!("consume {queue}: {e}"));
        Inbox {
            channel,
            consumer,
            queue: queue.to_string(),
        }
    }

    async fn next(&mut self) -> Delivery {
        match tokio::time::timeout(WAIT, self.consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            other => panic!("no message on {} within {WAIT:?}: {other:?}", self.queue),
        }
    }

    async fn assert_quiet(&mut self) {
        let next = tokio::time::timeout(Duration::from_millis(500), self.consumer.next()).await;
        if let Ok(Some(Ok(d))) = next {
            panic!("unexpected message on {}: {}", self.queue, body(&d));
        }
    }

    async fn close(self) {
        let _ = self.channel.close(200, "done".into()).await;
    }
}

/// The next message of the (plain quorum) `queue`, waiting up to [`WAIT`].
async fn get(ch: &Channel, queue: &str) -> Delivery {
    let got = poll(WAIT, || async {
        ch.basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap_or_else(|e| panic!("get from {queue}: {e}"))
            .map(|m| m.delivery)
    })
    .await;
    got.unwrap_or_else(|| panic!("no message in {queue} within {WAIT:?}"))
}

/// Rejects without requeue, as a plain consumer would.
async fn reject(d: &Delivery) {
    let ok = d
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap_or_else(|e| panic!("reject: {e}"));
    assert!(ok, "rejected once");
}

fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.data).to_string()
}

fn header<'a>(d: &'a Delivery, name: &str) -> Option<&'a AMQPValue> {
    d.properties.headers().as_ref()?.inner().get(name)
}

/// `(stage → messages)` of `GET /v1/dead-letters` once it shows `expected`.
async fn wait_counts(app: &TestApp, expected: [u64; 3]) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = app.get_json("/v1/dead-letters").await;
        let counts: Vec<Option<u64>> = ["changes", "windows", "results"]
            .iter()
            .map(|stage| {
                body["dead_letters"]
                    .as_array()
                    .and_then(|a| a.iter().find(|q| q["stage"] == *stage))
                    .and_then(|q| q["messages"].as_u64())
            })
            .collect();
        if counts == expected.map(Some) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead-letter counts never became {expected:?}: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[actix_rt::test]
async fn parked_messages_are_replayed_to_the_partition_queue_they_died_in() {
    let mut app = spawn_app_with(&[("MDP__PARTITIONING__PARTITIONS", "2")]).await;
    app.declare_topology().await;
    let t = app.topology.clone();
    let ch = app
        .conn
        .create_channel()
        .await
        .unwrap_or_else(|e| panic!("channel: {e}"));

    let listed = wait_counts(&app, [0, 0, 0]).await;
    assert_eq!(
        listed["dead_letters"][1]["queue"],
        t.dead_letter_queue(Stage::Windows)
    );
    assert_eq!(listed["dead_letters"][1]["consumers"], 0);

    // Three windows of partition 1: two parked with the services' helper,
    // one rejected by hand.
    let windows = ["{\"w\":1}", "{\"w\":2}", "{\"w\":3}"];
    for (i, w) in windows.iter().enumerate() {
        publish(&app, &t.windows_exchange(), "1", w, &format!("1:{}", i + 1)).await;
    }
    let mut q1 = Inbox::open(&app, &t.windows_queue(1)).await;
    let mut q0 = Inbox::open(&app, &t.windows_queue(0)).await;
    let mut c0 = Inbox::open(&app, &t.changes_queue(0)).await;
    for _ in 0..2 {
        let d = q1.next().await;
        mdp_amqp::dead_letter(&d, "poison")
            .await
            .unwrap_or_else(|e| panic!("dead-letter: {e}"));
    }
    reject(&q1.next().await).await;
    // A change batch of partition 0 rejected by flow-control, and a row
    // without tenant that ingest parks directly (no origin).
    publish(&app, &t.changes_exchange(), "0", "{\"c\":1}", "c-1").await;
    reject(&c0.next().await).await;
    app.publisher
        .publish_bytes(
            &t.dead_letter_exchange(),
            Stage::Changes.as_str(),
            b"{\"no_tenant\":true}".to_vec(),
            Some("c-2"),
        )
        .await
        .unwrap_or_else(|e| panic!("publish to the dlx: {e}"));
    wait_counts(&app, [2, 3, 0]).await;

    // Two, then the rest.
    let (status, done) = app.post("/v1/dead-letters/windows/replay?limit=2").await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (
            &done["stage"],
            &done["replayed"],
            &done["skipped"],
            &done["remaining"]
        ),
        (
            &serde_json::json!("windows"),
            &serde_json::json!(2),
            &serde_json::json!(0),
            &serde_json::json!(1)
        ),
        "{done}"
    );
    wait_counts(&app, [2, 1, 0]).await;
    let (status, done) = app.post("/v1/dead-letters/windows/replay").await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (&done["replayed"], &done["remaining"]),
        (&1.into(), &0.into())
    );
    wait_counts(&app, [2, 0, 0]).await;

    // Back on partition 1's queue in order, with their properties, without
    // the broker's death record, counted as replayed once.
    let mut back = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        let d = q1.next().await;
        assert_eq!(body(&d), *w);
        assert_eq!(
            d.properties.message_id().as_ref().map(|s| s.to_string()),
            Some(format!("1:{}", i + 1))
        );
        assert_eq!(
            mdp_amqp::traceparent(&d),
            Some(TRACEPARENT),
            "trace continues"
        );
        assert_eq!(
            header(&d, "x-mdp-replays"),
            Some(&AMQPValue::LongLongInt(1))
        );
        assert!(header(&d, "x-death").is_none(), "{:?}", d.properties);
        assert!(header(&d, "x-first-death-queue").is_none());
        back.push(d);
    }
    q1.assert_quiet().await;
    q0.assert_quiet().await;

    // Failing again and replayed again: counted up.
    let mut back = back.into_iter();
    if let Some(first) = back.next() {
        reject(&first).await;
    }
    for d in back {
        mdp_amqp::ack(&d)
            .await
            .unwrap_or_else(|e| panic!("ack: {e}"));
    }
    wait_counts(&app, [2, 1, 0]).await;
    let (status, done) = app.post("/v1/dead-letters/windows/replay?limit=5").await;
    assert_eq!((status, &done["replayed"]), (200, &1.into()), "{done}");
    let again = q1.next().await;
    assert_eq!(body(&again), windows[0]);
    assert_eq!(
        header(&again, "x-mdp-replays"),
        Some(&AMQPValue::LongLongInt(2))
    );
    mdp_amqp::ack(&again)
        .await
        .unwrap_or_else(|e| panic!("ack: {e}"));

    // Changes: the rejected batch goes back to partition 0, ingest's parked
    // row stays where it is — also on a second call, never picked twice.
    for _ in 0..2 {
        let (status, done) = app.post("/v1/dead-letters/changes/replay?limit=10").await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(done["skipped"], 1, "{done}");
        assert_eq!(done["remaining"], 1, "{done}");
        assert_eq!(done["skipped_reasons"]["no_x_death"], 1, "{done}");
    }
    let c = c0.next().await;
    assert_eq!(body(&c), "{\"c\":1}");
    mdp_amqp::ack(&c)
        .await
        .unwrap_or_else(|e| panic!("ack: {e}"));
    c0.assert_quiet().await;
    wait_counts(&app, [1, 0, 0]).await;
    let parked = get(&ch, &t.dead_letter_queue(Stage::Changes)).await;
    assert_eq!(body(&parked), "{\"no_tenant\":true}");
    assert!(header(&parked, "x-mdp-replays").is_none());

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
        metric(
            &metrics,
            "mdp_admin_dead_letters_replayed_total{stage=\"windows\"}"
        ) >= 4.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "mdp_admin_dead_letters_replayed_total{stage=\"changes\"}"
        ) >= 1.0
    );

    for inbox in [q0, q1, c0] {
        inbox.close().await;
    }
    let _ = ch.close(200, "done".into()).await;
    app.cleanup().await;
}

#[actix_rt::test]
async fn bad_replay_requests_get_a_400_naming_the_parameter() {
    let app = spawn_app_with(&[]).await;
    let cases = [
        (
            "/v1/dead-letters/dlq/replay",
            "stage: unknown stage 'dlq' (expected changes, windows or results)",
        ),
        (
            "/v1/dead-letters/windows/replay?limit=0",
            "limit: 0 must be between 1 and 10000",
        ),
        (
            "/v1/dead-letters/windows/replay?limit=10001",
            "limit: 10001 must be between 1 and 10000",
        ),
        (
            "/v1/dead-letters/windows/replay?limit=ten",
            "limit: 'ten' is not a whole number (must be between 1 and 10000)",
        ),
        (
            "/v1/dead-letters/windows/replay?limit=1&limit=2",
            "limit: given more than once",
        ),
        (
            "/v1/dead-letters/results/replay?max=5",
            "max: unknown parameter (expected limit)",
        ),
    ];
    for (path, expected) in cases {
        let (status, body) = app.post(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], expected, "{path}");
    }
    // No service declared the topology of this prefix: the queues are missing.
    let (status, body) = app.post("/v1/dead-letters/results/replay").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains(".dlq.results does not exist")),
        "{body}"
    );
    let listed = app.get_json("/v1/dead-letters").await;
    assert_eq!(
        listed["dead_letters"][2]["messages"],
        serde_json::Value::Null
    );
    assert!(
        listed["dead_letters"][2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not exist")),
        "{listed}"
    );
    app.cleanup().await;
}

#[actix_rt::test]
async fn without_a_broker_the_dead_letter_routes_answer_503() {
    let mut s = settings();
    // Nothing listens on port 1.
    s.rabbitmq.url = mdp_config::Secret::new("amqp://guest:guest@127.0.0.1:1/%2f");
    let app = Application::build(s)
        .await
        .unwrap_or_else(|e| panic!("admin build: {e}"));
    let address = format!("http://127.0.0.1:{}", app.port());
    let cancel = app.cancel_token();
    let running = actix_rt::spawn(app.run());
    let client = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::GET, "/v1/dead-letters"),
        (reqwest::Method::POST, "/v1/dead-letters/windows/replay"),
    ] {
        let resp = client
            .request(method, format!("{address}{path}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(resp.status(), 503, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        assert_eq!(
            body["error"], "admin is not connected to RabbitMQ",
            "{path}"
        );
    }
    cancel.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), running).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
}

#[actix_rt::test]
async fn a_message_whose_queue_is_gone_stays_parked_until_it_is_back() {
    let mut app = spawn_app_with(&[("MDP__PARTITIONING__PARTITIONS", "1")]).await;
    app.declare_topology().await;
    let t = app.topology.clone();
    let queue = t.results_queue(0);
    publish(&app, &t.results_exchange(), "0", "{\"r\":1}", "0:1").await;
    let inbox = {
        let mut inbox = Inbox::open(&app, &queue).await;
        reject(&inbox.next().await).await;
        inbox
    };
    inbox.close().await;
    wait_counts(&app, [0, 0, 1]).await;

    let ch = app
        .conn
        .create_channel()
        .await
        .unwrap_or_else(|e| panic!("channel: {e}"));
    ch.queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap_or_else(|e| panic!("delete {queue}: {e}"));
    let (status, done) = app.post("/v1/dead-letters/results/replay").await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["replayed"], 0, "{done}");
    assert_eq!(done["skipped"], 1, "{done}");
    assert_eq!(done["remaining"], 1, "{done}");
    assert_eq!(done["skipped_reasons"]["unroutable"], 1, "{done}");
    wait_counts(&app, [0, 0, 1]).await;

    // The queue is declared again (a service restarts): now it goes back.
    app.declare_topology().await;
    let (status, done) = app.post("/v1/dead-letters/results/replay").await;
    assert_eq!((status, &done["replayed"]), (200, &1.into()), "{done}");
    let mut inbox = Inbox::open(&app, &queue).await;
    let d = inbox.next().await;
    assert_eq!(body(&d), "{\"r\":1}");
    assert_eq!(
        header(&d, "x-mdp-replays"),
        Some(&AMQPValue::LongLongInt(1))
    );
    mdp_amqp::ack(&d)
        .await
        .unwrap_or_else(|e| panic!("ack: {e}"));
    inbox.close().await;
    let _ = ch.close(200, "done".into()).await;
    app.cleanup().await;
}
