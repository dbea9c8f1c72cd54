//! `spawn_app()`: admin in-process with its own AMQP prefix, plus the test's
//! own link to publish heartbeats and listen for control commands.

use futures::StreamExt;
use mdp_admin::Application;
use mdp_amqp::lapin::{Channel, Connection, Consumer};
use mdp_amqp::{Publisher, Topology};
use mdp_config::Settings;
use mdp_types::{DegradeStatus, Heartbeat, ServiceHealth};
use rand::Rng;
use std::sync::Once;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Heartbeat timeout used by the tests, ms.
pub const TIMEOUT_MS: u64 = 1500;

pub struct TestApp {
    pub address: String,
    pub settings: Settings,
    pub cancel: CancellationToken,
    pub client: reqwest::Client,
    pub conn: Connection,
    pub publisher: Publisher,
    pub topology: Topology,
    /// The task running `Application::run`.
    pub running: tokio::task::JoinHandle<std::io::Result<()>>,
    guard: BrokerGuard,
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
        }
    });
}

pub fn settings() -> Settings {
    settings_with(&[])
}

/// Test settings with `extra` `MDP__…` variables.
pub fn settings_with(extra: &[(&str, &str)]) -> Settings {
    let prefix = format!("test-admin-{:08x}", rand::rng().random::<u32>());
    let mut env = vec![
        ("MDP__RABBITMQ__PREFIX".to_string(), prefix),
        ("MDP__ADMIN__LISTEN".to_string(), "127.0.0.1:0".to_string()),
        (
            "MDP__ADMIN__HEARTBEAT_TIMEOUT_MS".to_string(),
            TIMEOUT_MS.to_string(),
        ),
    ];
    if let Ok(url) = std::env::var("MDP__RABBITMQ__URL") {
        env.push(("MDP__RABBITMQ__URL".to_string(), url));
    }
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::load_from(None, env).unwrap_or_else(|e| panic!("test settings: {e}"))
}

