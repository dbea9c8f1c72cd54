//! The batch publisher: takes captured items in binlog order, cuts rounds of
//! per-partition batches, publishes them with confirms, and saves the binlog
//! position once everything before it is confirmed.
//!
//! While RabbitMQ is unreachable the round is retried with backoff and
//! nothing new is taken from the reader, whose bounded channel then stops the
//! binlog reading (backpressure); the `rabbitmq` degrade machine shows it.

use crate::batcher::{Batcher, RejectedEvent, Round};
use crate::cdc::CdcItem;
use crate::metrics;
use crate::state::IngestState;
use crate::store::PositionStore;
use actix::prelude::*;
use mdp_amqp::{AmqpError, Publisher, Stage, Topology};
use mdp_degrade::DegradeMachine;
use mdp_service::ServiceContext;
use mdp_types::ChangeBatch;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Receiver;
use tracing::Instrument;

/// One connection attempt (inside `mdp_amqp::connect`'s own retries) counts as
/// failed for the degrade machine after this long.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(3);
/// While the degrade machine holds the primary path closed, check again this often.
const DEGRADED_POLL: Duration = Duration::from_millis(100);
/// A round not confirmed within this long is retried on a new connection.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an idle publisher checks its connection.
const HEALTH_CHECK: Duration = Duration::from_secs(1);

/// Everything the publisher loop owns.
pub struct PublisherTask {
    pub ctx: ServiceContext,
    pub rx: Receiver<CdcItem>,
    pub store: PositionStore,
    pub state: IngestState,
    pub machine: DegradeMachine,
    pub topology: Topology,
    pub amqp_url: String,
    pub partitions: u32,
    pub batch_max_events: usize,
    pub batch_max_wait: Duration,
}

/// The actor running [`PublisherTask`]; stops when the task ends.
pub struct BatchPublisher {
    task: Option<PublisherTask>,
}

impl BatchPublisher {
    pub fn new(task: PublisherTask) -> Self {
        BatchPublisher { task: Some(task) }
    }
}

impl Actor for BatchPublisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(task) = self.task.take() {
            ctx.spawn(task.run().into_actor(self).map(|_, _, ctx| ctx.stop()));
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        tracing::info!("batch publisher stopped");
    }
}

/// Why publishing a round failed.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error("no AMQP connection within {0} s")]
    ConnectTimeout(u64),
    #[error("no publish confirm within {0} s")]
    PublishTimeout(u64),
    #[error("the AMQP connection was lost")]
    Lost,
}

struct Amqp {
    conn: lapin::Connection,
    publisher: Publisher,
}

/// A round being published: batches confirmed so far are not sent again on retry.
struct PendingRound {
    partitions: Vec<PartitionBatches>,
    rejected: Vec<(RejectedEvent, bool)>,
}

struct PartitionBatches {
    partition: u32,
    batches: Vec<ChangeBatch>,
    done: usize,
}

