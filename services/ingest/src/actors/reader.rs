//! The source reader: takes the initial snapshot (first start) and then
//! streams the binlog, reconnecting with backoff when the source fails.

use crate::cdc::binlog::BinlogReader;
use crate::cdc::snapshot::{send, take_snapshot};
use crate::cdc::source::{self, SourceError};
use crate::cdc::CdcItem;
use crate::configuration::IngestConfig;
use crate::metrics;
use crate::state::{IngestState, Phase};
use crate::store::{BinlogPosition, SavedPosition};
use actix::prelude::*;
use mdp_degrade::DegradeMachine;
use mdp_service::ServiceContext;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::Sender;

/// Everything the reader loop owns.
pub struct ReaderTask {
    pub ctx: ServiceContext,
    pub cfg: Arc<IngestConfig>,
    pub tx: Sender<CdcItem>,
    pub state: IngestState,
    pub machine: DegradeMachine,
    /// The position saved by an earlier run; `None` on first start.
    pub saved: Option<SavedPosition>,
}

/// The actor running [`ReaderTask`]; stops when the task ends.
pub struct SourceReader {
    task: Option<ReaderTask>,
}

impl SourceReader {
    pub fn new(task: ReaderTask) -> Self {
        SourceReader { task: Some(task) }
    }
}

impl Actor for SourceReader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(task) = self.task.take() {
            ctx.spawn(task.run().into_actor(self).map(|_, _, ctx| ctx.stop()));
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        tracing::info!("source reader stopped");
    }
}

impl ReaderTask {
    async fn run(self) {
        self.ctx
            .readiness
            .set("source", Err("not connected yet".into()));
        let start = match self.saved.clone() {
            Some(saved) => {
                tracing::info!(position = %saved.position, "resuming from the saved binlog position");
                saved.position
            }
            None => match self.initial_position().await {
                Some(p) => p,
                None => return,
            },
        };
        self.stream(start).await;
    }

    /// First start: snapshot (or the current end of the binlog), retried until it succeeds.
    async fn initial_position(&self) -> Option<BinlogPosition> {
        let mut attempt = 0u32;
        loop {
            if self.ctx.cancel.is_cancelled() {
                return None;
            }
            let result = if self.cfg.snapshot {
                self.state.set_phase(Phase::Snapshot);
                let state = self.state.clone();
                let on_rows = move |n| state.add_read(n);
                tokio::select! {
                    _ = self.ctx.cancel.cancelled() => return None,
                    r = take_snapshot(&self.cfg, &self.tx, &on_rows) => r,
                }
            } else {
                self.current_end().await
            };
            match result {
                Ok(p) => {
                    self.machine.record_success();
                    return Some(p);
                }
                Err(SourceError::PublisherGone) => return None,
                Err(e) => {
                    if !self
                        .failed(&e, attempt, "initial snapshot failed, redoing it", None)
                        .await
                    {
                        return None;
                    }
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Without a snapshot, capture starts at the current end of the binlog.
    async fn current_end(&self) -> Result<BinlogPosition, SourceError> {
        let mut conn = source::connect(&self.cfg.source_opts).await?;
        source::check_binlog_settings(&mut conn).await?;
        let end = source::master_status(&mut conn).await?;
        let _ = conn.disconnect().await;
        tracing::info!(position = %end, "no snapshot configured, capturing from the current end of the binlog");
        send(&self.tx, CdcItem::Boundary(end.clone())).await?;
        Ok(end)
    }

    async fn stream(&self, start: BinlogPosition) {
        self.state.set_phase(Phase::Streaming);
        self.state.set_read(start.clone());
        let mut reader =
            BinlogReader::new(self.cfg.clone(), self.tx.clone(), self.state.clone(), start);
        let mut attempt = 0u32;
        loop {
            let connected = std::cell::Cell::new(false);
            let on_connected = || {
                connected.set(true);
                self.machine.record_success();
                self.ctx.readiness.set("source", Ok(()));
            };
            let result = reader.stream_once(&self.ctx.cancel, &on_connected).await;
            if connected.get() {
                attempt = 0;
            }
            match result {
                Ok(()) | Err(SourceError::PublisherGone) => return,
                // Not a failure: reconnect at once from the next file.
                Err(SourceError::FileEnded { .. }) => continue,
                Err(e) => {
                    let resume = reader.resume_position().clone();
                    if !self
                        .failed(
                            &e,
                            attempt,
                            "binlog stream failed, reconnecting",
                            Some(&resume),
                        )
                        .await
                    {
                        return;
                    }
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Logs, counts and records a source failure, then waits the backoff.
    /// Returns false when cancelled meanwhile.
    async fn failed(
        &self,
        e: &SourceError,
        attempt: u32,
        what: &'static str,
        resume: Option<&BinlogPosition>,
    ) -> bool {
        let error = mdp_telemetry::error_chain(e);
        let delay = mdp_amqp::backoff_delay(attempt);
        metrics::SOURCE_FAILURES_TOTAL.inc();
        tracing::warn!(
            error = %error,
            attempt = attempt + 1,
            retry_in_ms = delay.as_millis() as u64,
            resume = resume.map(|p| p.to_string()).unwrap_or_default(),
            "{what}"
        );
        self.machine.record_failure(&error);
        self.ctx.readiness.set("source", Err(error));
        tokio::select! {
            _ = self.ctx.cancel.cancelled() => false,
            _ = tokio::time::sleep(delay.max(Duration::from_millis(100))) => true,
        }
    }
}
