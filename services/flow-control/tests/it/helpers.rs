//! Test harness: an in-process flow-control on its own actix system thread, a broker client
//! on a random prefix, change-batch builders and window collection with deadlines.

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use mdp_amqp::{OutgoingMessage, Publisher, Topology};
use mdp_config::Settings;
use mdp_flow_control::Application;
use mdp_types::{ChangeBatch, ChangeEvent, EventId, Op, Position, Row, TenantId, Value, Window};
use std::path::Path;
use std::sync::Once;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const PARTITIONS: u32 = 2;

/// Installs the platform's telemetry once: spans get trace ids (no export),
/// so `traceparent` headers can be checked. `TEST_LOG=1` prints logs.
pub fn init_telemetry() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = if std::env::var("TEST_LOG").is_ok() {
            "info,mdp_flow_control=debug"
        } else {
            "off"
        };
        let settings = mdp_config::TelemetrySettings {
            otlp_endpoint: String::new(),
            log_format: "pretty".into(),
            log_filter: filter.into(),
        };
        // Kept for the whole test process.
        Box::leak(Box::new(mdp_telemetry::init_telemetry(
            "flow-control-test",
            &settings,
        )));
    });
}

pub fn settings(prefix: &str, data_dir: &Path, window_ms: u64, max_changes: usize) -> Settings {
    let env = [
        ("MDP__RABBITMQ__URL", AMQP_URL.to_string()),
        ("MDP__RABBITMQ__PREFIX", prefix.to_string()),
        ("MDP__RABBITMQ__MAX_MESSAGE_BYTES", "1000000".to_string()),
        ("MDP__PARTITIONING__PARTITIONS", PARTITIONS.to_string()),
        ("MDP__FLOW_CONTROL__LISTEN", "127.0.0.1:0".to_string()),
        (
            "MDP__FLOW_CONTROL__DATA_DIR",
            data_dir.display().to_string(),
        ),
        ("MDP__FLOW_CONTROL__WINDOW_MS", window_ms.to_string()),
        (
            "MDP__FLOW_CONTROL__WINDOW_MAX_CHANGES",
            max_changes.to_string(),
        ),
        ("MDP__TELEMETRY__LOG_FORMAT", "pretty".to_string()),
    ];
    match Settings::load_from(None, env.iter().map(|(k, v)| (k.to_string(), v.clone()))) {
        Ok(s) => s,
        Err(e) => panic!("test settings: {e}"),
    }
}