impl PublisherTask {
    async fn run(mut self) {
        let cancel = self.ctx.cancel.clone();
        let mut batcher = Batcher::new(self.partitions, self.batch_max_events, self.batch_max_wait);
        let mut amqp: Option<Amqp> = None;
        let mut closed = false;
        let mut health = tokio::time::interval(HEALTH_CHECK);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.ctx
            .readiness
            .set("rabbitmq", Err("not connected yet".into()));
        loop {
            if !closed {
                let deadline = batcher.deadline().map(tokio::time::Instant::from_std);
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    item = self.rx.recv() => match item {
                        Some(item) => batcher.push(item, Instant::now()),
                        None => closed = true,
                    },
                    _ = sleep_until_opt(deadline) => {}
                    // While idle, keep the link up so readiness tells the truth.
                    _ = health.tick() => {
                        if !self.ensure_connected(&mut amqp).await {
                            break;
                        }
                    }
                }
                // Take what is already waiting without waiting for more.
                while !batcher.ready(Instant::now()) {
                    match self.rx.try_recv() {
                        Ok(item) => batcher.push(item, Instant::now()),
                        Err(_) => break,
                    }
                }
            }
            if batcher.ready(Instant::now()) || (closed && !batcher.is_empty()) {
                let round = batcher.take_round();
                if !self.publish_round(round, &mut amqp).await {
                    break;
                }
            } else if closed {
                break;
            }
        }
        if let Some(a) = amqp.take() {
            let _ = a.conn.close(200, "ingest stopping".into()).await;
        }
    }

    /// Connects (and declares the topology) unless connected, retrying with
    /// backoff. Returns false when cancelled first.
    async fn ensure_connected(&mut self, amqp: &mut Option<Amqp>) -> bool {
        let cancel = self.ctx.cancel.clone();
        let mut attempt: u32 = 0;
        loop {
            if amqp.as_ref().is_some_and(|a| a.publisher.is_open()) {
                return true;
            }
            if amqp.take().is_some() {
                self.failed(&RoundError::Lost, attempt, 0);
            }
            if cancel.is_cancelled() {
                return false;
            }
            if !self.machine.allow_primary() {
                if !pause(&cancel, DEGRADED_POLL).await {
                    return false;
                }
                continue;
            }
            match self.connect().await {
                Ok(a) => {
                    *amqp = Some(a);
                    self.ctx.readiness.set("rabbitmq", Ok(()));
                    return true;
                }
                Err(RoundError::Amqp(AmqpError::Cancelled)) => return false,
                Err(e) => {
                    let delay = self.failed(&e, attempt, 0);
                    attempt = attempt.saturating_add(1);
                    if !pause(&cancel, delay).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Logs, counts and records a failure; returns the backoff delay.
    fn failed(&self, e: &RoundError, attempt: u32, events: u64) -> Duration {
        let error = mdp_telemetry::error_chain(e);
        let delay = mdp_amqp::backoff_delay(attempt);
        metrics::PUBLISH_FAILURES_TOTAL.inc();
        tracing::warn!(
            error = %error,
            attempt = attempt + 1,
            retry_in_ms = delay.as_millis() as u64,
            events,
            "publishing change batches failed, binlog reading paused until it succeeds"
        );
        self.machine.record_failure(&error);
        self.ctx.readiness.set("rabbitmq", Err(error));
        delay
    }

    /// Publishes `round` until confirmed (retrying with backoff), then saves
    /// its boundary. Returns false when cancelled first.
    async fn publish_round(&mut self, round: Round, amqp: &mut Option<Amqp>) -> bool {
        let cancel = self.ctx.cancel.clone();
        let (events, batches) = (round.events() as u64, round.batches() as u64);
        let boundary = round.boundary.clone();
        let mut pending = PendingRound {
            partitions: round
                .partitions
                .into_iter()
                .map(|(partition, batches)| PartitionBatches {
                    partition,
                    batches,
                    done: 0,
                })
                .collect(),
            rejected: round.rejected.into_iter().map(|r| (r, false)).collect(),
        };
        let mut attempt: u32 = 0;
        while !pending.is_done() {
            if !self.ensure_connected(amqp).await {
                return false;
            }
            let Some(a) = amqp.as_ref() else { continue };
            let result = tokio::select! {
                _ = cancel.cancelled() => return false,
                r = tokio::time::timeout(
                    PUBLISH_TIMEOUT,
                    pending.publish(&a.publisher, &self.topology, &self.state),
                ) => r,
            };
            match result {
                Ok(Ok(())) => self.machine.record_success(),
                Ok(Err(e)) => {
                    let delay = self.failed(&RoundError::Amqp(e), attempt, events);
                    // A fresh connection re-declares the topology, which also
                    // repairs deleted queues.
                    *amqp = None;
                    attempt = attempt.saturating_add(1);
                    if !pause(&cancel, delay).await {
                        return false;
                    }
                }
                Err(_) => {
                    // A blocked broker (resource alarm) accepts publishes but
                    // never confirms them.
                    let delay = self.failed(
                        &RoundError::PublishTimeout(PUBLISH_TIMEOUT.as_secs()),
                        attempt,
                        events,
                    );
                    *amqp = None;
                    attempt = attempt.saturating_add(1);
                    if !pause(&cancel, delay).await {
                        return false;
                    }
                }
            }
        }
        self.ctx.stats.add("events_published", events as f64);
        self.ctx.stats.add("batches_published", batches as f64);
        if let Some(b) = boundary {
            match self.store.save(&b).await {
                Ok(saved) => {
                    tracing::debug!(position = %saved.position, "binlog position saved");
                    self.state.set_saved(saved);
                }
                Err(e) => {
                    // Not fatal: the next boundary is saved again; a restart
                    // meanwhile re-publishes from the older position (deduplicated downstream).
                    tracing::error!(
                        error = %mdp_telemetry::error_chain(&e),
                        position = %b,
                        "saving the binlog position failed"
                    );
                }
            }
        }
        true
    }

    async fn connect(&self) -> Result<Amqp, RoundError> {
        let name = format!("{} publisher", self.ctx.instance);
        let conn = tokio::time::timeout(
            CONNECT_ATTEMPT,
            mdp_amqp::connect(&self.amqp_url, &name, &self.ctx.cancel),
        )
        .await
        .map_err(|_| RoundError::ConnectTimeout(CONNECT_ATTEMPT.as_secs()))??;
        let publisher = Publisher::new(&conn).await?.with_mandatory(true);
        self.topology.declare(publisher.channel()).await?;
        tracing::info!("change publisher connected, topology declared");
        Ok(Amqp { conn, publisher })
    }
}

impl PendingRound {
    fn is_done(&self) -> bool {
        self.partitions.iter().all(|p| p.done >= p.batches.len())
            && self.rejected.iter().all(|(_, done)| *done)
    }

    async fn publish(
        &mut self,
        publisher: &Publisher,
        topology: &Topology,
        state: &IngestState,
    ) -> Result<(), AmqpError> {
        let exchange = topology.changes_exchange();
        let jobs = self
            .partitions
            .iter_mut()
            .filter(|p| p.done < p.batches.len())
            .map(|p| publish_partition(p, publisher, &exchange, state));
        let results = futures::future::join_all(jobs).await;

        let dlx = topology.dead_letter_exchange();
        for (rejected, done) in self.rejected.iter_mut().filter(|(_, done)| !*done) {
            let batch = ChangeBatch {
                partition: rejected.event.partition,
                events: vec![rejected.event.clone()],
            };
            publisher
                .publish_json(
                    &dlx,
                    Stage::Changes.as_str(),
                    &batch,
                    Some(rejected.event.id.0.as_str()),
                )
                .await?;
            *done = true;
        }
        results
            .into_iter()
            .collect::<Result<Vec<()>, AmqpError>>()
            .map(|_| ())
    }
}

/// Publishes one partition's batches in order, each waiting for its confirm.
async fn publish_partition(
    p: &mut PartitionBatches,
    publisher: &Publisher,
    exchange: &str,
    state: &IngestState,
) -> Result<(), AmqpError> {
    let routing_key = Topology::routing_key(p.partition);
    while let Some(batch) = p.batches.get(p.done) {
        let Some(first) = batch.events.first() else {
            p.done += 1;
            continue;
        };
        let span = tracing::info_span!(
            "ingest.publish_batch",
            partition = p.partition,
            events = batch.events.len(),
            first_position = %first.position,
        );
        let started = Instant::now();
        publisher
            .publish_json(exchange, &routing_key, batch, Some(first.id.0.as_str()))
            .instrument(span)
            .await?;
        metrics::PUBLISH_LATENCY_SECONDS.observe(started.elapsed().as_secs_f64());
        metrics::BATCHES_PUBLISHED_TOTAL.inc();
        for e in &batch.events {
            metrics::EVENTS_TOTAL
                .with_label_values(&[metrics::op_label(e.op)])
                .inc();
        }
        state.add_published(batch.events.len() as u64, 1);
        p.done += 1;
    }
    Ok(())
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Sleeps unless cancelled first; false when cancelled.
async fn pause(cancel: &tokio_util::sync::CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}
