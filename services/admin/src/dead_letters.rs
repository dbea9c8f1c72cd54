//! The dead-letter queues on the broker: how many messages each holds, and
//! replaying parked messages to where they came from (the rules are in
//! [`crate::domain::dead_letters`]).
//!
//! A replay takes one message at a time with `basic.get`, republishes its
//! body and properties to its original exchange and routing key (mandatory,
//! on a confirm channel), and acknowledges it in the dead-letter queue only
//! once the broker confirmed the copy: a failure in between leaves the
//! message parked (delivery is at least once; every consumer de-duplicates).
//! Messages that cannot be replayed stay unacknowledged until the end of the
//! call, so `basic.get` cannot hand them out again, and are then returned
//! with `basic.nack` (requeue), which does not count as a failed delivery.
//!
//! Every [`DEPTH_EVERY`] admin also looks at how many messages each
//! dead-letter queue holds (three passive declares on one channel), for the
//! `dead_letters_parked` alarm.

use crate::actors::bus::{BusActor, OpenChannel};
use crate::domain::dead_letters::{
    origin, replay_headers, replayed_by, DeadLetterWatch, Origin, SkipReason,
};
use actix::Addr;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation};
use mdp_amqp::{Stage, Topology};
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A broker operation not answered within this time fails the call.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the depth of the dead-letter queues is looked at.
pub const DEPTH_EVERY: Duration = Duration::from_secs(5);

fn replayed_counter() -> prometheus::IntCounterVec {
    mdp_telemetry::int_counter_vec(
        "mdp_admin_dead_letters_replayed_total",
        "Dead-lettered messages admin republished to their original queue, by stage.",
        &["stage"],
    )
}

/// Exports every series from the start (at 0), not from its first replay.
pub fn init_metrics() {
    for stage in Stage::ALL {
        replayed_counter().with_label_values(&[stage.as_str()]);
    }
}

/// Why a broker operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The dead-letter queue itself is missing.
    #[error("queue {0} does not exist (no service has declared the topology on this prefix yet)")]
    NotFound(String),
    #[error("failed to {op} {target}: {error}")]
    Failed {
        op: &'static str,
        target: String,
        error: String,
    },
    #[error("failed to {op} {target}: no answer within {secs} s", secs = OPERATION_TIMEOUT.as_secs())]
    Timeout { op: &'static str, target: String },
    #[error("admin is shutting down")]
    Cancelled,
}

/// Runs one broker operation with [`OPERATION_TIMEOUT`].
async fn step<T>(
    op: &'static str,
    target: &str,
    operation: impl Future<Output = lapin::Result<T>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, operation).await {
        Err(_) => Err(BrokerError::Timeout {
            op,
            target: target.to_string(),
        }),
        Ok(Err(e)) => Err(BrokerError::Failed {
            op,
            target: target.to_string(),
            error: mdp_telemetry::error_chain(&e),
        }),
        Ok(Ok(value)) => Ok(value),
    }
}

fn short(what: &'static str, value: &str) -> Result<ShortString, BrokerError> {
    ShortString::try_new(value).map_err(|_| BrokerError::Failed {
        op: "name",
        target: what.to_string(),
        error: format!("'{value}' is longer than 255 bytes"),
    })
}

/// The ready messages and consumers of `queue` (a passive declare: a missing
/// queue is [`BrokerError::NotFound`] and closes `channel`).
pub async fn queue_depth(channel: &Channel, queue: &str) -> Result<(u32, u32), BrokerError> {
    const OP: &str = "inspect queue";
    let declare = channel.queue_declare(
        short("queue name", queue)?,
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    );
    match tokio::time::timeout(OPERATION_TIMEOUT, declare).await {
        Err(_) => Err(BrokerError::Timeout {
            op: OP,
            target: queue.to_string(),
        }),
        Ok(Ok(declared)) => Ok((declared.message_count(), declared.consumer_count())),
        Ok(Err(e)) if is_not_found(&e) => Err(BrokerError::NotFound(queue.to_string())),
        Ok(Err(e)) => Err(BrokerError::Failed {
            op: OP,
            target: queue.to_string(),
            error: mdp_telemetry::error_chain(&e),
        }),
    }
}

