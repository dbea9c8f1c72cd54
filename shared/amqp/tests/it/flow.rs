//! Topology, confirmed publishing, consuming, trace headers, dead-lettering,
//! requeue and fanout against a real broker.

use crate::{cleanup, connect_test, init_telemetry, next_delivery, unique_prefix};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Connection;
use mdp_amqp::{
    ack, consumer, dead_letter, decode_json, fanout_consumer, parent_context, requeue, traceparent,
    AmqpError, Publisher, Stage, Topology,
};
use opentelemetry::trace::TraceContextExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tracing::Instrument;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Batch {
    partition: u32,
    events: Vec<String>,
}

const MAX: usize = 1 << 20;

/// Runs `body`, then always deletes the topology, then fails if `body` failed.
async fn with_topology<F, Fut>(partitions: u32, body: F)
where
    F: FnOnce(Connection, Topology) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    init_telemetry();
    let topology = Topology::new(&unique_prefix(), partitions);
    let conn = connect_test("mdp-amqp-it").await;
    let admin = connect_test("mdp-amqp-it-admin").await;
    let outcome = tokio::spawn(body(conn, topology.clone())).await;
    cleanup(&admin, &topology).await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

#[tokio::test]
async fn publish_consume_trace_and_dead_letter() {
    with_topology(2, |conn, t| async move {
        let ch = conn.create_channel().await.expect("channel");
        t.declare(&ch).await.expect("declare");
        t.declare(&ch).await.expect("declare is idempotent");

        let publisher = Publisher::new(&conn)
            .await
            .expect("publisher")
            .with_mandatory(true);
        let batch = Batch {
            partition: 1,
            events: vec!["a".into(), "b".into()],
        };

        // Publish inside a span: the header carries that span's traceparent.
        let span = tracing::info_span!("it_publish");
        let sent_tp = async {
            let tp = mdp_telemetry::current_traceparent().expect("span has a traceparent");
            publisher
                .publish_json(
                    &t.changes_exchange(),
                    &Topology::routing_key(1),
                    &batch,
                    Some("1:first"),
                )
                .await
                .expect("confirmed");
            tp
        }
        .instrument(span)
        .await;

        let (_cch, mut changes) = consumer(&conn, &t.changes_queue(1), "it-changes", 4)
            .await
            .expect("consumer");
        let d = next_delivery(&mut changes).await;
        let got: Batch = decode_json(&d, MAX).expect("decodes");
        assert_eq!(got, batch);
        assert_eq!(d.routing_key.as_str(), "1");
        assert_eq!(
            d.properties.message_id().as_ref().map(|s| s.as_str()),
            Some("1:first")
        );
        assert_eq!(
            d.properties.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(d.properties.delivery_mode(), &Some(2));
        assert_eq!(traceparent(&d), Some(sent_tp.as_str()));
        let parent = parent_context(&d);
        assert_eq!(
            parent.span().span_context().trace_id().to_string(),
            sent_tp.split('-').nth(1).expect("trace id")
        );
        // The consumer side: its processing span joins the same trace.
        let processing = tracing::info_span!("it_process");
        mdp_telemetry::set_parent(&processing, traceparent(&d));
        let processing_tp = processing
            .in_scope(mdp_telemetry::current_traceparent)
            .expect("tp");
        assert_eq!(processing_tp.split('-').nth(1), sent_tp.split('-').nth(1));
        ack(&d).await.expect("ack");
        assert!(matches!(
            ack(&d).await,
            Err(AmqpError::AlreadySettled { .. })
        ));

        // A poison message goes to the stage's dead-letter queue.
        publisher
            .publish_bytes(
                &t.changes_exchange(),
                "1",
                b"{not json".to_vec(),
                Some("1:poison"),
            )
            .await
            .expect("confirmed");
        let d = next_delivery(&mut changes).await;
        assert!(decode_json::<Batch>(&d, MAX).is_err());
        let before = dead_lettered("changes");
        dead_letter(&d, "malformed").await.expect("dead-lettered");
        assert_eq!(dead_lettered("changes"), before + 1);
        let dlq = t.dead_letter_queue(Stage::Changes);
        let parked = poll_get(&ch, &dlq).await;
        assert_eq!(parked.data, b"{not json");
        assert_eq!(
            parked.properties.message_id().as_ref().map(|s| s.as_str()),
            Some("1:poison")
        );
        assert_eq!(
            parked.routing_key.as_str(),
            "changes",
            "dead-lettered with the stage key"
        );
        let death = parked
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-death").cloned());
        assert!(matches!(death, Some(AMQPValue::FieldArray(_))), "{death:?}");
        parked
            .ack(BasicAckOptions::default())
            .await
            .expect("ack parked");

        // Nothing is left anywhere (basic.get is refused by single-active-consumer
        // queues, so count with a passive declare).
        for queue in [t.changes_queue(0), t.changes_queue(1), dlq] {
            let q = ch
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("passive declare");
            assert_eq!(q.message_count(), 0, "{queue}");
        }
    })
    .await;
}

#[tokio::test]
async fn requeue_redelivers_and_unroutable_is_an_error() {
    with_topology(1, |conn, t| async move {
        let ch = conn.create_channel().await.expect("channel");
        t.declare(&ch).await.expect("declare");
        let publisher = Publisher::new(&conn).await.expect("publisher");

        publisher
            .publish_json(
                &t.windows_exchange(),
                "0",
                &serde_json::json!({"window": 7}),
                Some("0:7"),
            )
            .await
            .expect("confirmed");
        let (_wch, mut windows) = consumer(&conn, &t.windows_queue(0), "it-windows", 1)
            .await
            .expect("consumer");
        let first = next_delivery(&mut windows).await;
        assert!(!first.redelivered);
        requeue(&first).await.expect("requeued");
        let again = next_delivery(&mut windows).await;
        assert!(again.redelivered);
        assert_eq!(again.data, br#"{"window":7}"#);
        ack(&again).await.expect("ack");

        // Partition 5 does not exist: a mandatory publish says so, a plain one is dropped.
        let strict = publisher.clone().with_mandatory(true);
        let err = strict
            .publish_json(&t.windows_exchange(), "5", &1, None)
            .await
            .expect_err("unroutable");
        assert!(matches!(err, AmqpError::Unroutable { .. }), "{err:?}");
        publisher
            .publish_json(&t.windows_exchange(), "5", &1, None)
            .await
            .expect("non-mandatory publish is confirmed even when dropped");

        // Clones publish concurrently on one channel, each waiting for its own confirm.
        let mut tasks = Vec::new();
        for i in 0..20u32 {
            let p = publisher.clone();
            let exchange = t.results_exchange();
            tasks.push(tokio::spawn(async move {
                p.publish_json(&exchange, "0", &i, Some(&format!("0:{i}")))
                    .await
            }));
        }
        for task in tasks {
            task.await.expect("task").expect("confirmed");
        }
        let (_rch, mut results) = consumer(&conn, &t.results_queue(0), "it-results", 32)
            .await
            .expect("consumer");
        let mut seen = Vec::new();
        for _ in 0..20 {
            let d = next_delivery(&mut results).await;
            seen.push(decode_json::<u32>(&d, MAX).expect("u32"));
            ack(&d).await.expect("ack");
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
    })
    .await;
}

#[tokio::test]
async fn fanout_reaches_every_private_queue() {
    with_topology(1, |conn, t| async move {
        let ch = conn.create_channel().await.expect("channel");
        t.declare(&ch).await.expect("declare");
        let (_a_ch, mut a) = fanout_consumer(&conn, &t.heartbeats_exchange(), "it-a")
            .await
            .expect("fanout a");
        let (b_ch, mut b) = fanout_consumer(&conn, &t.heartbeats_exchange(), "it-b")
            .await
            .expect("fanout b");
        let publisher = Publisher::new(&conn).await.expect("publisher");
        publisher
            .publish_json(
                &t.heartbeats_exchange(),
                "",
                &serde_json::json!({"service": "x"}),
                None,
            )
            .await
            .expect("confirmed");
        for consumer in [&mut a, &mut b] {
            let d = next_delivery(consumer).await;
            assert_eq!(d.data, br#"{"service":"x"}"#);
            ack(&d).await.expect("ack");
        }
        // The private queue goes away with its channel.
        b_ch.close(200, "done".into()).await.expect("close");
        assert!(tokio::time::timeout(Duration::from_millis(200), b.next())
            .await
            .map(|next| next.is_none())
            .unwrap_or(true));
    })
    .await;
}

#[tokio::test]
async fn conflicting_queue_is_a_clear_error() {
    with_topology(1, |conn, t| async move {
        // A classic queue squatting on a partition queue's name.
        let ch = conn.create_channel().await.expect("channel");
        ch.queue_declare(
            t.changes_queue(0).as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("classic queue");
        let ch = conn.create_channel().await.expect("channel");
        let err = t.declare(&ch).await.expect_err("precondition failed");
        match &err {
            AmqpError::Broker { op, target, .. } => {
                assert_eq!(*op, "declare queue");
                assert_eq!(target, &t.changes_queue(0));
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!("failed to declare queue {}", t.changes_queue(0))
        );
        assert!(
            mdp_telemetry::error_chain(&err).contains("PRECONDITION_FAILED"),
            "{}",
            mdp_telemetry::error_chain(&err)
        );

        // The publisher fails cleanly once its connection is gone.
        let publisher = Publisher::new(&conn).await.expect("publisher");
        conn.close(200, "bye".into()).await.expect("close");
        let err = publisher
            .publish_json(&t.changes_exchange(), "0", &1, None)
            .await
            .expect_err("closed");
        assert!(err.is_connection_lost(), "{err:?}");
        assert!(!publisher.is_open());
    })
    .await;
}

fn dead_lettered(stage: &str) -> u64 {
    let text = mdp_telemetry::render_metrics();
    let key = format!("mdp_amqp_dead_lettered_total{{stage=\"{stage}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn poll_get(ch: &lapin::Channel, queue: &str) -> lapin::message::BasicGetMessage {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .expect("basic.get")
        {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing arrived in {queue}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
