//! One partition's intake state: de-duplication, append to the KV log, window cutting.
//!
//! Every state change (dedup position, next seq, window cutter) is applied
//! synchronously in the handler together with the sled write, so appends and
//! seals can never interleave on stale copies. Only the flush is awaited: a
//! batch is acknowledged, and a sealed window published, once a flush that
//! began after its write has completed. Sealed windows are released strictly
//! in id order.

use crate::actors::publisher::{PublishWindow, WindowPublisher};
use crate::dedup;
use crate::log::{Append, KvLog, LogError, PartitionMeta, WindowRecord};
use crate::metrics;
use crate::rate_limit::RateMeter;
use crate::status::StatusBoard;
use crate::window::{SealedWindow, WindowCutter};
use actix::prelude::*;
use mdp_degrade::DegradeMachine;
use mdp_service::ServiceContext;
use mdp_types::ChangeEvent;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Append the changes of one batch (already rate-limited). Replies once the
/// new changes are durable, or with the KV error (nothing was committed; the
/// same batch may be sent again).
#[derive(Message)]
#[rtype(result = "Result<AppendOutcome, LogError>")]
pub struct AppendBatch {
    pub events: Arc<Vec<ChangeEvent>>,
    /// Trace context of the batch, stored with each change.
    pub traceparent: Option<String>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub accepted: usize,
    pub duplicates: usize,
}

/// Everything a partition actor starts from.
pub struct PartitionSetup {
    pub partition: u32,
    pub log: KvLog,
    pub meta: PartitionMeta,
    pub cutter: WindowCutter,
    pub publisher: Addr<WindowPublisher>,
    pub board: StatusBoard,
    pub meter: Arc<RateMeter>,
    pub kv: DegradeMachine,
    pub ctx: ServiceContext,
    pub tick: Duration,
}

pub struct PartitionActor {
    partition: u32,
    label: String,
    log: KvLog,
    meta: PartitionMeta,
    cutter: WindowCutter,
    publisher: Addr<WindowPublisher>,
    board: StatusBoard,
    meter: Arc<RateMeter>,
    kv: DegradeMachine,
    ctx: ServiceContext,
    tick: Duration,
    kv_failing: bool,
    /// Number of sled writes made so far (appends and seals).
    writes: u64,
    /// Sealed windows waiting for a flush that covers their write, in id
    /// order, with the number of the write that sealed them.
    unflushed: VecDeque<(u64, SealedWindow, WindowRecord)>,
}

impl PartitionActor {
    pub fn new(s: PartitionSetup) -> Self {
        PartitionActor {
            label: s.partition.to_string(),
            partition: s.partition,
            log: s.log,
            meta: s.meta,
            cutter: s.cutter,
            publisher: s.publisher,
            board: s.board,
            meter: s.meter,
            kv: s.kv,
            ctx: s.ctx,
            tick: s.tick,
            kv_failing: false,
            writes: 0,
            unflushed: VecDeque::new(),
        }
    }

    fn refresh_status(&self) {
        self.board
            .intake(self.partition, &self.meta, self.cutter.open_window());
        let open = self.cutter.open_window().map_or(0, |w| w.changes());
        metrics::OPEN_WINDOW_CHANGES
            .with_label_values(&[self.label.as_str()])
            .set(open as i64);
    }

    fn kv_failure(&mut self, op: &'static str, error: &LogError) {
        metrics::kv_failed(self.partition, op, error);
        let text = mdp_telemetry::error_chain(error);
        self.kv.record_failure(&text);
        self.ctx.readiness.set("kv", Err(text));
        self.kv_failing = true;
    }

    fn kv_success(&mut self) {
        self.kv.record_success();
        if self.kv_failing {
            self.kv_failing = false;
            self.ctx.readiness.set("kv", Ok(()));
            tracing::info!(partition = self.partition, "kv log writes succeed again");
        }
    }

    /// Hands durable sealed windows to the publisher, in id order.
    fn windows_sealed(&self, sealed: Vec<(SealedWindow, WindowRecord)>) {
        for (w, record) in sealed {
            let changes = w.changes();
            tracing::info!(
                partition = self.partition,
                window_id = w.id,
                first_seq = w.first_seq,
                last_seq = w.last_seq,
                changes,
                reason = w.reason.as_str(),
                "window sealed"
            );
            metrics::WINDOWS_SEALED
                .with_label_values(&[w.reason.as_str()])
                .inc();
            metrics::WINDOW_CHANGES.observe(changes as f64);
            self.ctx.stats.add("windows_sealed_total", 1.0);
            let unpublished = self.board.sealed(self.partition, w.id, w.sealed_at_ms);
            metrics::UNPUBLISHED_WINDOWS
                .with_label_values(&[self.label.as_str()])
                .set(unpublished as i64);
            self.publisher.do_send(PublishWindow(record));
        }
    }

    /// Publishes, in order, every sealed window whose write is covered by a
    /// completed flush (`flushed` = number of writes made before that flush began).
    fn release_flushed(&mut self, flushed: u64) {
        let mut ready = Vec::new();
        while self
            .unflushed
            .front()
            .is_some_and(|(w, _, _)| *w <= flushed)
        {
            if let Some((_, window, record)) = self.unflushed.pop_front() {
                ready.push((window, record));
            }
        }
        if !ready.is_empty() {
            self.windows_sealed(ready);
        }
    }

