//! Publishes one partition's sealed windows, strictly in id order, each retried until the broker confirms it.
//! Downstream skips window ids it has already applied, so a later window must never overtake an earlier one.

use crate::broker::BrokerLink;
use crate::log::{KvLog, LogError, WindowRecord, WindowState};
use crate::metrics;
use crate::status::StatusBoard;
use actix::prelude::*;
use mdp_amqp::{AmqpError, Topology};
use mdp_degrade::DegradeMachine;
use mdp_service::ServiceContext;
use mdp_types::WindowId;
use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// A publish not confirmed within this time is treated as a lost connection.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Publish this sealed, durable window (after every window sent before it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishWindow(pub WindowRecord);

#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("failed to read the window's changes from the kv log")]
    Kv(#[source] LogError),
    #[error("failed to publish the window")]
    Amqp {
        #[source]
        source: AmqpError,
        generation: Option<u64>,
    },
    #[error("the broker did not confirm the window within {} s", CONFIRM_TIMEOUT.as_secs())]
    Timeout { generation: u64 },
}

/// Shared by the actor and its publishing futures.
#[derive(Clone)]
struct Deps {
    partition: u32,
    log: KvLog,
    link: Arc<BrokerLink>,
    exchange: String,
    board: StatusBoard,
    kv: DegradeMachine,
    rabbitmq: DegradeMachine,
    ctx: ServiceContext,
}

pub struct WindowPublisher {
    deps: Deps,
}

impl WindowPublisher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        partition: u32,
        log: KvLog,
        link: Arc<BrokerLink>,
        topology: &Topology,
        board: StatusBoard,
        kv: DegradeMachine,
        rabbitmq: DegradeMachine,
        ctx: ServiceContext,
    ) -> Self {
        WindowPublisher {
            deps: Deps {
                partition,
                log,
                link,
                exchange: topology.windows_exchange(),
                board,
                kv,
                rabbitmq,
                ctx,
            },
        }
    }
}

impl Actor for WindowPublisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(Duration::from_millis(200), |act, ctx| {
            if act.deps.ctx.cancel.is_cancelled() {
                ctx.stop();
            }
        });
    }
}

impl Handler<PublishWindow> for WindowPublisher {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: PublishWindow, _ctx: &mut Self::Context) -> Self::Result {
        let deps = self.deps.clone();
        AtomicResponse::new(Box::pin(
            publish_until_confirmed(deps, msg.0).into_actor(self),
        ))
    }
}

