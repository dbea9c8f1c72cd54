//! Consumes every partition's change queue: decode, reject, rate-limit, append durably, then ack.
//! Owns the consuming connection; on any broker failure it reconnects with backoff and resumes.

use crate::actors::partition::{AppendBatch, AppendOutcome, PartitionActor};
use crate::configuration::FlowConfig;
use crate::metrics;
use crate::rate_limit::{RateLimiter, RateMeter};
use actix::prelude::*;
use futures::StreamExt;
use lapin::message::Delivery;
use mdp_amqp::{AmqpError, Topology};
use mdp_degrade::DegradeMachine;
use mdp_service::ServiceContext;
use mdp_types::ChangeBatch;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Why a consuming session ended.
#[derive(Debug, thiserror::Error)]
enum IntakeError {
    #[error("broker operation failed")]
    Amqp(#[from] AmqpError),
    #[error("the broker closed the consumer of partition {partition}")]
    ConsumerClosed { partition: u32 },
    #[error("shutting down")]
    Cancelled,
    #[error("partition {partition} stopped")]
    PartitionStopped { partition: u32 },
}

/// Everything the consuming futures share.
#[derive(Clone)]
pub struct IntakeSetup {
    pub config: FlowConfig,
    pub url: String,
    pub topology: Topology,
    pub partitions: Vec<Addr<PartitionActor>>,
    pub limiter: RateLimiter,
    pub meter: Arc<RateMeter>,
    pub rabbitmq: DegradeMachine,
    pub ctx: ServiceContext,
}

pub struct IntakeActor {
    setup: IntakeSetup,
}

impl IntakeActor {
    pub fn new(setup: IntakeSetup) -> Self {
        IntakeActor { setup }
    }
}

impl Actor for IntakeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let setup = self.setup.clone();
        ctx.spawn(run(setup).into_actor(self).map(|(), _, ctx| ctx.stop()));
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            let rate = act.setup.meter.sample(Instant::now());
            metrics::INTAKE_RATE.set(rate);
            act.setup.ctx.stats.set("intake_rate_per_second", rate);
            metrics::OWNED_PARTITIONS.set(act.setup.ctx.partitions.list().len() as i64);
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        tracing::info!("change intake stopped");
    }
}

