//! Integration tests against the RabbitMQ on this machine (or `MDP_TEST_AMQP_URL`).
//! Every test uses its own random prefix and deletes what it declared.

mod flow;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, Consumer};
use mdp_amqp::{connect, Topology};
use std::sync::OnceLock;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub fn amqp_url() -> String {
    std::env::var("MDP_TEST_AMQP_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// Telemetry once per test binary, so spans carry trace ids; logs only with `TEST_LOG=1`.
pub fn init_telemetry() {
    static GUARD: OnceLock<()> = OnceLock::new();
    GUARD.get_or_init(|| {
        let filter = if std::env::var("TEST_LOG").is_ok() {
            "debug"
        } else {
            "off"
        };
        let settings = mdp_config::TelemetrySettings {
            otlp_endpoint: String::new(),
            log_format: "pretty".into(),
            log_filter: filter.into(),
        };
        // No exporter: the guard owns nothing that needs flushing.
        std::mem::forget(mdp_telemetry::init_telemetry("mdp-amqp-it", &settings));
    });
}

pub fn unique_prefix() -> String {
    use rand::Rng;
    format!("mdp-it-{:016x}", rand::rng().random::<u64>())
}

pub async fn connect_test(name: &str) -> Connection {
    let cancel = CancellationToken::new();
    tokio::time::timeout(Duration::from_secs(30), connect(&amqp_url(), name, &cancel))
        .await
        .expect("RabbitMQ reachable within 30 s")
        .expect("connected")
}

pub async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery within 10 s")
        .expect("consumer still open")
        .expect("delivery without error")
}

/// Deletes every queue and exchange of `topology` (on a fresh channel, since
/// a failed test may have closed its own).
pub async fn cleanup(conn: &Connection, topology: &Topology) {
    let ch = conn.create_channel().await.expect("cleanup channel");
    for queue in topology.queues() {
        ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("delete queue");
    }
    for (exchange, _) in topology.exchanges() {
        ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .expect("delete exchange");
    }
}
