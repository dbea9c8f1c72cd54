//! The heartbeat actor: publishes the instance's heartbeat to admin every
//! second and applies the control commands admin sends to this service.
//!
//! It owns its AMQP connection, reconnects with backoff when it is lost and
//! never blocks the service: every broker call runs as a spawned future.

use crate::context::ServiceContext;
use actix::prelude::*;
use futures::StreamExt;
use lapin::options::ExchangeDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, Consumer, ExchangeKind};
use mdp_amqp::{AmqpError, Publisher, Topology};
use mdp_types::ControlCommand;
use std::time::Duration;

/// How often the heartbeat is published.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A heartbeat not confirmed within this time counts as a lost connection.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Control commands are tiny; anything larger is malformed.
const CONTROL_MAX_BYTES: usize = 64 * 1024;

const HEARTBEATS: &str = "mdp_heartbeats_published_total";
const CONTROL: &str = "mdp_control_commands_total";
const LINK_UP: &str = "mdp_heartbeat_link_up";

fn heartbeats_counter() -> prometheus::IntCounterVec {
    mdp_telemetry::int_counter_vec(
        HEARTBEATS,
        "Heartbeats this instance tried to publish, by result (ok, failed).",
        &["service", "result"],
    )
}

fn control_counter() -> prometheus::IntCounterVec {
    mdp_telemetry::int_counter_vec(
        CONTROL,
        "Control commands received, by outcome (applied, other_service, unknown_machine, malformed).",
        &["service", "outcome"],
    )
}

fn link_gauge() -> prometheus::IntGaugeVec {
    mdp_telemetry::int_gauge_vec(
        LINK_UP,
        "1 while the heartbeat/control AMQP link of this instance is connected.",
        &["service"],
    )
}

/// Starts the heartbeat actor of `ctx` on the current actix arbiter. It stops
/// (closing its connection) when `ctx.cancel` fires.
pub fn spawn_heartbeat(ctx: ServiceContext) -> Addr<HeartbeatActor> {
    HeartbeatActor::new(ctx).start()
}

/// Declares the fanout exchanges the services talk through besides the
/// pipeline (`{prefix}.heartbeats`, `{prefix}.control`, `{prefix}.notices`),
/// with the same options as [`Topology::declare`], so a heartbeat or a
/// notice can flow before the pipeline topology exists.
pub async fn declare_fanout_exchanges(ch: &Channel, topology: &Topology) -> Result<(), AmqpError> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    for name in [
        topology.heartbeats_exchange(),
        topology.control_exchange(),
        topology.notices_exchange(),
    ] {
        let short = ShortString::try_new(name.clone()).map_err(|_| AmqpError::NameTooLong {
            what: "exchange name",
            len: name.len(),
        })?;
        ch.exchange_declare(short, ExchangeKind::Fanout, options, FieldTable::default())
            .await
            .map_err(|source| AmqpError::Broker {
                op: "declare exchange",
                target: name.clone(),
                source,
            })?;
    }
    Ok(())
}

/// The live AMQP link of the actor.
struct Link {
    conn: Connection,
    publisher: Publisher,
    /// Kept open: closing it would cancel the control consumer.
    _control_channel: Channel,
    consumer: SpawnHandle,
}

/// Publishes heartbeats and applies control commands; see [`spawn_heartbeat`].
pub struct HeartbeatActor {
    ctx: ServiceContext,
    topology: Topology,
    link: Option<Link>,
    /// Bumped on every (re)connect so late failures of an old link are ignored.
    generation: u64,
    /// Consecutive failed link set-ups, for the backoff.
    failures: u32,
    publishing: bool,
}

impl HeartbeatActor {
    pub fn new(ctx: ServiceContext) -> Self {
        let topology = Topology::from_settings(&ctx.settings);
        HeartbeatActor {
            ctx,
            topology,
            link: None,
            generation: 0,
            failures: 0,
            publishing: false,
        }
    }

