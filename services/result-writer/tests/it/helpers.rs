//! Test scaffolding: an isolated writer (random AMQP prefix, MySQL database
//! and Redis key prefix), a publisher, and a TCP proxy that can take a
//! dependency down and up again.

use mdp_amqp::{Publisher, Topology};
use mdp_result_writer::Application;
use mdp_types::{ResultBatch, ResultRow, Value};
use rand::Rng;
use sqlx::{Connection, MySqlConnection};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const MYSQL_SERVER: &str = "mysql://root@127.0.0.1:3306";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A report across merchants: its groups gather rows of every partition.
pub const BY_STATUS_SQL: &str = "SELECT status, COUNT(*) AS orders, SUM(amount) AS gmv, \
     COUNT(DISTINCT merchant_id) AS merchants, MAX(amount) AS largest FROM orders GROUP BY status";

pub const DAILY_SQL: &str = "SELECT merchant_id, DATE(created_at) AS day, COUNT(*) AS orders, \
     SUM(amount) AS gmv FROM orders GROUP BY merchant_id, DATE(created_at)";

pub fn init_logs() {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber_init();
    }
}

fn tracing_subscriber_init() -> Option<()> {
    let settings = mdp_config::Settings::load_from(None, Vec::new()).ok()?;
    let mut t = settings.telemetry.clone();
    t.log_format = "pretty".into();
    t.log_filter = "info,mdp_result_writer=debug".into();
    std::mem::forget(mdp_telemetry::init_telemetry("result-writer-test", &t));
    Some(())
}

pub fn random_name(prefix: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("{prefix}_{:012x}", n & 0xffff_ffff_ffff)
}

/// Where the writer under test finds its dependencies.
pub struct TestEnv {
    pub prefix: String,
    pub database: String,
    pub partitions: u32,
    pub reports_dir: tempfile::TempDir,
    pub mysql_url: String,
    pub redis_url: String,
}

impl TestEnv {
    pub fn new(partitions: u32) -> Self {
        init_logs();
        let reports_dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(reports_dir.path().join("daily.sql"), DAILY_SQL).expect("write report");
        std::fs::write(reports_dir.path().join("by_status.sql"), BY_STATUS_SQL)
            .expect("write report");
        let database = random_name("mdp_it_writer");
        TestEnv {
            prefix: random_name("itw"),
            mysql_url: format!("{MYSQL_SERVER}/{database}"),
            database,
            partitions,
            reports_dir,
            redis_url: REDIS_URL.to_string(),
        }
    }

    pub fn settings(&self) -> mdp_config::Settings {
        let env = vec![
            ("MDP__RABBITMQ__PREFIX", self.prefix.clone()),
            ("MDP__RABBITMQ__URL", AMQP_URL.to_string()),
            ("MDP__PARTITIONING__PARTITIONS", self.partitions.to_string()),
            ("MDP__RESULTS__URL", self.mysql_url.clone()),
            ("MDP__REDIS__URL", self.redis_url.clone()),
            ("MDP__REDIS__KEY_PREFIX", self.prefix.clone()),
            (
                "MDP__REPORTS__DIR",
                self.reports_dir.path().display().to_string(),
            ),
            ("MDP__RESULT_WRITER__LISTEN", "127.0.0.1:0".to_string()),
        ];
        mdp_config::Settings::load_from(None, env.into_iter().map(|(k, v)| (k.to_string(), v)))
            .expect("settings")
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.prefix, self.partitions)
    }

    /// Starts the writer in-process; returns its port and context.
    pub async fn spawn_writer(&self) -> (u16, mdp_service::ServiceContext) {
        let app = Application::build(self.settings())
            .await
            .expect("build writer");
        let port = app.port();
        let ctx = app.context().clone();
        actix_web::rt::spawn(app.run());
        (port, ctx)
    }

    /// A pool on the test database (direct, not through any proxy).
    pub fn mysql(&self) -> sqlx::MySqlPool {
        sqlx::MySqlPool::connect_lazy(&format!("{MYSQL_SERVER}/{}", self.database))
            .expect("mysql url")
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(REDIS_URL)
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connect")
    }

    /// Drops the database, the Redis keys and the AMQP objects.
    pub async fn cleanup(&self) {
        if let Ok(mut conn) = MySqlConnection::connect(MYSQL_SERVER).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS `{}`",
                self.database
            )))
            .execute(&mut conn)
            .await;
        }
        let mut r = self.redis().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut r)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut r).await;
        }
        let cancel = CancellationToken::new();
        if let Ok(conn) = mdp_amqp::connect(AMQP_URL, "it-cleanup", &cancel).await {
            if let Ok(ch) = conn.create_channel().await {
                let t = self.topology();
                for q in t.queues() {
                    let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
                }
                for (x, _) in t.exchanges() {
                    let _ = ch
                        .exchange_delete(x.as_str().into(), Default::default())
                        .await;
                }
            }
            let _ = conn.close(200, "done".into()).await;
        }
    }
}

/// A publisher on a fresh connection, with the topology declared.
pub struct TestPublisher {
    pub conn: lapin::Connection,
    pub publisher: Publisher,
    pub topology: Topology,
}

