//! The consumer of one partition's windows queue: reads windows in order,
//! folds pending ones into one computation (catch-up), has the partition's
//! state keeper apply them, publishes the result batch with a confirm and only
//! then acknowledges the windows.

use crate::actors::state_keeper::{Compute, StateKeeper};
use crate::board::PartitionBoard;
use crate::configuration::ComputeOptions;
use crate::events::{
    DuplicateWindows, Inconsistencies, MessageRejected, PoisonWindow, RejectReason, StateFailed,
    WindowRetry, WindowsComputed,
};
use crate::state::{ComputeError, ComputeOutcome, StateError, StoredBatch};
use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, WrapFuture,
};
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use mdp_amqp::{DecodeError, Publisher, Topology};
use mdp_degrade::DegradeMachine;
use mdp_service::PartitionsOwned;
use mdp_service::ServiceContext;
use mdp_telemetry::error_chain;
use mdp_types::status::partition_stat;
use mdp_types::Window;
use opentelemetry::trace::TraceContextExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Everything the partition consumers of one RabbitMQ session share.
pub struct Pipeline {
    pub ctx: ServiceContext,
    pub options: ComputeOptions,
    pub topology: Topology,
    pub publisher: Publisher,
    pub board: PartitionBoard,
    /// The `state` degrade machine (SQLite failing).
    pub state_machine: DegradeMachine,
}

/// Why a partition consumer stopped.
#[derive(Debug)]
pub enum ConsumerExit {
    /// Shutdown was requested.
    Cancelled,
    /// The broker ended the consumer (channel or connection closed, queue deleted).
    StreamEnded,
    /// An AMQP operation failed: the session must be rebuilt.
    Amqp(String),
}

/// Sent to the supervisor when a consumer stops on its own.
#[derive(Debug)]
pub struct Stopped {
    pub partition: u32,
    pub exit: ConsumerExit,
}

/// Whether this instance owns (consumes) a partition, shared by the actor and
/// its worker so that whichever stops first releases it exactly once.
#[derive(Clone)]
struct Ownership {
    partition: u32,
    owned: Arc<AtomicBool>,
    partitions: PartitionsOwned,
}

impl Ownership {
    fn acquire(&self) {
        if !self.owned.swap(true, Ordering::SeqCst) {
            self.partitions.insert(self.partition);
            tracing::info!(partition = self.partition, "partition acquired");
        }
    }

    fn release(&self, reason: &str) {
        if self.owned.swap(false, Ordering::SeqCst) {
            self.partitions.remove(self.partition);
            tracing::info!(partition = self.partition, reason, "partition released");
        }
    }
}

/// The actor consuming `{prefix}.windows.{partition}`.
pub struct PartitionConsumer {
    worker: Option<Worker>,
    ownership: Ownership,
    // Kept open for as long as the consumer runs.
    _channel: lapin::Channel,
    exits: mpsc::UnboundedSender<Stopped>,
}

impl PartitionConsumer {
    pub fn new(
        partition: u32,
        channel: lapin::Channel,
        consumer: lapin::Consumer,
        keeper: Addr<StateKeeper>,
        pipeline: Arc<Pipeline>,
        exits: mpsc::UnboundedSender<Stopped>,
    ) -> Self {
        let ownership = Ownership {
            partition,
            owned: Arc::new(AtomicBool::new(false)),
            partitions: pipeline.ctx.partitions.clone(),
        };
        PartitionConsumer {
            worker: Some(Worker {
                partition,
                consumer,
                keeper,
                pipeline,
                attempts: HashMap::new(),
                ownership: ownership.clone(),
            }),
            ownership,
            _channel: channel,
            exits,
        }
    }
}

impl Actor for PartitionConsumer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(worker) = self.worker.take() else {
            return;
        };
        let partition = worker.partition;
        ctx.spawn(worker.run().into_actor(self).map(move |exit, act, ctx| {
            if !matches!(exit, ConsumerExit::Cancelled) {
                // The supervisor may be gone already during shutdown.
                let _ = act.exits.send(Stopped { partition, exit });
            }
            ctx.stop();
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.ownership.release("consumer stopped");
    }
}

/// Stop consuming (the session is being rebuilt or the service stops).
/// Unacknowledged windows return to the queue when the channel closes. The
/// partition is released before the reply, so a new session started after
/// the reply cannot be undone by this one.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for PartitionConsumer {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.ownership.release("session closed");
        ctx.stop();
    }
}

