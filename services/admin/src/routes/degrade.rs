//! `POST /v1/degrade/{service}/{machine}`: publishes an operator override to
//! every instance of the service on the control exchange.

use super::error_response;
use crate::actors::bus::PublishControl;
use crate::domain::command::{parse_command, CommandError};
use crate::startup::AdminState;
use actix_web::{http::StatusCode, web, HttpResponse, ResponseError};
use mdp_types::ControlCommand;

/// Failures of the degrade route.
#[derive(Debug, thiserror::Error)]
pub enum DegradeError {
    #[error(transparent)]
    Invalid(#[from] CommandError),
    #[error("control command not published: {0}")]
    Unpublished(String),
}

impl ResponseError for DegradeError {
    fn status_code(&self) -> StatusCode {
        match self {
            DegradeError::Invalid(_) => StatusCode::BAD_REQUEST,
            DegradeError::Unpublished(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        error_response(self.status_code(), self.to_string())
    }
}

#[tracing::instrument(name = "degrade_command", skip(state, body), fields(service = %path.0, machine = %path.1))]
pub async fn degrade(
    state: web::Data<AdminState>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, DegradeError> {
    let (service, machine) = path.into_inner();
    let known = state.known_machines();
    let cmd: ControlCommand = parse_command(&service, &machine, &body, &known, mdp_types::now_ms())
        .inspect_err(|error| tracing::info!(%error, "degrade command rejected"))?;
    state
        .bus
        .send(PublishControl(cmd.clone()))
        .await
        .map_err(|e| DegradeError::Unpublished(format!("control publisher stopped: {e}")))?
        .map_err(|e| DegradeError::Unpublished(e.to_string()))?;
    state.switches.record(&cmd);
    tracing::info!(
        service = %cmd.service,
        machine = %cmd.machine,
        action = ?cmd.action,
        reason = cmd.reason.as_deref().unwrap_or(""),
        "degrade command published"
    );
    Ok(HttpResponse::Ok().json(serde_json::json!({ "published": cmd })))
}