    fn connect(&mut self, delay: Duration, actx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        let url = self.ctx.settings.rabbitmq.url.expose().to_string();
        let name = format!("{} heartbeat", self.ctx.instance);
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
                    let handle = actx.spawn(
                        consume_control(consumer, act.ctx.clone())
                            .into_actor(act)
                            .map(move |why, act, actx| act.lost(generation, &why, actx)),
                    );
                    act.link = Some(Link { conn, publisher, _control_channel: channel, consumer: handle });
                    link_gauge().with_label_values(&[&act.ctx.service]).set(1);
                    tracing::info!(service = %act.ctx.service, instance = %act.ctx.instance, "heartbeat link up");
                    act.publish(actx);
                }
                Err(AmqpError::Cancelled) => {}
                Err(error @ AmqpError::InvalidUrl(_)) => {
                    tracing::error!(
                        service = %act.ctx.service,
                        error = %mdp_telemetry::error_chain(&error),
                        "heartbeat link not started: rabbitmq.url is invalid"
                    );
                }
                Err(error) => {
                    let delay = mdp_amqp::backoff_delay(act.failures);
                    act.failures = act.failures.saturating_add(1);
                    tracing::warn!(
                        service = %act.ctx.service,
                        error = %mdp_telemetry::error_chain(&error),
                        retry_in_ms = delay.as_millis() as u64,
                        "heartbeat link set-up failed"
                    );
                    act.connect(delay, actx);
                }
            }
        }));
    }

    /// The link of `generation` broke: drop it and reconnect.
    fn lost(&mut self, generation: u64, why: &str, actx: &mut Context<Self>) {
        if generation != self.generation || self.ctx.cancel.is_cancelled() {
            return;
        }
        let Some(link) = self.link.take() else { return };
        actx.cancel_future(link.consumer);
        link_gauge().with_label_values(&[&self.ctx.service]).set(0);
        tracing::warn!(service = %self.ctx.service, error = why, "heartbeat link lost, reconnecting");
        actix::spawn(async move {
            // The connection may be half-open; closing it frees the broker side.
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

    /// Publishes the current heartbeat unless one is still in flight.
    fn publish(&mut self, actx: &mut Context<Self>) {
        let Some(link) = &self.link else { return };
        if self.publishing {
            return;
        }
        self.publishing = true;
        let generation = self.generation;
        let publisher = link.publisher.clone();
        let exchange = self.topology.heartbeats_exchange();
        let heartbeat = self.ctx.heartbeat();
        let send = async move {
            match tokio::time::timeout(
                PUBLISH_TIMEOUT,
                publisher.publish_json(&exchange, "", &heartbeat, None),
            )
            .await
            {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(mdp_telemetry::error_chain(&e)),
                Err(_) => Err(format!(
                    "no publish confirm within {} s",
                    PUBLISH_TIMEOUT.as_secs()
                )),
            }
        };
        actx.spawn(send.into_actor(self).map(move |result, act, actx| {
            act.publishing = false;
            let outcome = if result.is_ok() { "ok" } else { "failed" };
            heartbeats_counter()
                .with_label_values(&[&act.ctx.service, outcome])
                .inc();
            if let Err(why) = result {
                act.lost(generation, &why, actx);
            }
        }));
    }
}

impl Actor for HeartbeatActor {
    type Context = Context<Self>;

    fn started(&mut self, actx: &mut Context<Self>) {
        link_gauge().with_label_values(&[&self.ctx.service]).set(0);
        self.connect(Duration::ZERO, actx);
        actx.run_interval(HEARTBEAT_INTERVAL, |act, actx| act.publish(actx));
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
                    link_gauge().with_label_values(&[&act.ctx.service]).set(0);
                    actx.stop();
                }),
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        tracing::info!(service = %self.ctx.service, instance = %self.ctx.instance, "heartbeat stopped");
    }
}

/// Connects after `delay`, opens the publisher, declares the fanout exchanges and starts
/// consuming the control exchange.
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
        declare_fanout_exchanges(publisher.channel(), topology).await?;
        let (channel, consumer) =
            mdp_amqp::fanout_consumer(&conn, &topology.control_exchange(), name).await?;
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

/// Applies control commands until the consumer ends; returns why it ended.
async fn consume_control(mut consumer: Consumer, ctx: ServiceContext) -> String {
    while let Some(next) = consumer.next().await {
        let delivery = match next {
            Ok(d) => d,
            Err(e) => return format!("control consumer failed: {e}"),
        };
        let outcome = match mdp_amqp::decode_json::<ControlCommand>(&delivery, CONTROL_MAX_BYTES) {
            Ok(cmd) => apply_command(&ctx, &cmd),
            Err(error) => {
                tracing::warn!(service = %ctx.service, %error, "control command malformed, dropped");
                "malformed"
            }
        };
        control_counter()
            .with_label_values(&[&ctx.service, outcome])
            .inc();
        if let Err(e) = mdp_amqp::ack(&delivery).await {
            return format!("control ack failed: {}", mdp_telemetry::error_chain(&e));
        }
    }
    "control consumer ended".to_string()
}

/// Applies `cmd` to `ctx.degrade` when addressed to this service; returns the
/// outcome label.
pub(crate) fn apply_command(ctx: &ServiceContext, cmd: &ControlCommand) -> &'static str {
    if cmd.service != ctx.service {
        return "other_service";
    }
    let reason = cmd.reason.as_deref().unwrap_or("");
    if ctx.degrade.apply(cmd) {
        tracing::info!(
            service = %cmd.service,
            machine = %cmd.machine,
            action = ?cmd.action,
            reason,
            issued_at_ms = cmd.issued_at_ms,
            "control command applied"
        );
        "applied"
    } else {
        tracing::warn!(
            service = %cmd.service,
            machine = %cmd.machine,
            action = ?cmd.action,
            reason,
            known = ?ctx.degrade.names(),
            "control command names no machine of this service"
        );
        "unknown_machine"
    }
}
