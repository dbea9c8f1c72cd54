//! Test fixtures: a fresh source database on the binlog MariaDB
//! (`scripts/source-db.sh`), a random AMQP prefix on the local RabbitMQ, an
//! in-process ingest, a switchable TCP proxy to simulate broker outages.

use futures::{FutureExt, StreamExt};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, ShortString};
use mdp_amqp::{Stage, Topology};
use mdp_config::Settings;
use mdp_types::{ChangeBatch, ChangeEvent};
use mysql_async::prelude::Queryable;
use rand::Rng;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const PARTITIONS: u32 = 4;

fn source_port() -> u16 {
    std::env::var("MDP_SOURCE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3307)
}

/// Starts the binlog MariaDB once per test process (idempotent script).
pub fn ensure_source_db() {
    static START: Once = Once::new();
    START.call_once(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/source-db.sh");
        let status = std::process::Command::new("bash")
            .arg(&script)
            .arg("start")
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => panic!("`{} start` failed: {other:?}", script.display()),
        }
    });
}

/// Turns logs on with `TEST_LOG=1`; always installs the tracing layer so
/// spans carry trace ids (and messages a `traceparent`).
pub fn init_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let settings =
            Settings::load_from(None, Vec::<(String, String)>::new()).expect("defaults load");
        let mut telemetry = settings.telemetry.clone();
        telemetry.log_filter = if std::env::var("TEST_LOG").is_ok() {
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,mdp_ingest=debug".into())
        } else {
            "off".into()
        };
        telemetry.log_format = "pretty".into();
        std::mem::forget(mdp_telemetry::init_telemetry("ingest-it", &telemetry));
    });
}

pub fn random_suffix() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// A fresh database on the source server, dropped by [`TestSource::drop_database`].
pub struct TestSource {
    pub db: String,
    pool: mysql_async::Pool,
}

impl TestSource {
    pub async fn create() -> Self {
        ensure_source_db();
        let db = format!("mdp_it_{}", random_suffix());
        let url = format!("mysql://root@127.0.0.1:{}", source_port());
        let opts = mysql_async::Opts::from_url(&url).expect("source url");
        let pool = mysql_async::Pool::new(opts);
        let mut conn = pool.get_conn().await.expect("source connection");
        conn.query_drop(format!("CREATE DATABASE `{db}`"))
            .await
            .expect("create database");
        TestSource { db, pool }
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/{}", source_port(), self.db)
    }

    /// Runs statements (`;`-separated is not supported: one call per statement
    /// or a list) in the test database with a UTC session.
    pub async fn exec(&self, statements: &[&str]) {
        let mut conn = self.pool.get_conn().await.expect("source connection");
        conn.query_drop(format!("USE `{}`", self.db))
            .await
            .expect("use database");
        conn.query_drop("SET time_zone = '+00:00'")
            .await
            .expect("time zone");
        for s in statements {
            conn.query_drop(*s)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }

    /// The source's current end of binlog (file, position).
    pub async fn master_status(&self) -> (String, u64) {
        let mut conn = self.pool.get_conn().await.expect("source connection");
        let row: Option<mysql_async::Row> = conn
            .query_first("SHOW MASTER STATUS")
            .await
            .expect("master status");
        let row = row.expect("binlog enabled");
        (row.get(0).expect("file"), row.get(1).expect("position"))
    }

    /// Kills the binlog dump sessions of replicas registered with `server_id`.
    pub async fn kill_dump_threads(&self) -> usize {
        let mut conn = self.pool.get_conn().await.expect("source connection");
        let ids: Vec<u64> = conn
            .query(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
            )
            .await
            .expect("processlist");
        for id in &ids {
            let _ = conn.query_drop(format!("KILL {id}")).await;
        }
        ids.len()
    }

    pub async fn drop_database(self) {
        let mut conn = self.pool.get_conn().await.expect("source connection");
        conn.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.db))
            .await
            .expect("drop database");
        drop(conn);
        let _ = self.pool.disconnect().await;
    }
}

