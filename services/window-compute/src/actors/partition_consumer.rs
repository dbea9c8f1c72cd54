//! The consumer of one partition's windows queue: reads windows in order,
//! folds pending ones into one computation (catch-up), has the partition's
//! state keeper apply them, publishes the result batch with a confirm and only
//! then acknowledges the windows.
//!
//! A window the engine fails on at every attempt is parked: the partition is
//! held at it (recorded in its state) before it is dead-lettered. While the
//! partition holds windows, deliveries are kept in its held store and
//! acknowledged, not computed; held windows are then applied in id order up
//! to the first parked window that is not back (see `crate::state` `held`),
//! each computation published like an ordinary one. Every few seconds the
//! consumer reads the partition's hold from the state (shown in the board,
//! the heartbeat and metrics) and applies held windows that became ready.

use crate::actors::state_keeper::{
    Compute, ComputeHeld, ForgetApplied, Intake, NextHeldWindows, Park, ReadHold, StateKeeper,
};
use crate::board::PartitionBoard;
use crate::configuration::ComputeOptions;
use crate::events::{
    self, DuplicateWindows, HoldReleased, Inconsistencies, MessageRejected, PoisonWindow,
    RejectReason, SkippedWindowsDropped, StateFailed, WindowRetry, WindowsComputed, WindowsHeld,
};
use crate::state::{
    ComputeError, ComputeOutcome, HeldIntake, HeldWindow, Hold, HoldStatus, NextHeld, StateError,
    StoredBatch,
};
use actix::dev::ToEnvelope;
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
use mdp_types::{Window, WindowId};
use opentelemetry::trace::TraceContextExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How often a consumer reads its partition's hold from the state.
const HOLD_REFRESH: Duration = Duration::from_secs(2);
/// Refreshes in a row that must find held windows ready to apply and no
/// progress before a replica that does not own the partition applies them.
const STALLED_REFRESHES: u32 = 5;

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

    fn is_owned(&self) -> bool {
        self.owned.load(Ordering::SeqCst)
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
                drain_pending: false,
                shown_hold: None,
                last_applied_seen: None,
                stalled_refreshes: 0,
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

/// What became of a computation of held windows.
enum HeldComputed {
    Applied,
    /// The engine failed on a merged computation: continue one by one.
    Split,
    /// The engine failed on the window at every attempt: it is parked.
    Parked,
}

struct Worker {
    partition: u32,
    consumer: lapin::Consumer,
    keeper: Addr<StateKeeper>,
    pipeline: Arc<Pipeline>,
    /// Engine failures per window message (message id).
    attempts: HashMap<String, u32>,
    ownership: Ownership,
    /// Windows were kept in the held store: apply what is ready.
    drain_pending: bool,
    /// The hold last shown in the board, heartbeat and metrics.
    shown_hold: Option<Hold>,
    /// The last applied window at the previous refresh that found held
    /// windows ready to apply.
    last_applied_seen: Option<WindowId>,
    /// Refreshes in a row that found ready held windows and no progress.
    stalled_refreshes: u32,
}

impl Worker {
    async fn run(mut self) -> ConsumerExit {
        let cancel = self.pipeline.ctx.cancel.clone();
        let mut refresh = tokio::time::interval(HOLD_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let exit = loop {
            // `None`: time to read the partition's hold again.
            let delivered = tokio::select! {
                _ = cancel.cancelled() => break ConsumerExit::Cancelled,
                _ = refresh.tick() => None,
                next = self.consumer.next() => Some(next),
            };
            let Some(next) = delivered else {
                if let Err(exit) = self.refresh_hold().await {
                    break exit;
                }
                continue;
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
            Computed::Done => {}
            Computed::Split => {
                for one in batch {
                    self.compute_publish_ack(std::slice::from_ref(&one), false)
                        .await?;
                }
            }
        }
        if std::mem::take(&mut self.drain_pending) {
            self.drain().await?;
        }
        Ok(())
    }

    /// The span of a computation: a child of the first window's trace, linked
    /// to the traces of the other windows merged into it.
    fn span(&self, batch: &[Pending]) -> tracing::Span {
        let (first, last, changes) = extent(batch.iter().map(|p| &*p.window));
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
        let intake = match self.compute(batch, windows, may_split, span).await? {
            Some(intake) => intake,
            None if may_split && batch.len() > 1 => return Ok(Computed::Split),
            None => return Ok(Computed::Done),
        };
        let elapsed = started.elapsed();
        // The state is committed: progress is visible before the publish.
        let (duplicates, republish, computed) = match &intake {
            Intake::Computed(outcome) => {
                self.record(outcome, elapsed);
                (
                    outcome.duplicates.as_slice(),
                    outcome.republish.as_ref(),
                    outcome.batch.as_ref(),
                )
            }
            Intake::Held(held) => {
                self.record_intake(held);
                self.drain_pending = true;
                (held.duplicates.as_slice(), held.republish.as_ref(), None)
            }
        };

        self.publish_committed(duplicates, republish, computed)
            .await?;
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
    /// single window are retried a few times, then the partition is held at
    /// the window, the window is dead-lettered and `None` returned. For a
    /// merged batch an engine failure returns `None` at once so the caller
    /// can split it. While the partition holds windows the delivered ones
    /// are kept in its held store instead ([`Intake::Held`]).
    async fn compute(
        &mut self,
        batch: &[Pending],
        windows: Arc<[Arc<Window>]>,
        may_split: bool,
        span: tracing::Span,
    ) -> Result<Option<Intake>, ConsumerExit> {
        let cancel = self.pipeline.ctx.cancel.clone();
        let mut state_attempt = 0u32;
        loop {
            let request = Compute {
                windows: windows.clone(),
                computed_at_ms: mdp_types::now_ms(),
                span: span.clone(),
            };
            let result = self.compute_call(request).await;
            let error = match result {
                Ok(outcome) => {
                    self.state_works(state_attempt);
                    return Ok(Some(outcome));
                }
                Err(e) => e,
            };
            let text = error_chain(&error);
            let delay = match error {
                ComputeError::State(_) => {
                    state_attempt += 1;
                    self.state_failed(state_attempt, text)
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
                    match self.engine_failed(&key, p.window.id, &text) {
                        Ok(delay) => delay,
                        Err(attempts) => {
                            // Held before it leaves the queue: a crash in
                            // between redelivers it to a held partition.
                            self.park(p.window.id, &text).await?;
                            self.poisoned(&key, p.window.id, attempts, &text);
                            mdp_amqp::dead_letter(&p.delivery, "poison")
                                .await
                                .map_err(|e| ConsumerExit::Amqp(error_chain(&e)))?;
                            return Ok(None);
                        }
                    }
                }
            };
            pause(&cancel, delay).await?;
        }
    }

    /// Counts an engine failure of the window attempted under `key`: the
    /// pause before the next attempt (logged as a retry), or `Err(attempts)`
    /// once the attempts are used up and the window must be parked.
    fn engine_failed(
        &mut self,
        key: &str,
        window_id: WindowId,
        error: &str,
    ) -> Result<Duration, u32> {
        let attempt = {
            let n = self.attempts.entry(key.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        let opts = &self.pipeline.options;
        if attempt >= opts.engine_max_attempts {
            return Err(attempt);
        }
        let delay = opts.engine_backoff.delay(attempt);
        WindowRetry {
            partition: self.partition,
            window_id,
            attempt,
            max_attempts: opts.engine_max_attempts,
            delay,
            error,
        }
        .emit();
        Ok(delay)
    }

    /// Records a window parked after `attempts` engine failures.
    fn poisoned(&mut self, key: &str, window_id: WindowId, attempts: u32, error: &str) {
        PoisonWindow {
            partition: self.partition,
            window_id,
            attempts,
            error,
        }
        .emit();
        self.pipeline
            .board
            .update(self.partition, |i| i.poison_windows += 1);
        self.attempts.remove(key);
    }

    /// Reports the duplicates of a committed computation and publishes its
    /// result batches: a re-publish of the last stored one first, then the
    /// new one.
    async fn publish_committed(
        &self,
        duplicates: &[WindowId],
        republish: Option<&StoredBatch>,
        batch: Option<&StoredBatch>,
    ) -> Result<(), ConsumerExit> {
        if !duplicates.is_empty() {
            DuplicateWindows {
                partition: self.partition,
                window_ids: duplicates,
                republished: republish.map(|b| b.window_id),
            }
            .emit();
        }
        for stored in republish.into_iter().chain(batch) {
            self.publish(stored).await?;
        }
        Ok(())
    }

    /// The state store answered after `failures` failed attempts.
    fn state_works(&self, failures: u32) {
        if failures > 0 {
            tracing::info!(
                partition = self.partition,
                attempts = failures + 1,
                "state store works again"
            );
        }
        self.pipeline.state_machine.record_success();
        self.pipeline.ctx.readiness.set("state", Ok(()));
    }

    /// Records the `attempt`th state failure in a row; returns the pause
    /// before the next attempt.
    fn state_failed(&self, attempt: u32, text: String) -> Duration {
        let delay = self.pipeline.options.state_backoff.delay(attempt);
        StateFailed {
            partition: self.partition,
            attempt,
            delay,
            error: &text,
        }
        .emit();
        self.pipeline.state_machine.record_failure(&text);
        self.pipeline.ctx.readiness.set("state", Err(text));
        delay
    }

    /// Sends a computation to the state keeper; a stopped keeper is a state
    /// failure (retried like one).
    async fn compute_call<M, R>(&self, msg: M) -> Result<R, ComputeError>
    where
        M: Message<Result = Result<R, ComputeError>> + Send + 'static,
        R: Send + 'static,
        StateKeeper: Handler<M>,
        <StateKeeper as Actor>::Context: ToEnvelope<StateKeeper, M>,
    {
        match self.keeper.send(msg).await {
            Ok(result) => result,
            Err(mailbox) => Err(ComputeError::State(StateError::KeeperStopped(
                mailbox.to_string(),
            ))),
        }
    }

    /// Sends `msg` to the state keeper until the state store takes it.
    async fn state_call<M, R>(&self, msg: M) -> Result<R, ConsumerExit>
    where
        M: Message<Result = Result<R, StateError>> + Clone + Send + 'static,
        R: Send + 'static,
        StateKeeper: Handler<M>,
        <StateKeeper as Actor>::Context: ToEnvelope<StateKeeper, M>,
    {
        let cancel = self.pipeline.ctx.cancel.clone();
        let mut attempt = 0u32;
        loop {
            let result = match self.keeper.send(msg.clone()).await {
                Ok(result) => result,
                Err(mailbox) => Err(StateError::KeeperStopped(mailbox.to_string())),
            };
            match result {
                Ok(value) => {
                    self.state_works(attempt);
                    return Ok(value);
                }
                Err(error) => {
                    attempt += 1;
                    let delay = self.state_failed(attempt, error_chain(&error));
                    pause(&cancel, delay).await?;
                }
            }
        }
    }

    /// Records in the state that `window_id` is parked: the partition is
    /// held at it.
    async fn park(&mut self, window_id: WindowId, error: &str) -> Result<(), ConsumerExit> {
        let status = self
            .state_call(Park {
                window_id,
                reason: error.to_string(),
                at_ms: mdp_types::now_ms(),
            })
            .await?;
        self.show_hold(&status);
        Ok(())
    }

    /// Drops held and parked rows that are applied; tells when the hold
    /// they were behind is released.
    async fn forget_applied(&mut self) -> Result<(), ConsumerExit> {
        let before = self.shown_hold.clone();
        let status = self.state_call(ForgetApplied).await?;
        if let Some(hold) = before {
            if status.last_applied_window >= hold.window_id {
                HoldReleased {
                    partition: self.partition,
                    window_id: hold.window_id,
                    held_since_ms: hold.since_ms,
                }
                .emit();
            }
        }
        self.show_hold(&status);
        Ok(())
    }

    /// Shows the partition's hold in the board, the heartbeat stats and the
    /// metrics. Every replica reads the shared state, so any of them shows it.
    fn show_hold(&mut self, status: &HoldStatus) {
        let p = self.partition;
        let held_at = status.hold.as_ref().map(|h| h.window_id);
        let since = status.hold.as_ref().map(|h| h.since_ms);
        let stats = &self.pipeline.ctx.stats;
        stats.set(
            &partition_stat::name(p, partition_stat::HELD_AT_WINDOW),
            held_at.unwrap_or(0) as f64,
        );
        stats.set(
            &partition_stat::name(p, partition_stat::HELD_WINDOWS),
            status.held_windows as f64,
        );
        stats.set(
            &partition_stat::name(p, partition_stat::HELD_SINCE_MS),
            since.unwrap_or(0) as f64,
        );
        events::hold_gauges(p, held_at, status.held_windows);
        self.pipeline.board.update(p, |info| {
            info.held_at_window = held_at;
            info.hold_reason = status.hold.as_ref().map(|h| h.reason.clone());
            info.held_since_ms = since;
            info.held_windows = status.held_windows;
        });
        self.shown_hold = status.hold.clone();
    }

    fn record_intake(&mut self, intake: &HeldIntake) {
        if !intake.held.is_empty() {
            WindowsHeld {
                partition: self.partition,
                window_ids: &intake.held,
                held_at: intake.status.hold.as_ref().map(|h| h.window_id),
                held_windows: intake.status.held_windows,
            }
            .emit();
        }
        if !intake.dropped.is_empty() {
            SkippedWindowsDropped {
                partition: self.partition,
                window_ids: &intake.dropped,
            }
            .emit();
        }
        self.show_hold(&intake.status);
    }

    /// Reads the hold from the state and applies held windows that became
    /// ready (e.g. after an operator skipped a parked window, or after a
    /// restart). The owner does it at once; a replica that has not received
    /// a window of the partition only after [`STALLED_REFRESHES`] refreshes
    /// without progress (after a restart no replica knows it is the active
    /// consumer until a window arrives). The state's progress makes a double
    /// attempt harmless.
    async fn refresh_hold(&mut self) -> Result<(), ConsumerExit> {
        let status = match self.keeper.send(ReadHold).await {
            Ok(Ok(status)) => status,
            Ok(Err(error)) => {
                tracing::debug!(partition = self.partition, error = %error_chain(&error), "reading the partition's hold failed");
                return Ok(());
            }
            Err(error) => {
                tracing::debug!(partition = self.partition, error = %error, "state keeper not reachable");
                return Ok(());
            }
        };
        self.show_hold(&status);
        if !status.needs_drain() {
            self.last_applied_seen = None;
            self.stalled_refreshes = 0;
            return Ok(());
        }
        let seen = self.last_applied_seen.replace(status.last_applied_window);
        if seen == Some(status.last_applied_window) {
            self.stalled_refreshes += 1;
        } else {
            self.stalled_refreshes = 0;
        }
        if self.ownership.is_owned() || self.stalled_refreshes >= STALLED_REFRESHES {
            self.stalled_refreshes = 0;
            self.drain().await?;
        }
        Ok(())
    }

    /// Applies held windows in id order until none is ready: up to the merge
    /// limits per computation, one at a time after a merged computation
    /// failed. Each batch is published before its windows leave the held store.
    async fn drain(&mut self) -> Result<(), ConsumerExit> {
        let opts = &self.pipeline.options;
        let merged = NextHeldWindows {
            max_windows: opts.merge_max_windows,
            max_changes: opts.merge_max_changes,
        };
        let one = NextHeldWindows {
            max_windows: 1,
            max_changes: usize::MAX,
        };
        let mut single = 0usize;
        loop {
            if self.pipeline.ctx.cancel.is_cancelled() {
                return Err(ConsumerExit::Cancelled);
            }
            let next = self
                .state_call(if single > 0 { one } else { merged })
                .await?;
            let held = match next {
                NextHeld::Wait(status) => {
                    self.show_hold(&status);
                    return Ok(());
                }
                NextHeld::Republish(batch) => {
                    if let Some(stored) = &batch {
                        self.publish(stored).await?;
                    }
                    self.forget_applied().await?;
                    continue;
                }
                NextHeld::Windows(held) => held,
            };
            match self.compute_held(&held).await? {
                HeldComputed::Applied => single = single.saturating_sub(1),
                HeldComputed::Split => single = held.len(),
                HeldComputed::Parked => {}
            }
        }
    }

    async fn compute_held(&mut self, held: &[HeldWindow]) -> Result<HeldComputed, ConsumerExit> {
        let (first, last, changes) = extent(held.iter().map(|h| &*h.window));
        let span = tracing::info_span!(
            "compute_held_windows",
            partition = self.partition,
            first_window_id = first,
            window_id = last,
            windows = held.len(),
            changes,
        );
        self.compute_held_in(held, span.clone())
            .instrument(span)
            .await
    }

    /// [`Worker::compute`] for windows of the held store: the same retries,
    /// but a window failing at every attempt is parked by publishing a copy
    /// to the dead-letter queue (it has no delivery to reject) before it
    /// leaves the held store.
    async fn compute_held_in(
        &mut self,
        held: &[HeldWindow],
        span: tracing::Span,
    ) -> Result<HeldComputed, ConsumerExit> {
        let cancel = self.pipeline.ctx.cancel.clone();
        let windows: Arc<[Arc<Window>]> = held.iter().map(|h| h.window.clone()).collect();
        let mut state_attempt = 0u32;
        loop {
            let started = Instant::now();
            let request = ComputeHeld {
                windows: windows.clone(),
                computed_at_ms: mdp_types::now_ms(),
                span: span.clone(),
            };
            let result = self.compute_call(request).await;
            let error = match result {
                Ok(outcome) => {
                    self.state_works(state_attempt);
                    self.record(&outcome, started.elapsed());
                    self.publish_committed(
                        &outcome.duplicates,
                        outcome.republish.as_ref(),
                        outcome.batch.as_ref(),
                    )
                    .await?;
                    for h in held {
                        self.attempts.remove(&self.held_key(h.window.id));
                    }
                    self.forget_applied().await?;
                    return Ok(HeldComputed::Applied);
                }
                Err(e) => e,
            };
            let text = error_chain(&error);
            let delay = match error {
                ComputeError::State(_) => {
                    state_attempt += 1;
                    self.state_failed(state_attempt, text)
                }
                ComputeError::Engine { .. } | ComputeError::EnginePanic { .. } => {
                    let [one] = held else {
                        tracing::warn!(
                            partition = self.partition,
                            windows = held.len(),
                            error = %text,
                            "report engine failed on merged held windows, applying them one by one"
                        );
                        return Ok(HeldComputed::Split);
                    };
                    let key = self.held_key(one.window.id);
                    match self.engine_failed(&key, one.window.id, &text) {
                        Ok(delay) => delay,
                        Err(attempts) => {
                            crate::parking::publish_parked_copy(
                                &self.pipeline.publisher,
                                &self.pipeline.topology,
                                self.partition,
                                one.window.id,
                                &one.json,
                                "poison",
                            )
                            .await
                            .map_err(|e| ConsumerExit::Amqp(error_chain(&e)))?;
                            self.park(one.window.id, &text).await?;
                            self.poisoned(&key, one.window.id, attempts, &text);
                            return Ok(HeldComputed::Parked);
                        }
                    }
                }
            };
            pause(&cancel, delay).await?;
        }
    }

    fn held_key(&self, window_id: WindowId) -> String {
        format!("{}:{window_id}", self.partition)
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

/// First and last window id and the number of changes of a computation's
/// windows (for its span).
fn extent<'w>(windows: impl Iterator<Item = &'w Window>) -> (WindowId, WindowId, usize) {
    windows.fold((0, 0, 0), |(first, _, changes), w| {
        let first = if first == 0 { w.id } else { first };
        (first, w.id, changes + w.changes.len())
    })
}

/// Waits `delay` before a retry; `Err(Cancelled)` when the service stops first.
async fn pause(
    cancel: &tokio_util::sync::CancellationToken,
    delay: Duration,
) -> Result<(), ConsumerExit> {
    tokio::select! {
        _ = cancel.cancelled() => Err(ConsumerExit::Cancelled),
        _ = tokio::time::sleep(delay) => Ok(()),
    }
}
