//! HTTP routes of admin, one module per resource.

pub mod alarms;
pub mod dead_letters;
pub mod degrade;
pub mod status;

use actix_web::{http::StatusCode, HttpResponse};

/// A JSON error body `{"error": message}` with `status`.
pub(crate) fn error_response(status: StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message }))
}
