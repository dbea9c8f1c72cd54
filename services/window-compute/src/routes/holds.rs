//! `POST /v1/partitions/{partition}/release-hold?skip_window=W`: the way out
//! when a parked window cannot be fixed. The operator gives up on window `W`,
//! the parked window the partition is held at: its changes are never
//! applied (a later delivery of it is dropped) and the windows held behind
//! it are applied within a few seconds. Refused (409) unless the partition
//! is held at exactly `W`.

use crate::actors::state_keeper::{SkipParked, StateKeeper};
use crate::events::ParkedWindowSkipped;
use crate::state::SkipError;
use actix::Addr;
use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse, ResponseError};
use mdp_types::WindowId;
use serde::Serialize;

/// Failures of the release-hold route.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("{0}")]
    Invalid(String),
    #[error("partition {0} does not exist")]
    UnknownPartition(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ResponseError for HoldError {
    fn status_code(&self) -> StatusCode {
        match self {
            HoldError::Invalid(_) => StatusCode::BAD_REQUEST,
            HoldError::UnknownPartition(_) => StatusCode::NOT_FOUND,
            HoldError::Conflict(_) => StatusCode::CONFLICT,
            HoldError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .json(serde_json::json!({ "error": self.to_string() }))
    }
}

/// The window to skip from the query: exactly one `skip_window`, a window id.
pub fn parse_skip_window(params: &[(String, String)]) -> Result<WindowId, HoldError> {
    let value = mdp_service::single_param(params, "skip_window")
        .map_err(|e| HoldError::Invalid(e.to_string()))?
        .ok_or_else(|| {
            HoldError::Invalid(
                "skip_window: required (the parked window the partition is held at)".into(),
            )
        })?;
    match value.trim().parse::<WindowId>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(HoldError::Invalid(format!(
            "skip_window: '{value}' is not a window id"
        ))),
    }
}

#[derive(Serialize)]
struct Released {
    partition: u32,
    skipped_window: WindowId,
    /// The next parked window the partition is still held at, if any.
    held_at_window: Option<WindowId>,
    /// Windows in the held store, applied next.
    held_windows: u64,
}

#[tracing::instrument(name = "release_hold", skip(keepers, path, req), fields(partition = %path.as_str()))]
pub async fn release_hold(
    keepers: web::Data<Vec<Addr<StateKeeper>>>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, HoldError> {
    let keeper = path
        .as_str()
        .parse::<usize>()
        .ok()
        .and_then(|p| keepers.get(p).map(|k| (p, k)));
    let Some((partition, keeper)) = keeper else {
        return Err(HoldError::UnknownPartition(path.into_inner()));
    };
    let partition = u32::try_from(partition).unwrap_or(u32::MAX);
    let params = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| HoldError::Invalid(format!("query: {e}")))?;
    let window_id = parse_skip_window(&params)
        .inspect_err(|error| tracing::info!(%error, "release-hold rejected"))?;
    let skipped = keeper
        .send(SkipParked { window_id })
        .await
        .map_err(|e| HoldError::Unavailable(format!("state keeper not running: {e}")))?;
    let status = match skipped {
        Ok(status) => status,
        Err(e @ (SkipError::NotHeld { .. } | SkipError::OtherWindow { .. })) => {
            tracing::info!(error = %e, window_id, "release-hold refused");
            return Err(HoldError::Conflict(e.to_string()));
        }
        Err(SkipError::State(e)) => {
            return Err(HoldError::Unavailable(format!(
                "state store failed: {}",
                mdp_telemetry::error_chain(&e)
            )))
        }
    };
    ParkedWindowSkipped {
        partition,
        window_id,
        held_windows: status.held_windows,
    }
    .emit();
    Ok(HttpResponse::Ok().json(Released {
        partition,
        skipped_window: window_id,
        held_at_window: status.hold.map(|h| h.window_id),
        held_windows: status.held_windows,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn skip_window_is_one_window_id() {
        assert_eq!(
            parse_skip_window(&params(&[("skip_window", "42")])).ok(),
            Some(42)
        );
        let err = |p: &[(&str, &str)]| parse_skip_window(&params(p)).map_err(|e| e.to_string());
        assert_eq!(
            err(&[]),
            Err("skip_window: required (the parked window the partition is held at)".into())
        );
        assert_eq!(
            err(&[("skip_window", "0")]),
            Err("skip_window: '0' is not a window id".into())
        );
        assert_eq!(
            err(&[("skip_window", "x")]),
            Err("skip_window: 'x' is not a window id".into())
        );
        assert_eq!(
            err(&[("skip_window", "1"), ("skip_window", "2")]),
            Err("skip_window: given more than once".into())
        );
        assert_eq!(
            err(&[("window", "1")]),
            Err("window: unknown parameter (expected skip_window)".into())
        );
    }
}
