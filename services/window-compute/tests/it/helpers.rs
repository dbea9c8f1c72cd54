//! Test harness: an isolated broker topology (random prefix), temp reports and
//! state directories, the service in-process on port 0, and helpers to
//! publish windows and read result batches and dead letters.

use chrono::NaiveDateTime;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use mdp_amqp::{Publisher, Stage, Topology};
use mdp_config::Settings;
use mdp_types::{
    partition_of, ChangeEvent, EventId, Op, Position, ResultBatch, Row, TenantId, Value, Window,
};
use mdp_window_compute::configuration::{Backoff, ComputeOptions};
use mdp_window_compute::Application;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const PARTITIONS: u32 = 2;
pub const REPORT: &str = "orders_by_day";
pub const REPORT_SQL: &str =
    "SELECT merchant_id, DATE(created_at) AS day, COUNT(*) AS orders, SUM(amount) AS gmv \
FROM orders GROUP BY merchant_id, DATE(created_at)";

static TRACING: Once = Once::new();

/// Spans of the service get trace ids (so `traceparent` headers flow) without
/// exporting anything; `TEST_LOG=1` also prints logs.
fn init_tracing() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    TRACING.call_once(|| {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let spans = tracing_subscriber::filter::Targets::new()
            .with_target("mdp_window_compute", tracing::Level::INFO)
            .with_target("mdp_amqp", tracing::Level::INFO);
        let otel = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("window-compute-test"))
            .with_filter(spans);
        let logs = std::env::var("TEST_LOG").is_ok().then(|| {
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                        tracing_subscriber::EnvFilter::new("info,mdp_window_compute=debug")
                    }),
                )
        });
        let _ = tracing_subscriber::registry()
            .with(otel)
            .with(logs)
            .try_init();
    });
}

/// One isolated environment: broker names, directories, a client connection.
pub struct TestEnv {
    pub prefix: String,
    pub topology: Topology,
    pub reports_dir: tempfile::TempDir,
    pub state_dir: tempfile::TempDir,
    pub conn: lapin::Connection,
    pub publisher: Publisher,
}

impl TestEnv {
    pub async fn new() -> Self {
        init_tracing();
        let prefix = format!("wct{}", rand::random::<u32>());
        let topology = Topology::new(&prefix, PARTITIONS);
        let reports_dir = tempfile::tempdir().expect("reports dir");
        std::fs::write(reports_dir.path().join(format!("{REPORT}.sql")), REPORT_SQL)
            .expect("write report");
        std::fs::write(
            reports_dir.path().join("broken_report.sql"),
            "SELECT merchant_id, ROW_NUMBER() OVER () FROM orders",
        )
        .expect("write broken report");
        let state_dir = tempfile::tempdir().expect("state dir");
        let cancel = tokio_util::sync::CancellationToken::new();
        let conn = mdp_amqp::connect(AMQP_URL, "window-compute-test", &cancel)
            .await
            .expect("connect");
        let ch = conn.create_channel().await.expect("channel");
        topology.declare(&ch).await.expect("declare");
        let publisher = Publisher::new(&conn)
            .await
            .expect("publisher")
            .with_mandatory(true);
        TestEnv {
            prefix,
            topology,
            reports_dir,
            state_dir,
            conn,
            publisher,
        }
    }