/// Consuming sessions, one after the other, until shutdown.
async fn run(setup: IntakeSetup) {
    let cancel = setup.ctx.cancel.clone();
    let name = format!("{} intake", setup.ctx.instance);
    let mut attempt = 0u32;
    loop {
        let conn = match mdp_amqp::connect(&setup.url, &name, &cancel).await {
            Ok(conn) => conn,
            Err(AmqpError::Cancelled) => return,
            Err(error) => {
                // Only an unparsable URL gets here: no retry can fix it.
                let text = mdp_telemetry::error_chain(&error);
                tracing::error!(error = %text, "change intake cannot connect");
                setup.rabbitmq.record_failure(&text);
                setup.ctx.readiness.set("rabbitmq", Err(text));
                return;
            }
        };
        let started = Instant::now();
        let result = session(&conn, &setup).await;
        for p in 0..setup.config.partitions {
            if setup.ctx.partitions.remove(p) {
                tracing::info!(partition = p, "partition released");
            }
        }
        let _ =
            tokio::time::timeout(Duration::from_secs(2), conn.close(200, "closing".into())).await;
        match result {
            Ok(()) | Err(IntakeError::Cancelled) => return,
            Err(error) => {
                if cancel.is_cancelled() {
                    return;
                }
                let text = mdp_telemetry::error_chain(&error);
                setup.rabbitmq.record_failure(&text);
                setup.ctx.readiness.set("rabbitmq", Err(text.clone()));
                // A session that ran for a while starts the backoff afresh.
                if started.elapsed() > Duration::from_secs(30) {
                    attempt = 0;
                }
                let delay = mdp_amqp::backoff_delay(attempt);
                attempt = attempt.saturating_add(1);
                tracing::warn!(error = %text, retry_in_ms = delay.as_millis() as u64, "change intake lost the broker, reconnecting");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// One connection: declare the topology, consume every partition until a failure.
async fn session(conn: &lapin::Connection, setup: &IntakeSetup) -> Result<(), IntakeError> {
    let channel = conn
        .create_channel()
        .await
        .map_err(|source| AmqpError::Broker {
            op: "open",
            target: "topology channel".into(),
            source,
        })?;
    setup.topology.declare(&channel).await?;
    let _ = channel.close(200, "declared".into()).await;
    setup.rabbitmq.record_success();
    setup.ctx.readiness.set("rabbitmq", Ok(()));
    tracing::info!(
        partitions = setup.config.partitions,
        "change intake consuming"
    );
    let loops = (0..setup.config.partitions).map(|p| consume_partition(conn, p, setup));
    tokio::select! {
        _ = setup.ctx.cancel.cancelled() => Ok(()),
        result = futures::future::try_join_all(loops) => result.map(|_| ()),
    }
}

async fn consume_partition(
    conn: &lapin::Connection,
    partition: u32,
    setup: &IntakeSetup,
) -> Result<(), IntakeError> {
    let queue = setup.topology.changes_queue(partition);
    let tag = format!("{}-p{}", setup.ctx.instance, partition);
    let (_channel, mut consumer) =
        mdp_amqp::consumer(conn, &queue, &tag, setup.config.prefetch).await?;
    while let Some(item) = consumer.next().await {
        let delivery = item.map_err(|source| AmqpError::Broker {
            op: "consume",
            target: queue.clone(),
            source,
        })?;
        handle_delivery(partition, delivery, setup).await?;
    }
    Err(IntakeError::ConsumerClosed { partition })
}

/// Checks a decoded batch belongs to the queue's partition.
fn misrouted(batch: &ChangeBatch, partition: u32) -> Option<String> {
    if batch.partition != partition {
        return Some(format!(
            "batch of partition {} arrived on the queue of partition {partition}",
            batch.partition
        ));
    }
    batch
        .events
        .iter()
        .find(|e| e.partition != partition)
        .map(|e| {
            format!(
                "event {} of partition {} in a batch of partition {partition}",
                e.id, e.partition
            )
        })
}

async fn handle_delivery(
    partition: u32,
    delivery: Delivery,
    setup: &IntakeSetup,
) -> Result<(), IntakeError> {
    if setup.ctx.partitions.insert(partition) {
        tracing::info!(partition, "partition owned: first delivery received");
    }
    let batch: ChangeBatch = match mdp_amqp::decode_json(&delivery, setup.config.max_message_bytes)
    {
        Ok(batch) => batch,
        Err(error) => {
            metrics::message_rejected(partition, error.reason(), &error.to_string());
            mdp_amqp::dead_letter(&delivery, error.reason()).await?;
            return Ok(());
        }
    };
    if let Some(detail) = misrouted(&batch, partition) {
        metrics::message_rejected(partition, "wrong_partition", &detail);
        mdp_amqp::dead_letter(&delivery, "wrong_partition").await?;
        return Ok(());
    }
    if batch.events.is_empty() {
        mdp_amqp::ack(&delivery).await?;
        return Ok(());
    }
    let span = tracing::info_span!(
        "flow.accept_batch",
        partition,
        events = batch.events.len(),
        accepted = tracing::field::Empty,
        duplicates = tracing::field::Empty,
        redelivered = delivery.redelivered,
    );
    mdp_telemetry::set_parent(&span, mdp_amqp::traceparent(&delivery));
    accept(partition, batch, &delivery, setup)
        .instrument(span)
        .await
}

async fn accept(
    partition: u32,
    batch: ChangeBatch,
    delivery: &Delivery,
    setup: &IntakeSetup,
) -> Result<(), IntakeError> {
    let n = batch.events.len() as u64;
    let waited = tokio::select! {
        _ = setup.ctx.cancel.cancelled() => return Err(IntakeError::Cancelled),
        waited = setup.limiter.acquire(n) => waited,
    };
    if !waited.is_zero() {
        metrics::THROTTLED.inc();
        metrics::THROTTLED_SECONDS.observe(waited.as_secs_f64());
        tracing::debug!(
            partition,
            events = n,
            waited_ms = waited.as_millis() as u64,
            "intake throttled"
        );
    }
    let traceparent = mdp_telemetry::current_traceparent()
        .or_else(|| mdp_amqp::traceparent(delivery).map(str::to_string));
    let events = Arc::new(batch.events);
    let outcome = append_with_retry(partition, events, traceparent, setup).await?;
    let span = tracing::Span::current();
    span.record("accepted", outcome.accepted);
    span.record("duplicates", outcome.duplicates);
    mdp_amqp::ack(delivery).await?;
    Ok(())
}

/// Appends until durable. A KV failure keeps the delivery unacknowledged and
/// retries with backoff (a crash meanwhile makes the broker redeliver it).
async fn append_with_retry(
    partition: u32,
    events: Arc<Vec<mdp_types::ChangeEvent>>,
    traceparent: Option<String>,
    setup: &IntakeSetup,
) -> Result<AppendOutcome, IntakeError> {
    let addr = setup
        .partitions
        .get(partition as usize)
        .ok_or(IntakeError::PartitionStopped { partition })?;
    let mut attempt = 0u32;
    loop {
        let msg = AppendBatch {
            events: events.clone(),
            traceparent: traceparent.clone(),
        };
        match addr.send(msg).await {
            Ok(Ok(outcome)) => return Ok(outcome),
            Ok(Err(_)) => {
                // Logged and counted by the partition actor.
                let delay = mdp_amqp::backoff_delay(attempt);
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = setup.ctx.cancel.cancelled() => return Err(IntakeError::Cancelled),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(_) => return Err(IntakeError::PartitionStopped { partition }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::tests::event;

    #[test]
    fn batches_must_match_their_queue() {
        let ok = ChangeBatch {
            partition: 0,
            events: vec![event(1, 0)],
        };
        assert_eq!(misrouted(&ok, 0), None);
        let wrong_batch = ChangeBatch {
            partition: 2,
            events: vec![],
        };
        assert!(misrouted(&wrong_batch, 0).is_some_and(|m| m.contains("partition 2")));
        let mut stray = event(2, 0);
        stray.partition = 5;
        let mixed = ChangeBatch {
            partition: 0,
            events: vec![event(1, 0), stray],
        };
        assert!(misrouted(&mixed, 0).is_some_and(|m| m.contains("of partition 5")));
    }
}
