//! HTTP routes of ingest besides the common ones, one module per resource.

pub mod position;

use actix_web::web;

/// Registers ingest's own routes. Needs `web::Data<IngestState>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/position", web::get().to(position::get_position));
}