/// Looks at every dead-letter queue once and records how many messages it
/// holds in `watch`; a missing queue is forgotten, a queue that cannot be
/// inspected keeps its last figures. Does nothing while admin is not
/// connected to RabbitMQ.
pub async fn observe_depths(bus: &Addr<BusActor>, topology: &Topology, watch: &DeadLetterWatch) {
    let mut channel: Option<Channel> = None;
    for stage in Stage::ALL {
        let ch = match channel.take() {
            Some(ch) if ch.status().connected() => ch,
            _ => match bus.send(OpenChannel).await {
                Ok(Ok(ch)) => ch,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "dead-letter queues not looked at");
                    return;
                }
                Err(error) => {
                    tracing::debug!(%error, "dead-letter queues not looked at: the bus is gone");
                    return;
                }
            },
        };
        let queue = topology.dead_letter_queue(stage);
        match queue_depth(&ch, &queue).await {
            Ok((messages, _)) => {
                watch.record(stage, &queue, u64::from(messages), mdp_types::now_ms());
                channel = Some(ch);
            }
            // The broker closed the channel with the error.
            Err(BrokerError::NotFound(_)) => watch.forget(stage),
            Err(error) => {
                tracing::debug!(%error, stage = stage.as_str(), "dead-letter queue depth unknown");
                close_quietly(&ch).await;
            }
        }
    }
    if let Some(ch) = channel {
        close_quietly(&ch).await;
    }
}

async fn close_quietly(channel: &Channel) {
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        channel.close(200, "dead-letter depths read".into()),
    )
    .await;
}

fn is_not_found(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(e)
            if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}

/// What a replay call did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayOutcome {
    pub stage: &'static str,
    /// Messages republished to their origin and removed from the dead-letter queue.
    pub replayed: u64,
    /// Messages examined and left in the dead-letter queue.
    pub skipped: u64,
    /// Messages in the dead-letter queue after the call (skipped ones included).
    pub remaining: u64,
    /// Skipped messages by reason (`no_x_death`, `unroutable` …).
    pub skipped_reasons: BTreeMap<&'static str, u64>,
}

/// A replay that stopped on a broker failure, with what it did before.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "replay of {stage} stopped after {replayed} replayed and {skipped} skipped messages: {error}",
    stage = .done.stage,
    replayed = .done.replayed,
    skipped = .done.skipped
)]
pub struct ReplayFailed {
    pub done: ReplayOutcome,
    #[source]
    pub error: BrokerError,
}

/// What to replay.
#[derive(Debug, Clone, Copy)]
pub struct ReplayRequest<'a> {
    pub topology: &'a Topology,
    pub stage: Stage,
    /// Messages to examine at most.
    pub limit: u32,
    /// Unique per call, recorded in the `x-mdp-replay-id` header so a message
    /// dead-lettered again during the call is not replayed twice by it.
    pub replay_id: &'a str,
    /// Stops between two messages.
    pub cancel: &'a CancellationToken,
}

struct Replay<'a> {
    channel: &'a Channel,
    req: ReplayRequest<'a>,
    queue: String,
    done: ReplayOutcome,
    /// Ready messages left behind the last one taken.
    left: u64,
    /// Skipped messages, unacknowledged until the end of the call.
    held: Vec<Delivery>,
}

/// Replays up to `req.limit` messages of the stage's dead-letter queue on
/// `channel`, which it closes.
pub async fn replay(
    channel: Channel,
    req: ReplayRequest<'_>,
) -> Result<ReplayOutcome, ReplayFailed> {
    let mut run = Replay {
        channel: &channel,
        req,
        queue: req.topology.dead_letter_queue(req.stage),
        done: ReplayOutcome {
            stage: req.stage.as_str(),
            replayed: 0,
            skipped: 0,
            remaining: 0,
            skipped_reasons: BTreeMap::new(),
        },
        left: 0,
        held: Vec::new(),
    };
    let result = run.run().await;
    run.release_held().await;
    let _ = tokio::time::timeout(OPERATION_TIMEOUT, channel.close(200, "replay done".into())).await;
    let mut done = run.done;
    done.remaining = run.left.saturating_add(done.skipped);
    match result {
        Ok(()) => Ok(done),
        Err(error) => Err(ReplayFailed { done, error }),
    }
}