/// Settings for one ingest instance of a test.
pub fn settings(
    source: &TestSource,
    prefix: &str,
    amqp_url: &str,
    data_dir: &std::path::Path,
) -> Settings {
    let server_id: u32 = rand::rng().random_range(100_000..1_000_000_000);
    let env = vec![
        ("MDP__SOURCE__URL".to_string(), source.url()),
        (
            "MDP__SOURCE__TABLES".to_string(),
            "merchants,orders,order_items".to_string(),
        ),
        ("MDP__SOURCE__SERVER_ID".to_string(), server_id.to_string()),
        (
            "MDP__PARTITIONING__PARTITIONS".to_string(),
            PARTITIONS.to_string(),
        ),
        ("MDP__RABBITMQ__URL".to_string(), amqp_url.to_string()),
        ("MDP__RABBITMQ__PREFIX".to_string(), prefix.to_string()),
        ("MDP__INGEST__LISTEN".to_string(), "127.0.0.1:0".to_string()),
        (
            "MDP__INGEST__DATA_DIR".to_string(),
            data_dir.display().to_string(),
        ),
        ("MDP__INGEST__BATCH_MAX_MS".to_string(), "20".to_string()),
    ];
    Settings::load_from(None, env).expect("test settings")
}

/// An ingest running in the test's actix system.
pub struct RunningApp {
    pub port: u16,
    pub cancel: CancellationToken,
    handle: JoinHandle<Result<(), mdp_ingest::startup::StartupError>>,
}

impl RunningApp {
    pub async fn spawn(settings: Settings) -> Self {
        init_logs();
        let app = mdp_ingest::Application::build(settings)
            .await
            .expect("ingest builds");
        let port = app.port();
        let cancel = app.cancel_token();
        let handle = actix_web::rt::spawn(app.run());
        RunningApp {
            port,
            cancel,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        reqwest::get(self.url(path))
            .await
            .expect("http get")
            .json()
            .await
            .expect("json body")
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let r = tokio::time::timeout(Duration::from_secs(20), self.handle).await;
        assert!(
            matches!(r, Ok(Ok(Ok(())))),
            "ingest did not stop cleanly: {r:?}"
        );
    }
}

/// One received change batch.
#[derive(Debug, Clone)]
pub struct Received {
    pub queue_partition: u32,
    pub batch: ChangeBatch,
    pub message_id: Option<String>,
    pub traceparent: Option<String>,
}

/// The test's view of RabbitMQ: pulls from the changes queues and the changes DLQ.
pub struct Broker {
    _conn: lapin::Connection,
    ch: lapin::Channel,
    /// (partition, consumer) of every changes queue; `None` is the changes DLQ.
    consumers: Vec<(Option<u32>, lapin::Channel, lapin::Consumer)>,
    pub topology: Topology,
    /// Everything received so far, in arrival order per queue.
    pub received: Vec<Received>,
    pub dead_letters: Vec<ChangeBatch>,
}

impl Broker {
    pub async fn connect(prefix: &str) -> Self {
        let cancel = CancellationToken::new();
        let conn = mdp_amqp::connect(AMQP_URL, "ingest-it", &cancel)
            .await
            .expect("amqp");
        let ch = conn.create_channel().await.expect("channel");
        let topology = Topology::new(prefix, PARTITIONS);
        // Declared up front so nothing published before ingest's own declare is lost.
        topology.declare(&ch).await.expect("declare topology");
        let mut consumers = Vec::new();
        for p in 0..PARTITIONS {
            let (c, consumer) =
                mdp_amqp::consumer(&conn, &topology.changes_queue(p), &format!("it-{p}"), 100)
                    .await
                    .expect("consumer");
            consumers.push((Some(p), c, consumer));
        }
        let (c, consumer) = mdp_amqp::consumer(
            &conn,
            &topology.dead_letter_queue(Stage::Changes),
            "it-dlq",
            100,
        )
        .await
        .expect("consumer");
        consumers.push((None, c, consumer));
        Broker {
            _conn: conn,
            ch,
            consumers,
            topology,
            received: Vec::new(),
            dead_letters: Vec::new(),
        }
    }

