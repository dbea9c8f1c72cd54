//! HTTP routes of flow-control (besides the common ones): the window index and the partitions' status.

mod partitions;
mod windows;

use crate::log::KvLog;
use crate::status::StatusBoard;
use actix_web::{web, HttpResponse, ResponseError};
use mdp_service::PartitionsOwned;

pub use partitions::PartitionsResponse;
pub use windows::{WindowView, WindowsResponse};

/// What the routes read.
#[derive(Clone)]
pub struct RouteState {
    pub log: KvLog,
    pub board: StatusBoard,
    pub owned: PartitionsOwned,
}

/// `GET /v1/windows`, `GET /v1/partitions`. Needs `web::Data<RouteState>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/windows", web::get().to(windows::list_windows))
        .route("/v1/partitions", web::get().to(partitions::list_partitions));
}

/// Errors of the flow-control routes.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{0}")]
    BadParameter(String),
    #[error("the kv log cannot be read right now")]
    Unavailable(#[source] crate::log::LogError),
}

impl ResponseError for RouteError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        use actix_web::http::StatusCode;
        match self {
            RouteError::BadParameter(_) => StatusCode::BAD_REQUEST,
            RouteError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let RouteError::Unavailable(e) = self {
            tracing::warn!(error = %mdp_telemetry::error_chain(e), "window index read failed");
        }
        HttpResponse::build(self.status_code())
            .json(serde_json::json!({ "error": self.to_string() }))
    }
}
