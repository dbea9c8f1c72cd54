//! `GET /v1/dead-letters`: the dead-letter queue of each stage and how many
//! messages it holds. `POST /v1/dead-letters/{stage}/replay?limit=N`: sends
//! up to N parked messages back to the partition queue they came from.

use super::error_response;
use crate::actors::bus::{BusActor, OpenChannel};
use crate::dead_letters::{self, BrokerError, ReplayRequest};
use crate::domain::dead_letters::{parse_replay_limit, parse_stage, RequestError};
use crate::startup::AdminState;
use actix::Addr;
use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse, ResponseError};
use lapin::Channel;
use mdp_amqp::Stage;
use mdp_service::ServiceContext;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// Failures of the dead-letter routes.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(transparent)]
    Invalid(#[from] RequestError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ResponseError for DeadLetterError {
    fn status_code(&self) -> StatusCode {
        match self {
            DeadLetterError::Invalid(_) => StatusCode::BAD_REQUEST,
            DeadLetterError::NotFound(_) => StatusCode::NOT_FOUND,
            DeadLetterError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        error_response(self.status_code(), self.to_string())
    }
}

/// A channel on admin's connection, or 503.
async fn open_channel(bus: &Addr<BusActor>) -> Result<Channel, DeadLetterError> {
    bus.send(OpenChannel)
        .await
        .map_err(|e| DeadLetterError::Unavailable(format!("admin bus stopped: {e}")))?
        .map_err(|e| DeadLetterError::Unavailable(e.to_string()))
}

async fn close(channel: &Channel) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        channel.close(200, "done".into()),
    )
    .await;
}

/// One dead-letter queue in `GET /v1/dead-letters`.
#[derive(Debug, Serialize)]
struct QueueView {
    stage: &'static str,
    queue: String,
    /// Ready messages; `null` when the queue could not be inspected.
    messages: Option<u32>,
    consumers: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub async fn list(state: web::Data<AdminState>) -> Result<HttpResponse, DeadLetterError> {
    let mut queues = Vec::new();
    for stage in Stage::ALL {
        let queue = state.topology.dead_letter_queue(stage);
        // One channel per queue: a missing queue closes the channel.
        let channel = open_channel(&state.bus).await?;
        let depth = dead_letters::queue_depth(&channel, &queue).await;
        close(&channel).await;
        let (messages, consumers, error) = match depth {
            Ok((messages, consumers)) => {
                let now = mdp_types::now_ms();
                state
                    .dead_letters
                    .record(stage, &queue, u64::from(messages), now);
                (Some(messages), Some(consumers), None)
            }
            Err(error) => {
                if matches!(error, BrokerError::NotFound(_)) {
                    state.dead_letters.forget(stage);
                }
                (None, None, Some(error.to_string()))
            }
        };
        queues.push(QueueView {
            stage: stage.as_str(),
            queue,
            messages,
            consumers,
            error,
        });
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "dead_letters": queues })))
}

/// A replay id unique across admin instances and calls.
fn replay_id(instance: &str) -> String {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    format!("{instance}/{}-{n}", mdp_types::now_ms())
}

#[tracing::instrument(name = "dead_letter_replay", skip(state, ctx, path, req), fields(stage = %path.as_str()))]
pub async fn replay(
    state: web::Data<AdminState>,
    ctx: web::Data<ServiceContext>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, DeadLetterError> {
    let stage = parse_stage(path.as_str())
        .inspect_err(|error| tracing::info!(%error, "dead-letter replay rejected"))?;
    let params = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| RequestError::Query(e.to_string()))
        .and_then(|q| parse_replay_limit(&q))
        .inspect_err(|error| tracing::info!(%error, "dead-letter replay rejected"));
    let limit = params?;
    let channel = open_channel(&state.bus).await?;
    let replay_id = replay_id(&ctx.instance);
    let result = dead_letters::replay(
        channel,
        ReplayRequest {
            topology: &state.topology,
            stage,
            limit,
            replay_id: &replay_id,
            cancel: &ctx.cancel,
        },
    )
    .await;
    match result {
        Ok(done) => {
            state.dead_letters.record(
                stage,
                &state.topology.dead_letter_queue(stage),
                done.remaining,
                mdp_types::now_ms(),
            );
            tracing::info!(
                stage = done.stage,
                limit,
                replayed = done.replayed,
                skipped = done.skipped,
                remaining = done.remaining,
                skipped_reasons = ?done.skipped_reasons,
                replay_id = %replay_id,
                "dead-lettered messages replayed"
            );
            Ok(HttpResponse::Ok().json(done))
        }
        Err(failed) => {
            tracing::warn!(
                stage = failed.done.stage,
                limit,
                replayed = failed.done.replayed,
                skipped = failed.done.skipped,
                replay_id = %replay_id,
                error = %failed,
                "dead-letter replay failed"
            );
            Err(match failed.error {
                BrokerError::NotFound(_) => DeadLetterError::NotFound(failed.error.to_string()),
                _ => DeadLetterError::Unavailable(failed.to_string()),
            })
        }
    }
}
