//! One actor per partition: consumes `{prefix}.results.{n}`, applies batches
//! strictly in order and acknowledges each only after its MySQL commit.
//!
//! While MySQL is unavailable the batches stay unacknowledged (RabbitMQ keeps
//! them), are retried with backoff and, when Redis is up, written to Redis
//! ahead of MySQL so reads stay fresh.

use crate::actors::amqp_link::{wait_connected, LinkReceiver};
use crate::actors::notifier::Notify;
use crate::domain::PreparedBatch;
use crate::events;
use crate::store::ApplyOutcome;
use crate::writer::{ApplyError, Writer};
use actix::prelude::*;
use futures::StreamExt;
use lapin::message::Delivery;
use mdp_types::ResultBatch;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How often a partition whose MySQL writes are suspended checks again.
const DEGRADED_POLL: Duration = Duration::from_millis(250);
/// Delay before subscribing again after the consumer stopped.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(500);

/// Live figures of one partition, shown by `GET /v1/writer`.
#[derive(Debug, Default)]
pub struct PartitionStatus {
    pub applied_window: AtomicI64,
    pub pending: AtomicUsize,
    pub cached_ahead: AtomicUsize,
    pub consuming: AtomicBool,
}

/// Status of every partition of this instance.
#[derive(Debug, Default, Clone)]
pub struct PartitionStatuses(Arc<Mutex<BTreeMap<u32, Arc<PartitionStatus>>>>);

impl PartitionStatuses {
    pub fn get(&self, partition: u32) -> Arc<PartitionStatus> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(partition)
            .or_default()
            .clone()
    }

    pub fn snapshot(&self) -> Vec<(u32, Arc<PartitionStatus>)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(p, s)| (*p, s.clone()))
            .collect()
    }
}

/// What a partition writer needs from the service.
pub struct PartitionWriterConfig {
    pub partition: u32,
    pub queue: String,
    pub consumer_tag: String,
    pub prefetch: u16,
    pub max_message_bytes: usize,
}

struct Pending {
    id: u64,
    delivery: Arc<Delivery>,
    batch: Arc<PreparedBatch>,
    span: tracing::Span,
    cached_ahead: bool,
}

/// The consumer and applier of one partition.
pub struct PartitionWriter {
    config: PartitionWriterConfig,
    writer: Arc<Writer>,
    link: LinkReceiver,
    notifier: Recipient<Notify>,
    service: mdp_service::ServiceContext,
    cancel: CancellationToken,
    status: Arc<PartitionStatus>,
    pending: VecDeque<Pending>,
    next_id: u64,
    channel: Option<lapin::Channel>,
    subscription: u64,
    subscribing: bool,
    busy: bool,
    retry_at: Option<Instant>,
    attempt: u32,
}

impl PartitionWriter {
    pub fn new(
        config: PartitionWriterConfig,
        writer: Arc<Writer>,
        link: LinkReceiver,
        notifier: Recipient<Notify>,
        service: mdp_service::ServiceContext,
        status: Arc<PartitionStatus>,
    ) -> Self {
        let cancel = service.cancel.clone();
        PartitionWriter {
            config,
            writer,
            link,
            notifier,
            service,
            cancel,
            status,
            pending: VecDeque::new(),
            next_id: 0,
            channel: None,
            subscription: 0,
            subscribing: false,
            busy: false,
            retry_at: None,
            attempt: 0,
        }
    }