impl TestPublisher {
    pub async fn new(topology: Topology) -> Self {
        let cancel = CancellationToken::new();
        let conn = mdp_amqp::connect(AMQP_URL, "it-publisher", &cancel)
            .await
            .expect("amqp connect");
        let ch = conn.create_channel().await.expect("channel");
        topology.declare(&ch).await.expect("declare");
        let publisher = Publisher::new(&conn).await.expect("publisher");
        TestPublisher {
            conn,
            publisher,
            topology,
        }
    }

    /// Starts receiving the change notices result-writer publishes.
    pub async fn notices(&self) -> Notices {
        let (channel, consumer) =
            mdp_amqp::fanout_consumer(&self.conn, &self.topology.notices_exchange(), "it-notices")
                .await
                .expect("notices consumer");
        Notices {
            _channel: channel,
            consumer,
        }
    }

    pub async fn batch(&self, batch: &ResultBatch) {
        self.publisher
            .publish_json(
                &self.topology.results_exchange(),
                &Topology::routing_key(batch.partition),
                batch,
                Some(&format!("{}:{}", batch.partition, batch.window_id)),
            )
            .await
            .expect("publish batch");
    }

    pub async fn raw(&self, partition: u32, body: &[u8]) {
        self.publisher
            .publish_bytes(
                &self.topology.results_exchange(),
                &Topology::routing_key(partition),
                body.to_vec(),
                None,
            )
            .await
            .expect("publish raw");
    }

    /// Messages waiting in a queue.
    pub async fn queue_len(&self, queue: &str) -> u32 {
        let ch = self.conn.create_channel().await.expect("channel");
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .expect("passive declare");
        let _ = ch.close(200, "done".into()).await;
        q.message_count()
    }
}

pub fn date(s: &str) -> Value {
    Value::Date(s.parse().expect("date"))
}

pub fn dec(s: &str) -> Value {
    Value::D(s.parse().expect("decimal"))
}

/// A row of the `daily` report.
pub fn daily(merchant: i64, day: &str, orders: i64, gmv: Value) -> ResultRow {
    ResultRow {
        report: "daily".into(),
        key: vec![Value::I(merchant), date(day)],
        values: vec![Value::I(merchant), date(day), Value::I(orders), gmv],
        deleted: false,
        tenant: Some(merchant.to_string()),
        day: Some(day.to_string()),
    }
}

/// The deletion of a row of the `daily` report.
pub fn daily_deleted(merchant: i64, day: &str) -> ResultRow {
    ResultRow {
        report: "daily".into(),
        key: vec![Value::I(merchant), date(day)],
        values: vec![],
        deleted: true,
        tenant: Some(merchant.to_string()),
        day: Some(day.to_string()),
    }
}

pub fn batch(partition: u32, window_id: u64, rows: Vec<ResultRow>) -> ResultBatch {
    ResultBatch {
        partition,
        window_id,
        first_window_id: window_id,
        computed_at_ms: mdp_types::now_ms(),
        max_commit_ts_ms: 1_700_000_000_000 + window_id as i64,
        min_captured_at_ms: mdp_types::now_ms() - 100,
        rows,
        partials: Vec::new(),
    }
}

/// Polls `check` until it returns `Some` or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Applied window of a partition in MySQL (`None` before the table exists).
pub async fn applied_window(pool: &sqlx::MySqlPool, partition: u32) -> Option<i64> {
    sqlx::query_scalar("SELECT window_id FROM mdp_applied WHERE `partition` = ?")
        .bind(partition as i64)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
}

/// Waits until `partition` has applied `window`.
pub async fn wait_applied(pool: &sqlx::MySqlPool, partition: u32, window: i64) {
    eventually(
        &format!("partition {partition} at window {window}"),
        Duration::from_secs(30),
        || async move { (applied_window(pool, partition).await? == window).then_some(()) },
    )
    .await;
}

/// A TCP proxy in front of a dependency; `down()` cuts every connection and
/// refuses new ones until `up()`.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let upstream = upstream.to_string();
        let accept = {
            let up = up.clone();
            let conns = conns.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns.lock().expect("lock").push(task);
                }
            })
        };
        Proxy {
            port,
            up,
            conns,
            accept,
        }
    }

    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.conns.lock().expect("lock").drain(..) {
            task.abort();
        }
    }

    pub fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.down();
    }
}

/// Change notices received on a private queue.
pub struct Notices {
    _channel: mdp_amqp::lapin::Channel,
    consumer: mdp_amqp::lapin::Consumer,
}

impl Notices {
    /// The (report, tenant) pairs of every notice received until none has
    /// arrived for `quiet`.
    pub async fn changed(
        &mut self,
        quiet: Duration,
    ) -> std::collections::BTreeSet<(String, Option<String>)> {
        use futures::StreamExt;
        let mut out = std::collections::BTreeSet::new();
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout(quiet, self.consumer.next()).await {
            let notice: mdp_types::ResultNotice =
                serde_json::from_slice(&delivery.data).expect("notice json");
            out.extend(notice.changed.into_iter().map(|c| (c.report, c.tenant)));
            mdp_amqp::ack(&delivery).await.expect("ack notice");
        }
        out
    }
}