/// Starts admin and waits until its bus is connected (`/readyz` 200).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// [`spawn_app`] with `extra` `MDP__…` variables.
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    init_logs();
    let settings = settings_with(extra);
    // Admin declares the exchanges; delete them even if the test fails.
    let guard = BrokerGuard::new(
        settings.rabbitmq.url.expose(),
        &Topology::from_settings(&settings),
    );
    let app = Application::build(settings.clone())
        .await
        .unwrap_or_else(|e| panic!("admin build: {e}"));
    let address = format!("http://127.0.0.1:{}", app.port());
    let cancel = app.cancel_token();
    let running = actix_rt::spawn(app.run());

    let client = reqwest::Client::new();
    let ready = poll(Duration::from_secs(20), || async {
        let r = client.get(format!("{address}/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "admin not ready within 20 s");

    let link_cancel = CancellationToken::new();
    let conn = mdp_amqp::connect(settings.rabbitmq.url.expose(), "admin test", &link_cancel)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let publisher = Publisher::new(&conn)
        .await
        .unwrap_or_else(|e| panic!("publisher: {e}"));
    let topology = Topology::from_settings(&settings);
    TestApp {
        address,
        settings,
        cancel,
        client,
        conn,
        publisher,
        topology,
        running,
        guard,
    }
}

impl TestApp {
    /// Declares the whole pipeline topology of the test prefix (as the
    /// services do); it is deleted by [`TestApp::cleanup`] or the guard.
    pub async fn declare_topology(&mut self) {
        self.guard.add_topology(&self.topology);
        let ch = self
            .conn
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("channel: {e}"));
        self.topology
            .declare(&ch)
            .await
            .unwrap_or_else(|e| panic!("declare topology: {e}"));
        let _ = ch.close(200, "declared".into()).await;
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let resp = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json()
            .await
            .unwrap_or_else(|e| panic!("GET {path} body: {e}"))
    }

    /// POSTs to `path` without a body; returns the status and the JSON body.
    pub async fn post(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status().as_u16();
        let json = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    pub async fn post_degrade(
        &self,
        service: &str,
        machine: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let resp = self
            .client
            .post(format!("{}/v1/degrade/{service}/{machine}", self.address))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST: {e}"));
        let status = resp.status().as_u16();
        let json = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// Publishes `hb` as a test instance would.
    pub async fn send_heartbeat(&self, hb: &Heartbeat) {
        self.publisher
            .publish_json(&self.topology.heartbeats_exchange(), "", hb, None)
            .await
            .unwrap_or_else(|e| panic!("publish heartbeat: {e}"));
    }

    /// A private queue bound to the control exchange.
    pub async fn listen_control(&self) -> (Channel, Consumer) {
        mdp_amqp::fanout_consumer(
            &self.conn,
            &self.topology.control_exchange(),
            "test control listener",
        )
        .await
        .unwrap_or_else(|e| panic!("listen: {e}"))
    }

    /// Polls `/v1/status` until `check` holds; returns the last status.
    pub async fn status_until(
        &self,
        within: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let status = self.get_json("/v1/status").await;
            if check(&status) {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("status condition not met within {within:?}; last status: {status:#}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops admin, deletes the test exchanges and closes the test link
    /// (private queues go with it).
    pub async fn cleanup(mut self) {
        self.cancel.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(10), self.running).await;
        assert!(
            matches!(stopped, Ok(Ok(Ok(())))),
            "admin did not stop cleanly within 10 s: {stopped:?}"
        );
        // Give admin's actors a moment to close their links.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for name in &self.guard.queues {
            let deleted = self
                .publisher
                .channel()
                .queue_delete(name.as_str().into(), Default::default())
                .await;
            assert!(deleted.is_ok(), "delete {name}: {deleted:?}");
        }
        for name in &self.guard.exchanges {
            let deleted = self
                .publisher
                .channel()
                .exchange_delete(name.as_str().into(), Default::default())
                .await;
            assert!(deleted.is_ok(), "delete {name}: {deleted:?}");
        }
        self.guard.disarm();
        let _ = self.conn.close(200, "test done".into()).await;
    }
}

/// A heartbeat of a test instance.
pub fn test_heartbeat(service: &str, instance: &str, machines: Vec<DegradeStatus>) -> Heartbeat {
    let now = mdp_types::now_ms();
    Heartbeat {
        service: service.into(),
        instance: instance.into(),
        http_addr: "127.0.0.1:1".into(),
        started_at_ms: now - 60_000,
        sent_at_ms: now,
        health: ServiceHealth {
            live: true,
            ready: true,
            checks: Default::default(),
        },
        degrade: machines,
        stats: [("test_events_total".to_string(), 42.0)]
            .into_iter()
            .collect(),
        partitions: vec![0, 3],
    }
}

pub fn machine(name: &str, state: &str, since_ms: i64, reason: Option<&str>) -> DegradeStatus {
    DegradeStatus {
        machine: name.into(),
        state: state.into(),
        reason: reason.map(str::to_string),
        since_ms,
        forced: None,
        transitions_total: 0,
    }
}

/// Calls `f` until it returns `Some` or `within` passes.
pub async fn poll<T, F, Fut>(within: Duration, f: F) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next message on `consumer` decoded as `T`, within `within`.
pub async fn next_json<T: serde::de::DeserializeOwned>(
    consumer: &mut Consumer,
    within: Duration,
) -> T {
    let next = tokio::time::timeout(within, consumer.next())
        .await
        .unwrap_or_else(|_| panic!("no message within {within:?}"));
    let delivery = match next {
        Some(Ok(d)) => d,
        other => panic!("consumer ended: {other:?}"),
    };
    let _ = mdp_amqp::ack(&delivery).await;
    mdp_amqp::decode_json(&delivery, 1 << 20).unwrap_or_else(|e| panic!("decode: {e}"))
}

/// Deletes the test's queues and exchanges when dropped while still armed,
/// i.e. when a test panicked before its async clean-up ran. Uses its own
/// thread and runtime because `Drop` cannot await.
pub struct BrokerGuard {
    url: String,
    exchanges: Vec<String>,
    queues: Vec<String>,
    armed: bool,
}

impl BrokerGuard {
    /// Guards the two fanout exchanges admin declares.
    pub fn new(url: &str, topology: &Topology) -> Self {
        BrokerGuard {
            url: url.to_string(),
            exchanges: vec![
                topology.heartbeats_exchange(),
                topology.control_exchange(),
                topology.notices_exchange(),
            ],
            queues: Vec::new(),
            armed: true,
        }
    }

    /// Guards every exchange and queue of the pipeline topology as well.
    pub fn add_topology(&mut self, topology: &Topology) {
        self.exchanges = topology.exchanges().into_iter().map(|(n, _)| n).collect();
        self.queues = topology.queues();
    }

    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let url = std::mem::take(&mut self.url);
        let names = std::mem::take(&mut self.exchanges);
        let queues = std::mem::take(&mut self.queues);
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let cancel = CancellationToken::new();
                let connect = mdp_amqp::connect(&url, "test clean-up", &cancel);
                let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), connect).await
                else {
                    return;
                };
                if let Ok(ch) = conn.create_channel().await {
                    for name in queues {
                        let _ = ch
                            .queue_delete(name.as_str().into(), Default::default())
                            .await;
                    }
                    for name in names {
                        let _ = ch
                            .exchange_delete(name.as_str().into(), Default::default())
                            .await;
                    }
                }
                let _ = conn.close(200, "test clean-up".into()).await;
            });
        })
        .join();
    }
}