/// A flow-control instance running on its own thread and actix system.
pub struct RunningApp {
    pub port: u16,
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningApp {
    /// Starts an instance; retries while a previous instance still holds the sled lock.
    pub fn start(settings: Settings) -> RunningApp {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Self::try_start(settings.clone()) {
                Ok(app) => return app,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("start failed, retrying: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("flow-control did not start: {e}"),
            }
        }
    }

    fn try_start(settings: Settings) -> Result<RunningApp, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix::System::new();
            system.block_on(async move {
                match Application::build(settings).await {
                    Ok(app) => {
                        let _ = tx.send(Ok((app.port(), app.shutdown_token())));
                        if let Err(e) = app.run().await {
                            eprintln!("flow-control run failed: {e}");
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!(
                            "{e}: {:?}",
                            std::error::Error::source(&e).map(|s| s.to_string())
                        )));
                    }
                }
            });
        });
        match rx.recv() {
            Ok(Ok((port, cancel))) => Ok(RunningApp {
                port,
                cancel,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err("flow-control thread ended without a result".into()),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Graceful stop; returns once the instance's system is gone.
    pub fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The test's own broker connection on the random prefix.
pub struct Broker {
    pub topology: Topology,
    pub conn: lapin::Connection,
    pub publisher: Publisher,
}

impl Broker {
    pub async fn connect(prefix: &str) -> Broker {
        let cancel = CancellationToken::new();
        let conn = mdp_amqp::connect(AMQP_URL, "flow-control tests", &cancel)
            .await
            .unwrap_or_else(|e| panic!("connect to RabbitMQ at {AMQP_URL}: {e}"));
        let topology = Topology::new(prefix, PARTITIONS);
        let publisher = Publisher::new(&conn)
            .await
            .unwrap_or_else(|e| panic!("publisher: {e}"));
        topology
            .declare(publisher.channel())
            .await
            .unwrap_or_else(|e| panic!("declare: {e}"));
        Broker {
            topology,
            conn,
            publisher,
        }
    }

    pub async fn publish_batch(&self, batch: &ChangeBatch) {
        let id = batch.events.first().map(|e| e.id.0.clone());
        self.publisher
            .publish_json(
                &self.topology.changes_exchange(),
                &Topology::routing_key(batch.partition),
                batch,
                id.as_deref(),
            )
            .await
            .unwrap_or_else(|e| panic!("publish batch: {e}"));
    }

    /// Publishes `batch` with the given `traceparent` header.
    pub async fn publish_batch_traced(&self, batch: &ChangeBatch, traceparent: &str) {
        let exchange = self.topology.changes_exchange();
        let routing_key = Topology::routing_key(batch.partition);
        self.publisher
            .publish(OutgoingMessage {
                exchange: &exchange,
                routing_key: &routing_key,
                body: serde_json::to_vec(batch).unwrap_or_else(|e| panic!("encode batch: {e}")),
                message_id: None,
                traceparent: Some(traceparent.to_string()),
                mandatory: true,
            })
            .await
            .unwrap_or_else(|e| panic!("publish batch: {e}"));
    }

    pub async fn publish_raw(&self, partition: u32, body: &[u8]) {
        self.publisher
            .publish_bytes(
                &self.topology.changes_exchange(),
                &Topology::routing_key(partition),
                body.to_vec(),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("publish raw: {e}"));
    }

    /// A consumer of the windows queue of `partition`.
    pub async fn windows_consumer(&self, partition: u32) -> (lapin::Channel, lapin::Consumer) {
        mdp_amqp::consumer(
            &self.conn,
            &self.topology.windows_queue(partition),
            &format!("test-windows-{partition}"),
            100,
        )
        .await
        .unwrap_or_else(|e| panic!("windows consumer: {e}"))
    }

    /// Every message currently in the changes dead-letter queue (acked).
    pub async fn drain_dead_letters(&self, expected: usize, within: Duration) -> Vec<Vec<u8>> {
        let channel = self
            .conn
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("channel: {e}"));
        let queue = self.topology.dead_letter_queue(mdp_amqp::Stage::Changes);
        let deadline = Instant::now() + within;
        let mut bodies = Vec::new();
        while Instant::now() < deadline && bodies.len() < expected {
            match channel
                .basic_get(queue.as_str().into(), BasicGetOptions::default())
                .await
            {
                Ok(Some(msg)) => {
                    let _ = msg.delivery.acker.ack(BasicAckOptions::default()).await;
                    bodies.push(msg.delivery.data.clone());
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => panic!("basic.get {queue}: {e}"),
            }
        }
        bodies
    }

    /// Deletes every queue and exchange of the prefix.
    pub async fn cleanup(&self) {
        let Ok(channel) = self.conn.create_channel().await else {
            return;
        };
        for q in self.topology.queues() {
            let _ = channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for (x, _) in self.topology.exchanges() {
            let _ = channel
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.conn.close(200, "done".into()).await;
    }
}

/// A received window with its AMQP message id.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: Option<String>,
    pub traceparent: Option<String>,
    pub window: Window,
}

/// Receives windows until `done(received)` holds or `within` passes.
pub async fn collect_windows(
    consumer: &mut lapin::Consumer,
    into: &mut Vec<Received>,
    within: Duration,
    done: impl Fn(&[Received]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !done(into) {
        let next = tokio::time::timeout_at(deadline, consumer.next()).await;
        let Ok(Some(Ok(delivery))) = next else { return };
        let window: Window =
            serde_json::from_slice(&delivery.data).unwrap_or_else(|e| panic!("window body: {e}"));
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_string());
        let traceparent = mdp_amqp::traceparent(&delivery).map(str::to_string);
        mdp_amqp::ack(&delivery)
            .await
            .unwrap_or_else(|e| panic!("ack window: {e}"));
        into.push(Received {
            message_id,
            traceparent,
            window,
        });
    }
}

pub fn event(partition: u32, offset: u64) -> ChangeEvent {
    let position = Position {
        file: "binlog.000001".into(),
        offset,
        row: 0,
        snapshot: false,
    };
    let mut after = Row::new();
    after.insert("id".into(), Value::I(offset as i64));
    after.insert("merchant_id".into(), Value::I(i64::from(partition) + 100));
    ChangeEvent {
        id: EventId::from_position("shop", &position),
        source: "shop".into(),
        table: "orders".into(),
        op: Op::Insert,
        tenant: TenantId((partition + 100).to_string()),
        partition,
        pk: vec![Value::I(offset as i64)],
        before: None,
        after: Some(after),
        commit_ts_ms: 1_700_000_000_000 + offset as i64,
        position,
        captured_at_ms: 1_700_000_000_000,
    }
}

pub fn batch(partition: u32, offsets: impl IntoIterator<Item = u64>) -> ChangeBatch {
    ChangeBatch {
        partition,
        events: offsets.into_iter().map(|o| event(partition, o)).collect(),
    }
}

/// All changes of the windows, in window order.
pub fn changes_of(received: &[Received]) -> Vec<ChangeEvent> {
    received
        .iter()
        .flat_map(|r| r.window.changes.iter().cloned())
        .collect()
}

/// Asserts the invariants of one partition's window stream: ids consecutive
/// from `first_id`, message ids `"{p}:{id}"`, seq ranges contiguous and
/// matching the change counts, no empty window.
pub fn assert_window_stream(partition: u32, received: &[Received], first_id: u64, first_seq: u64) {
    let mut next_seq = first_seq;
    for (i, r) in received.iter().enumerate() {
        let w = &r.window;
        assert_eq!(w.partition, partition);
        assert_eq!(
            w.id,
            first_id + i as u64,
            "window ids must be consecutive: {received:#?}"
        );
        assert_eq!(
            r.message_id.as_deref(),
            Some(format!("{partition}:{}", w.id).as_str())
        );
        assert!(!w.changes.is_empty(), "empty window {}", w.id);
        assert_eq!(w.first_seq, next_seq, "window {} seq range", w.id);
        assert_eq!(w.last_seq - w.first_seq + 1, w.changes.len() as u64);
        assert!(w.sealed_at_ms >= w.opened_at_ms);
        next_seq = w.last_seq + 1;
    }
}

/// Closes, on the broker side, every connection whose client-provided name
/// contains `needle` (a lost broker, as the instance sees it). `None` when
/// `rabbitmqctl` is not available here.
pub fn close_connections_named(needle: &str) -> Option<usize> {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut closed = 0;
    for line in text.lines().filter(|l| l.contains(needle)) {
        let Some(pid) = line.split('\t').next() else {
            continue;
        };
        let status = std::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "connection loss test"])
            .output()
            .ok()?;
        if status.status.success() {
            closed += 1;
        } else {
            eprintln!(
                "close_connection {pid}: {}",
                String::from_utf8_lossy(&status.stderr)
            );
        }
    }
    Some(closed)
}

pub async fn get_json(url: &str) -> serde_json::Value {
    let resp = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.json()
        .await
        .unwrap_or_else(|e| panic!("GET {url} body: {e}"))
}

/// Polls `GET url` until `check` holds.
pub async fn poll_json(
    url: &str,
    within: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let v = get_json(url).await;
        if check(&v) {
            return v;
        }
        if Instant::now() > deadline {
            panic!("GET {url} never satisfied the check; last answer: {v:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
