//! Keeps one RabbitMQ connection up: connects with backoff, declares the
//! topology, publishes the live connection to the consumers and reconnects
//! when it is lost.

use actix::prelude::*;
use lapin::Connection;
use mdp_amqp::Topology;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the connection's state is checked.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Readiness check name.
const CHECK: &str = "rabbitmq";

/// The live connection, `None` while (re)connecting.
pub type LinkReceiver = watch::Receiver<Option<Arc<Connection>>>;

/// Waits for a connected connection; `None` when the link has stopped.
pub async fn wait_connected(rx: &mut LinkReceiver) -> Option<Arc<Connection>> {
    loop {
        let current = rx.borrow_and_update().clone();
        if let Some(conn) = current {
            if conn.status().connected() {
                return Some(conn);
            }
        }
        if rx.changed().await.is_err() {
            return None;
        }
    }
}

/// The connection supervisor.
pub struct AmqpLink {
    url: String,
    connection_name: String,
    topology: Topology,
    service: mdp_service::ServiceContext,
    tx: watch::Sender<Option<Arc<Connection>>>,
    conn: Option<Arc<Connection>>,
    connecting: bool,
}

impl AmqpLink {
    /// A link and the receiver consumers watch.
    pub fn new(
        url: &str,
        topology: Topology,
        service: mdp_service::ServiceContext,
    ) -> (Self, LinkReceiver) {
        let (tx, rx) = watch::channel(None);
        let connection_name = service.instance.clone();
        (
            AmqpLink {
                url: url.to_string(),
                connection_name,
                topology,
                service,
                tx,
                conn: None,
                connecting: false,
            },
            rx,
        )
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.connecting {
            return;
        }
        self.connecting = true;
        let url = self.url.clone();
        let name = self.connection_name.clone();
        let cancel = self.service.cancel.clone();
        let topology = self.topology.clone();
        let fut = async move {
            let conn = mdp_amqp::connect(&url, &name, &cancel).await?;
            let channel = conn
                .create_channel()
                .await
                .map_err(|e| LinkError::Declare(e.to_string()))?;
            topology.declare(&channel).await?;
            let _ = channel.close(200, "topology declared".into()).await;
            Ok::<_, LinkError>(conn)
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.connecting = false;
            match result {
                Ok(conn) => {
                    let conn = Arc::new(conn);
                    act.conn = Some(conn.clone());
                    act.service.readiness.set(CHECK, Ok(()));
                    act.tx.send_replace(Some(conn));
                }
                Err(LinkError::Amqp(mdp_amqp::AmqpError::Cancelled)) => ctx.stop(),
                Err(e) => {
                    let text = mdp_telemetry::error_chain(&e);
                    tracing::warn!(error = %text, "amqp setup failed, will retry");
                    act.service.readiness.set(CHECK, Err(text));
                    ctx.run_later(Duration::from_secs(1), |act, ctx| act.connect(ctx));
                }
            }
        }));
    }

    fn check(&mut self, ctx: &mut Context<Self>) {
        let lost = self.conn.as_ref().is_some_and(|c| !c.status().connected());
        if lost {
            tracing::warn!("amqp connection lost, reconnecting");
            self.conn = None;
            self.tx.send_replace(None);
            self.service
                .readiness
                .set(CHECK, Err("connection lost, reconnecting".into()));
            self.connect(ctx);
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Amqp(#[from] mdp_amqp::AmqpError),
    #[error("failed to open a channel to declare the topology: {0}")]
    Declare(String),
}

impl Actor for AmqpLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.service.readiness.set(CHECK, Err("connecting".into()));
        let cancel = self.service.cancel.clone();
        ctx.spawn(
            async move { cancel.cancelled().await }
                .into_actor(self)
                .map(|(), _, ctx| ctx.stop()),
        );
        ctx.run_interval(CHECK_INTERVAL, |act, ctx| act.check(ctx));
        self.connect(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.tx.send_replace(None);
        if let Some(conn) = self.conn.take() {
            actix::spawn(async move {
                let _ = conn.close(200, "shutdown".into()).await;
            });
        }
    }
}