/// A decoded window with the delivery that carried it.
struct Pending {
    delivery: Delivery,
    window: Arc<Window>,
}

impl Pending {
    fn message_key(&self) -> String {
        self.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_else(|| format!("{}:{}", self.window.partition, self.window.id))
    }
}

enum Computed {
    Done,
    /// The engine failed on a merged computation: apply the windows one by
    /// one to find the failing one and let the others through.
    Split,
}

struct Worker {
    partition: u32,
    consumer: lapin::Consumer,
    keeper: Addr<StateKeeper>,
    pipeline: Arc<Pipeline>,
    /// Engine failures per window message (message id).
    attempts: HashMap<String, u32>,
    ownership: Ownership,
}

impl Worker {
    async fn run(mut self) -> ConsumerExit {
        let cancel = self.pipeline.ctx.cancel.clone();
        let exit = loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => break ConsumerExit::Cancelled,
                next = self.consumer.next() => next,
            };
            let first = match next {
                None => break ConsumerExit::StreamEnded,
                Some(Err(e)) => break ConsumerExit::Amqp(error_chain(&e)),
                Some(Ok(d)) => d,
            };
            self.ownership.acquire();
            let batch = match self.collect(first).await {
                Ok(batch) => batch,
                Err(exit) => break exit,
            };
            if batch.is_empty() {
                continue;
            }
            if let Err(exit) = self.process(batch).await {
                break exit;
            }
        };
        self.ownership.release(match &exit {
            ConsumerExit::Cancelled => "cancelled",
            ConsumerExit::StreamEnded => "consumer ended by the broker",
            ConsumerExit::Amqp(_) => "amqp failure",
        });
        exit
    }

    /// The first delivery plus every further delivery already waiting, up to
    /// the merge limits; unreadable messages are dead-lettered on the way.
    async fn collect(&mut self, first: Delivery) -> Result<Vec<Pending>, ConsumerExit> {
        let mut batch = Vec::new();
        let mut changes = 0usize;
        let mut next = Some(first);
        while let Some(delivery) = next.take() {
            if let Some(p) = self.decode(delivery).await? {
                changes += p.window.changes.len();
                batch.push(p);
            }
            let room = batch.len() < self.pipeline.options.merge_max_windows
                && changes < self.pipeline.options.merge_max_changes;
            if !room {
                break;
            }
            // Only what the broker already delivered: never wait for more.
            match self.consumer.next().now_or_never() {
                Some(Some(Ok(d))) => next = Some(d),
                Some(Some(Err(e))) => {
                    // Compute what we have; the broken stream ends the loop next time.
                    tracing::warn!(partition = self.partition, error = %error_chain(&e), "window consumer failed");
                    break;
                }
                Some(None) | None => break,
            }
        }
        Ok(batch)
    }

    async fn decode(&self, delivery: Delivery) -> Result<Option<Pending>, ConsumerExit> {
        let max = self.pipeline.options.max_message_bytes;
        let (reason, error) = match mdp_amqp::decode_json::<Window>(&delivery, max) {
            Ok(window) if window.partition == self.partition => {
                // The decoded window is all that is needed from the body.
                let mut delivery = delivery;
                delivery.data = Vec::new();
                return Ok(Some(Pending {
                    delivery,
                    window: Arc::new(window),
                }));
            }
            Ok(window) => (
                RejectReason::WrongPartition,
                format!(
                    "window {} of partition {} on the queue of partition {}",
                    window.id, window.partition, self.partition
                ),
            ),
            Err(e @ DecodeError::TooLarge { .. }) => (RejectReason::TooLarge, error_chain(&e)),
            Err(e) => (RejectReason::Malformed, error_chain(&e)),
        };
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string());
        MessageRejected {
            partition: self.partition,
            reason,
            message_id: message_id.as_deref(),
            error: &error,
        }
        .emit();
        mdp_amqp::dead_letter(&delivery, reason.as_str())
            .await
            .map_err(|e| ConsumerExit::Amqp(error_chain(&e)))?;
        Ok(None)
    }

    async fn process(&mut self, batch: Vec<Pending>) -> Result<(), ConsumerExit> {
        match self.compute_publish_ack(&batch, true).await? {
            Computed::Done => Ok(()),
            Computed::Split => {
                for one in batch {
                    self.compute_publish_ack(std::slice::from_ref(&one), false)
                        .await?;
                }
                Ok(())
            }
        }
    }

    /// The span of a computation: a child of the first window's trace, linked
    /// to the traces of the other windows merged into it.
    fn span(&self, batch: &[Pending]) -> tracing::Span {
        let first = batch.first().map(|p| p.window.id).unwrap_or_default();
        let last = batch.last().map(|p| p.window.id).unwrap_or_default();
        let changes: usize = batch.iter().map(|p| p.window.changes.len()).sum();
        let span = tracing::info_span!(
            "compute_windows",
            partition = self.partition,
            first_window_id = first,
            window_id = last,
            windows = batch.len(),
            changes,
        );
        if let Some(p) = batch.first() {
            if let Err(error) = span.set_parent(mdp_amqp::parent_context(&p.delivery)) {
                tracing::debug!(error = %error, "cannot set the parent of the compute span");
            }
        }
        for p in batch.iter().skip(1) {
            let cx = mdp_amqp::parent_context(&p.delivery);
            span.add_link(cx.span().span_context().clone());
        }
        span
    }

    async fn compute_publish_ack(
        &mut self,
        batch: &[Pending],
        may_split: bool,
    ) -> Result<Computed, ConsumerExit> {
        let span = self.span(batch);
        self.compute_publish_ack_in(batch, may_split, span.clone())
            .instrument(span)
            .await
    }

    async fn compute_publish_ack_in(
        &mut self,
        batch: &[Pending],
        may_split: bool,
        span: tracing::Span,
    ) -> Result<Computed, ConsumerExit> {
        let windows: Arc<[Arc<Window>]> = batch.iter().map(|p| p.window.clone()).collect();
        let started = Instant::now();
        let outcome = match self.compute(batch, windows, may_split, span).await? {
            Some(outcome) => outcome,
            None if may_split && batch.len() > 1 => return Ok(Computed::Split),
            None => return Ok(Computed::Done),
        };
        let elapsed = started.elapsed();
        // The state is committed: progress is visible before the publish.
        self.record(&outcome, elapsed);

        if !outcome.duplicates.is_empty() {
            DuplicateWindows {
                partition: self.partition,
                window_ids: &outcome.duplicates,
                republished: outcome.republish.as_ref().map(|b| b.window_id),
            }
            .emit();
        }
        if let Some(stored) = &outcome.republish {
            self.publish(stored).await?;
        }
        if let Some(stored) = &outcome.batch {
            self.publish(stored).await?;
        }
        if let Some(last) = batch.last() {
            // One ack for the whole batch: the channel carries only this
            // partition's deliveries, in order.
            let acked = last
                .delivery
                .acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .map_err(|e| ConsumerExit::Amqp(error_chain(&e)))?;
            if !acked {
                // The channel closed: the broker redelivers, the windows are duplicates then.
                return Err(ConsumerExit::Amqp(
                    "the consumer channel closed before the windows were acknowledged".into(),
                ));
            }
        }
        for p in batch {
            self.attempts.remove(&p.message_key());
        }
        Ok(Computed::Done)
    }

    /// Runs the computation until it succeeds. State failures are retried
    /// without limit (nothing is acknowledged meanwhile); engine failures of a
    /// single window are retried a few times, then the window is dead-lettered
    /// and `None` returned. For a merged batch an engine failure returns `None`
    /// at once so the caller can split it.
    async fn compute(
        &mut self,
        batch: &[Pending],
        windows: Arc<[Arc<Window>]>,
        may_split: bool,
        span: tracing::Span,
    ) -> Result<Option<ComputeOutcome>, ConsumerExit> {
        let cancel = self.pipeline.ctx.cancel.clone();
        let opts = &self.pipeline.options;
        let mut state_attempt = 0u32;
        loop {
            let request = Compute {
                windows: windows.clone(),
                computed_at_ms: mdp_types::now_ms(),
                span: span.clone(),
            };
            let result = match self.keeper.send(request).await {
                Ok(result) => result,
                Err(mailbox) => Err(ComputeError::State(StateError::KeeperStopped(
                    mailbox.to_string(),
                ))),
            };
            let error = match result {
                Ok(outcome) => {
                    if state_attempt > 0 {
                        tracing::info!(
                            partition = self.partition,
                            attempts = state_attempt + 1,
                            "state store works again"
                        );
                    }
                    self.pipeline.state_machine.record_success();
                    self.pipeline.ctx.readiness.set("state", Ok(()));
                    return Ok(Some(outcome));
                }
                Err(e) => e,
            };
            let text = error_chain(&error);
            let delay = match error {
                ComputeError::State(_) => {
                    state_attempt += 1;
                    let delay = opts.state_backoff.delay(state_attempt);
                    StateFailed {
                        partition: self.partition,
                        attempt: state_attempt,
                        delay,
                        error: &text,
                    }
                    .emit();
                    self.pipeline.state_machine.record_failure(&text);
                    self.pipeline.ctx.readiness.set("state", Err(text));
                    delay
                }
                ComputeError::Engine { .. } | ComputeError::EnginePanic { .. } => {
                    if may_split && batch.len() > 1 {
                        tracing::warn!(
                            partition = self.partition,
                            windows = batch.len(),
                            error = %text,
                            "report engine failed on merged windows, applying them one by one"
                        );
                        return Ok(None);
                    }
                    let Some(p) = batch.first() else {
                        return Ok(None);
                    };
                    let key = p.message_key();
                    let attempt = {
                        let n = self.attempts.entry(key.clone()).or_insert(0);
                        *n += 1;
                        *n
                    };
                    if attempt >= opts.engine_max_attempts {
                        PoisonWindow {
                            partition: self.partition,
                            window_id: p.window.id,
                            attempts: attempt,
                            error: &text,
                        }
                        .emit();
                        self.pipeline
                            .board
                            .update(self.partition, |i| i.poison_windows += 1);
                        mdp_amqp::dead_letter(&p.delivery, "poison")
                            .await
                            .map_err(|e| ConsumerExit::Amqp(error_chain(&e)))?;
                        self.attempts.remove(&key);
                        return Ok(None);
                    }
                    let delay = opts.engine_backoff.delay(attempt);
                    WindowRetry {
                        partition: self.partition,
                        window_id: p.window.id,
                        attempt,
                        max_attempts: opts.engine_max_attempts,
                        delay,
                        error: &text,
                    }
                    .emit();
                    delay
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return Err(ConsumerExit::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn publish(&self, stored: &StoredBatch) -> Result<(), ConsumerExit> {
        let topology = &self.pipeline.topology;
        let message_id = format!("{}:{}", stored.partition, stored.window_id);
        self.pipeline
            .publisher
            .publish_bytes(
                &topology.results_exchange(),
                &Topology::routing_key(self.partition),
                stored.json.clone(),
                Some(&message_id),
            )
            .await
            .map_err(|e| {
                let text = error_chain(&e);
                tracing::warn!(partition = self.partition, window_id = stored.window_id, error = %text, "result publish failed");
                ConsumerExit::Amqp(text)
            })
    }

    fn record(&self, outcome: &ComputeOutcome, elapsed: Duration) {
        let stats = &self.pipeline.ctx.stats;
        if let Some(b) = &outcome.batch {
            WindowsComputed {
                partition: self.partition,
                first_window_id: b.first_window_id,
                window_id: b.window_id,
                windows: outcome.applied.len(),
                changes: outcome.changes,
                rows: b.rows,
                groups: outcome.progress.groups,
                elapsed,
            }
            .emit();
            Inconsistencies {
                partition: self.partition,
                first_window_id: b.first_window_id,
                window_id: b.window_id,
                stats: &outcome.stats,
            }
            .emit();
            stats.add("mdp_compute_windows_total", outcome.applied.len() as f64);
            stats.add("mdp_compute_changes_total", outcome.changes as f64);
            stats.add("mdp_compute_result_rows_total", b.rows as f64);
        }
        let applied = outcome.applied.len() as u64;
        // Admin compares it with flow-control's `partition.{p}.last_sealed_window`.
        stats.set(
            &partition_stat::name(self.partition, partition_stat::LAST_APPLIED_WINDOW),
            outcome.progress.last_applied_window as f64,
        );
        self.pipeline.board.update(self.partition, |info| {
            info.last_applied_window = outcome.progress.last_applied_window;
            info.groups = outcome.progress.groups;
            if applied > 0 {
                info.windows_applied += applied;
                info.last_compute_ms = elapsed.as_secs_f64() * 1000.0;
                info.last_computed_at_ms = Some(mdp_types::now_ms());
            }
        });
    }
}
