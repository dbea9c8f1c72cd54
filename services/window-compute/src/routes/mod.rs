//! HTTP resources of window-compute (besides the common health, metrics and
//! status routes).

pub mod holds;
pub mod partitions;
pub mod reports;

use actix_web::web;

/// `GET /v1/reports`, `GET /v1/partitions` and
/// `POST /v1/partitions/{partition}/release-hold`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/reports", web::get().to(reports::list))
        .route("/v1/partitions", web::get().to(partitions::list))
        .route(
            "/v1/partitions/{partition}/release-hold",
            web::post().to(holds::release_hold),
        );
}