    /// The environment variables configuring the service for this environment.
    pub fn settings_env(&self, state_dir: &Path) -> Vec<(String, String)> {
        [
            ("MDP__RABBITMQ__URL", AMQP_URL.to_string()),
            ("MDP__RABBITMQ__PREFIX", self.prefix.clone()),
            ("MDP__RABBITMQ__PREFETCH", "16".to_string()),
            ("MDP__RABBITMQ__MAX_MESSAGE_BYTES", "100000".to_string()),
            ("MDP__PARTITIONING__PARTITIONS", PARTITIONS.to_string()),
            (
                "MDP__REPORTS__DIR",
                self.reports_dir.path().display().to_string(),
            ),
            (
                "MDP__WINDOW_COMPUTE__STATE_DIR",
                state_dir.display().to_string(),
            ),
            ("MDP__WINDOW_COMPUTE__LISTEN", "127.0.0.1:0".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn settings(&self, state_dir: &Path) -> Settings {
        Settings::load_from(None, self.settings_env(state_dir)).expect("settings")
    }

    /// Starts the service binary as a child process (logs off unless `TEST_LOG`).
    pub fn spawn_process(&self) -> std::process::Child {
        let quiet = std::env::var("TEST_LOG").is_err();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mdp-window-compute"));
        cmd.env_remove("MDP_CONFIG")
            .envs(self.settings_env(self.state_dir.path()))
            .env("MDP__TELEMETRY__LOG_FORMAT", "pretty");
        if quiet {
            cmd.env("RUST_LOG", "off")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
        }
        cmd.spawn().expect("start the service binary")
    }

    /// Starts the service in-process on the environment's state directory.
    pub async fn spawn_app(&self) -> TestApp {
        self.spawn_app_on(self.state_dir.path()).await
    }

    pub async fn spawn_app_on(&self, state_dir: &Path) -> TestApp {
        let settings = self.settings(state_dir);
        let mut options = ComputeOptions::from_settings(&settings);
        let fast = Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(100),
        };
        options.engine_backoff = fast;
        options.state_backoff = fast;
        options.reconnect_backoff = fast;
        options.engine_max_attempts = 3;
        let app = Application::build_with(settings, options)
            .await
            .expect("build");
        let port = app.port();
        let ctx = app.context().clone();
        let handle = actix_rt::spawn(async move { app.run().await });
        let app = TestApp {
            address: format!("http://127.0.0.1:{port}"),
            ctx,
            handle: Some(handle),
            http: reqwest::Client::new(),
        };
        app.wait_ready().await;
        app
    }

    pub async fn publish_window(&self, window: &Window) {
        self.publisher
            .publish_json(
                &self.topology.windows_exchange(),
                &Topology::routing_key(window.partition),
                window,
                Some(&format!("{}:{}", window.partition, window.id)),
            )
            .await
            .expect("publish window");
    }

    pub async fn publish_raw(&self, partition: u32, body: Vec<u8>) {
        self.publisher
            .publish_bytes(
                &self.topology.windows_exchange(),
                &Topology::routing_key(partition),
                body,
                Some("garbage"),
            )
            .await
            .expect("publish raw");
    }

    /// A consumer of the results queue of `partition`.
    pub async fn results(&self, partition: u32) -> Inbox {
        let queue = self.topology.results_queue(partition);
        let (channel, consumer) = mdp_amqp::consumer(
            &self.conn,
            &queue,
            &format!("test-results-{partition}"),
            100,
        )
        .await
        .expect("consume results");
        Inbox { channel, consumer }
    }

    /// A consumer of the windows dead-letter queue.
    pub async fn dead_letters(&self) -> Inbox {
        let queue = self.topology.dead_letter_queue(Stage::Windows);
        let (channel, consumer) = mdp_amqp::consumer(&self.conn, &queue, "test-dlq", 100)
            .await
            .expect("consume dlq");
        Inbox { channel, consumer }
    }

    pub fn state_file(&self, partition: u32) -> PathBuf {
        self.state_dir
            .path()
            .join(format!("partition-{partition}.sqlite"))
    }

    /// Deletes every queue and exchange of the environment.
    pub async fn cleanup(self) {
        let ch = self.conn.create_channel().await.expect("channel");
        for q in self.topology.queues() {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for (x, _) in self.topology.exchanges() {
            let _ = ch
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.conn.close(200, "test done".into()).await;
    }
}

/// A running service instance.
pub struct TestApp {
    pub address: String,
    pub ctx: mdp_service::ServiceContext,
    handle: Option<actix_rt::task::JoinHandle<std::io::Result<()>>>,
    pub http: reqwest::Client,
}

impl TestApp {
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.expect("json body")
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self
                .http
                .get(format!("{}/readyz", self.address))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "service not ready in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the instance and waits until its consumers and connection are closed.
    pub async fn stop(mut self) {
        self.ctx.cancel.cancel();
        if let Some(handle) = self.handle.take() {
            let result = tokio::time::timeout(Duration::from_secs(20), handle).await;
            let joined = result
                .expect("service stops in time")
                .expect("service task");
            joined.expect("service ran cleanly");
        }
    }
}

/// Messages of one queue.
pub struct Inbox {
    channel: lapin::Channel,
    consumer: lapin::Consumer,
}

/// A received message.
pub struct Received {
    pub body: Vec<u8>,
    pub message_id: Option<String>,
    pub traceparent: Option<String>,
}

impl Inbox {
    /// Closes the consumer's channel (before the connection is closed).
    pub async fn close(self) {
        let _ = self.channel.close(200, "test done".into()).await;
    }

    pub async fn next(&mut self, within: Duration) -> Option<Received> {
        let delivery = tokio::time::timeout(within, self.consumer.next())
            .await
            .ok()??
            .ok()?;
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
        Some(Received {
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string()),
            traceparent: mdp_amqp::traceparent(&delivery).map(str::to_string),
            body: delivery.data,
        })
    }

    pub async fn next_batch(&mut self, within: Duration) -> (ResultBatch, Received) {
        let msg = self.next(within).await.expect("a result batch arrives");
        let batch: ResultBatch = serde_json::from_slice(&msg.body).expect("result batch JSON");
        (batch, msg)
    }
}

/// A merchant that hashes to `partition`.
pub fn merchant_in(partition: u32) -> i64 {
    (1..10_000)
        .find(|m: &i64| partition_of(&TenantId(m.to_string()), PARTITIONS) == partition)
        .expect("some merchant hashes to the partition")
}

fn at(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("datetime")
}

/// An `orders` row image.
pub fn order(id: i64, merchant: i64, created_at: &str, amount: i64) -> Row {
    [
        ("id".to_string(), Value::I(id)),
        ("merchant_id".to_string(), Value::I(merchant)),
        ("created_at".to_string(), Value::Dt(at(created_at))),
        ("amount".to_string(), Value::I(amount)),
    ]
    .into_iter()
    .collect()
}

/// Builds the change events of a window with increasing positions.
pub struct Changes {
    partition: u32,
    seq: u64,
    events: Vec<ChangeEvent>,
}

impl Changes {
    pub fn new(partition: u32, seq_start: u64) -> Self {
        Changes {
            partition,
            seq: seq_start,
            events: Vec::new(),
        }
    }

    fn push(&mut self, op: Op, before: Option<Row>, after: Option<Row>) -> &mut Self {
        self.seq += 1;
        let image = after.as_ref().or(before.as_ref()).expect("an image");
        let merchant = image.get("merchant_id").cloned().unwrap_or(Value::Null);
        let id = image.get("id").cloned().unwrap_or(Value::Null);
        let position = Position {
            file: "binlog.000001".into(),
            offset: 1000 + self.seq * 100,
            row: 0,
            snapshot: false,
        };
        self.events.push(ChangeEvent {
            id: EventId::from_position("shop", &position),
            source: "shop".into(),
            table: "orders".into(),
            op,
            tenant: TenantId::from_value(&merchant).expect("tenant"),
            partition: self.partition,
            pk: vec![id],
            before,
            after,
            commit_ts_ms: 1_700_000_000_000 + self.seq as i64 * 1000,
            position,
            captured_at_ms: 1_700_000_000_500 + self.seq as i64 * 1000,
        });
        self
    }

    pub fn insert(&mut self, row: Row) -> &mut Self {
        self.push(Op::Insert, None, Some(row))
    }

    pub fn update(&mut self, before: Row, after: Row) -> &mut Self {
        self.push(Op::Update, Some(before), Some(after))
    }

    pub fn delete(&mut self, row: Row) -> &mut Self {
        self.push(Op::Delete, Some(row), None)
    }

    pub fn window(&mut self, id: u64) -> Window {
        let changes = std::mem::take(&mut self.events);
        Window {
            partition: self.partition,
            id,
            first_seq: id * 100,
            last_seq: id * 100 + changes.len() as u64,
            opened_at_ms: 1_700_000_000_000,
            sealed_at_ms: 1_700_000_001_000,
            changes,
        }
    }
}

/// Rows of a batch as comparable JSON: `[key..., values..., deleted, tenant, day]`
/// sorted by key.
pub fn rows_json(batch: &ResultBatch) -> Vec<serde_json::Value> {
    let mut rows: Vec<_> = batch
        .rows
        .iter()
        .map(|r| {
            assert_eq!(r.report, REPORT);
            serde_json::json!({
                "key": r.key.iter().map(Value::to_json).collect::<Vec<_>>(),
                "values": r.values.iter().map(Value::to_json).collect::<Vec<_>>(),
                "deleted": r.deleted,
                "tenant": r.tenant,
                "day": r.day,
            })
        })
        .collect();
    rows.sort_by_key(|r| r["key"].to_string());
    rows
}

/// The expected JSON of one live row.
pub fn live(merchant: i64, day: &str, orders: i64, gmv: i64) -> serde_json::Value {
    serde_json::json!({
        "key": [merchant, day],
        "values": [merchant, day, orders, gmv],
        "deleted": false,
        "tenant": merchant.to_string(),
        "day": day,
    })
}

/// The expected JSON of a deleted row.
pub fn gone(merchant: i64, day: &str) -> serde_json::Value {
    serde_json::json!({
        "key": [merchant, day],
        "values": [],
        "deleted": true,
        "tenant": merchant.to_string(),
        "day": day,
    })
}

/// Sorts expected rows like [`rows_json`].
pub fn sorted(mut rows: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    rows.sort_by_key(|r| r["key"].to_string());
    rows
}

/// Polls the metrics page until `line` appears.
pub async fn wait_metric(app: &TestApp, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = app
            .http
            .get(format!("{}/metrics", app.address))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        if text.contains(needle) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metric {needle} missing:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl TestEnv {
    /// Publishes a window as a child of the remote span `traceparent`.
    pub async fn publish_window_traced(&self, window: &Window, traceparent: &str) {
        let body = serde_json::to_vec(window).expect("window JSON");
        let message_id = format!("{}:{}", window.partition, window.id);
        let routing_key = Topology::routing_key(window.partition);
        self.publisher
            .publish(mdp_amqp::OutgoingMessage {
                exchange: &self.topology.windows_exchange(),
                routing_key: &routing_key,
                body,
                message_id: Some(&message_id),
                traceparent: Some(traceparent.to_string()),
                mandatory: true,
            })
            .await
            .expect("publish traced window");
    }
}

impl TestEnv {
    /// Publishes a window; `false` when the broker could not route it.
    pub async fn try_publish_window(&self, window: &Window) -> bool {
        self.publisher
            .publish_json(
                &self.topology.windows_exchange(),
                &Topology::routing_key(window.partition),
                window,
                Some(&format!("{}:{}", window.partition, window.id)),
            )
            .await
            .is_ok()
    }
}

/// Polls `/v1/status` until `check` accepts it.
pub async fn wait_status(
    app: &TestApp,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = app.get_json("/v1/status").await;
        if check(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never matched: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The entry of `partition` in a `GET /v1/partitions` answer.
pub fn partition_entry(body: &serde_json::Value, partition: u32) -> Option<serde_json::Value> {
    body["partitions"]
        .as_array()?
        .iter()
        .find(|p| p["partition"] == partition)
        .cloned()
}