impl Replay<'_> {
    async fn run(&mut self) -> Result<(), BrokerError> {
        // A missing dead-letter queue is told apart from other failures.
        queue_depth(self.channel, &self.queue).await?;
        step(
            "enable confirms on",
            "the replay channel",
            self.channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        let queue = short("queue name", &self.queue)?;
        for _ in 0..self.req.limit {
            if self.req.cancel.is_cancelled() {
                return Err(BrokerError::Cancelled);
            }
            let got = step(
                "get a message from",
                &self.queue,
                self.channel
                    .basic_get(queue.clone(), BasicGetOptions { no_ack: false }),
            )
            .await?;
            let Some(got) = got else {
                self.left = 0;
                return Ok(());
            };
            self.left = u64::from(got.message_count);
            self.one(got.delivery).await?;
        }
        Ok(())
    }

    /// Replays or holds one parked message.
    async fn one(&mut self, delivery: Delivery) -> Result<(), BrokerError> {
        let headers = delivery.properties.headers().as_ref();
        if replayed_by(headers, self.req.replay_id) {
            self.skip(delivery, SkipReason::DeadLetteredAgain, None);
            return Ok(());
        }
        let origin = match origin(headers, self.req.topology, self.req.stage) {
            Ok(origin) => origin,
            Err(reason) => {
                self.skip(delivery, reason, None);
                return Ok(());
            }
        };
        let (Ok(exchange), Ok(routing_key)) = (
            ShortString::try_new(origin.exchange.as_str()),
            ShortString::try_new(origin.routing_key.as_str()),
        ) else {
            self.skip(delivery, SkipReason::MalformedDeathHeader, Some(&origin));
            return Ok(());
        };
        let properties = delivery
            .properties
            .clone()
            .with_headers(replay_headers(headers, self.req.replay_id));
        let target = format!("{} (routing key {})", origin.exchange, origin.routing_key);
        let channel = self.channel;
        let confirmation = step("republish to", &target, async {
            channel
                .basic_publish(
                    exchange,
                    routing_key,
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &delivery.data,
                    properties,
                )
                .await?
                .await
        })
        .await?;
        match confirmation {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(_returned)) => {
                self.skip(delivery, SkipReason::Unroutable, Some(&origin));
                return Ok(());
            }
            Confirmation::Nack(_) => {
                self.skip(delivery, SkipReason::Refused, Some(&origin));
                return Ok(());
            }
            Confirmation::NotRequested => {
                return Err(BrokerError::Failed {
                    op: "republish to",
                    target,
                    error: "the channel is not in confirm mode".into(),
                })
            }
        }
        let acked = step(
            "acknowledge a replayed message in",
            &self.queue,
            delivery.acker.ack(BasicAckOptions::default()),
        )
        .await?;
        if !acked {
            return Err(BrokerError::Failed {
                op: "acknowledge a replayed message in",
                target: self.queue.clone(),
                error: "the channel closed first; the message stays parked and was also replayed"
                    .into(),
            });
        }
        self.done.replayed += 1;
        replayed_counter()
            .with_label_values(&[self.req.stage.as_str()])
            .inc();
        tracing::debug!(
            stage = self.done.stage,
            queue = %origin.queue,
            exchange = %origin.exchange,
            routing_key = %origin.routing_key,
            message_id = message_id(&delivery),
            "dead-lettered message replayed"
        );
        Ok(())
    }

    fn skip(&mut self, delivery: Delivery, reason: SkipReason, origin: Option<&Origin>) {
        tracing::debug!(
            stage = self.done.stage,
            reason = reason.as_str(),
            origin = origin.map(|o| o.queue.as_str()).unwrap_or(""),
            message_id = message_id(&delivery),
            "dead-lettered message left parked"
        );
        self.done.skipped += 1;
        *self
            .done
            .skipped_reasons
            .entry(reason.as_str())
            .or_insert(0) += 1;
        self.held.push(delivery);
    }

    /// Returns the skipped messages to the dead-letter queue. When the
    /// channel is broken they return when it closes.
    async fn release_held(&mut self) {
        for delivery in self.held.drain(..) {
            let nacked = step(
                "return a skipped message to",
                &self.queue,
                delivery.acker.nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                }),
            )
            .await;
            if let Err(error) = nacked {
                tracing::debug!(%error, "skipped messages return when the channel closes");
                return;
            }
        }
    }
}

fn message_id(delivery: &Delivery) -> &str {
    delivery
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.as_str())
        .unwrap_or("")
}
