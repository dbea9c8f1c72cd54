//! The bus actor: admin's AMQP link. It consumes every instance's heartbeat
//! into the instance table, publishes operator control commands and lends
//! channels on its connection (dead-letter inspection and replay); it
//! reconnects with backoff and reports the link in admin's readiness.

use crate::domain::instances::InstanceTable;
use crate::domain::switches::Switches;
use actix::prelude::*;
use futures::StreamExt;
use lapin::{Channel, Connection, Consumer};
use mdp_amqp::{AmqpError, Publisher, Topology};
use mdp_service::ServiceContext;
use mdp_types::{ControlCommand, Heartbeat};
use std::sync::Arc;
use std::time::Duration;

/// Readiness check name of the link.
const CHECK: &str = "rabbitmq";
/// A control command not confirmed within this time is reported as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often long-silent instances are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// An instance silent for this many heartbeat timeouts is forgotten (at least a minute).
const FORGET_AFTER_TIMEOUTS: i64 = 12;
/// An override missing on an instance is sent again at most this often, ms.
const RESEND_INTERVAL_MS: i64 = 5000;

fn heartbeats_counter() -> prometheus::IntCounterVec {
    mdp_telemetry::int_counter_vec(
        "mdp_admin_heartbeats_received_total",
        "Heartbeats received by admin, by outcome (ok, malformed).",
        &["outcome"],
    )
}

fn commands_counter() -> prometheus::IntCounterVec {
    mdp_telemetry::int_counter_vec(
        "mdp_admin_control_commands_total",
        "Control commands admin published, by result (published, resent, failed).",
        &["result"],
    )
}

/// Why a control command was not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("admin is not connected to RabbitMQ")]
    NotConnected,
    #[error("publishing to {exchange} failed: {error}")]
    Publish { exchange: String, error: String },
    #[error("opening a channel to RabbitMQ failed: {0}")]
    Channel(String),
}

/// Publish `0` on the control exchange; replies once the broker confirmed it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), BusError>")]
pub struct PublishControl(pub ControlCommand);

/// A new channel on admin's connection, for the caller to use and close.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Channel, BusError>")]
pub struct OpenChannel;

struct Link {
    conn: Arc<Connection>,
    publisher: Publisher,
    /// Kept open: closing it would cancel the heartbeat consumer.
    _channel: Channel,
    consumer: SpawnHandle,
}

/// See the module documentation.
pub struct BusActor {
    ctx: ServiceContext,
    table: InstanceTable,
    switches: Switches,
    topology: Topology,
    link: Option<Link>,
    generation: u64,
    failures: u32,
}

impl BusActor {
    pub fn new(ctx: ServiceContext, table: InstanceTable, switches: Switches) -> Self {
        // Export every series from the start (at 0), not from its first event.
        for outcome in ["ok", "malformed"] {
            heartbeats_counter().with_label_values(&[outcome]);
        }
        for result in ["published", "resent", "failed"] {
            commands_counter().with_label_values(&[result]);
        }
        let topology = Topology::from_settings(&ctx.settings);
        ctx.readiness.set(CHECK, Err("connecting".into()));
        BusActor {
            ctx,
            table,
            switches,
            topology,
            link: None,
            generation: 0,
            failures: 0,
        }
    }

    fn connect(&mut self, delay: Duration, actx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        let url = self.ctx.settings.rabbitmq.url.expose().to_string();
        let name = format!("{} bus", self.ctx.instance);
        let topology = self.topology.clone();
        let cancel = self.ctx.cancel.clone();
        let setup = async move { establish(delay, &url, &name, &topology, &cancel).await };
        actx.spawn(setup.into_actor(self).map(move |result, act, actx| {
            if generation != act.generation {
                return;
            }
            match result {
                Ok((conn, publisher, channel, consumer)) => {
                    act.failures = 0;
                    let sink = HeartbeatSink {
                        table: act.table.clone(),
                        switches: act.switches.clone(),
                        publisher: publisher.clone(),
                        control_exchange: act.topology.control_exchange(),
                        max_bytes: act.ctx.settings.rabbitmq.max_message_bytes,
                    };
                    let handle = actx.spawn(
                        consume_heartbeats(consumer, sink)
                            .into_actor(act)
                            .map(move |why, act, actx| act.lost(generation, &why, actx)),
                    );
                    act.link = Some(Link { conn: Arc::new(conn), publisher, _channel: channel, consumer: handle });
                    act.ctx.readiness.set(CHECK, Ok(()));
                    tracing::info!(exchange = %act.topology.heartbeats_exchange(), "admin bus connected");
                }
                Err(AmqpError::Cancelled) => {}
                Err(error @ AmqpError::InvalidUrl(_)) => {
                    let text = mdp_telemetry::error_chain(&error);
                    act.ctx.readiness.set(CHECK, Err(text.clone()));
                    tracing::error!(error = %text, "admin bus not started: rabbitmq.url is invalid");
                }
                Err(error) => {
                    let text = mdp_telemetry::error_chain(&error);
                    act.ctx.readiness.set(CHECK, Err(text.clone()));
                    let delay = mdp_amqp::backoff_delay(act.failures);
                    act.failures = act.failures.saturating_add(1);
                    tracing::warn!(error = %text, retry_in_ms = delay.as_millis() as u64, "admin bus set-up failed");
                    act.connect(delay, actx);
                }
            }
        }));
    }