    fn subscribe(&mut self, ctx: &mut Context<Self>) {
        if self.subscribing {
            return;
        }
        self.subscribing = true;
        let mut link = self.link.clone();
        let queue = self.config.queue.clone();
        let tag = self.config.consumer_tag.clone();
        let prefetch = self.config.prefetch;
        let fut = async move {
            let conn = wait_connected(&mut link).await?;
            Some(mdp_amqp::consumer(&conn, &queue, &tag, prefetch).await)
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.subscribing = false;
            match result {
                None => ctx.stop(),
                Some(Ok((channel, consumer))) => {
                    act.subscription += 1;
                    let sub = act.subscription;
                    act.channel = Some(channel);
                    act.status.consuming.store(true, Ordering::Relaxed);
                    let items = consumer
                        .map(move |d| (sub, Some(d)))
                        .chain(futures::stream::once(async move { (sub, None) }));
                    ctx.add_stream(items);
                }
                Some(Err(e)) => {
                    tracing::warn!(
                        partition = act.config.partition,
                        queue = %act.config.queue,
                        error = %mdp_telemetry::error_chain(&e),
                        "subscribing to the results queue failed, will retry"
                    );
                    ctx.run_later(RESUBSCRIBE_DELAY, |act, ctx| act.subscribe(ctx));
                }
            }
        }));
    }

    /// The consumer ended: its unacknowledged deliveries return to the queue,
    /// so forget them and subscribe again.
    fn lost_consumer(&mut self, ctx: &mut Context<Self>) {
        tracing::warn!(
            partition = self.config.partition,
            pending = self.pending.len(),
            "results consumer stopped, subscribing again"
        );
        self.channel = None;
        self.pending.clear();
        self.publish_status();
        self.status.consuming.store(false, Ordering::Relaxed);
        self.service.partitions.remove(self.config.partition);
        ctx.run_later(RESUBSCRIBE_DELAY, |act, ctx| act.subscribe(ctx));
    }

    fn accept(&mut self, delivery: Delivery, ctx: &mut Context<Self>) {
        let partition = self.config.partition;
        self.service.partitions.insert(partition);
        let delivery = Arc::new(delivery);
        let batch: ResultBatch =
            match mdp_amqp::decode_json(&delivery, self.config.max_message_bytes) {
                Ok(b) => b,
                Err(e) => return self.reject(delivery, e.reason(), &e.to_string(), ctx),
            };
        let prepared = match PreparedBatch::prepare(&batch, partition, &self.writer.reports) {
            Ok(p) => p,
            Err(e) => return self.reject(delivery, e.reason(), &e.to_string(), ctx),
        };
        let span = tracing::info_span!(
            "apply_result_batch",
            partition,
            window_id = prepared.window_id,
            first_window_id = prepared.first_window_id,
            rows = prepared.row_count(),
        );
        if let Err(error) = span.set_parent(mdp_amqp::parent_context(&delivery)) {
            tracing::debug!(error = %error, "span parent not set");
        }
        self.next_id += 1;
        self.pending.push_back(Pending {
            id: self.next_id,
            delivery,
            batch: Arc::new(prepared),
            span,
            cached_ahead: false,
        });
        self.publish_status();
        self.drive(ctx);
    }

    fn reject(
        &mut self,
        delivery: Arc<Delivery>,
        reason: &'static str,
        error: &str,
        ctx: &mut Context<Self>,
    ) {
        events::MessageRejected {
            partition: self.config.partition,
            reason,
            error,
        }
        .emit();
        let fut = async move {
            if let Err(e) = mdp_amqp::dead_letter(&delivery, reason).await {
                tracing::warn!(
                    error = %mdp_telemetry::error_chain(&e),
                    "dead-lettering failed; the message will be redelivered"
                );
            }
        };
        ctx.spawn(fut.into_actor(self));
    }

    /// Takes the next step for the head of the queue: commit it when MySQL
    /// may be used, else write the next uncached batch to Redis ahead of it.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.pending.is_empty() {
            return;
        }
        if let Some(at) = self.retry_at {
            if Instant::now() < at {
                return;
            }
            self.retry_at = None;
        }
        if self.writer.mysql.allow_primary() {
            self.commit_head(ctx);
        } else {
            self.cache_ahead_next(ctx);
        }
    }

    fn commit_head(&mut self, ctx: &mut Context<Self>) {
        let Some(head) = self.pending.front() else {
            return;
        };
        let id = head.id;
        let batch = head.batch.clone();
        let delivery = head.delivery.clone();
        let cached_ahead = head.cached_ahead;
        let span = head.span.clone();
        let writer = self.writer.clone();
        self.busy = true;
        let written = batch.clone();
        let fut = async move {
            let result = writer.commit(&batch, cached_ahead).await;
            if result.is_ok() {
                if let Err(e) = mdp_amqp::ack(&delivery).await {
                    // Committed: the redelivery is recognised as a duplicate.
                    tracing::warn!(
                        error = %mdp_telemetry::error_chain(&e),
                        "ack after commit failed; the redelivery will be skipped"
                    );
                }
            }
            result
        }
        .instrument(span);
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.busy = false;
            match result {
                Ok(committed) => {
                    act.attempt = 0;
                    let applied = match committed.outcome {
                        ApplyOutcome::Applied { .. } => {
                            act.notifier.do_send(Notify(written.notice()));
                            act.pending
                                .front()
                                .filter(|head| head.id == id)
                                .map(|head| head.batch.window_id)
                        }
                        ApplyOutcome::Duplicate { applied_window, .. } => Some(applied_window),
                    };
                    if let Some(window) = applied {
                        act.status.applied_window.store(window, Ordering::Relaxed);
                    }
                    act.pop(id);
                }
                Err(ApplyError::Retry { kind, source }) => {
                    let delay = mdp_amqp::backoff_delay(act.attempt);
                    act.attempt = act.attempt.saturating_add(1);
                    events::MysqlRetry {
                        partition: act.config.partition,
                        window_id: act.pending.front().map(|p| p.batch.window_id).unwrap_or(0),
                        kind,
                        error: &mdp_telemetry::error_chain(&source),
                        retry_in: delay,
                    }
                    .emit();
                    act.retry_later(delay, ctx);
                }
                Err(e @ ApplyError::Rejected(_)) => {
                    if let Some(head) = act.pending.front() {
                        if head.id == id {
                            let delivery = head.delivery.clone();
                            act.pop(id);
                            act.reject(
                                delivery,
                                "apply_rejected",
                                &mdp_telemetry::error_chain(&e),
                                ctx,
                            );
                        }
                    }
                }
            }
            act.drive(ctx);
        }));
    }

    fn cache_ahead_next(&mut self, ctx: &mut Context<Self>) {
        let Some(next) = self.pending.iter().find(|p| !p.cached_ahead) else {
            self.retry_later(DEGRADED_POLL, ctx);
            return;
        };
        let id = next.id;
        let batch = next.batch.clone();
        let span = next.span.clone();
        let writer = self.writer.clone();
        self.busy = true;
        let fut = async move { writer.cache_ahead(&batch).await }.instrument(span);
        ctx.spawn(fut.into_actor(self).map(move |cached, act, ctx| {
            act.busy = false;
            if cached {
                if let Some(p) = act.pending.iter_mut().find(|p| p.id == id) {
                    p.cached_ahead = true;
                    act.notifier.do_send(Notify(p.batch.notice()));
                }
                act.publish_status();
                act.drive(ctx);
            } else {
                act.retry_later(DEGRADED_POLL, ctx);
            }
        }));
    }

    fn retry_later(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        self.retry_at = Some(Instant::now() + delay);
        ctx.run_later(delay, |act, ctx| {
            if act.retry_at.is_some_and(|at| Instant::now() >= at) {
                act.retry_at = None;
            }
            act.drive(ctx);
        });
    }

    fn pop(&mut self, id: u64) {
        if self.pending.front().is_some_and(|p| p.id == id) {
            self.pending.pop_front();
        }
        self.publish_status();
    }

    fn publish_status(&self) {
        self.status
            .pending
            .store(self.pending.len(), Ordering::Relaxed);
        self.status.cached_ahead.store(
            self.pending.iter().filter(|p| p.cached_ahead).count(),
            Ordering::Relaxed,
        );
    }
}