    /// Flushes everything written so far; on success releases the sealed
    /// windows it covers. Used by seals and to retry a failed flush.
    fn spawn_flush(&mut self, ctx: &mut Context<Self>, op: &'static str) {
        let covered = self.writes;
        let log = self.log.clone();
        ctx.spawn(
            async move { log.flush().await }.into_actor(self).map(
                move |result, act, _| match result {
                    Ok(()) => {
                        act.kv_success();
                        act.release_flushed(covered);
                    }
                    Err(error) => act.kv_failure(op, &error),
                },
            ),
        );
    }

    /// Seals the open window when it is due: index entry, flush, then publish.
    fn on_tick(&mut self, ctx: &mut Context<Self>) {
        if self.ctx.cancel.is_cancelled() {
            ctx.stop();
            return;
        }
        let now = mdp_types::now_ms();
        if !self.cutter.is_due(now) {
            // A flush failed earlier and nothing was written since: retry it.
            if self.kv_failing && !self.unflushed.is_empty() {
                self.spawn_flush(ctx, "seal");
            }
            return;
        }
        let before = self.cutter.clone();
        let Some(sealed) = self.cutter.tick(now) else {
            return;
        };
        let record = WindowRecord::sealed(self.partition, &sealed);
        if let Err(error) = self.log.put_windows(std::slice::from_ref(&record)) {
            // Nothing was written: the window stays open and is sealed on a later tick.
            self.cutter = before;
            self.kv_failure("seal", &error);
            return;
        }
        self.writes += 1;
        self.unflushed.push_back((self.writes, sealed, record));
        self.refresh_status();
        self.spawn_flush(ctx, "seal");
    }
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.refresh_status();
        ctx.run_interval(self.tick, |act, ctx| act.on_tick(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        tracing::debug!(partition = self.partition, "partition actor stopped");
    }
}

impl Handler<AppendBatch> for PartitionActor {
    type Result = AtomicResponse<Self, Result<AppendOutcome, LogError>>;

    fn handle(&mut self, msg: AppendBatch, _ctx: &mut Self::Context) -> Self::Result {
        let admission = dedup::admit(self.meta.last_position.as_ref(), &msg.events);
        let outcome = AppendOutcome {
            accepted: admission.accepted.len(),
            duplicates: admission.duplicates,
        };
        if outcome.duplicates > 0 {
            tracing::info!(
                partition = self.partition,
                duplicates = outcome.duplicates,
                accepted = outcome.accepted,
                last_position = ?self.meta.last_position,
                "skipped replayed changes"
            );
            metrics::DUPLICATE_EVENTS.inc_by(outcome.duplicates as u64);
            self.ctx
                .stats
                .add("events_duplicate_total", outcome.duplicates as f64);
        }

        if !admission.accepted.is_empty() {
            let now = mdp_types::now_ms();
            let first_seq = self.meta.next_seq;
            let n = admission.accepted.len() as u64;
            let before = self.cutter.clone();
            let mut sealed = Vec::new();
            for i in 0..n {
                self.cutter
                    .push(first_seq + i, now, msg.traceparent.as_deref(), &mut sealed);
            }
            let mut records: Vec<WindowRecord> = sealed
                .iter()
                .map(|w| WindowRecord::sealed(self.partition, w))
                .collect();
            let sealed_records = records.clone();
            if let Some(open) = self.cutter.open_window() {
                records.push(WindowRecord::open(self.partition, open));
            }
            let meta = PartitionMeta {
                last_position: admission.last_position.clone(),
                next_seq: first_seq + n,
            };
            let events: Vec<&ChangeEvent> = admission
                .indices
                .iter()
                .filter_map(|i| msg.events.get(*i))
                .collect();
            let written = self.log.append(&Append {
                partition: self.partition,
                first_seq,
                at_ms: now,
                traceparent: msg.traceparent.as_deref(),
                events: &events,
                meta: &meta,
                windows: &records,
            });
            if let Err(error) = written {
                // The meta was not written, so the append did not happen: state stays
                // as it was and a retry overwrites whatever part of it was written.
                self.cutter = before;
                self.kv_failure("append", &error);
                return AtomicResponse::new(Box::pin(fut::ready(Err(error))));
            }
            self.meta = meta;
            self.writes += 1;
            for (window, record) in sealed.into_iter().zip(sealed_records) {
                self.unflushed.push_back((self.writes, window, record));
            }
            metrics::EVENTS_ACCEPTED.inc_by(outcome.accepted as u64);
            self.ctx
                .stats
                .add("events_accepted_total", outcome.accepted as f64);
            self.meter.record(outcome.accepted as u64);
            self.refresh_status();
        }

        // Acknowledge only once durable; a batch of duplicates waits too, as
        // its first delivery may not have been flushed yet.
        let covered = self.writes;
        let log = self.log.clone();
        AtomicResponse::new(Box::pin(
            async move { log.flush().await }.into_actor(self).map(
                move |result, act, _| match result {
                    Ok(()) => {
                        act.kv_success();
                        act.release_flushed(covered);
                        Ok(outcome)
                    }
                    Err(error) => {
                        act.kv_failure("append", &error);
                        Err(error)
                    }
                },
            ),
        ))
    }
}
