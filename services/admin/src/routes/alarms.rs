//! `GET /v1/alarms`: current alarms (services down, machines degraded …).

use crate::startup::AdminState;
use actix_web::{web, HttpResponse};

pub async fn alarms(state: web::Data<AdminState>) -> HttpResponse {
    let status = state.fleet_status();
    HttpResponse::Ok().json(serde_json::json!({
        "alarms": status.alarms,
        "generated_at_ms": status.generated_at_ms,
    }))
}