    /// Takes every message delivered so far (acknowledging it).
    pub async fn drain(&mut self) {
        let mut deliveries = Vec::new();
        for (p, _, consumer) in self.consumers.iter_mut() {
            while let Ok(Some(Ok(d))) =
                tokio::time::timeout(Duration::from_millis(5), consumer.next()).await
            {
                mdp_amqp::ack(&d).await.expect("ack");
                deliveries.push((*p, d));
            }
        }
        for (p, d) in deliveries {
            let Some(p) = p else {
                self.dead_letters
                    .push(serde_json::from_slice(&d.data).expect("dead letter json"));
                continue;
            };
            {
                let batch: ChangeBatch =
                    serde_json::from_slice(&d.data).expect("change batch json");
                let message_id = d.properties.message_id().as_ref().map(|s| s.to_string());
                let traceparent = d.properties.headers().as_ref().and_then(|h| {
                    h.inner()
                        .iter()
                        .find(|(k, _)| k.as_str() == "traceparent")
                        .and_then(|(_, v)| match v {
                            AMQPValue::LongString(s) => Some(s.to_string()),
                            AMQPValue::ShortString(s) => Some(s.to_string()),
                            _ => None,
                        })
                });
                self.received.push(Received {
                    queue_partition: p,
                    batch,
                    message_id,
                    traceparent,
                });
            }
        }
    }

    /// All events received so far, in arrival order.
    pub fn events(&self) -> Vec<ChangeEvent> {
        self.received
            .iter()
            .flat_map(|r| r.batch.events.iter().cloned())
            .collect()
    }

    /// Drains until `done` holds for the events received so far, or panics after `timeout`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Broker) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            self.drain().await;
            if done(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; received: {:#?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deletes every queue and exchange of the prefix.
    pub async fn cleanup(self) {
        for (_, c, _) in &self.consumers {
            let _ = c.close(200, "test done".into()).await;
        }
        for q in self.topology.queues() {
            let _ = self
                .ch
                .queue_delete(
                    ShortString::try_new(q).expect("name"),
                    QueueDeleteOptions::default(),
                )
                .await;
        }
        for (x, _) in self.topology.exchanges() {
            let _ = self
                .ch
                .exchange_delete(
                    ShortString::try_new(x).expect("name"),
                    ExchangeDeleteOptions::default(),
                )
                .await;
        }
        let _ = self._conn.close(200, "test done".into()).await;
    }
}

/// A TCP proxy in front of RabbitMQ that can be switched off (closing every
/// connection through it) and on again on the same port.
pub struct Proxy {
    pub port: u16,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        let port = probe.local_addr().expect("addr").port();
        drop(probe);
        let proxy = Proxy {
            port,
            target,
            tasks: Arc::default(),
        };
        proxy.up().await;
        proxy
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub async fn up(&self) {
        // The listener of an earlier `up` is closed asynchronously after `down`.
        let mut attempts = 0;
        let listener = loop {
            let socket = TcpSocket::new_v4().expect("socket");
            socket.set_reuseaddr(true).expect("reuseaddr");
            let bound = socket
                .bind(SocketAddr::from(([127, 0, 0, 1], self.port)))
                .and_then(|()| socket.listen(64));
            match bound {
                Ok(l) => break l,
                Err(e) if attempts < 100 => {
                    attempts += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("proxy cannot listen on {}: {e}", self.port),
            }
        };
        let target = self.target;
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                            .map(|_| ())
                            .await;
                    }
                });
                tasks.lock().expect("tasks").push(conn);
            }
        });
        self.tasks.lock().expect("tasks").push(accept);
    }

    pub fn down(&self) {
        for t in self.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
    }
}