    fn lost(&mut self, generation: u64, why: &str, actx: &mut Context<Self>) {
        if generation != self.generation || self.ctx.cancel.is_cancelled() {
            return;
        }
        let Some(link) = self.link.take() else { return };
        actx.cancel_future(link.consumer);
        self.ctx.readiness.set(CHECK, Err(why.to_string()));
        tracing::warn!(error = why, "admin bus lost, reconnecting");
        actix::spawn(async move {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                link.conn.close(320, "link lost".into()),
            )
            .await;
        });
        let delay = mdp_amqp::backoff_delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.connect(delay, actx);
    }

    fn prune(&mut self) {
        let timeout =
            i64::try_from(self.ctx.settings.admin.heartbeat_timeout_ms).unwrap_or(i64::MAX);
        let forget_after = timeout.saturating_mul(FORGET_AFTER_TIMEOUTS).max(60_000);
        let forgotten = self.table.prune(mdp_types::now_ms(), forget_after);
        if forgotten > 0 {
            tracing::info!(
                forgotten,
                forget_after_ms = forget_after,
                "forgot long-silent instances"
            );
        }
    }
}

impl Actor for BusActor {
    type Context = Context<Self>;

    fn started(&mut self, actx: &mut Context<Self>) {
        self.connect(Duration::ZERO, actx);
        actx.run_interval(PRUNE_EVERY, |act, _| act.prune());
        let cancel = self.ctx.cancel.clone();
        actx.spawn(
            async move { cancel.cancelled().await }
                .into_actor(self)
                .map(|(), act, actx| {
                    if let Some(link) = act.link.take() {
                        actx.cancel_future(link.consumer);
                        let close = async move {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(2),
                                link.conn.close(200, "shutdown".into()),
                            )
                            .await;
                        };
                        actx.wait(close.into_actor(act));
                    }
                    actx.stop();
                }),
        );
    }
}

impl Handler<PublishControl> for BusActor {
    type Result = ResponseActFuture<Self, Result<(), BusError>>;

    fn handle(&mut self, msg: PublishControl, _: &mut Context<Self>) -> Self::Result {
        let exchange = self.topology.control_exchange();
        let Some(link) = &self.link else {
            commands_counter().with_label_values(&["failed"]).inc();
            return Box::pin(fut::ready(Err(BusError::NotConnected)));
        };
        let publisher = link.publisher.clone();
        let generation = self.generation;
        let send = async move {
            let result = tokio::time::timeout(
                PUBLISH_TIMEOUT,
                publisher.publish_json(&exchange, "", &msg.0, None),
            )
            .await;
            match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    let lost = e.is_connection_lost();
                    Err((
                        BusError::Publish {
                            exchange,
                            error: mdp_telemetry::error_chain(&e),
                        },
                        lost,
                    ))
                }
                Err(_) => Err((
                    BusError::Publish {
                        exchange,
                        error: format!("no confirm within {} s", PUBLISH_TIMEOUT.as_secs()),
                    },
                    true,
                )),
            }
        };
        Box::pin(
            send.into_actor(self)
                .map(move |result, act, actx| match result {
                    Ok(()) => {
                        commands_counter().with_label_values(&["published"]).inc();
                        Ok(())
                    }
                    Err((error, lost)) => {
                        commands_counter().with_label_values(&["failed"]).inc();
                        if lost {
                            act.lost(generation, &error.to_string(), actx);
                        }
                        Err(error)
                    }
                }),
        )
    }
}

