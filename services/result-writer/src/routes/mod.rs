//! HTTP routes of the writer: the common service routes and its own status.

mod writer_status;

use actix_web::web;

pub use writer_status::{writer_status, WriterStatusState};

/// Every route of the service.
pub fn configure(cfg: &mut web::ServiceConfig) {
    mdp_service::common_routes(cfg);
    cfg.route("/v1/writer", web::get().to(writer_status));
}