/// Publishes `record` with backoff until confirmed (or shutdown), then marks it published.
async fn publish_until_confirmed(deps: Deps, mut record: WindowRecord) {
    let mut attempt = 0u32;
    loop {
        if deps.ctx.cancel.is_cancelled() {
            return;
        }
        match publish_once(&deps, &record).await {
            Ok(()) => break,
            Err(PublishError::Amqp {
                source: AmqpError::Cancelled,
                ..
            }) => return,
            Err(error) => {
                let text = mdp_telemetry::error_chain(&error);
                match &error {
                    PublishError::Kv(e) => {
                        metrics::kv_failed(deps.partition, "publish_read", e);
                        deps.kv.record_failure(&text);
                    }
                    PublishError::Amqp { generation, .. } => {
                        metrics::PUBLISH_FAILURES.inc();
                        tracing::warn!(partition = deps.partition, window_id = record.id, error = %text, "window publish failed");
                        deps.rabbitmq.record_failure(&text);
                        if let Some(g) = generation {
                            deps.link.invalidate(*g).await;
                        }
                    }
                    PublishError::Timeout { generation } => {
                        metrics::PUBLISH_FAILURES.inc();
                        tracing::warn!(partition = deps.partition, window_id = record.id, error = %text, "window publish failed");
                        deps.rabbitmq.record_failure(&text);
                        deps.link.invalidate(*generation).await;
                    }
                }
                let delay = mdp_amqp::backoff_delay(attempt);
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = deps.ctx.cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    deps.rabbitmq.record_success();
    deps.ctx.readiness.set("rabbitmq", Ok(()));
    record.state = WindowState::Published;
    record.published_at_ms = Some(mdp_types::now_ms());
    // Not flushed on purpose: if the mark is lost in a crash the window is
    // published again with the same id, which downstream ignores.
    if let Err(error) = deps.log.put_windows(std::slice::from_ref(&record)) {
        metrics::kv_failed(deps.partition, "mark", &error);
    }
    let unpublished = deps.board.published(deps.partition, record.id);
    metrics::WINDOWS_PUBLISHED.inc();
    metrics::UNPUBLISHED_WINDOWS
        .with_label_values(&[deps.partition.to_string().as_str()])
        .set(unpublished as i64);
    deps.ctx.stats.add("windows_published_total", 1.0);
    tracing::debug!(
        partition = deps.partition,
        window_id = record.id,
        changes = record.changes(),
        retries = attempt,
        "window published"
    );
}

/// A [`mdp_types::Window`] whose changes are the JSON they were stored in
/// the log as; it encodes exactly as the `Window` would.
#[derive(Serialize)]
struct WindowJson<'a> {
    partition: u32,
    id: WindowId,
    first_seq: u64,
    last_seq: u64,
    opened_at_ms: i64,
    sealed_at_ms: i64,
    changes: &'a [Box<RawValue>],
}

async fn publish_once(deps: &Deps, record: &WindowRecord) -> Result<(), PublishError> {
    let changes = deps
        .log
        .read_changes_json(deps.partition, record.first_seq, record.last_seq)
        .map_err(PublishError::Kv)?;
    let window = WindowJson {
        partition: deps.partition,
        id: record.id,
        first_seq: record.first_seq,
        last_seq: record.last_seq,
        opened_at_ms: record.opened_at_ms,
        sealed_at_ms: record.sealed_at_ms.unwrap_or(record.opened_at_ms),
        changes: &changes,
    };
    let (publisher, generation) =
        deps.link
            .publisher()
            .await
            .map_err(|source| PublishError::Amqp {
                source,
                generation: None,
            })?;
    let span = tracing::info_span!(
        "flow.publish_window",
        partition = deps.partition,
        window_id = record.id,
        changes = window.changes.len()
    );
    mdp_telemetry::set_parent(&span, record.traceparent.as_deref());
    let message_id = format!("{}:{}", deps.partition, record.id);
    let routing_key = Topology::routing_key(deps.partition);
    let publish = publisher.publish_json(&deps.exchange, &routing_key, &window, Some(&message_id));
    match tokio::time::timeout(CONFIRM_TIMEOUT, publish.instrument(span)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(PublishError::Amqp {
            source,
            generation: Some(generation),
        }),
        Err(_) => Err(PublishError::Timeout { generation }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Append, PartitionMeta};
    use mdp_types::{ChangeEvent, EventId, Op, Position, Row, TenantId, Value, Window};

    fn order(offset: u64, before: Option<Row>, after: Option<Row>, op: Op) -> ChangeEvent {
        let position = Position {
            file: "binlog.000002".into(),
            offset,
            row: 1,
            snapshot: false,
        };
        ChangeEvent {
            id: EventId::from_position("shop", &position),
            source: "shop".into(),
            table: "orders".into(),
            op,
            tenant: TenantId("42".into()),
            partition: 3,
            pk: vec![Value::I(offset as i64)],
            before,
            after,
            commit_ts_ms: 1_700_000_000_000,
            position,
            captured_at_ms: 1_700_000_000_050,
        }
    }

    fn row(status: &str) -> Row {
        Row::from([
            ("id".to_string(), Value::I(9)),
            ("status".to_string(), Value::S(status.to_string())),
            (
                "amount".to_string(),
                Value::D("1234.50".parse().expect("decimal")),
            ),
            ("rate".to_string(), Value::F(0.25)),
            ("note".to_string(), Value::Null),
            (
                "created_at".to_string(),
                serde_json::from_str(r#"{"Dt":"2026-11-20T23:59:58.125"}"#).expect("datetime"),
            ),
            ("raw".to_string(), Value::B(vec![0, 255, 34])),
        ])
    }

    #[test]
    fn a_window_of_stored_change_json_encodes_as_the_decoded_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = KvLog::open(dir.path()).expect("open");
        let events = vec![
            order(10, None, Some(row("cart \"new\"\n")), Op::Insert),
            order(20, Some(row("cart")), Some(row("paid ✓")), Op::Update),
            order(30, Some(row("paid")), None, Op::Delete),
        ];
        let refs: Vec<&ChangeEvent> = events.iter().collect();
        log.append(&Append {
            partition: 3,
            first_seq: 1,
            at_ms: 5,
            traceparent: None,
            events: &refs,
            meta: &PartitionMeta {
                last_position: Some(events[2].position.clone()),
                next_seq: 4,
            },
            windows: &[],
        })
        .expect("append");
        let window = Window {
            partition: 3,
            id: 7,
            first_seq: 1,
            last_seq: 3,
            opened_at_ms: 100,
            sealed_at_ms: 1100,
            changes: events,
        };
        let stored = log.read_changes_json(3, 1, 3).expect("read");
        let raw = serde_json::to_string(&WindowJson {
            partition: window.partition,
            id: window.id,
            first_seq: window.first_seq,
            last_seq: window.last_seq,
            opened_at_ms: window.opened_at_ms,
            sealed_at_ms: window.sealed_at_ms,
            changes: &stored,
        })
        .expect("encode");
        assert_eq!(raw, serde_json::to_string(&window).expect("encode"));
        let decoded: Window = serde_json::from_str(&raw).expect("decode");
        assert_eq!(decoded, window);
    }
}
