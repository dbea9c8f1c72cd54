//! Shared set-up: settings with a random AMQP prefix, a test connection and
//! clean-up of the exchanges a test created.

use futures::StreamExt;
use mdp_amqp::lapin::{Channel, Connection, Consumer};
use mdp_amqp::{Publisher, Topology};
use mdp_config::Settings;
use rand::Rng;
use std::sync::Once;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Settings for one test: default config, a fresh `rabbitmq.prefix`, and
/// `MDP__RABBITMQ__URL` from the environment when set.
pub fn settings() -> Settings {
    init_logs();
    let prefix = format!("test-svc-{:08x}", rand::rng().random::<u32>());
    let mut env = vec![("MDP__RABBITMQ__PREFIX".to_string(), prefix)];
    if let Ok(url) = std::env::var("MDP__RABBITMQ__URL") {
        env.push(("MDP__RABBITMQ__URL".to_string(), url));
    }
    match Settings::load_from(None, env) {
        Ok(s) => s,
        Err(e) => panic!("test settings must load: {e}"),
    }
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
        }
    });
}

/// The test's own AMQP link: declares the fanout exchanges of `settings`.
pub struct Bus {
    pub conn: Connection,
    pub publisher: Publisher,
    pub topology: Topology,
    guard: ExchangeGuard,
}

impl Bus {
    pub async fn connect(settings: &Settings) -> Bus {
        let cancel = CancellationToken::new();
        let conn = tokio::time::timeout(
            Duration::from_secs(20),
            mdp_amqp::connect(settings.rabbitmq.url.expose(), "test bus", &cancel),
        )
        .await
        .unwrap_or_else(|_| panic!("RabbitMQ not reachable within 20 s"))
        .unwrap_or_else(|e| panic!("connect: {e}"));
        let publisher = Publisher::new(&conn)
            .await
            .unwrap_or_else(|e| panic!("publisher: {e}"));
        let topology = Topology::from_settings(settings);
        mdp_service::declare_fanout_exchanges(publisher.channel(), &topology)
            .await
            .unwrap_or_else(|e| panic!("declare: {e}"));
        let guard = ExchangeGuard::new(settings.rabbitmq.url.expose(), &topology);
        Bus {
            conn,
            publisher,
            topology,
            guard,
        }
    }

    /// A private queue bound to `exchange`.
    pub async fn listen(&self, exchange: &str) -> (Channel, Consumer) {
        mdp_amqp::fanout_consumer(&self.conn, exchange, "test listener")
            .await
            .unwrap_or_else(|e| panic!("fanout consumer: {e}"))
    }

    /// Deletes the exchanges of the test prefix and closes the connection
    /// (which deletes the private queues).
    pub async fn cleanup(mut self) {
        for name in [
            self.topology.heartbeats_exchange(),
            self.topology.control_exchange(),
        ] {
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

/// The next message on `consumer` decoded as `T` that satisfies `pred`,
/// within `within`.
pub async fn next_matching<T, F>(consumer: &mut Consumer, within: Duration, pred: F) -> T
where
    T: serde::de::DeserializeOwned,
    F: Fn(&T) -> bool,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("no matching message within {within:?}"));
        let delivery = match next {
            Some(Ok(d)) => d,
            other => panic!("consumer ended: {other:?}"),
        };
        let _ = mdp_amqp::ack(&delivery).await;
        if let Ok(value) = mdp_amqp::decode_json::<T>(&delivery, 1 << 20) {
            if pred(&value) {
                return value;
            }
        }
    }
}

/// Polls `check` every 50 ms until it returns true or `within` passes.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// Deletes the test's exchanges when dropped while still armed, i.e. when a
/// test panicked before its async clean-up ran. Uses its own thread and
/// runtime because `Drop` cannot await.
pub struct ExchangeGuard {
    url: String,
    names: Vec<String>,
    armed: bool,
}

impl ExchangeGuard {
    pub fn new(url: &str, topology: &Topology) -> Self {
        ExchangeGuard {
            url: url.to_string(),
            names: vec![
                topology.heartbeats_exchange(),
                topology.control_exchange(),
                topology.notices_exchange(),
            ],
            armed: true,
        }
    }

    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for ExchangeGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let url = std::mem::take(&mut self.url);
        let names = std::mem::take(&mut self.names);
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
