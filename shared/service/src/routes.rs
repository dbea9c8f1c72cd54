//! HTTP routes every service serves: liveness, readiness, Prometheus
//! metrics and the instance's own status.

use crate::context::ServiceContext;
use actix_web::{web, HttpResponse};

/// `GET /healthz`, `GET /readyz`, `GET /metrics` and `GET /v1/status`.
/// Needs `web::Data<ServiceContext>` in the app.
pub fn common_routes(cfg: &mut web::ServiceConfig) {
    health_routes(cfg);
    cfg.route("/v1/status", web::get().to(status));
}

/// `GET /healthz`, `GET /readyz`, `GET /metrics` only, for services that
/// serve their own `/v1/status` (admin). Needs `web::Data<ServiceContext>`.
pub fn health_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// Always 200 `{"status":"ok"}` while the process serves HTTP.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// 200 when every readiness check passes, 503 otherwise; the body is the
/// health with each check's `ok` or error text.
async fn readyz(ctx: web::Data<ServiceContext>) -> HttpResponse {
    let health = ctx.readiness.snapshot();
    if health.ready {
        HttpResponse::Ok().json(health)
    } else {
        HttpResponse::ServiceUnavailable().json(health)
    }
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(mdp_telemetry::render_metrics())
}

/// This instance's heartbeat.
pub async fn status(ctx: web::Data<ServiceContext>) -> HttpResponse {
    HttpResponse::Ok().json(ctx.heartbeat())
}