impl Handler<OpenChannel> for BusActor {
    type Result = ResponseFuture<Result<Channel, BusError>>;

    fn handle(&mut self, _: OpenChannel, _: &mut Context<Self>) -> Self::Result {
        let Some(link) = &self.link else {
            return Box::pin(async { Err(BusError::NotConnected) });
        };
        // A broken connection also ends the heartbeat consumer, which
        // reconnects; the caller just gets the error.
        let conn = link.conn.clone();
        Box::pin(async move {
            tokio::time::timeout(PUBLISH_TIMEOUT, conn.create_channel())
                .await
                .map_err(|_| {
                    BusError::Channel(format!("no answer within {} s", PUBLISH_TIMEOUT.as_secs()))
                })?
                .map_err(|e| BusError::Channel(e.to_string()))
        })
    }
}

/// Connects after `delay`, opens the control publisher, declares the fanout exchanges and
/// starts consuming heartbeats.
async fn establish(
    delay: Duration,
    url: &str,
    name: &str,
    topology: &Topology,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(Connection, Publisher, Channel, Consumer), AmqpError> {
    let conn = mdp_amqp::connect_after(delay, url, name, cancel).await?;
    let set_up = async {
        let publisher = Publisher::new(&conn).await?;
        mdp_service::declare_fanout_exchanges(publisher.channel(), topology).await?;
        let (channel, consumer) =
            mdp_amqp::fanout_consumer(&conn, &topology.heartbeats_exchange(), name).await?;
        Ok::<_, AmqpError>((publisher, channel, consumer))
    };
    match set_up.await {
        Ok((publisher, channel, consumer)) => Ok((conn, publisher, channel, consumer)),
        Err(e) => {
            let _ = conn.close(200, "set-up failed".into()).await;
            Err(e)
        }
    }
}

/// Where heartbeats go: the instance table, and the switches that may have
/// to be re-sent to the instance.
struct HeartbeatSink {
    table: InstanceTable,
    switches: Switches,
    publisher: Publisher,
    control_exchange: String,
    max_bytes: usize,
}

impl HeartbeatSink {
    async fn resend_missing_overrides(&self, hb: &Heartbeat, now_ms: i64) {
        for cmd in self.switches.due(hb, now_ms, RESEND_INTERVAL_MS) {
            let sent = tokio::time::timeout(
                PUBLISH_TIMEOUT,
                self.publisher
                    .publish_json(&self.control_exchange, "", &cmd, None),
            )
            .await;
            match sent {
                Ok(Ok(())) => {
                    commands_counter().with_label_values(&["resent"]).inc();
                    tracing::info!(
                        service = %cmd.service,
                        machine = %cmd.machine,
                        action = ?cmd.action,
                        instance = %hb.instance,
                        "override re-sent to an instance that lacks it"
                    );
                }
                Ok(Err(e)) => {
                    commands_counter().with_label_values(&["failed"]).inc();
                    tracing::warn!(error = %mdp_telemetry::error_chain(&e), "override re-send failed");
                }
                Err(_) => {
                    commands_counter().with_label_values(&["failed"]).inc();
                    tracing::warn!("override re-send not confirmed in time");
                }
            }
        }
    }
}

/// Records heartbeats until the consumer ends; returns why it ended.
async fn consume_heartbeats(mut consumer: Consumer, sink: HeartbeatSink) -> String {
    while let Some(next) = consumer.next().await {
        let delivery = match next {
            Ok(d) => d,
            Err(e) => return format!("heartbeat consumer failed: {e}"),
        };
        match mdp_amqp::decode_json::<Heartbeat>(&delivery, sink.max_bytes) {
            Ok(hb) => {
                heartbeats_counter().with_label_values(&["ok"]).inc();
                let now = mdp_types::now_ms();
                sink.resend_missing_overrides(&hb, now).await;
                sink.table.record(hb, now);
            }
            Err(error) => {
                heartbeats_counter().with_label_values(&["malformed"]).inc();
                tracing::warn!(%error, "heartbeat malformed, dropped");
            }
        }
        if let Err(e) = mdp_amqp::ack(&delivery).await {
            return format!("heartbeat ack failed: {}", mdp_telemetry::error_chain(&e));
        }
    }
    "heartbeat consumer ended".to_string()
}
