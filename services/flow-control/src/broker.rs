//! The publishing side's broker link: one connection and confirm channel shared by every
//! partition's window publisher, declared with the topology and re-established after a failure.

use mdp_amqp::{AmqpError, Publisher, Topology};
use mdp_degrade::DegradeMachine;
use mdp_service::Readiness;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Closing a broken connection may hang; give up after this long.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

struct Live {
    conn: lapin::Connection,
    publisher: Publisher,
    generation: u64,
}

/// A lazily (re)connected confirmed publisher.
pub struct BrokerLink {
    url: String,
    connection_name: String,
    topology: Topology,
    cancel: CancellationToken,
    rabbitmq: DegradeMachine,
    readiness: Readiness,
    state: tokio::sync::Mutex<(Option<Live>, u64)>,
}

impl BrokerLink {
    pub fn new(
        url: String,
        connection_name: String,
        topology: Topology,
        cancel: CancellationToken,
        rabbitmq: DegradeMachine,
        readiness: Readiness,
    ) -> Self {
        BrokerLink {
            url,
            connection_name,
            topology,
            cancel,
            rabbitmq,
            readiness,
            state: tokio::sync::Mutex::new((None, 0)),
        }
    }

    /// A publisher on a live channel with the topology declared, and its
    /// generation (pass it to [`BrokerLink::invalidate`] after a failure).
    /// Connects with backoff; fails only when shutting down.
    pub async fn publisher(&self) -> Result<(Publisher, u64), AmqpError> {
        let mut state = self.state.lock().await;
        if let Some(live) = state.0.as_ref() {
            if live.publisher.is_open() {
                return Ok((live.publisher.clone(), live.generation));
            }
        }
        if let Some(old) = state.0.take() {
            close(&old.conn).await;
        }
        let mut attempt = 0u32;
        loop {
            let conn = mdp_amqp::connect(&self.url, &self.connection_name, &self.cancel).await?;
            match self.setup(&conn).await {
                Ok(publisher) => {
                    state.1 += 1;
                    let generation = state.1;
                    tracing::info!(generation, "window publisher connected");
                    state.0 = Some(Live {
                        conn,
                        publisher: publisher.clone(),
                        generation,
                    });
                    return Ok((publisher, generation));
                }
                Err(error) => {
                    let delay = mdp_amqp::backoff_delay(attempt);
                    attempt = attempt.saturating_add(1);
                    let text = mdp_telemetry::error_chain(&error);
                    tracing::warn!(error = %text, retry_in_ms = delay.as_millis() as u64, "window publisher setup failed");
                    self.rabbitmq.record_failure(&text);
                    self.readiness.set("rabbitmq", Err(text));
                    close(&conn).await;
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Err(AmqpError::Cancelled),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn setup(&self, conn: &lapin::Connection) -> Result<Publisher, AmqpError> {
        let publisher = Publisher::new(conn).await?.with_mandatory(true);
        self.topology.declare(publisher.channel()).await?;
        Ok(publisher)
    }

    /// Drops the connection of `generation` after a failed publish, so the
    /// next [`BrokerLink::publisher`] reconnects (a newer one is kept).
    pub async fn invalidate(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state.0.as_ref().is_some_and(|l| l.generation == generation) {
            if let Some(old) = state.0.take() {
                close(&old.conn).await;
            }
        }
    }

    /// Closes the connection (shutdown).
    pub async fn close(&self) {
        let mut state = self.state.lock().await;
        if let Some(old) = state.0.take() {
            close(&old.conn).await;
        }
    }
}

async fn close(conn: &lapin::Connection) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, "closing".into())).await;
}