impl Actor for PartitionWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(
            partition = self.config.partition,
            queue = %self.config.queue,
            "partition writer started"
        );
        let cancel = self.cancel.clone();
        ctx.spawn(
            async move { cancel.cancelled().await }
                .into_actor(self)
                .map(|(), _, ctx| ctx.stop()),
        );
        self.subscribe(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.status.consuming.store(false, Ordering::Relaxed);
        self.service.partitions.remove(self.config.partition);
        tracing::info!(
            partition = self.config.partition,
            unacknowledged = self.pending.len(),
            "partition writer stopped"
        );
    }
}

/// A delivery of subscription `n`, or `None` when that subscription's stream ended.
type Item = (u64, Option<Result<Delivery, lapin::Error>>);

impl StreamHandler<Item> for PartitionWriter {
    fn handle(&mut self, (sub, item): Item, ctx: &mut Self::Context) {
        if sub != self.subscription {
            // A delivery of a consumer that has ended; the broker redelivers it.
            return;
        }
        match item {
            Some(Ok(delivery)) => self.accept(delivery, ctx),
            Some(Err(e)) => tracing::warn!(
                partition = self.config.partition,
                error = %mdp_telemetry::error_chain(&e),
                "results consumer error"
            ),
            None => {
                if self.cancel.is_cancelled() {
                    return;
                }
                if let Some(channel) = self.channel.take() {
                    if channel.status().connected() {
                        // The broker cancelled the consumer (queue deleted):
                        // close the channel so its deliveries return.
                        actix::spawn(async move {
                            let _ = channel.close(200, "consumer cancelled".into()).await;
                        });
                    }
                }
                self.lost_consumer(ctx);
            }
        }
    }

    /// Streams end with an explicit `None` item; the actor outlives them.
    fn finished(&mut self, _ctx: &mut Self::Context) {}
}
